"""Validate a predictor against whole subnets measured with the same drift-corrected protocol.

Subnets measured now are put on the table's scale so a table profiled minutes or days ago is compared
fairly with models measured now. A table with a calibration set is scaled through its calibration
subnets (up to ANCHORS), measured again in the same rounds (median of then / now): whole models share a
session's state (preemption, cache pressure from other processes) that the one-layer reference block
does not (benchmarks/results/bias.md). A table without one is scaled through the reference block. The
two passes measured back to back give the test-retest noise floor.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from latencykit.arch import Arch
from latencykit.devices import Device, require
from latencykit.export import ExportCache, default_cache, export_network
from latencykit.lut.protocol import Progress, Protocol, REF_KEY, export_reference, measure_models
from latencykit.lut.table import LatencyTable
from latencykit.errors import LatencykitError, TableError
from latencykit.files import atomic_write, atomic_write_text
from latencykit.space import SearchSpace

ANCHORS = 20
"""Calibration subnets (spread over the set; all of a default set) measured again to put whole models
on a table's scale. With 5, the scale's own error (each anchor carries the noise of its reading then
and now) raised the test-retest noise floor by up to 80% in some sessions and shifted every subnet
of a session alike (benchmarks/results/calibration_rules.md)."""
RETEST = 0.05
"""Two passes of a subnet further apart than this (relative) get a third, and the median of three
counts: under load one pass in a few is hit by other processes, and the mean of two then sits
outside a ±5% band that the subnet's undisturbed passes meet (4 of 5 host-litert misses in an earlier
robustness run had passes 5-8% apart)."""
WHOLE_MODEL_PROTOCOL = Protocol(rounds=30, warmup_runs=2, min_runs=1, max_runs=10, burst_ms=3.0,
                                ref_every=1, extra_rounds=4, cv_threshold=0.04)
"""Whole subnets: one run per reading, twice a table's rounds, the reference beside every subnet.

The machine's speed wanders within a round, on the scale of a burst: the references beside a subnet
divide it out better than one every 10 subnets, and 30 readings of one run average it out better than
15 bursts of 30 ms, in less time: the two passes of 40 subnets differed by 1.1-1.8% (RMS) instead of
2.1-4.5%, in two runs of three processes (benchmarks/results/drift_correction.md). One reading spreads by 5-8% across
rounds, so the round count matters (benchmarks/results/whole_model_noise.md, the protocol before)."""


@dataclass(frozen=True)
class Metrics:
    n: int
    rmse_ms: float
    mape_pct: float
    rmspe_pct: float
    bias_pct: float
    within_5_pct: float
    within_10_pct: float
    kendall_tau: float

    @classmethod
    def compare(cls, predicted: np.ndarray, measured: np.ndarray) -> "Metrics":
        """Errors of `predicted` against `measured`; bias > 0 means predictions run low."""
        from scipy.stats import kendalltau  # here: scipy costs every command a third of a second to import

        err = (predicted - measured) / measured
        return cls(len(measured), float(np.sqrt(np.mean((predicted - measured) ** 2))),
                   float(np.mean(np.abs(err)) * 100), float(np.sqrt(np.mean(err**2)) * 100),
                   float((np.mean(measured / predicted) - 1) * 100),
                   float(np.mean(np.abs(err) <= 0.05) * 100), float(np.mean(np.abs(err) <= 0.10) * 100),
                   float(kendalltau(predicted, measured).statistic))


@dataclass
class Measurements:
    """Whole-model latencies (ms on the table's reference scale) from two back-to-back passes."""

    archs: list[Arch]
    first: np.ndarray
    second: np.ndarray
    raw_ms: np.ndarray
    reference_ms_now: float
    scale: str = "reference block"
    by_reference: np.ndarray | None = None
    """Both passes' mean put on the table's scale through the reference block, for comparison."""
    anchor_then_ms: np.ndarray | None = None
    """The anchors' latencies in the table (when scaled through calibration subnets)."""
    anchor_now_ms: np.ndarray | None = None
    """(2, anchors): the anchors measured now, raw ms, in each pass."""
    third: np.ndarray | None = None
    """A third pass of the subnets whose first two disagreed by more than RETEST (NaN for the others)."""

    @property
    def measured(self) -> np.ndarray:
        """The mean of the two passes; where they disagreed, the median of three."""
        mean = (self.first + self.second) / 2
        if self.third is None:
            return mean
        return np.where(np.isnan(self.third), mean,
                        np.median(np.stack([self.first, self.second, np.nan_to_num(self.third)]), axis=0))

    def to_dict(self) -> dict:
        return {"archs": [a.to_dict() for a in self.archs], "first_ms": self.first.tolist(),
                "second_ms": self.second.tolist(), "raw_ms": self.raw_ms.tolist(),
                "reference_ms_now": self.reference_ms_now, "scale": self.scale,
                **({"third_ms": [None if np.isnan(v) else float(v) for v in self.third]}
                   if self.third is not None else {}),
                **({"anchor_then_ms": self.anchor_then_ms.tolist(), "anchor_now_ms": self.anchor_now_ms.tolist()}
                   if self.anchor_now_ms is not None else {})}

    @classmethod
    def from_dict(cls, data: dict) -> "Measurements":
        """Back from `to_dict` (the readings benchmarks save), without the reference-block comparison."""
        def array(key: str) -> np.ndarray | None:
            return np.array([np.nan if v is None else v for v in data[key]], dtype=float) if key in data else None

        return cls([Arch.from_dict(a) for a in data["archs"]], array("first_ms"), array("second_ms"),
                   array("raw_ms"), float(data["reference_ms_now"]), data["scale"], None,
                   array("anchor_then_ms"), array("anchor_now_ms"), array("third_ms"))


@dataclass
class Validation:
    predictor: str
    device: str
    space: str
    metrics: Metrics
    noise_floor: Metrics
    predicted: np.ndarray
    measurements: Measurements
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"predictor": self.predictor, "device": self.device, "space": self.space,
                "latency": "predicted vs measured", "metrics": asdict(self.metrics),
                "noise_floor": asdict(self.noise_floor), **self.extra}


def sample_archs(space: SearchSpace, n: int, seed: int = 0, exclude: Sequence[Arch] = ()) -> list[Arch]:
    """`n` distinct random architectures (seeded), none of them in `exclude` (e.g. a training set)."""
    skip = set(exclude)
    if n > space.size() - len(skip):
        raise LatencykitError(f"space {space.name} has {space.size()} architectures"
                              + (f" ({len(skip)} of them excluded)" if skip else "") + f"; cannot draw {n} distinct ones")
    rng = np.random.default_rng(seed)
    seen: dict[Arch, None] = {}
    while len(seen) < n:
        for row in space.sample_genes(n, rng):
            arch = space.decode(row)
            if arch not in skip:
                seen.setdefault(arch)
            if len(seen) == n:
                break
    return list(seen)


def measure_archs(space: SearchSpace, device: Device, archs: Sequence[Arch], table: LatencyTable | None,
                  protocol: Protocol = WHOLE_MODEL_PROTOCOL, cache: ExportCache | None = None,
                  progress: Progress | None = None, anchors: int = ANCHORS) -> Measurements:
    """Measure whole models twice, on the table's scale: through its calibration subnets (up to
    `anchors`) measured again in the same rounds when it has them, else through the reference block (without a
    table: the reference block measured now, so the figures are plain drift-corrected ms)."""
    require(device)
    cache = cache or default_cache()
    files = {str(i): export_network(space.layers(a), cache, device.format) for i, a in enumerate(archs)}
    chosen = anchor_set(table, space, anchors) if table is not None else None
    if chosen:
        files.update({f"anchor{j}": export_network(space.layers(a), cache, device.format)
                      for j, a in enumerate(chosen[0])})
    reference = export_reference(cache, device.format)
    scale = table.meta.reference.get("ms") if table is not None else None
    if table is not None and not scale and not chosen:
        raise TableError(f"the {table.meta.device} table ({table.meta.mode}) has no reference block, so subnets "
                         "measured now cannot be put on its scale; validate a table latencykit profiled")
    passes = []
    counted = [0, 0]  # measurements done in each pass, for the progress bar

    for p in range(2):
        def step(done: int, total: int, p: int = p) -> None:
            counted[p] = done
            if progress:  # while the first pass runs, assume the second is as long
                progress(counted[0] + done if p else done, counted[0] + total if p else 2 * total)

        passes.append(measure_models(device, files, reference, protocol, None, step))
    keys = [str(i) for i in range(len(archs))]
    ref_now = (passes[0][REF_KEY].latency_ms + passes[1][REF_KEY].latency_ms) / 2
    scale = scale or (ref_now if table is None else None)

    def anchors_now(result: dict) -> np.ndarray:
        return np.array([result[f"anchor{j}"].latency_ms for j in range(len(chosen[1]))])

    def on_scale(result: dict, names: list[str]) -> np.ndarray:
        """One pass's latencies of `names`, on the table's scale."""
        if chosen:
            return np.array([result[k].latency_ms for k in names]) * float(np.median(chosen[1] / anchors_now(result)))
        return np.array([result[k].ratio for k in names]) * scale

    first, second = (on_scale(p, keys) for p in passes)
    how = f"{len(chosen[1])} calibration subnets" if chosen else "reference block"
    now = np.array([anchors_now(p) for p in passes]) if chosen else None
    # subnets whose passes disagree by more than RETEST: a third pass, and the median of the three
    disputed = [k for k, a, b in zip(keys, first, second) if abs(a / b - 1) > RETEST]
    third = None
    if disputed:
        again = {k: files[k] for k in disputed} | {k: f for k, f in files.items() if k.startswith("anchor")}
        third = np.full(len(keys), np.nan)
        third[[int(k) for k in disputed]] = on_scale(measure_models(device, again, reference, protocol), disputed)
    p0, p1 = passes
    raw = np.array([(p0[k].raw_ms + p1[k].raw_ms) / 2 for k in keys])
    by_reference = np.array([(p0[k].ratio + p1[k].ratio) / 2 for k in keys]) * scale if scale else None
    return Measurements(list(archs), first, second, raw, ref_now, how, by_reference,
                        chosen[1] if chosen else None, now, third)


def anchor_set(table: LatencyTable, space: SearchSpace, n: int = ANCHORS) -> tuple[list[Arch], np.ndarray] | None:
    """Up to `n` of the table's calibration subnets, spread over the set, with their ms then."""
    calibration = table.calibration_set(space)
    if not calibration:
        return None
    archs, ms = calibration
    pick = anchor_picks(len(archs), n)
    return [archs[i] for i in pick], ms[pick]


def anchor_picks(total: int, n: int) -> np.ndarray:
    """Indices of up to `n` of `total` calibration subnets, evenly spread over the set."""
    return np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))


def evaluate(name: str, predict: Callable[[Sequence[Arch]], np.ndarray], m: Measurements, device: str,
             space: str) -> Validation:
    predicted = np.asarray(predict(m.archs), dtype=float)
    return Validation(name, device, space, Metrics.compare(predicted, m.measured),
                      Metrics.compare(m.second, m.first), predicted, m)


def scatter_figure(v: Validation):
    """Predicted against measured latency, with the y = x line and a ±10% band (a matplotlib Figure;
    close it with plt.close)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = v.measurements.measured
    lo, hi = float(min(measured.min(), v.predicted.min())) * 0.9, float(max(measured.max(), v.predicted.max())) * 1.1
    fig, ax = plt.subplots(figsize=(5, 5))
    xs = np.linspace(lo, hi, 50)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.9", label="±10%")
    ax.plot(xs, xs, "k--", lw=1, label="y = x")
    ax.scatter(measured, v.predicted, s=14, label=f"{v.metrics.n} subnets")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel(f"predicted latency (ms, {v.predictor})")
    ax.set_title(f"{v.space} on {v.device}: {v.metrics.within_10_pct:.0f}% within ±10%, "
                 f"RMSPE {v.metrics.rmspe_pct:.1f}%", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    fig.tight_layout()
    return fig


def scatter_plot(v: Validation, path: Path) -> Path:
    """`scatter_figure` written as a PNG, atomically."""
    import matplotlib.pyplot as plt

    fig = scatter_figure(v)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)


def save(v: Validation, out: Path) -> dict[str, Path]:
    """Write summary JSON (with every measurement) and the scatter plot into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    data = {**v.summary(), "predicted_ms": v.predicted.tolist(), "measurements": v.measurements.to_dict()}
    js = atomic_write_text(out / f"validation-{v.predictor}.json", json.dumps(data, indent=1))
    return {"json": js, "plot": scatter_plot(v, out / f"validation-{v.predictor}.png")}
