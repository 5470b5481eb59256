"""Calibrating a table on whole subnets: which subnets to measure, and how to fit per-group coefficients.

A table's entries are measured layer by layer; inside a network layers cost a little more or less
(cache state, fused kernels, memory layout: benchmarks/results/composition.md). A few whole subnets measured
in the same rounds as the table fit one coefficient per layer group, an intercept and a weights term:

    measured = intercept + sum_g c_g * (table entries of group g) + w * (million parameters)

The coefficients share a free common scale c (the whole network against the sum of its layers, which
differs from 1 by several percent on a busy CPU) and each c_g is pulled toward c (ridge on c_g - c,
strength chosen by leave-one-out cross-validation): with little or collinear data the fit is one
scale for every group plus an intercept, a group leaves it only when the measurements say so, and no
coefficient goes negative.

`w` (ms per million parameters, not pulled, never negative): on subnets measured in later sessions
the fit with it erred less than without in 38 of 48 space x runtime x session cases over four runs,
one of them run after the term was chosen (mean RMSPE 2.00% vs 2.17%, benchmarks/results/calibration_rules.md); without it, the more parameters a subnet had per
table ms, the more it ran slower than predicted. Most likely
weight traffic: a layer measured alone keeps its weights cached between runs, inside a network the
other layers evict them. It is fitted, not measured: a chain of linear layers alone shows a smaller
per-parameter cost than whole subnets do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latencykit.arch import Arch
from latencykit.space import SearchSpace

ALPHAS = tuple(float(a) for a in np.logspace(-4, 3, 29))
"""Ridge strengths tried, relative to the number of subnets (features divided by the mean table sum)."""
SELECTION = ("among seeded random subnets: three in four at evenly spaced FLOPs quantiles, one in four the "
             "most parameters for its FLOPs in its FLOPs stratum; in increasing FLOPs")


def select_calibration(space: SearchSpace, n: int, seed: int = 0, pool: int = 40) -> list[Arch]:
    """`n` distinct subnets drawn from `pool * n` seeded random ones, in increasing FLOPs.

    Three in four sit at evenly spaced FLOPs quantiles: subnets like the ones users ask about, not
    the space's corners (the smallest subnet sits well off the line random subnets follow, and with
    its leverage a fit predicted random subnets low). One in four is, within its FLOPs stratum, the
    subnet with the most parameters: the kind a latency-bound search for accuracy picks (wide late
    stages, more attention), whose layers the random ones alone leave poorly calibrated: without
    them, subnets chosen by latency-bound searches measured up to 3.5% above their prediction on
    average and 53 of 60 met their budget, with them 0.6-2.6% and 57 of 60
    (benchmarks/results/robustness.md, before and after).
    """
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    genes = space.canonical(space.sample_genes(pool * n, rng))
    flops = space.evaluate(space.flops_values, genes).astype(float)
    params = space.evaluate(space.params_values, genes).astype(float)
    distinct: dict[Arch, int] = {}
    for i in np.argsort(flops, kind="stable"):
        distinct.setdefault(space.decode(genes[i]), int(i))
    archs, rows = list(distinct), np.array(list(distinct.values()))
    if len(archs) <= n:
        return archs
    dense = n // 4
    chosen = set(((np.arange(n - dense) + 0.5) / (n - dense) * len(archs)).astype(int).tolist())
    for stratum in np.array_split(np.arange(len(archs)), dense) if dense else []:
        free = [i for i in stratum if i not in chosen] or [i for i in range(len(archs)) if i not in chosen]
        chosen.add(max(free, key=lambda i: (params[rows[i]] / flops[rows[i]], -i)))
    return [archs[i] for i in sorted(chosen)]


@dataclass(frozen=True)
class GroupFit:
    """measured ms = intercept_ms + coefficients @ per-group table sums."""

    coefficients: np.ndarray
    intercept_ms: float
    alpha: float
    loo_rmspe_pct: float
    n: int

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.intercept_ms + np.atleast_2d(X) @ self.coefficients

    def to_dict(self) -> dict:
        return {"coefficients": self.coefficients.tolist(), "intercept_ms": self.intercept_ms,
                "alpha": self.alpha, "loo_rmspe_pct": self.loo_rmspe_pct, "n": self.n}

    @classmethod
    def from_dict(cls, data: dict) -> "GroupFit":
        return cls(np.asarray(data["coefficients"], dtype=float), float(data["intercept_ms"]),
                   float(data["alpha"]), float(data["loo_rmspe_pct"]), int(data["n"]))


def _solve(X: np.ndarray, y: np.ndarray, alpha: float, free: int = 0) -> tuple[np.ndarray, float]:
    """Least squares of y on an intercept and X with c_g >= 0, plus the ridge alpha * n * sum_g ((c_g - c)
    * S)^2 toward a free common scale c, S the mean table sum (so the penalty is on the coefficients
    themselves: a small group, the head, cannot drift for free). The last `free` columns of X are not
    table sums: their coefficients start from 0, are not pulled, and stay >= 0."""
    n = len(y)
    g = X.shape[1] - free
    s = max(float(X[:, :g].sum(1).mean()), 1e-12)
    # unknowns: intercept, then c - 1, then c_g - 1 for each group, then the free coefficients
    A = np.vstack([np.column_stack([np.ones(n), np.zeros(n), X]),
                   np.sqrt(alpha * n) * s * np.column_stack([np.zeros(g), -np.ones(g), np.eye(g), np.zeros((g, free))])])
    b = np.concatenate([y - X[:, :g].sum(1), np.zeros(g)])
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    lower = np.concatenate([[-np.inf, -np.inf], -np.ones(g), np.zeros(free)])
    if np.any(sol < lower):  # a coefficient would go negative: solve with the bounds
        from scipy.optimize import lsq_linear  # here: scipy costs every command half a second to import

        sol = lsq_linear(A, b, bounds=(lower, np.full(len(sol), np.inf))).x
    return np.concatenate([1.0 + sol[2:2 + g], sol[2 + g:]]), float(sol[0])


def loo_squared(X: np.ndarray, y: np.ndarray, alphas: tuple[float, ...] = ALPHAS, free: int = 0) -> np.ndarray:
    """(alphas, n): each subnet's squared relative error when fit on the others, per ridge strength."""
    squared = np.empty((len(alphas), len(y)))
    for a, alpha in enumerate(alphas):
        for i in range(len(y)):
            mask = np.arange(len(y)) != i
            c, b = _solve(X[mask], y[mask], alpha, free)
            squared[a, i] = ((b + X[i] @ c - y[i]) / y[i]) ** 2
    return squared


def fit_group_coefficients(X: np.ndarray, y: np.ndarray, alphas: tuple[float, ...] = ALPHAS,
                           free: int = 0) -> GroupFit:
    """Fit measured = intercept + sum_g c_g X_g (+ free terms), each c_g ridge-regularised toward a common scale.

    X: (n, groups + free) per-group table sums (ms) of n subnets, then `free` other columns (the weights
    term: million parameters); y: (n,) their measured ms. The ridge strength is the one with the lowest
    leave-one-out error (on ties, the strongest pull toward the common scale), and that held-out RMSPE is
    reported. The one-standard-error rule (the strongest pull within one standard error of the lowest)
    was the rule before: on subnets measured in later sessions the lowest-error rule was at least as
    accurate in 36 of 48 space x runtime x session cases (mean RMSPE 2.00% vs 2.07%,
    benchmarks/results/calibration_rules.md).
    """
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    if X.ndim != 2 or y.shape != (len(X),) or not 0 <= free < X.shape[1]:
        raise ValueError(f"X must be (n, groups + {free}) and y (n,); got {X.shape} and {y.shape}")
    if len(y) < 3:
        raise ValueError(f"calibration needs at least 3 measured subnets, got {len(y)}")
    # a group no subnet uses keeps its coefficient 1 (it never counts); an unused free term keeps 0
    keep = X.sum(0) > 0
    kept_free = int(keep[X.shape[1] - free:].sum())
    mean = loo_squared(X[:, keep], y, alphas, kept_free).mean(1)
    chosen = max((a for a in range(len(alphas)) if mean[a] <= mean.min()), key=lambda a: alphas[a])
    alpha = alphas[chosen]
    rmspe = float(np.sqrt(mean[chosen]) * 100)
    c, b = _solve(X[:, keep], y, alpha, kept_free)
    coefficients = np.concatenate([np.ones(X.shape[1] - free), np.zeros(free)])
    coefficients[keep] = c
    return GroupFit(coefficients, b, alpha, rmspe, len(y))
