"""`latencykit search` (one constrained search per device, with plots and measured checks) and
`latencykit export` (a searched subnet as ONNX, TFLite or Core ML).

The library half (`search_devices`, `pareto_plot`, `arch_changes`, `export_arch`) prints nothing;
the commands at the bottom parse, call one of them and print.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import typer

from latencykit.arch import Arch
from latencykit.cli import SEED_MAX, JsonOption, app, emit, non_empty_file, one_of, table
from latencykit.errors import LatencykitError
from latencykit.files import atomic_write, atomic_write_text
from latencykit.nas.search import METHODS, Budget, SearchConfig, SearchResult, search
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


def latency_predictor(name: str, device: str, space: SearchSpace, table):
    """The table's own sum (`table`), or a learned predictor: `layer` fits on the table, `flops` and
    `calibrated` are loaded as fitted by `latencykit fit` (they correct the sum with whole-model runs)."""
    from latencykit.lut.learned import PREDICTORS, load_predictor, predictor_path
    from latencykit.lut.predict import TablePredictor
    from latencykit.lut.table import default_path

    if name == "table":
        return TablePredictor(table, space)
    factory = PREDICTORS.get(name)
    if name == "layer":
        return factory(space, table)
    return load_predictor(predictor_path(default_path(device, space.name), name), space, table)


def search_devices(space: SearchSpace, devices: list[str], budget: Budget, signal_name: str,
                   config: SearchConfig, out: Path, measure: bool = True, signal_options: dict | None = None,
                   progress: Callable[[str], None] | None = None, predictor: str = "table") -> list[DeviceResult]:
    """One search per device (each through its own table), the same accuracy signal, shared scores."""
    from latencykit.devices import DEVICES
    from latencykit.lut.table import load_table
    from latencykit.nas.proxies import get_signal

    if not devices:
        raise LatencykitError("give at least one --device")
    tables, predictors = {}, {}
    for d in devices:  # fail early, before any accuracy evaluation, on a missing table or predictor
        tables[d] = load_table(d, space) if budget.latency_ms is not None else _maybe_table(d, space)
        if tables[d] is not None:
            predictors[d] = latency_predictor(predictor, d, space, tables[d])
        else:
            DEVICES.get(d)  # no table and no such device: a typo, not a device to search for
    signal = get_signal(signal_name, space, **(signal_options or {}))
    cache: dict[Arch, float] = {}

    def score(arch: Arch) -> float:
        if arch not in cache:
            cache[arch] = signal.score(arch)
        return cache[arch]

    out.mkdir(parents=True, exist_ok=True)
    results = []
    for d in devices:
        if progress:
            progress(f"searching {space.name} on {d}")
        t = tables[d]
        latency = predictors[d].predict_genes if t is not None else None
        r = search(space, score, budget, latency, config, d, signal.name, signal.kind)
        r.config["predictor"] = predictor if t is not None else None
        dr = DeviceResult(r)
        if measure and t is not None:
            if progress:
                progress(f"measuring the chosen subnet on {d}")
            dr.measured = _measure(space, d, r.best.arch, t, r.best.latency_ms)
        dr.files["arch"] = str(_write(out / f"{d}.arch.json", r.best.arch.to_json() + "\n"))
        dr.files["result"] = str(_write(out / f"{d}.json", json.dumps(dr.to_dict(), indent=1, default=str)))
        results.append(dr)
    plot = pareto_plot(results, out / "pareto.png")
    for dr in results:
        dr.files["pareto_plot"] = str(plot)
    return results


def _maybe_table(device: str, space: SearchSpace):
    from latencykit.errors import TableError
    from latencykit.lut.table import load_table

    try:
        return load_table(device, space)
    except TableError:
        return None


def _write(path: Path, text: str) -> Path:
    return atomic_write_text(path, text)


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

    from latencykit.blocks import build
    from latencykit.export import EXPORTERS, SUFFIX, ExportCache

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
    else:
        torch.manual_seed(0)
        net, weights = build(space.layers(arch)), "random initialisation (seed 0): no --checkpoint given"
    inputs = (torch.randn(1, 3, arch.resolution, arch.resolution),)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        made = ExportCache(Path(tmp)).export(net, inputs, fmt)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(made, out)
    return {"space": space.name, "format": fmt, "path": str(out), "weights": weights,
            "resolution": arch.resolution, "params": space.params(arch), "flops": space.flops(arch)}


# ----- commands -------------------------------------------------------------------------------------

def _proxies() -> list[str]:
    from latencykit.nas.proxies import PROXIES

    return PROXIES.names()


def _formats() -> list[str]:
    from latencykit.export import EXPORTERS

    return EXPORTERS.names()


@app.command("search")
def search_command(
        space: str = typer.Option(..., "--space", "-s", help="Search space name or space file."),
        device: list[str] = typer.Option(..., "--device", "-d", help="Device(s); one search each, through its table."),
        latency: Optional[str] = typer.Option(None, "--latency", help="Latency budget, e.g. 30ms (predicted from the table)."),
        params: Optional[str] = typer.Option(None, "--params", help="Parameter budget, e.g. 6M."),
        flops: Optional[str] = typer.Option(None, "--flops", help="FLOPs (multiply-accumulate) budget, e.g. 500M."),
        proxy: str = typer.Option("vintk", "--proxy", callback=one_of(_proxies), help="Accuracy signal: vintk, ntk, ntk-cond, params, "
                                  "or supernet (with --checkpoint)."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", exists=True, dir_okay=False, readable=True,
                                                  callback=non_empty_file,
                                                  help="Supernet checkpoint (implies --proxy supernet)."),
        method: str = typer.Option("coarse-to-fine", "--method", callback=one_of(lambda: METHODS),
                                   help="coarse-to-fine, evolution or random."),
        predictor: str = typer.Option("table", "--predictor", "-p", help="Latency predictor: table (sum of "
                                      "entries), layer, or flops / calibrated as fitted by `latencykit fit`."),
        population: int = typer.Option(50, min=1, max=100_000, help="Population (and number of skeletons)."),
        generations: int = typer.Option(20, min=0, max=100_000, help="Generations of the fine stage."),
        parents: int = typer.Option(10, min=1, max=100_000, help="Parents per generation."),
        coarse_samples: int = typer.Option(20_000, min=1, max=10_000_000,
                                           help="Architectures sampled in the coarse stage."),
        seed: int = typer.Option(0, min=0, max=SEED_MAX),
        measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure the chosen subnet where the "
                                     "device can measure (host, host-litert, an attached phone)."),
        out: Optional[Path] = typer.Option(None, "--out", file_okay=False,
                                           help="Folder for results, arch files and the plot."),
        as_json: bool = JsonOption) -> None:
    """Most accurate subnet within a latency and params budget, for each device."""
    from latencykit.cli import console
    from latencykit.paths import home
    from latencykit.space import load_space

    sp = load_space(space)
    budget = Budget(parse_latency(latency) if latency else None, parse_count(params, "params") if params else None,
                    parse_count(flops, "FLOPs") if flops else None)
    checkpoint = str(checkpoint) if checkpoint else None
    if checkpoint:
        proxy = "supernet"
    config = SearchConfig(method=method, population=population, generations=generations, parents=parents,
                          coarse_samples=coarse_samples, seed=seed)
    folder = out or home() / "search" / sp.name
    say = None if as_json else (lambda msg: console.print(f"[dim]{msg}[/]"))
    results = search_devices(sp, list(device), budget, proxy, config, folder, measure,
                             {"checkpoint": checkpoint} if checkpoint else None, say, predictor)
    data = [dr.to_dict() for dr in results]
    if as_json:
        emit(data, True)
        return
    r0 = results[0].result
    kind = "accuracy" if r0.signal_kind == "accuracy" else "proxy"
    rows = []
    for d, dr in zip(data, results):
        b, m = dr.result.best, dr.measured
        meas = (f"{m['latency_ms']:.2f} ({m['error_pct']:+.1f}% pred err, retest {m['test_retest_pct']:.1f}%)"
                if m.get("status") == "measured" else m.get("status", "-").replace("not measured: ", "no: "))
        rows.append([d["device"], f"{b.latency_ms:.2f}", meas, f"{b.params / 1e6:.2f}", f"{b.flops / 1e6:.0f}",
                     f"{b.score:.4g}", d["accuracy_evaluations"], dr.files["arch"]])
    console.print(table(f"{sp.name}: {r0.method} search, {r0.budget.describe()}, {r0.signal} {kind}, "
                        f"latency predicted by {predictor}",
                        ["device", "latency ms (predicted)", "latency ms (measured)", "params M", "MFLOPs",
                         f"{r0.signal}", "evaluations", "arch file"], rows))
    cols, change_rows = arch_changes({dr.result.device: dr.result.best.arch for dr in results})
    console.print(table("chosen architecture per device (* = differs)", cols, change_rows))
    stage_rows = [[dr.result.device, s.name, f"{s.seconds:.2f}", s.table_evaluations, s.accuracy_evaluations]
                  for dr in results for s in dr.result.stages]
    console.print(table("stages", ["device", "stage", "seconds", "table evaluations", "accuracy evaluations"],
                        stage_rows))
    console.print(f"Pareto plot: {results[0].files['pareto_plot']}")


@app.command("export")
def export_command(arch_file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                                   callback=non_empty_file,
                                                   help="Architecture JSON (e.g. from `latencykit search`)."),
                   space: str = typer.Option(..., "--space", "-s", help="Search space name or space file."),
                   fmt: str = typer.Option("onnx", "--format", "-f", callback=one_of(_formats),
                                           help="onnx, or tflite / coreml where installed."),
                   out: Optional[Path] = typer.Option(None, "--out", help="Output file (default: beside ARCH_FILE)."),
                   checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", exists=True, dir_okay=False,
                                                             readable=True, callback=non_empty_file,
                                                             help="Supernet checkpoint for inherited weights."),
                   as_json: bool = JsonOption) -> None:
    """Export a subnet as ONNX (or TFLite / Core ML), with inherited weights given a checkpoint."""
    from latencykit.export import SUFFIX
    from latencykit.space import load_space

    sp = load_space(space)
    arch = Arch.load(arch_file)
    target = out or arch_file.with_name(arch_file.name.removesuffix(".json").removesuffix(".arch")
                                        + SUFFIX.get(fmt, "." + fmt))
    data = export_arch(sp, arch, fmt, target, str(checkpoint) if checkpoint else None)
    emit(data, as_json, lambda d: f"wrote {d['path']} ({d['format']}, {d['params'] / 1e6:.2f} M params, "
         f"{d['resolution']}x{d['resolution']} input); weights: {d['weights']}")
