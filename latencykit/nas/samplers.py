"""Sampling strategies: which subnets a supernet training step trains, as plug-ins.

A sampler returns, per step, a list of `Draw`s: an architecture, whether it learns from the labels
or from the largest subnet's output (in-place distillation), and whether it counts as the
"supernet" or a "sub-network" for NASViT's gradient projection. Samplers own a numpy generator
and expose `state_dict` so that a resumed run draws the same subnets.

- uniform: one random subnet per step (AutoFormer; AutoViT Algorithm 1).
- sandwich: largest, smallest and `n` random subnets; all but the largest distil from it (NASViT).
- complexity: ElasticViT complexity-aware sampling: FLOPs levels that move by at most one level per
  step, M subnets of the step's level and the nearest hierarchical smallest subnet (HSS).
- performance: complexity-aware plus ElasticViT performance-aware sampling: a memory bank of the
  lowest-loss subnets per level, exploited with probability q (0.2 rising to 0.8), else exploration
  filtered by the path preference rule (wider and shallower transformer stages than an anchor).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from latencykit.arch import PER_LAYER_FIELDS, Arch, StageArch
from latencykit.registry import Registry
from latencykit.space import SearchSpace


@dataclass(frozen=True)
class Draw:
    arch: Arch
    target: str = "labels"  # or "largest": distil from the largest subnet's output of this step
    role: str = "sub"  # "sup" for the supernet (largest) in gradient projection


class Sampler:
    """Base: a seeded generator plus the space; subclasses implement `draws`."""

    def __init__(self, space: SearchSpace, seed: int = 0, total_steps: int = 1) -> None:
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.total_steps = max(1, total_steps)

    def draws(self, step: int) -> list[Draw]:
        raise NotImplementedError

    def observe(self, arch: Arch, loss: float) -> None:
        """Feedback after training `arch` on a batch (performance-aware sampling uses it)."""

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


SAMPLERS: Registry[Callable[..., Sampler]] = Registry("sampler", "latencykit.samplers")


@SAMPLERS.register("uniform")
class Uniform(Sampler):
    def draws(self, step: int) -> list[Draw]:
        return [Draw(self.space.sample(self.rng))]


@SAMPLERS.register("sandwich")
class Sandwich(Sampler):
    random_subnets = 2

    def draws(self, step: int) -> list[Draw]:
        out = [Draw(self.space.largest(), "labels", "sup"), Draw(self.space.smallest(), "largest")]
        return out + [Draw(self.space.sample(self.rng), "largest") for _ in range(self.random_subnets)]


@SAMPLERS.register("complexity")
class ComplexityAware(Sampler):
    """ElasticViT section 4.2 over a seeded pool of random subnets binned into FLOPs levels."""

    levels = 8
    per_step = 3  # M
    hss = 3  # N hierarchical smallest subnets
    pool_size = 4096

    def __init__(self, space: SearchSpace, seed: int = 0, total_steps: int = 1) -> None:
        super().__init__(space, seed, total_steps)
        pool_rng = np.random.default_rng([seed, 7])
        genes = np.unique(space.sample_genes(self.pool_size, pool_rng), axis=0)
        flops = space.evaluate(space.flops_values, genes)
        lo, hi = flops.min(), flops.max()
        edges = np.linspace(lo, hi, self.levels + 1)
        level = np.clip(np.searchsorted(edges, flops, side="right") - 1, 0, self.levels - 1)
        self.bins = [genes[level == j] for j in range(self.levels) if (level == j).any()]
        self.bin_flops = [flops[level == j] for j in range(self.levels) if (level == j).any()]
        self.centres = np.array([f.mean() for f in self.bin_flops])
        # HSS: the space's smallest subnet, then the cheapest pool member of evenly spaced levels
        hss = [(space.flops(space.smallest()), space.smallest())]
        for n in range(1, self.hss):
            j = min(round(n * len(self.bins) / self.hss), len(self.bins) - 1)
            k = int(np.argmin(self.bin_flops[j]))
            hss.append((float(self.bin_flops[j][k]), space.decode(self.bins[j][k])))
        self.hss_set = sorted(hss, key=lambda t: t[0])
        self.level = int(self.rng.integers(len(self.bins)))

    def next_level(self) -> int:
        """Adjacent-step sampling: down one level, stay, or up one level."""
        self.level = int(np.clip(self.level + self.rng.integers(-1, 2), 0, len(self.bins) - 1))
        return self.level

    def nearest_min(self, level: int) -> Arch:
        """The HSS subnet closest below the level (Eq. 5), the smallest one if none is below."""
        below = [a for f, a in self.hss_set if f <= self.centres[level]]
        return below[-1] if below else self.hss_set[0][1]

    def pick(self, level: int) -> Arch:
        b = self.bins[level]
        return self.space.decode(b[self.rng.integers(len(b))])

    def draws(self, step: int) -> list[Draw]:
        j = self.next_level()
        return [Draw(self.pick(j)) for _ in range(self.per_step)] + [Draw(self.nearest_min(j))]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "level": self.level}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.level = state["level"]


@SAMPLERS.register("performance")
class PerformanceAware(ComplexityAware):
    """ElasticViT section 4.3 on top of complexity-aware sampling."""

    bank_size = 4
    q_start, q_end = 0.2, 0.8
    tries = 8  # exploration resamples before the path preference rule gives way (bounded)

    def __init__(self, space: SearchSpace, seed: int = 0, total_steps: int = 1) -> None:
        super().__init__(space, seed, total_steps)
        self.bank: list[list[tuple[float, Arch]]] = [[] for _ in self.bins]
        self.step = 0
        self._flops_level: dict[Arch, int] = {}

    def q(self) -> float:
        return self.q_start + (self.q_end - self.q_start) * min(1.0, self.step / self.total_steps)

    def explore(self, level: int) -> Arch:
        bank = self.bank[level]
        anchor = min(bank, key=lambda t: t[0])[1] if bank else None
        arch = self.pick(level)
        for _ in range(self.tries):
            if anchor is None or prefers_wide_shallow(self.space, arch, anchor):
                break
            arch = self.pick(level)
        return arch

    def draws(self, step: int) -> list[Draw]:
        self.step = step
        j = self.next_level()
        out = []
        for _ in range(self.per_step):
            bank = self.bank[j]
            if bank and self.rng.random() < self.q():
                arch = bank[self.rng.integers(len(bank))][1]
            else:
                arch = self.explore(j)
            self._flops_level[arch] = j
            out.append(Draw(arch))
        return out + [Draw(self.nearest_min(j))]

    def observe(self, arch: Arch, loss: float) -> None:
        """Worst-performing replacement: a subnet with lower loss replaces the bank's worst."""
        j = self._flops_level.pop(arch, None)
        if j is None:
            return
        bank = self.bank[j]
        bank[:] = [t for t in bank if t[1] != arch]
        if len(bank) < self.bank_size:
            bank.append((loss, arch))
        else:
            worst = max(range(len(bank)), key=lambda i: bank[i][0])
            if loss < bank[worst][0]:
                bank[worst] = (loss, arch)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "step": self.step,
                "bank": [[(loss, a.to_dict()) for loss, a in b] for b in self.bank]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.step = state["step"]
        self.bank = [[(loss, Arch.from_dict(a)) for loss, a in b] for b in state["bank"]]


def transformer_stages(space: SearchSpace) -> list[int]:
    """Indices of the stages with attention (they search heads)."""
    return [i for i, st in enumerate(space.stages) if st.heads]


def mix(space: SearchSpace, base: Arch, other: Arch, take: str) -> Arch:
    """`base` with `other`'s transformer-stage widths (take="width") or depths (take="depth").

    Depth includes whether an optional stage is present; per-layer choices come from `base` where
    it has the layer, else from `other`."""
    ts = set(transformer_stages(space))
    n = len(other.stages) if take == "depth" else len(base.stages)
    stages = []
    for i in range(n):
        b = base.stages[i] if i < len(base.stages) else other.stages[i]
        o = other.stages[i] if i < len(other.stages) else None
        if i not in ts or o is None:
            stages.append(b)
            continue
        if take == "width":
            stages.append(replace(b, width=o.width))
        else:
            per = {f: tuple((getattr(b, f) + getattr(o, f)[len(getattr(b, f)):])[:o.depth])
                   for f in PER_LAYER_FIELDS if getattr(b, f)}
            stages.append(StageArch(b.width, o.depth, **per))
    return Arch(base.resolution, base.stem, tuple(stages), base.head)


def prefers_wide_shallow(space: SearchSpace, arch: Arch, anchor: Arch) -> bool:
    """ElasticViT's path preference rule: relative to `anchor`, the arch's transformer widths add
    at least as many FLOPs as its transformer depths do (Eqs. 7-8)."""
    base = space.flops(anchor)
    by_width = space.flops(mix(space, anchor, arch, "width")) - base
    by_depth = space.flops(mix(space, anchor, arch, "depth")) - base
    return by_width >= by_depth
