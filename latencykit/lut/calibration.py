"""Calibrate a table's per-kind sums on whole models, keeping each coefficient near 1.0.

measured = intercept + sum_g c_g * X_g, where X_g is the table's entries of layer kind g summed over
a subnet. A free least-squares fit on 20 subnets and collinear kinds gives coefficients like 0.0 and
3.3 that fit those subnets and nothing else. Here the fit is a ridge on (c - 1), weighted for
relative error, with its strength chosen by leave-one-out: with little evidence it stays the plain
table sum (plus an intercept), with enough it corrects the kinds that misbehave in context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRENGTHS = np.logspace(-4, 3, 15)
"""Ridge strengths tried, relative to the mean weighted variance of the per-kind sums."""


@dataclass(frozen=True)
class CalibrationFit:
    coefficients: np.ndarray
    intercept_ms: float
    alpha: float
    loo_rmspe_pct: float
    """Leave-one-out RMSPE: the error to expect on subnets the fit did not see."""
    n: int

    def info(self) -> dict:
        return {"alpha": self.alpha, "loo_rmspe_pct": self.loo_rmspe_pct, "n": self.n}


def _solve(x: np.ndarray, r: np.ndarray, w: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weighted ridge of r on x with an unpenalised intercept: (d, b)."""
    xm, rm = w @ x / w.sum(), w @ r / w.sum()
    xc, rc = x - xm, r - rm
    d = np.linalg.solve(xc.T @ (w[:, None] * xc) + alpha * np.eye(x.shape[1]), xc.T @ (w * rc))
    return d, float(rm - xm @ d)


def fit_toward_one(x: np.ndarray, y: np.ndarray) -> CalibrationFit:
    """Coefficients (non-negative, shrunk toward 1) and intercept for `y ~ x`, with LOO error."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(y)
    r = y - x.sum(axis=1)
    w = 1.0 / y**2
    xm = w @ x / w.sum()
    scale = float(np.mean(((x - xm) ** 2 * w[:, None]).sum(axis=0))) or 1.0
    best = None
    for strength in STRENGTHS:
        alpha = strength * scale
        errors = []
        for i in range(n):
            keep = np.arange(n) != i
            d, b = _solve(x[keep], r[keep], w[keep], alpha)
            pred = b + x[i] @ np.maximum(1.0 + d, 0.0)
            errors.append((pred - y[i]) / y[i])
        rmspe = float(np.sqrt(np.mean(np.square(errors))) * 100)
        if best is None or rmspe < best[0] - 1e-12:
            best = (rmspe, alpha)
    rmspe, alpha = best
    d, b = _solve(x, r, w, alpha)
    return CalibrationFit(np.maximum(1.0 + d, 0.0), b, float(alpha), rmspe, n)
