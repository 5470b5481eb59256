"""Calibrating a table on whole subnets: which subnets to measure, and how to fit per-group coefficients.

A table's entries are measured layer by layer; inside a network some kinds of layer cost a little more
or less (cache state, fused kernels, memory layout). A few whole subnets measured in the same rounds as
the table fit one coefficient per layer group and an intercept:

    measured = intercept + sum_g c_g * (table entries of group g)

regularised toward c_g = 1 (ridge on c - 1, strength chosen by leave-one-out cross-validation), so
with little or collinear data the coefficients stay near 1 and physical (never negative), and a group
moves away from 1 only when the measurements say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

from latencykit.arch import Arch
from latencykit.space import SearchSpace

ALPHAS = tuple(float(a) for a in np.logspace(-4, 3, 29))
"""Ridge strengths tried, relative to the number of subnets (features divided by the mean table sum)."""
SELECTION = "smallest, largest, then random subnets nearest to evenly spaced FLOPs between them"


def select_calibration(space: SearchSpace, n: int, seed: int = 0, pool: int = 40) -> list[Arch]:
    """`n` distinct subnets spanning the space: the smallest, the largest, then for evenly spaced
    FLOPs targets between them the nearest unused subnet among `pool * n` seeded random ones."""
    if n <= 0:
        return []
    ends = [space.smallest(), space.largest()][:n]
    rng = np.random.default_rng(seed)
    genes = space.canonical(space.sample_genes(pool * n, rng))
    flops = space.evaluate(space.flops_values, genes).astype(float)
    lo, hi = (float(space.flops(a)) for a in (space.smallest(), space.largest()))
    chosen = list(dict.fromkeys(ends))
    used: set[int] = set()
    for target in np.linspace(lo, hi, n - len(chosen) + 2)[1:-1]:
        for i in np.argsort(np.abs(flops - target), kind="stable"):
            arch = space.decode(genes[i])
            if i not in used and arch not in chosen:
                used.add(int(i))
                chosen.append(arch)
                break
    return chosen


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


def _solve(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge of y - X.sum(1) on X with a free intercept; c = 1 + d >= 0.

    Every column is divided by the same scale (the mean table sum), so the penalty is on the
    coefficients themselves: a small group (the head) cannot drift to 0 for free."""
    n, g = X.shape
    scale = np.full(g, max(float(X.sum(1).mean()), 1e-12))
    Z = X / scale
    target = y - X.sum(1)
    A = np.vstack([np.column_stack([np.ones(n), Z]),
                   np.column_stack([np.zeros(g), np.sqrt(alpha * n) * np.eye(g)])])
    b = np.concatenate([target, np.zeros(g)])
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    e = sol[1:]
    if np.any(e / scale < -1):  # a coefficient would go negative: solve with the bound c >= 0
        lower = np.concatenate([[-np.inf], -scale])
        sol = lsq_linear(A, b, bounds=(lower, np.full(g + 1, np.inf))).x
    return 1.0 + sol[1:] / scale, float(sol[0])


def fit_group_coefficients(X: np.ndarray, y: np.ndarray, alphas: tuple[float, ...] = ALPHAS) -> GroupFit:
    """Fit measured = intercept + sum_g c_g X_g, ridge-regularised toward c_g = 1.

    X: (n, groups) per-group table sums (ms) of n subnets; y: (n,) their measured ms. The ridge
    strength is chosen by leave-one-out cross-validation with the one-standard-error rule (the
    strongest pull toward 1 whose held-out error is within one standard error of the lowest), so a
    coefficient leaves 1 only on clear evidence; the held-out RMSPE at that strength is reported.
    """
    X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
    if X.ndim != 2 or y.shape != (len(X),):
        raise ValueError(f"X must be (n, groups) and y (n,); got {X.shape} and {y.shape}")
    if len(y) < 3:
        raise ValueError(f"calibration needs at least 3 measured subnets, got {len(y)}")
    keep = X.sum(0) > 0  # a group no subnet uses keeps its coefficient 1
    Xk = X[:, keep]
    squared = np.empty((len(alphas), len(y)))  # held-out squared relative errors, per strength
    for a, alpha in enumerate(alphas):
        for i in range(len(y)):
            mask = np.arange(len(y)) != i
            c, b = _solve(Xk[mask], y[mask], alpha)
            squared[a, i] = ((b + Xk[i] @ c - y[i]) / y[i]) ** 2
    mean = squared.mean(1)
    best = int(np.argmin(mean))
    # the strongest pull toward 1 whose held-out error is within one standard error of the best
    tolerance = mean[best] + squared[best].std() / np.sqrt(len(y))
    chosen = max((a for a in range(len(alphas)) if mean[a] <= tolerance), key=lambda a: alphas[a])
    alpha = alphas[chosen]
    rmspe = float(np.sqrt(mean[chosen]) * 100)
    c, b = _solve(Xk, y, alpha)
    coefficients = np.ones(X.shape[1])
    coefficients[keep] = c
    return GroupFit(coefficients, b, alpha, rmspe, len(y))
