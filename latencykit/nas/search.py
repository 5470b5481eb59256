"""Latency- and params-constrained search (AutoViT Algorithm 2) and its baselines.

Coarse stage: sample many architectures as gene rows, score latency (through a device's table),
params and FLOPs in one vectorised pass, keep those within every budget and take the top K as
skeletons: the ones that use the budget most fully, since a bigger subnet within budget is the
better bet before any accuracy is known. No accuracy is evaluated here.

Fine stage: an evolutionary search seeded with the skeletons. Each generation takes the best
`parents` evaluated so far, makes children by crossover (uniform per gene between two parents)
and mutation (each depth gene re-drawn with probability `p_depth`, every other gene with
`p_layer`), keeps only children within every budget and not seen before, and evaluates their
accuracy signal. Every loop is bounded: child generation gives up after `tries` batches, and an
infeasible budget raises at once with the smallest latency and params the space reaches.

Baselines under the same number of accuracy evaluations: `evolution` (the same loop seeded with
random feasible architectures, mutation 0.1 per choice as in AutoViT's Table 8 comparison) and
`random` (feasible random architectures only).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np

from latencykit.arch import Arch
from latencykit.errors import LatencykitError
from latencykit.space import SearchSpace

LatencyFn = Callable[[np.ndarray], np.ndarray]
METHODS = ("coarse-to-fine", "evolution", "random")
SKELETON_RANKS = ("fullness", "params", "flops")
# Sampling sizes inside the loops: how many random rows one draw takes, how many rows an infeasible-budget
# message is computed over, how many children are drawn to find k new feasible ones, and how many
# generations in a row may find nothing new before the evolution stops.
RANDOM_DRAW = 4096
SEED_DRAW = 1024
FLOOR_ROWS = 256
CHILD_DRAW_FACTOR, CHILD_DRAW_EXTRA = 4, 8  # 4k + 8 candidates for k children
MAX_STALLS = 3


@dataclass(frozen=True)
class Budget:
    """Upper bounds; None leaves a quantity free."""

    latency_ms: Optional[float] = None
    params: Optional[float] = None
    flops: Optional[float] = None

    def describe(self) -> str:
        parts = []
        if self.latency_ms is not None:
            parts.append(f"latency <= {self.latency_ms:g} ms")
        if self.params is not None:
            parts.append(f"params <= {self.params / 1e6:g} M")
        if self.flops is not None:
            parts.append(f"FLOPs <= {self.flops / 1e6:g} M")
        return ", ".join(parts) or "no budget"


@dataclass(frozen=True)
class SearchConfig:
    method: str = "coarse-to-fine"
    coarse_samples: int = 20_000
    population: int = 50
    generations: int = 20
    parents: int = 10
    p_depth: float = 0.2
    p_layer: float = 0.4
    crossover: float = 0.5  # share of each generation's children made by crossover
    evolution_p: float = 0.1  # per-choice mutation probability of the plain-evolution baseline
    tries: int = 20  # candidate batches per generation before it gives up looking
    evaluations: int = 0  # accuracy evaluations in all; 0: population x (generations + 1)
    skeleton_pool: float = 0.0  # > 0: draw the skeletons at random from this top share by budget use
    skeleton_rank: str = "fullness"  # what orders the coarse stage's feasible rows: fullness (paper), params, flops
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LatencykitError(f"unknown search method {self.method!r}; known: {', '.join(METHODS)}")
        if self.parents < 1 or self.population < 1 or self.generations < 0:
            raise LatencykitError("search needs population >= 1, parents >= 1 and generations >= 0")
        if self.skeleton_rank not in SKELETON_RANKS:
            raise LatencykitError(f"unknown skeleton ranking {self.skeleton_rank!r}; known: {', '.join(SKELETON_RANKS)}")

    @property
    def max_evaluations(self) -> int:
        return self.evaluations or self.population * (self.generations + 1)


class Constraints:
    """Latency (from a predictor), params and FLOPs of gene rows, vectorised; counts table evaluations."""

    def __init__(self, space: SearchSpace, budget: Budget, latency: LatencyFn | None = None) -> None:
        if budget.latency_ms is not None and latency is None:
            raise LatencykitError("a latency budget needs a latency table for the device")
        self.space, self.budget, self.latency = space, budget, latency
        self.table_evaluations = 0

    def metrics(self, genes: np.ndarray) -> dict[str, np.ndarray]:
        genes = np.atleast_2d(genes)
        out = {"params": self.space.evaluate(self.space.params_values, genes),
               "flops": self.space.evaluate(self.space.flops_values, genes)}
        if self.latency is not None:
            out["latency_ms"] = np.asarray(self.latency(genes), dtype=float)
            self.table_evaluations += len(genes)
        return out

    def feasible(self, genes: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        m = self.metrics(genes)
        ok = np.ones(len(m["params"]), dtype=bool)
        for key, limit in (("latency_ms", self.budget.latency_ms), ("params", self.budget.params),
                           ("flops", self.budget.flops)):
            if limit is not None:
                ok &= m[key] <= limit  # NaN (a layer missing from the table) is never feasible
        return ok, m

    def fullness(self, m: dict[str, np.ndarray]) -> np.ndarray:
        """How fully each row uses its budget: the largest value / limit over the bounded quantities."""
        parts = [m[k] / v for k, v in (("latency_ms", self.budget.latency_ms), ("params", self.budget.params),
                                       ("flops", self.budget.flops)) if v]
        return np.max(parts, axis=0) if parts else m["params"]

    def floor(self, samples: np.ndarray, device: str) -> LatencykitError:
        """The error for an infeasible budget: the smallest latency and params the space reaches."""
        rows = np.vstack([np.zeros(len(self.space.genes), dtype=np.int64), samples])
        m = self.metrics(rows)
        parts = [f"the smallest params are {np.nanmin(m['params']) / 1e6:.3g} M",
                 f"the smallest FLOPs {np.nanmin(m['flops']) / 1e6:.4g} M"]
        if "latency_ms" in m:
            parts.insert(0, f"the smallest latency {self.space.name} reaches on {device} is "
                            f"{np.nanmin(m['latency_ms']):.3g} ms (predicted)")
        return LatencykitError(f"no architecture meets {self.budget.describe()}: " + "; ".join(parts))


@dataclass
class Candidate:
    arch: Arch
    latency_ms: float
    params: int
    flops: int
    score: float
    stage: str

    def to_dict(self) -> dict:
        return {"arch": self.arch.to_dict(), "latency_ms": self.latency_ms, "params": self.params,
                "flops": self.flops, "score": self.score, "stage": self.stage}


@dataclass
class StageStats:
    name: str
    seconds: float
    table_evaluations: int
    accuracy_evaluations: int
    kept: int


@dataclass
class SearchResult:
    space: str
    device: str
    method: str
    budget: Budget
    signal: str
    signal_kind: str
    best: Candidate
    evaluated: list[Candidate]
    stages: list[StageStats] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    @property
    def accuracy_evaluations(self) -> int:
        return len(self.evaluated)

    def pareto(self) -> list[Candidate]:
        """Evaluated candidates no other beats on both score (higher) and latency (lower)."""
        key = (lambda c: c.latency_ms) if not np.isnan(self.best.latency_ms) else (lambda c: c.flops)
        front, best = [], -np.inf
        for c in sorted(self.evaluated, key=lambda c: (key(c), -c.score)):
            if c.score > best:
                front.append(c)
                best = c.score
        return front

    def to_dict(self) -> dict:
        return {"space": self.space, "device": self.device, "method": self.method, "budget": asdict(self.budget),
                "signal": self.signal, "signal_kind": self.signal_kind, "latency": "predicted",
                "best": self.best.to_dict(), "accuracy_evaluations": self.accuracy_evaluations,
                "stages": [asdict(s) for s in self.stages], "config": self.config,
                "pareto": [c.to_dict() for c in self.pareto()]}


class _Search:
    """One run's state: constraints, RNG, the archive of evaluated rows and the stage bookkeeping."""

    def __init__(self, space: SearchSpace, constraints: Constraints, score: Callable[[Arch], float],
                 config: SearchConfig, device: str) -> None:
        self.space, self.c, self.score_fn, self.config, self.device = space, constraints, score, config, device
        self.rng = np.random.default_rng(config.seed)
        self.seen: set[bytes] = set()
        self.evaluated: list[Candidate] = []
        self.rows: list[np.ndarray] = []
        self.stages: list[StageStats] = []
        self.depth_genes = np.array([g.name.endswith(".depth") for g in space.genes])

    # -- bookkeeping -----------------------------------------------------------------------------
    def _stage(self, name: str, t0: float, tables0: int, evals0: int, kept: int) -> None:
        self.stages.append(StageStats(name, time.perf_counter() - t0, self.c.table_evaluations - tables0,
                                      len(self.evaluated) - evals0, kept))

    def _budget_left(self) -> int:
        return self.config.max_evaluations - len(self.evaluated)

    def _new_feasible(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The feasible rows not seen before, deduplicated, in their order."""
        rows = self.space.canonical(rows)
        ok, m = self.c.feasible(rows)
        keep, keys = [], set()
        for i in np.flatnonzero(ok):
            k = rows[i].tobytes()
            if k not in self.seen and k not in keys:
                keys.add(k)
                keep.append(i)
        idx = np.array(keep, dtype=np.int64)
        return rows[idx], {k: v[idx] for k, v in m.items()}

    def evaluate(self, rows: np.ndarray, m: dict[str, np.ndarray], stage: str) -> None:
        """Score a batch at once (`score.many` where the scorer has it: cached, threaded), then record it."""
        rows = rows[: self._budget_left()]
        archs = [self.space.decode(row) for row in rows]
        many = getattr(self.score_fn, "many", None)
        scores = many(archs) if many else [self.score_fn(a) for a in archs]
        for i, (row, arch, score) in enumerate(zip(rows, archs, scores)):
            self.seen.add(row.tobytes())
            lat = float(m["latency_ms"][i]) if "latency_ms" in m else float("nan")
            self.evaluated.append(Candidate(arch, lat, int(m["params"][i]), int(m["flops"][i]), float(score), stage))
            self.rows.append(row)

    # -- generators --------------------------------------------------------------------------------
    def random_feasible(self, n: int, samples: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Up to `n` distinct feasible random rows, drawing at most `samples` x tries rows."""
        found: list[np.ndarray] = []
        metrics: list[dict] = []
        drawn = []
        for _ in range(self.config.tries):
            rows = self.space.sample_genes(samples, self.rng)
            drawn.append(rows[:FLOOR_ROWS])
            new, m = self._new_feasible(rows)
            for k in new:
                self.seen.add(k.tobytes())
            found.append(new)
            metrics.append(m)
            if sum(len(f) for f in found) >= n:
                break
        rows = np.vstack(found)
        for k in rows:
            self.seen.discard(k.tobytes())
        m = {k: np.concatenate([x[k] for x in metrics]) for k in metrics[0]}
        if not len(rows):  # random draws miss a budget only the smallest subnets meet: start from the smallest
            if not self._smallest_feasible():
                raise self.c.floor(np.vstack(drawn), self.device)
            rows, m = self._new_feasible(np.zeros((1, len(self.space.genes)), dtype=np.int64))
        return rows, m

    def _smallest_feasible(self) -> bool:
        return bool(self.c.feasible(np.zeros((1, len(self.space.genes)), dtype=np.int64))[0][0])

    def mutate(self, parents: np.ndarray, n: int, p_depth: float, p_layer: float) -> np.ndarray:
        rows = parents[self.rng.integers(0, len(parents), n)].copy()
        p = np.where(self.depth_genes, p_depth, p_layer)
        hit = self.rng.random(rows.shape) < p
        # a re-drawn gene takes another value than it had (when there is one)
        card = self.space.cardinality
        shift = self.rng.integers(1, np.maximum(card, 2), size=rows.shape)
        redrawn = np.where(card > 1, (rows + shift) % card, rows)
        return np.where(hit, redrawn, rows)

    def crossover(self, parents: np.ndarray, n: int) -> np.ndarray:
        a = parents[self.rng.integers(0, len(parents), n)]
        b = parents[self.rng.integers(0, len(parents), n)]
        return np.where(self.rng.random(a.shape) < 0.5, a, b)

    def children(self, parents: np.ndarray, n: int, p_depth: float, p_layer: float) -> tuple[np.ndarray, dict]:
        n_cross = int(round(n * self.config.crossover)) if len(parents) > 1 else 0
        got: list[np.ndarray] = []
        metrics: list[dict] = []
        need = {"crossover": n_cross, "mutation": n - n_cross}
        for _ in range(self.config.tries):
            for kind, k in need.items():
                if k <= 0:
                    continue
                batch = CHILD_DRAW_FACTOR * k + CHILD_DRAW_EXTRA
                rows = (self.crossover(parents, batch) if kind == "crossover"
                        else self.mutate(parents, batch, p_depth, p_layer))
                new, m = self._new_feasible(rows)
                new, m = new[:k], {key: v[:k] for key, v in m.items()}
                for r in new:
                    self.seen.add(r.tobytes())
                need[kind] -= len(new)
                got.append(new)
                metrics.append(m)
            if all(k <= 0 for k in need.values()):
                break
        rows = np.vstack(got) if got else np.zeros((0, len(self.space.genes)), dtype=np.int64)
        for r in rows:
            self.seen.discard(r.tobytes())
        m = {k: np.concatenate([x[k] for x in metrics]) for k in metrics[0]} if metrics else {}
        return rows, m

    def parents(self) -> np.ndarray:
        order = np.argsort([-c.score for c in self.evaluated], kind="stable")[: self.config.parents]
        return np.stack([self.rows[i] for i in order])

    # -- the three methods ---------------------------------------------------------------------------
    def coarse(self) -> tuple[np.ndarray, dict]:
        t0, tables0 = time.perf_counter(), self.c.table_evaluations
        cfg = self.config
        rows, m = self._new_feasible(self.space.sample_genes(cfg.coarse_samples, self.rng))
        if not len(rows):
            if not self._smallest_feasible():
                raise self.c.floor(self.space.sample_genes(min(cfg.coarse_samples, RANDOM_DRAW), self.rng), self.device)
            rows, m = self._new_feasible(np.zeros((1, len(self.space.genes)), dtype=np.int64))
        rank = self.c.fullness(m) if cfg.skeleton_rank == "fullness" else m[cfg.skeleton_rank]
        order = np.argsort(-rank, kind="stable")
        if cfg.skeleton_pool > 0:  # diversity: a random draw from the fullest share instead of the very top
            pool = order[: max(cfg.population, int(len(order) * cfg.skeleton_pool))]
            top = self.rng.choice(pool, size=min(cfg.population, len(pool)), replace=False)
        else:
            top = order[: cfg.population]
        rows, m = rows[top], {k: v[top] for k, v in m.items()}
        if len(rows) < cfg.population:  # few feasible: fill with feasible mutants of what there is, not copies
            self.seen.update(r.tobytes() for r in rows)
            more, mm = self.children(rows, cfg.population - len(rows), cfg.p_depth, cfg.p_layer)
            self.seen.difference_update(r.tobytes() for r in rows)
            rows = np.vstack([rows, more])
            m = {k: np.concatenate([m[k], mm[k]]) for k in m} if len(more) else m
        self._stage("coarse", t0, tables0, 0, len(rows))
        return rows, m

    def evolve(self, rows: np.ndarray, m: dict, p_depth: float, p_layer: float, first: str) -> None:
        cfg = self.config
        t0, tables0, evals0 = time.perf_counter(), self.c.table_evaluations, len(self.evaluated)
        self.evaluate(rows, m, first)
        self._stage(first, t0, tables0, evals0, len(rows))
        t0, tables0, evals0 = time.perf_counter(), self.c.table_evaluations, len(self.evaluated)
        # `generations` ends the loop, unless an explicit evaluation count asks for more (baselines at
        # equal evaluations); then it ends there, after MAX_STALLS generations finding nothing new, or at 10x.
        stalls, g = 0, 0
        while self._budget_left() > 0 and stalls < MAX_STALLS and g < (10 * cfg.generations + 10 if cfg.evaluations
                                                              else cfg.generations):
            g += 1
            kids, km = self.children(self.parents(), min(cfg.population, self._budget_left()), p_depth, p_layer)
            stalls = 0 if len(kids) else stalls + 1  # none: the neighbourhood has nothing new within budget
            if len(kids):
                self.evaluate(kids, km, f"generation {g}")
        self._stage("evolution", t0, tables0, evals0, len(self.evaluated) - evals0)

    def random(self) -> None:
        t0, tables0 = time.perf_counter(), self.c.table_evaluations
        rows, m = self.random_feasible(self.config.max_evaluations, RANDOM_DRAW)
        self.evaluate(rows, m, "random")
        self._stage("random", t0, tables0, 0, len(self.evaluated))

    def run(self) -> None:
        cfg = self.config
        if cfg.method == "coarse-to-fine":
            rows, m = self.coarse()
            self.evolve(rows, m, cfg.p_depth, cfg.p_layer, "skeletons")
        elif cfg.method == "evolution":
            t0, tables0 = time.perf_counter(), self.c.table_evaluations
            rows, m = self.random_feasible(cfg.population, SEED_DRAW)
            rows, m = rows[: cfg.population], {k: v[: cfg.population] for k, v in m.items()}
            self._stage("initial population", t0, tables0, 0, len(rows))
            self.evolve(rows, m, cfg.evolution_p, cfg.evolution_p, "random seeds")
        else:
            self.random()


def search(space: SearchSpace, score: Callable[[Arch], float], budget: Budget,
           latency: LatencyFn | None = None, config: SearchConfig = SearchConfig(), device: str = "-",
           signal: str = "-", signal_kind: str = "proxy") -> SearchResult:
    """The most accurate architecture (by `score`) within `budget`; see the module docstring.

    `latency` maps gene rows to predicted ms (e.g. a fitted predictor's predict_genes); `score` maps an
    architecture to its accuracy signal (higher is better) and is called once per distinct architecture.
    """
    constraints = Constraints(space, budget, latency)
    run = _Search(space, constraints, score, config, device)
    run.run()
    if not run.evaluated:
        raise constraints.floor(space.sample_genes(SEED_DRAW, config.seed), device)
    best = max(run.evaluated, key=lambda c: c.score)
    return SearchResult(space.name, device, config.method, budget, signal, signal_kind, best, run.evaluated,
                        run.stages, asdict(config))
