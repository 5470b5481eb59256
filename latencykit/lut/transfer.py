"""Few-shot transfer: predict every architecture on a device from k whole-model measurements on it.

What transfers between devices is the structure of latency, not its scale: whole-network latency is
near-linear in a few per-op counts (for a cell space: live edges per op, all edges per op, whether the
output is reachable, node additions; otherwise per-layer-kind MFLOPs), with coefficients that differ
by device. Each other device with a measurement set (a *reference*) gets its coefficients fit on its
own, many, measurements. The target's k measurements then choose, by leave-one-out cross-validation
on those k alone, among models with few parameters:

- `references`: intercept + a non-negative mix of the references' fitted models (their coefficients
  combined), so k=5..10 measurements only weigh devices already understood;
- `nearest`: intercept + scale x the one reference whose model fits the k best;
- `counts`: ridge on the counts themselves (only with k >= 2 x (counts + 1));
- `table`: intercept + scale x the device's own lookup-table sum, when it has one;
- `flops`: intercept + a x MFLOPs (the baseline).

Every candidate is a linear model on the same design (intercept, counts, MFLOPs, table sum), so the
fitted predictor is a short list of coefficients (saved as JSON) and scoring 15,625 architectures is
one matrix product. Fits minimise the relative error (rows weighted by 1/ms), as the ±10% share does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from latencykit.lut.predictors import Predictor, PredictorError, entries_ms
from latencykit.space import SearchSpace

FLOOR_MS = 1e-3
"""Predictions are clipped here: a linear model may cross zero for cells that compute nothing."""
NEAR_ZERO = 0.1
"""Measurements under this fraction of the median of the k are left out of the fit: the network was
optimised away on the device (Pixel 3 in NAS-Bench-201 times 283 cells whose output nothing reaches at
about 3 us, where every other device takes 60-80% of its median), and with relative-error weights one
such point decides the whole fit (benchmarks/results/transfer.md)."""


def count_features(space: SearchSpace, genes: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The per-architecture counts latency is modelled as linear in (see the module docstring)."""
    genes = np.atleast_2d(genes)
    cell = getattr(space, "cell_features", None)
    if cell is not None:
        return cell(genes)
    kinds = sorted({l.kind for l in space.distinct_layers()})
    cols = [space.evaluate(space.slot_values(lambda l, k=k: l.flops / 1e6 if l.kind == k else 0.0), genes)
            for k in kinds]
    return [f"mflops_{k}" for k in kinds], np.column_stack(cols)


@dataclass(frozen=True)
class Reference:
    """Another device's latency model on the counts: intercept + counts @ coef, fit on its own set."""

    device: str
    coef: np.ndarray
    """On [1, counts]."""
    n: int

    @classmethod
    def fit(cls, device: str, counts: np.ndarray, ms: np.ndarray) -> "Reference":
        x = np.column_stack([np.ones(len(counts)), counts])
        return cls(device, np.linalg.lstsq(x, np.asarray(ms, dtype=float), rcond=None)[0], len(ms))


@dataclass(frozen=True)
class TransferFit:
    """The chosen model as coefficients on the design [1, counts, MFLOPs, table sum], with the
    leave-one-out errors of every candidate on the k measurements."""

    model: str
    coef: np.ndarray
    cv: dict
    candidates: dict = field(default_factory=dict)
    detail: dict = field(default_factory=dict)

    def predict(self, design: np.ndarray) -> np.ndarray:
        return np.maximum(design @ self.coef, FLOOR_MS)


def design_matrix(counts: np.ndarray, mflops: np.ndarray, table_ms: np.ndarray | None = None) -> np.ndarray:
    n = len(counts)
    return np.column_stack([np.ones(n), counts, mflops, np.zeros(n) if table_ms is None else table_ms])


def _wls(x: np.ndarray, y: np.ndarray, ridge: float = 0.0, nonneg_from: int | None = None) -> np.ndarray:
    """Least squares on relative error (rows / y); optional ridge (not on column 0); columns from
    `nonneg_from` on kept non-negative."""
    xw, yw = x / y[:, None], np.ones_like(y)
    if nonneg_from is not None:
        from scipy.optimize import nnls

        # the intercept is free: split it into a +/- pair so NNLS can take either sign
        xx = np.column_stack([xw[:, :1], -xw[:, :1], xw[:, 1:]])
        sol, _ = nnls(xx, yw)
        return np.concatenate([[sol[0] - sol[1]], sol[2:]])
    if ridge:
        pen = np.sqrt(ridge) * np.eye(x.shape[1])[1:]
        xw, yw = np.vstack([xw, pen]), np.concatenate([yw, np.zeros(len(pen))])
    return np.linalg.lstsq(xw, yw, rcond=None)[0]


def _candidates(design: np.ndarray, y: np.ndarray, refs: list[Reference], n_counts: int,
                has_table: bool) -> dict:
    """Candidate name -> a function (rows of design, their ms) -> coefficients on the design."""
    d = design.shape[1]
    out = {}

    def embed(parts: dict[int, float], counts_coef: np.ndarray | None = None) -> np.ndarray:
        coef = np.zeros(d)
        if counts_coef is not None:
            coef[:1 + n_counts] = counts_coef
        for i, v in parts.items():
            coef[i] += v
        return coef

    def flops(x, t):
        a = _wls(x[:, [0, d - 2]], t)
        return embed({0: a[0], d - 2: a[1]})

    out["flops"] = flops
    if has_table:
        def table(x, t):
            a = _wls(x[:, [0, d - 1]], t)
            return embed({0: a[0], d - 1: a[1]})

        out["table"] = table
    if refs:
        basis = np.stack([r.coef for r in refs], axis=1)  # (1 + counts, refs)

        def mix(x, t):
            preds = x[:, :1 + n_counts] @ basis
            w = _wls(np.column_stack([np.ones(len(t)), preds]), t, nonneg_from=1)
            return embed({0: w[0]}, basis @ w[1:])

        def nearest(x, t):
            preds = x[:, :1 + n_counts] @ basis
            best, best_err = None, np.inf
            for j in range(basis.shape[1]):
                a = _wls(np.column_stack([np.ones(len(t)), preds[:, j]]), t)
                err = np.mean(((a[0] + a[1] * preds[:, j]) / t - 1) ** 2)
                if err < best_err:
                    best, best_err = (a, j), err
            a, j = best
            return embed({0: a[0]}, a[1] * basis[:, j])

        out["references"], out["nearest"] = mix, nearest
    if len(y) >= 2 * (n_counts + 1):
        def ridge(x, t):
            coef = _wls(x[:, :1 + n_counts], t, ridge=1e-3 * len(t))
            return embed({}, coef)

        out["counts"] = ridge
    return out


def loo_errors(fit, design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Relative error of each measurement predicted by the model fit on the other k - 1."""
    errs = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        pred = max(float(design[i] @ fit(design[keep], y[keep])), FLOOR_MS)
        errs[i] = pred / y[i] - 1
    return errs


def fit_transfer(design: np.ndarray, y: np.ndarray, refs: list[Reference], n_counts: int,
                 has_table: bool = False) -> TransferFit:
    """Choose among the candidates by leave-one-out RMSPE on the k measurements; refit on all k
    (those near zero left out, see NEAR_ZERO)."""
    y = np.asarray(y, dtype=float)
    keep = y >= NEAR_ZERO * np.median(y)
    design, y, left_out = design[keep], y[keep], int((~keep).sum())
    if len(y) < 3:
        raise PredictorError(f"the transfer predictor needs at least 3 measurements, got {len(y)}"
                             + (f" ({left_out} under {NEAR_ZERO:.0%} of the median left out)" if left_out else ""))
    scores = {}
    cands = _candidates(design, y, refs, n_counts, has_table)
    for name, fit in cands.items():
        e = loo_errors(fit, design, y)
        scores[name] = {"rmspe_pct": float(np.sqrt(np.mean(e**2)) * 100),
                        "mape_pct": float(np.mean(np.abs(e)) * 100),
                        "within_10_pct": float(np.mean(np.abs(e) <= 0.10) * 100)}
    best = min(scores, key=lambda n: scores[n]["rmspe_pct"])
    method = f"leave-one-out over {len(y)}" + (f"; {left_out} measured under {NEAR_ZERO:.0%} of the median "
                                               "left out of the fit" if left_out else "")
    return TransferFit(best, cands[best](design, y), {"method": method, "left_out": left_out, **scores[best]},
                       scores)


class TransferPredictor(Predictor):
    """Few-shot transfer from other devices' measurement sets (see latencykit.lut.transfer): fit on
    the device's k whole-model measurements; reports their leave-one-out error."""

    name = "transfer"
    requires_measurements = True
    min_measurements = 3
    modes = ("isolated", "imported", "removal", "measured")

    def _table_ms(self, genes: np.ndarray) -> np.ndarray | None:
        if not len(self.table):
            return None
        ms = entries_ms(self.table)
        return self.space.evaluate(self.space.slot_values(lambda l: ms.get(l.key, np.nan)), genes)

    def design(self, genes: np.ndarray) -> np.ndarray:
        genes = np.atleast_2d(genes)
        _, counts = count_features(self.space, genes)
        return design_matrix(counts, self.space.evaluate(self.space.flops_values, genes) / 1e6,
                             self._table_ms(genes))

    def feature_names(self) -> list[str]:
        names, _ = count_features(self.space, self.space.sample_genes(1, 0))
        return ["intercept", *names, "mflops", "table_ms"]

    def _fit(self) -> None:
        from latencykit.lut.measurements import other_sets

        refs = []
        for s in other_sets(self.table.meta.device, self.space):  # every other device's stored set
            _, counts = count_features(self.space, s.genes(self.space))
            if len(s) >= 2 * counts.shape[1]:
                refs.append(Reference.fit(s.device, counts, s.latency_ms))
        genes = np.stack([self.space.encode(a) for a in self.measured.archs])
        design = self.design(genes)
        has_table = bool(len(self.table)) and bool(np.isfinite(design[:, -1]).all())
        if not has_table:
            design[:, -1] = 0.0
        self.fitted = fit_transfer(design, self.measured.latency_ms, refs, len(self.feature_names()) - 3, has_table)
        self.reference_devices = [r.device for r in refs]

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        design = self.design(genes)
        if not self.fitted.coef[-1]:
            design[:, -1] = 0.0
        return self.fitted.predict(design)

    @property
    def expected_error_pct(self) -> float | None:
        """The leave-one-out RMSPE on the device's own k measurements."""
        return self.fitted.cv.get("rmspe_pct")

    def state(self) -> dict:
        f = self.fitted
        return {"model": f.model, "features": self.feature_names(), "coefficients": [float(c) for c in f.coef],
                "cv": f.cv, "candidates": f.candidates, "references": self.reference_devices}

    def _restore(self, state: dict) -> None:
        if list(state["features"]) != self.feature_names():
            raise PredictorError(f"its features {state['features']} are not this space's {self.feature_names()}")
        coef = np.asarray(state["coefficients"], dtype=float)
        if coef.shape != (len(self.feature_names()),) or not np.isfinite(coef).all():
            raise PredictorError(f"it has {coef.size} coefficients for {len(self.feature_names())} features")
        self.fitted = TransferFit(str(state["model"]), coef, dict(state.get("cv") or {}),
                                  dict(state.get("candidates") or {}))
        self.reference_devices = list(state.get("references") or [])
