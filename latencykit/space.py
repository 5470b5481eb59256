"""Search spaces: loaded from data files, they list their choices per stage.

A space turns an architecture into its layers, counts params and FLOPs, samples, validates and
enumerates every distinct layer it can produce. Internally an architecture is also a gene vector
(one choice index per decision), and the network is cut into *slots*: a slot is a short run of
layers that depends on a handful of genes only. Precomputing a value per slot and gene combination
(latency, params, FLOPs) makes scoring many architectures a few vectorised gathers.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from latencykit.arch import PER_LAYER_FIELDS, Arch, StageArch
from latencykit.errors import ArchitectureError, LatencykitError, UnknownNameError
from latencykit.layers import LayerSpec
from latencykit.registry import Registry, load_object


@dataclass(frozen=True)
class StemSpec:
    widths: tuple[int, ...]
    kernel: int = 3
    stride: int = 2


@dataclass(frozen=True)
class StageSpec:
    """One stage's choices. Per-layer fields left empty are not searched by this stage."""

    name: str
    kind: str
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    stride: int
    optional: bool = False
    expand: tuple[float, ...] = ()
    kernel: tuple[int, ...] = ()
    heads: tuple[int, ...] = ()
    mlp_ratio: tuple[float, ...] = ()
    v_scale: tuple[int, ...] = ()
    windows: tuple[int, ...] = ()
    se: bool = False
    head_dim: int = 0
    patch: int = 0
    downsample_expand: float = 0.0
    local_kernel: int = 3
    tie_width: bool = False
    """The stage takes the width of the stage (or stem) before it instead of choosing one."""

    @property
    def layer_fields(self) -> tuple[str, ...]:
        return tuple(f for f in PER_LAYER_FIELDS if getattr(self, f))


@dataclass(frozen=True)
class HeadSpec:
    """The head layer; `hidden` lists its hidden width choices (a gene `head.hidden` when more than one)."""

    kind: str = "mbpool"
    expand: float = 6.0
    hidden: tuple[int, ...] = (0,)
    classes: int = 1000

    def __post_init__(self) -> None:
        hidden = self.hidden if isinstance(self.hidden, (tuple, list)) else (self.hidden,)
        object.__setattr__(self, "hidden", tuple(sorted(int(h) for h in hidden)))


@dataclass(frozen=True)
class Gene:
    name: str
    choices: tuple


@dataclass(frozen=True)
class Slot:
    """A run of layers whose specs depend on the genes `deps` only; one layer tuple per combination."""

    name: str
    deps: tuple[int, ...]
    dims: tuple[int, ...]
    layers: tuple[tuple[LayerSpec, ...], ...]


# ----- stage kinds: how a stage's choices become layers -------------------------------------------

class StageKind:
    """How a stage's choices become layer specs: `pre` layers, then per layer `layer` (one spec or a
    list), then `post` layers. A new kind subclasses this and registers in STAGE_KINDS (third parties:
    entry points `latencykit.stage_kinds`); the layer kinds it emits must be registered LayerKinds."""

    required: tuple[str, ...] = ()
    """StageSpec fields a stage of this kind must list."""
    first_layer_takes_cin = False
    """Layer 0 reads the previous stage's width (so its slot depends on that gene)."""
    needs_exact_hw = True
    """Every resolution must divide by the space's total stride."""
    even_maps = False
    """A strided stage of this kind needs an even input map."""

    @staticmethod
    def pre(st: StageSpec, hw: int, cin: int, width: int, act: str) -> list[LayerSpec]:
        return []

    @classmethod
    def layer(cls, st: StageSpec, j: int, hw: int, cin: int, width: int, v: dict,
              act: str) -> LayerSpec | list[LayerSpec]:
        raise NotImplementedError

    @staticmethod
    def post(st: StageSpec, hw: int, width: int, act: str) -> list[LayerSpec]:
        return []


class MBConvStage(StageKind):
    """Inverted-residual layers; the first one changes width and applies the stride."""

    required = ("expand", "kernel")
    first_layer_takes_cin = True
    needs_exact_hw = False
    even_maps = True
    layer_kind = "mbconv"

    @classmethod
    def layer(cls, st: StageSpec, j: int, hw: int, cin: int, width: int, v: dict, act: str) -> LayerSpec:
        first = j == 0
        return LayerSpec(cls.layer_kind, hw if first else hw // st.stride, cin if first else width, width,
                         stride=st.stride if first else 1, kernel=v["kernel"], expand=v["expand"],
                         se=st.se, act=act)


class MobileViTStage(StageKind):
    """An MBConv downsample, then a MobileViT block: local conv, `depth` transformer layers, fusion."""

    required = ("heads", "mlp_ratio")

    @staticmethod
    def pre(st: StageSpec, hw: int, cin: int, width: int, act: str) -> list[LayerSpec]:
        out = hw // st.stride
        return [LayerSpec("mbconv", hw, cin, width, stride=st.stride, kernel=3,
                          expand=st.downsample_expand, act=act),
                LayerSpec("mvit_local", out, width, width, kernel=st.local_kernel, patch=st.patch, act=act)]

    @classmethod
    def layer(cls, st: StageSpec, j: int, hw: int, cin: int, width: int, v: dict, act: str) -> LayerSpec:
        return LayerSpec("transformer", hw // st.stride, width, width, heads=v["heads"],
                         head_dim=st.head_dim, mlp_ratio=v["mlp_ratio"], v_scale=v.get("v_scale", 0),
                         patch=st.patch, act=act)

    @staticmethod
    def post(st: StageSpec, hw: int, width: int, act: str) -> list[LayerSpec]:
        return [LayerSpec("mvit_fusion", hw // st.stride, width, width, kernel=st.local_kernel,
                          patch=st.patch, act=act)]


class MobileBlockStage(MBConvStage):
    """ElasticViT's MBConv stage: its MobileBlock layers (see layers._mbblock); odd maps round down."""

    layer_kind = "mbblock"
    even_maps = False


class PlainViTStage(StageKind):
    """ElasticViT's transformer stage on plain tokens: a MobileBlock downsample (`transds`, which changes
    the width and applies the stride), then per layer an attention and an MLP layer. Heads are
    width / head_dim (fixed head width, as ElasticViT), so they are not a choice. A stage listing
    `windows` chooses per layer how many windows its attention splits the map into (1: global)."""

    required = ("mlp_ratio", "v_scale", "head_dim", "downsample_expand")
    needs_exact_hw = False
    attention, mlp = "transattn", "transffn"

    @staticmethod
    def pre(st: StageSpec, hw: int, cin: int, width: int, act: str) -> list[LayerSpec]:
        return [LayerSpec("transds", hw, cin, width, stride=st.stride, kernel=3, expand=st.downsample_expand,
                          se=st.se, act=act)]

    @classmethod
    def layer(cls, st: StageSpec, j: int, hw: int, cin: int, width: int, v: dict, act: str) -> list[LayerSpec]:
        out, windows = hw // st.stride, v.get("windows", 1)
        return [LayerSpec(cls.attention, out, width, width, heads=width // st.head_dim, head_dim=st.head_dim,
                          v_scale=v["v_scale"], windows=windows if windows > 1 else 0, act=act),
                LayerSpec(cls.mlp, out, width, width, mlp_ratio=v["mlp_ratio"], act=act)]


class NASViTStage(PlainViTStage):
    """NASViT's transformer stage: the same layout with talking-heads attention and a double MLP."""

    attention, mlp = "nasvit_attn", "nasvit_ffn"


STAGE_KINDS: Registry[type[StageKind]] = Registry("stage kind", "latencykit.stage_kinds")
"""Stage kind name (a space file's `kind`) -> StageKind subclass."""
for _name, _kind in {"mbconv": MBConvStage, "mvit": MobileViTStage, "mbblock": MobileBlockStage,
                     "vit": PlainViTStage, "nasvit": NASViTStage}.items():
    STAGE_KINDS.add(_name, _kind)


# ----- the space ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchSpace:
    name: str
    resolution: tuple[int, ...]
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec
    act: str = "swish"
    description: str = ""
    notes: tuple[str, ...] = ()
    paper: dict = field(default_factory=dict, compare=False, hash=False)
    digest: str = ""
    named_archs: dict[str, Arch] = field(default_factory=dict, compare=False, hash=False)
    """Published architectures of the space by name (the space file's `named`), e.g. NASViT-A1 as 'A1'."""

    # -- loading -----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict, origin: str = "<dict>") -> "SearchSpace":
        try:
            stages = tuple(StageSpec(**{k: _tuple(v) for k, v in s.items()}) for s in data["stages"])
            space = cls(
                name=data["name"],
                resolution=tuple(sorted(data["resolution"])),
                stem=StemSpec(**{k: _tuple(v) for k, v in data["stem"].items()}),
                stages=tuple(_sorted_stage(s) for s in stages),
                head=HeadSpec(**data.get("head", {})),
                act=data.get("act", "swish"),
                description=data.get("description", ""),
                notes=tuple(data.get("notes", ())),
                paper=data.get("paper", {}),
                digest=hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16],
                named_archs={name: Arch.from_dict(a) for name, a in data.get("named", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LatencykitError(f"space file {origin} is malformed: {type(exc).__name__}: {exc}") from None
        space._check(origin)
        for name, arch in space.named_archs.items():
            try:
                space.validate(arch)
            except ArchitectureError as exc:
                raise LatencykitError(f"space file {origin}: named architecture {name!r}: {exc}") from None
        return space

    def _check(self, origin: str) -> None:
        seen_optional = False
        for i, st in enumerate(self.stages):
            if st.kind not in STAGE_KINDS:
                raise LatencykitError(f"space file {origin}: stage {st.name} has unknown kind {st.kind!r}")
            missing = [f for f in STAGE_KINDS.get(st.kind).required if not getattr(st, f)]
            if missing:
                raise LatencykitError(f"space file {origin}: stage {st.name} lists no {', '.join(missing)}")
            if seen_optional and not st.optional:
                raise LatencykitError(f"space file {origin}: only trailing stages may be optional")
            seen_optional |= st.optional
            if st.tie_width and (st.optional or (i and self.stages[i - 1].optional)):
                raise LatencykitError(f"space file {origin}: stage {st.name} ties its width; it and the stage "
                                      "before it must not be optional")
        total = self.stem.stride * math.prod(s.stride for s in self.stages)
        exact = any(STAGE_KINDS.get(s.kind).needs_exact_hw for s in self.stages)
        for r in self.resolution:
            if exact and r % total:
                raise LatencykitError(f"space file {origin}: resolution {r} is not divisible by {total}")
            odd = [st.name for i, st in enumerate(self.stages)
                   if STAGE_KINDS.get(st.kind).even_maps and self.stage_hw(r, i) % st.stride]
            if odd:
                raise LatencykitError(f"space file {origin}: resolution {r} gives stage {odd[0]} an odd map")

    # -- genes ---------------------------------------------------------------------------------------
    @cached_property
    def genes(self) -> tuple[Gene, ...]:
        genes = [Gene("resolution", self.resolution), Gene("stem", self.stem.widths)]
        for st in self.stages:
            if not st.tie_width:
                genes.append(Gene(f"{st.name}.width", st.widths))
            genes.append(Gene(f"{st.name}.depth", ((0,) if st.optional else ()) + st.depths))
            for j in range(max(st.depths)):
                genes += [Gene(f"{st.name}.{f}[{j}]", getattr(st, f)) for f in st.layer_fields]
        if len(self.head.hidden) > 1:
            genes.append(Gene("head.hidden", self.head.hidden))
        return tuple(genes)

    @cached_property
    def gene_index(self) -> dict[str, int]:
        return {g.name: i for i, g in enumerate(self.genes)}

    def width_gene(self, i: int) -> str:
        """Name of the gene that sets stage i's width (an earlier stage's, or the stem's, when tied)."""
        while i >= 0 and self.stages[i].tie_width:
            i -= 1
        return "stem" if i < 0 else f"{self.stages[i].name}.width"

    @cached_property
    def cardinality(self) -> np.ndarray:
        return np.array([len(g.choices) for g in self.genes], dtype=np.int64)

    def encode(self, arch: Arch) -> np.ndarray:
        """Gene vector of a valid architecture (unused genes are 0)."""
        self.validate(arch)
        gi, out = self.gene_index, np.zeros(len(self.genes), dtype=np.int64)

        def put(name: str, value: object) -> None:
            out[gi[name]] = self.genes[gi[name]].choices.index(value)

        put("resolution", arch.resolution)
        put("stem", arch.stem)
        for st, sa in zip(self.stages, arch.stages):
            if not st.tie_width:
                put(f"{st.name}.width", sa.width)
            put(f"{st.name}.depth", sa.depth)
            for f in st.layer_fields:
                for j, value in enumerate(getattr(sa, f)):
                    put(f"{st.name}.{f}[{j}]", value)
        if "head.hidden" in gi:
            put("head.hidden", arch.head)
        return out

    def decode(self, genes: Sequence[int]) -> Arch:
        values = [g.choices[int(i)] for g, i in zip(self.genes, genes)]
        gi = self.gene_index
        stages = []
        for i, st in enumerate(self.stages):
            depth = values[gi[f"{st.name}.depth"]]
            if depth == 0:
                break
            per_layer = {f: tuple(values[gi[f"{st.name}.{f}[{j}]"]] for j in range(depth))
                         for f in st.layer_fields}
            stages.append(StageArch(values[gi[self.width_gene(i)]], depth, **per_layer))
        return Arch(values[0], values[1], tuple(stages), values[gi["head.hidden"]] if "head.hidden" in gi else 0)

    def canonical(self, genes: np.ndarray) -> np.ndarray:
        """Zero the genes an architecture does not use, so equal architectures have equal genes."""
        genes = np.array(genes, dtype=np.int64, copy=True)
        single = genes.ndim == 1
        g2 = np.atleast_2d(genes)
        present = np.ones(len(g2), dtype=bool)
        gi = self.gene_index
        for st in self.stages:
            dgene = gi[f"{st.name}.depth"]
            depth = np.asarray(self.genes[dgene].choices)[g2[:, dgene]]
            if st.optional:
                present &= depth > 0
                g2[~present, dgene] = 0
                g2[~present, gi[f"{st.name}.width"]] = 0
            for j in range(max(st.depths)):
                used = present & (depth > j)
                for f in st.layer_fields:
                    g2[~used, gi[f"{st.name}.{f}[{j}]"]] = 0
        return g2[0] if single else g2

    # -- slots ---------------------------------------------------------------------------------------
    def stage_hw(self, resolution: int, i: int) -> int:
        """Input resolution of stage i (after the stem and every earlier stage; odd maps round down)."""
        return resolution // self.stem.stride // math.prod(s.stride for s in self.stages[:i])

    @cached_property
    def slots(self) -> tuple[Slot, ...]:
        act = self.act
        optional = [st for st in self.stages if st.optional]

        def present(v: dict, i: int) -> bool:
            return all(v[f"{s.name}.depth"] > 0 for s in self.stages[: i + 1] if s.optional)

        slots = [self._slot("stem", ["resolution", "stem"], lambda v: [
            LayerSpec("stem", v["resolution"], 3, v["stem"], stride=self.stem.stride,
                      kernel=self.stem.kernel, act=act)])]
        for i, st in enumerate(self.stages):
            kind = STAGE_KINDS.get(st.kind)
            prev = self.width_gene(i - 1)
            pres = [f"{s.name}.depth" for s in self.stages[: i + 1] if s.optional]
            w, d = self.width_gene(i), f"{st.name}.depth"

            def pre(v: dict, i: int = i, st: StageSpec = st, kind=kind, prev=prev, w=w) -> list:
                if not present(v, i):
                    return []
                return kind.pre(st, self.stage_hw(v["resolution"], i), v[prev], v[w], act)

            def post(v: dict, i: int = i, st: StageSpec = st, kind=kind, w=w) -> list:
                if not present(v, i):
                    return []
                return kind.post(st, self.stage_hw(v["resolution"], i), v[w], act)

            slots.append(self._slot(f"{st.name}.pre", ["resolution", prev, w, *pres], pre))
            for j in range(max(st.depths)):
                fields_j = [f"{st.name}.{f}[{j}]" for f in st.layer_fields]
                deps = ["resolution", w, d, *fields_j, *pres]
                if j == 0 and kind.first_layer_takes_cin:
                    deps.insert(1, prev)

                def layer(v: dict, i: int = i, j: int = j, st: StageSpec = st, kind=kind, prev=prev,
                          w=w, d=d, fields_j=fields_j) -> list:
                    if not present(v, i) or v[d] <= j:
                        return []
                    choice = {f: v[n] for f, n in zip(st.layer_fields, fields_j)}
                    cin = v[prev] if prev in v else v[w]
                    out = kind.layer(st, j, self.stage_hw(v["resolution"], i), cin, v[w], choice, act)
                    return list(out) if isinstance(out, (list, tuple)) else [out]

                slots.append(self._slot(f"{st.name}.layer{j}", deps, layer))
            slots.append(self._slot(f"{st.name}.post", ["resolution", w, *pres], post))

        last_fixed = max(i for i, st in enumerate(self.stages) if not st.optional)
        tail = list(range(last_fixed, len(self.stages)))
        head_deps = ["resolution", *[self.width_gene(i) for i in tail],
                     *[f"{st.name}.depth" for st in optional], *[g.name for g in self.genes if g.name == "head.hidden"]]

        def head(v: dict) -> list:
            last = max(i for i in tail if present(v, i))
            return [LayerSpec(self.head.kind, self.stage_hw(v["resolution"], last + 1), v[self.width_gene(last)],
                              self.head.classes, expand=self.head.expand,
                              hidden=v.get("head.hidden", self.head.hidden[0]), act=act)]

        slots.append(self._slot("head", head_deps, head))
        return tuple(s for s in slots if any(s.layers))

    def _slot(self, name: str, deps: list[str], emit: Callable[[dict], list[LayerSpec]]) -> Slot:
        deps = list(dict.fromkeys(deps))
        idx = tuple(self.gene_index[n] for n in deps)
        choices = [self.genes[i].choices for i in idx]
        layers = tuple(tuple(emit(dict(zip(deps, combo)))) for combo in itertools.product(*choices))
        return Slot(name, idx, tuple(len(c) for c in choices), layers)

    @cached_property
    def _gather(self) -> tuple[tuple[tuple[int, ...], tuple[int, ...], int], ...]:
        """Per slot: its gene indices, their C-order strides and the slot's offset in a flat values array."""
        terms, total = [], 0
        for slot in self.slots:
            strides = tuple(int(x) for x in np.cumprod((slot.dims[1:] + (1,))[::-1])[::-1])
            terms.append((slot.deps, strides, total))
            total += len(slot.layers)
        return tuple(terms)

    def slot_values(self, value: Callable[[LayerSpec], float]) -> np.ndarray:
        """One flat array: for every slot and gene combination, the sum of `value` over its layers."""
        return np.array([sum(value(l) for l in layers) for slot in self.slots for layers in slot.layers],
                        dtype=np.float64)

    def slot_index(self, genes: np.ndarray) -> np.ndarray:
        """(slots, n) indices into `slot_values` arrays for a batch of gene rows.

        Slot-major with one pass per gene a slot depends on: about 20x faster than a dense
        genes-by-slots matrix product, since each slot reads only a handful of genes.
        """
        gt = np.ascontiguousarray(np.atleast_2d(genes).T, dtype=np.int64)
        out = np.empty((len(self.slots), gt.shape[1]), dtype=np.int64)
        for row, (deps, strides, offset) in zip(out, self._gather):
            row.fill(offset)
            for gene, stride in zip(deps, strides):
                row += gt[gene] * stride
        return out

    def evaluate(self, values: np.ndarray, genes: np.ndarray) -> np.ndarray:
        """Vectorised sum over slots: `values` from `slot_values`, one result per gene row."""
        return values[self.slot_index(genes)].sum(axis=0)

    # -- what a user asks of a space ----------------------------------------------------------------
    def layers(self, arch: Arch) -> list[LayerSpec]:
        """The architecture's layers in network order."""
        flat = self.slot_index(self.encode(arch))[:, 0]
        out: list[LayerSpec] = []
        for index, slot, (_, _, offset) in zip(flat, self.slots, self._gather):
            out.extend(slot.layers[index - offset])
        return out

    def distinct_layers(self) -> list[LayerSpec]:
        """Every distinct layer any architecture of the space contains, in a stable order."""
        seen: dict[LayerSpec, None] = {}
        for slot in self.slots:
            for layers in slot.layers:
                seen.update(dict.fromkeys(layers))
        return list(seen)

    def params(self, arch: Arch) -> int:
        return sum(l.params for l in self.layers(arch))

    def flops(self, arch: Arch) -> int:
        """Multiply-accumulates of one inference (see latencykit.layers for the convention)."""
        return sum(l.flops for l in self.layers(arch))

    @cached_property
    def params_values(self) -> np.ndarray:
        return self.slot_values(lambda l: l.params)

    @cached_property
    def flops_values(self) -> np.ndarray:
        return self.slot_values(lambda l: l.flops)

    def sample_genes(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """`n` random architectures as canonical gene rows (uniform per decision)."""
        rng = np.random.default_rng(rng)
        return self.canonical(rng.integers(0, self.cardinality, size=(n, len(self.genes))))

    def sample(self, seed: int | np.random.Generator | None = None) -> Arch:
        return self.decode(self.sample_genes(1, seed)[0])

    def smallest(self) -> Arch:
        return self.decode(np.zeros(len(self.genes), dtype=np.int64))

    def largest(self) -> Arch:
        return self.decode(self.cardinality - 1)

    def size(self) -> int:
        """Exact number of distinct architectures."""
        def stage_count(st: StageSpec) -> int:
            per_layer = math.prod(len(getattr(st, f)) for f in st.layer_fields)
            return (1 if st.tie_width else len(st.widths)) * sum(per_layer**d for d in st.depths)

        tail = 1
        for st in reversed(self.stages):
            tail = stage_count(st) * tail + (1 if st.optional else 0)
        return len(self.resolution) * len(self.stem.widths) * tail * len(self.head.hidden)

    def validate(self, arch: Arch) -> Arch:
        """Raise ArchitectureError naming the first offending field; return the architecture."""
        def check(name: str, value: object, choices: Iterable) -> None:
            choices = tuple(choices)
            if value not in choices:
                raise ArchitectureError(f"{self.name}: {name} = {value!r} is not one of "
                                        f"{', '.join(map(_num, choices))}")

        if not isinstance(arch, Arch):
            raise ArchitectureError(f"{self.name}: expected an Arch, got {type(arch).__name__}")
        check("resolution", arch.resolution, self.resolution)
        check("stem", arch.stem, self.stem.widths)
        fixed = sum(not s.optional for s in self.stages)
        if not fixed <= len(arch.stages) <= len(self.stages):
            raise ArchitectureError(f"{self.name}: stages has {len(arch.stages)} entries; "
                                    f"the space has {fixed} to {len(self.stages)} stages")
        for i, (st, sa) in enumerate(zip(self.stages, arch.stages)):
            check(f"{st.name}.width", sa.width, st.widths)
            if st.tie_width:
                check(f"{st.name}.width", sa.width, (arch.stages[i - 1].width if i else arch.stem,))
            check(f"{st.name}.depth", sa.depth, st.depths)
            for f in PER_LAYER_FIELDS:
                values = getattr(sa, f)
                if f not in st.layer_fields:
                    if values:
                        raise ArchitectureError(f"{self.name}: {st.name}.{f} is not searched in this stage")
                    continue
                if len(values) != sa.depth:
                    raise ArchitectureError(f"{self.name}: {st.name}.{f} has {len(values)} values "
                                            f"for depth {sa.depth}")
                for j, value in enumerate(values):
                    check(f"{st.name}.{f}[{j}]", value, getattr(st, f))
        check("head", arch.head, self.head.hidden if len(self.head.hidden) > 1 else (0, *self.head.hidden))
        return arch

    def named(self, name: str) -> Arch:
        """A published architecture of the space by name (see `named_archs`)."""
        try:
            return self.named_archs[name]
        except KeyError:
            known = ", ".join(self.named_archs) or "none"
            raise UnknownNameError(f"space {self.name!r} has no named architecture {name!r}; known: {known}") from None

    def summary(self) -> dict:
        """Size and params/FLOPs range (over the smallest and largest architectures)."""
        lo, hi = self.smallest(), self.largest()
        return {"space": self.name, "architectures": self.size(), "distinct_layers": len(self.distinct_layers()),
                "params_min": self.params(lo), "params_max": self.params(hi),
                "flops_min": self.flops(lo), "flops_max": self.flops(hi), "paper": self.paper}


def _tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _num(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _sorted_stage(st: StageSpec) -> StageSpec:
    changes = {f.name: tuple(sorted(getattr(st, f.name))) for f in fields(st)
               if isinstance(getattr(st, f.name), tuple)}
    changes.update({f: tuple(float(v) for v in changes[f]) for f in ("expand", "mlp_ratio")})
    return replace(st, **changes)


# ----- the registry of spaces ---------------------------------------------------------------------

SPACES: Registry[Callable[[], dict]] = Registry("space", "latencykit.spaces")
"""name -> a callable returning the space's definition (a dict). Plugins register the same way."""


def _builtin(path: Path) -> Callable[[], dict]:
    return lambda: json.loads(path.read_text())


for _path in sorted(Path(str(resources.files("latencykit") / "spaces")).glob("*.json")):
    SPACES.add(_path.stem, _builtin(_path))


SPACE_TYPES: Registry[str] = Registry("space type", "latencykit.space_types")
"""A space file's `type` -> the dotted path of its SearchSpace class (imported on first use);
files without a type list stages (SearchSpace)."""
SPACE_TYPES.add("cell", "latencykit.cellspace:CellSpace")


def space_from_dict(data: dict, origin: str) -> SearchSpace:
    """A space from its definition, built by the class its `type` names."""
    kind = data.get("type") if isinstance(data, dict) else None
    cls = SearchSpace if kind is None else load_object(SPACE_TYPES.get(str(kind)))
    return cls.from_dict(data, origin)


_CACHE: dict[str, SearchSpace] = {}


def load_space(name: str) -> SearchSpace:
    """A registered space by name, or a space file by path."""
    if name in _CACHE:
        return _CACHE[name]
    path = Path(name)
    if name.endswith(".json") and not path.exists():
        raise LatencykitError(f"no space file {path}")
    if name.endswith(".json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LatencykitError(f"cannot read space file {path}: {exc}") from None
        space = space_from_dict(data, str(path))
    else:
        space = space_from_dict(SPACES.get(name)(), name)
    _CACHE[name] = space
    return space
