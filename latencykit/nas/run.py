"""Search on each device (with plots and measured checks) and export a searched subnet as ONNX,
TFLite or Core ML: what `latencykit search` and `latencykit export` call. Nothing here prints."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from latencykit.arch import Arch
from latencykit.errors import LatencykitError
from latencykit.files import atomic_write, atomic_write_text
from latencykit.nas.search import Budget, Candidate, Constraints, SearchConfig, SearchResult, StageStats, search
from latencykit.space import SearchSpace

_UNITS_MS = {"ms": 1.0, "s": 1000.0, "us": 1e-3}
_UNITS_COUNT = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}


def parse_latency(text: str) -> float:
    """'30ms', '30', '0.03s', '500us' -> milliseconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(ms|s|us)?\s*", text.lower())
    if not m:
        raise LatencykitError(f"cannot read latency {text!r}; write e.g. 30ms")
    return float(m.group(1)) * _UNITS_MS[m.group(2) or "ms"]


def parse_count(text: str, what: str) -> float:
    """'6M', '600k', '6e6', '1.5G' -> a number."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgb]?)\s*", text.lower())
    if not m:
        raise LatencykitError(f"cannot read {what} {text!r}; write e.g. 6M")
    return float(m.group(1)) * _UNITS_COUNT[m.group(2)]


@dataclass
class DeviceResult:
    result: SearchResult
    measured: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**self.result.to_dict(), "measured": self.measured, "files": self.files}


def _measure(space: SearchSpace, device: str, arch: Arch, table, predicted_ms: float) -> dict:
    """Measure the chosen subnet whole on a device that can measure now; else say why not."""
    from latencykit.devices import DEVICES, get_device
    from latencykit.lut.validate import measure_archs

    if device not in DEVICES:
        return {"status": "not measured: no such device attached (table only)"}
    dev = get_device(device)
    status = dev.check()
    if not status.ok:
        return {"status": f"not measured: {status.reason}"}
    m = measure_archs(space, dev, [arch], table)
    measured = float(m.measured[0])
    floor = abs(float(m.first[0] - m.second[0])) / measured * 100
    return {"status": "measured", "latency_ms": measured, "first_ms": float(m.first[0]),
            "second_ms": float(m.second[0]), "test_retest_pct": floor,
            "error_pct": (predicted_ms - measured) / measured * 100, "raw_ms": float(m.raw_ms[0])}


MARGIN_Z = 1.645
"""A latency budget is met with 95% confidence (one-sided, normal errors) when the prediction times
(1 + MARGIN_Z x the predictor's held-out RMSPE) stays within it."""


def budget_margin_pct(predictor, margin: bool = True) -> tuple[float, float | None]:
    """(margin %, expected error %) for searching under a latency budget through `predictor`: no
    margin when switched off or when nothing measured tells how far the predictor can be trusted."""
    err = predictor.expected_error_pct if predictor is not None else None
    return (MARGIN_Z * err if margin and err else 0.0), err


def with_margin(budget: Budget, margin_pct: float) -> Budget:
    """The budget a search works within so that its choice meets `budget` with `margin_pct` to spare."""
    if budget.latency_ms is None or not margin_pct:
        return budget
    return replace(budget, latency_ms=budget.latency_ms / (1 + margin_pct / 100))


def search_devices(space: SearchSpace, devices: list[str], budget: Budget, signal_name: str,
                   config: SearchConfig, out: Path, measure: bool = True, signal_options: dict | None = None,
                   progress: Callable[[str], None] | None = None, predictor: str = "auto", threads: int = 1,
                   cache: bool = True, margin: bool = True) -> list[DeviceResult]:
    """One search per device (each through its own predictor) with one scorer: each subnet is scored
    once (and kept in the persistent score cache unless `cache` is off); then every subnet scored for
    any device is put through each device's predictor, and a device keeps the best one within its budget.

    With `margin`, a latency budget is searched with the predictor's expected error taken off (see
    MARGIN_Z), so a chosen subnet meets the budget when measured, not only when predicted."""
    from latencykit.devices import DEVICES
    from latencykit.lut.measurements import table_for
    from latencykit.lut.predictors import resolve_predictor
    from latencykit.lut.table import default_path
    from latencykit.nas.proxies import get_signal
    from latencykit.nas.scores import ScoreCache, Scorer

    if not devices:
        raise LatencykitError("give at least one --device")
    tables, predictors = {}, {}
    for d in devices:  # fail early, before any accuracy evaluation, on a missing table or predictor
        tables[d] = table_for(d, space) if budget.latency_ms is not None else _maybe_table(d, space)
        if tables[d] is not None:
            predictors[d] = resolve_predictor(predictor, space, tables[d], default_path(d, space.name))
        else:
            DEVICES.get(d)  # no table and no such device: a typo, not a device to search for
    signal = get_signal(signal_name, space, **(signal_options or {}))
    scorer = Scorer(space, signal, ScoreCache() if cache else None, threads)

    out.mkdir(parents=True, exist_ok=True)
    results = []
    for d in devices:
        if progress:
            progress(f"searching {space.name} on {d}")
        latency = predictors[d].predict_genes if d in predictors else None
        margin_pct, err = budget_margin_pct(predictors.get(d), margin)
        within = with_margin(budget, margin_pct)
        computed, hits = scorer.computed, scorer.hits
        r = search(space, scorer, within, latency, config, d, signal.name, signal.kind)
        r.config["predictor"] = predictors[d].label if d in predictors else None
        if budget.latency_ms is not None:
            r.config.update(latency_budget_ms=budget.latency_ms, margin_pct=round(margin_pct, 2),
                            expected_error_pct=err, searched_within_ms=within.latency_ms)
        r.config["scores"] = {"computed": scorer.computed - computed, "from_cache": scorer.hits - hits,
                              "cache": str(scorer.cache.path) if scorer.cache else None}
        results.append(DeviceResult(r))
    if len(results) > 1:
        share_scores(space, [dr.result for dr in results], {d: p.predict_genes for d, p in predictors.items()})
    for dr in results:
        d, r = dr.result.device, dr.result
        if measure and tables[d] is not None:
            if progress:
                progress(f"measuring the chosen subnet on {d}")
            dr.measured = _measure(space, d, r.best.arch, tables[d], r.best.latency_ms)
        dr.files["arch"] = str(atomic_write_text(out / f"{d}.arch.json", r.best.arch.to_text() + "\n"))
        dr.files["result"] = str(atomic_write_text(out / f"{d}.json", json.dumps(dr.to_dict(), indent=1, default=str)))
    plot = pareto_plot(results, out / "pareto.png")
    for dr in results:
        dr.files["pareto_plot"] = str(plot)
    return results


def share_scores(space: SearchSpace, results: list[SearchResult], latency: dict[str, Callable]) -> None:
    """Every subnet scored in any device's search, put through each device's predictor (one vectorised
    pass): a device whose budget (as it searched: margin taken off) admits a better-scored subnet found
    for another device takes it."""
    pool: dict[Arch, tuple[float, str]] = {}
    for r in results:
        for c in r.evaluated:
            pool.setdefault(c.arch, (c.score, r.device))
    archs = list(pool)
    rows = np.stack([space.encode(a) for a in archs])
    scores = np.array([pool[a][0] for a in archs])
    for r in results:
        t0 = time.perf_counter()
        c = Constraints(space, r.budget, latency.get(r.device))
        ok, m = c.feasible(rows)
        kept = int(ok.sum())
        if kept:
            i = int(np.flatnonzero(ok)[np.argmax(scores[ok])])
            if scores[i] > r.best.score:
                lat = float(m["latency_ms"][i]) if "latency_ms" in m else float("nan")
                r.best = Candidate(archs[i], lat, int(m["params"][i]), int(m["flops"][i]), float(scores[i]),
                                   f"shared from {pool[archs[i]][1]}")
        r.stages.append(StageStats("shared", time.perf_counter() - t0, c.table_evaluations, 0, kept))


def _maybe_table(device: str, space: SearchSpace):
    from latencykit.errors import TableError
    from latencykit.lut.measurements import table_for

    try:
        return table_for(device, space)
    except TableError:
        return None


def pareto_plot(results: list[DeviceResult], path: Path) -> Path:
    """Score against predicted latency of every evaluated subnet, per device, with its Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, dr in enumerate(results):
        r, color = dr.result, f"C{i}"
        use_latency = r.budget.latency_ms is not None
        x = (lambda c: c.latency_ms) if use_latency else (lambda c: c.flops / 1e6)
        ax.scatter([x(c) for c in r.evaluated], [c.score for c in r.evaluated], s=6, alpha=0.25, color=color)
        front = r.pareto()
        ax.plot([x(c) for c in front], [c.score for c in front], "-o", ms=3, color=color, label=r.device)
        ax.scatter([x(r.best)], [r.best.score], marker="*", s=160, color=color, edgecolor="k", zorder=5)
        if use_latency:
            ax.axvline(r.budget.latency_ms, color=color, ls=":", lw=1)
    r0 = results[0].result
    ax.set_xlabel("predicted latency (ms)" if r0.budget.latency_ms is not None else "MFLOPs")
    ax.set_ylabel(f"{r0.signal} ({'accuracy' if r0.signal_kind == 'accuracy' else 'proxy score'})")
    ax.set_title(f"{r0.space}: {r0.method} search, {r0.budget.describe()}\n(* chosen; dotted: latency budget)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def arch_changes(archs: dict[str, Arch]) -> tuple[list[str], list[list[str]]]:
    """Rows of (choice, value per device) for a side-by-side view; changed rows are marked '*'."""
    flat = {d: _flatten(a) for d, a in archs.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    rows = []
    for k in keys:
        values = [flat[d].get(k, "-") for d in archs]
        rows.append([("* " if len(set(values)) > 1 else "  ") + k, *values])
    return ["choice", *archs], rows


def _flatten(arch: Arch) -> dict[str, str]:
    out = {"resolution": str(arch.resolution), "stem": str(arch.stem)}
    for i, s in enumerate(arch.stages):
        d = s.__dict__
        out[f"stage{i}.width"] = str(s.width)
        out[f"stage{i}.depth"] = str(s.depth)
        for f in ("expand", "kernel", "heads", "mlp_ratio", "v_scale"):
            if d[f]:
                out[f"stage{i}.{f}"] = ",".join(f"{v:g}" for v in d[f])
    return out


def export_arch(space: SearchSpace, arch: Arch, fmt: str, out: Path, checkpoint: str | None = None) -> dict:
    """Write the subnet (inherited weights with a checkpoint, else seeded random ones) in `fmt`."""
    import torch

    from latencykit.export import EXPORTERS, SUFFIX, ExportCache, seeded_network

    space.validate(arch)
    EXPORTERS.get(fmt)
    suffix = SUFFIX.get(fmt, "." + fmt)
    if out.is_dir() and not out.name.endswith(suffix):  # only a previous export (.mlpackage) is replaced
        raise LatencykitError(f"--out {out} is a folder; give a file name ending in {suffix}")
    if checkpoint:
        try:
            from latencykit.nas.train import supernet_from_checkpoint
        except ImportError:
            raise LatencykitError("exporting with --checkpoint needs the supernet subsystem "
                                  "(latencykit.nas.train)") from None
        supernet, _ = supernet_from_checkpoint(checkpoint)
        net, weights = supernet.extract(arch).eval(), f"inherited from {checkpoint}"
        inputs = (torch.randn(1, 3, arch.resolution, arch.resolution),)
    else:
        (net, inputs), weights = seeded_network(space.layers(arch)), "random initialisation (seed 0): no --checkpoint given"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        made = ExportCache(Path(tmp)).export(net, inputs, fmt)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(made, out)
    return {"space": space.name, "format": fmt, "path": str(out), "weights": weights,
            "resolution": arch.resolution, "params": space.params(arch), "flops": space.flops(arch)}
