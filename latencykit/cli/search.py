"""`latencykit search` and `latencykit export`: parse, call `latencykit.nas.run`, print."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from latencykit.arch import Arch
from latencykit.cli.app import SEED_MAX, JsonOption, app, console, emit, non_empty_file, one_of, table
from latencykit.nas.run import arch_changes, parse_count, parse_latency
from latencykit.nas.search import METHODS, SKELETON_RANKS, Budget, SearchConfig


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
        predictor: str = typer.Option("auto", "--predictor", "-p", help="Latency predictor: auto (the best "
                                      "available), isolated, removal, layer, or flops / calibrated (from the "
                                      "table's calibration set or as fitted by `latencykit fit`)."),
        population: int = typer.Option(50, min=1, max=100_000, help="Population (and number of skeletons)."),
        generations: int = typer.Option(20, min=0, max=100_000, help="Generations of the fine stage."),
        parents: int = typer.Option(10, min=1, max=100_000, help="Parents per generation."),
        coarse_samples: int = typer.Option(20_000, min=1, max=10_000_000,
                                           help="Architectures sampled in the coarse stage."),
        skeleton_rank: str = typer.Option(SearchConfig.skeleton_rank, "--skeleton-rank",
                                          callback=one_of(lambda: SKELETON_RANKS),
                                          help="What ranks the coarse stage's skeletons: flops, params, or "
                                               "fullness (AutoViT's Algorithm 2: budget use)."),
        seed: int = typer.Option(0, min=0, max=SEED_MAX),
        margin: bool = typer.Option(True, "--margin/--no-margin", help="Search within the latency budget less "
                                    "the predictor's expected error (1.645 x its held-out RMSPE), so the chosen "
                                    "subnet meets the budget when measured with 95% confidence."),
        threads: int = typer.Option(0, min=0, max=256, help="Subnets scored at once (one torch thread each); "
                                    "0 = the number of CPUs."),
        cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse and keep proxy scores in "
                                   "$LATENCYKIT_HOME/scores.sqlite."),
        measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure the chosen subnet where the "
                                     "device can measure (host, host-litert, an attached phone)."),
        out: Optional[Path] = typer.Option(None, "--out", file_okay=False,
                                           help="Folder for results, arch files and the plot."),
        as_json: bool = JsonOption) -> None:
    """Most accurate subnet within a latency and params budget, for each device."""
    from latencykit.api import search
    from latencykit.space import load_space

    sp = load_space(space)
    budget = Budget(parse_latency(latency) if latency else None, parse_count(params, "params") if params else None,
                    parse_count(flops, "FLOPs") if flops else None)
    config = SearchConfig(method=method, population=population, generations=generations, parents=parents,
                          coarse_samples=coarse_samples, skeleton_rank=skeleton_rank, seed=seed)
    say = None if as_json else (lambda msg: console.print(f"[dim]{msg}[/]"))
    results = search(sp, list(device), budget, proxy, config, out, measure, str(checkpoint) if checkpoint else None,
                     predictor, say, threads or (os.cpu_count() or 1), cache, margin)
    data = [dr.to_dict() for dr in results]
    if as_json:
        emit(data, True)
        return
    r0 = results[0].result
    kind = "accuracy" if r0.signal_kind == "accuracy" else "proxy"
    rows, unmeasured = [], {}
    for d, dr in zip(data, results):
        b, m = dr.result.best, dr.measured
        if m.get("status") == "measured":
            meas = f"{m['latency_ms']:.2f} ({m['error_pct']:+.1f}% pred err, retest {m['test_retest_pct']:.1f}%)"
        else:  # the reason once, under the table, not in every row
            unmeasured.setdefault(m.get("status", "not measured").replace("not measured: ", ""), []).append(d["device"])
            meas = "no (below)" if m.get("status") else "-"
        c = d["config"]
        margin_text = ("-" if budget.latency_ms is None else f"{c['margin_pct']:.1f}%" if c.get("margin_pct")
                       else "none" if not margin else "none (error unknown)")
        rows.append([d["device"], f"{b.latency_ms:.2f}", margin_text, meas, f"{b.params / 1e6:.2f}",
                     f"{b.flops / 1e6:.0f}", f"{b.score:.4g}", d["accuracy_evaluations"], dr.files["arch"]])
    console.print(table(f"{sp.name}: {r0.method} search, {budget.describe()}, {r0.signal} {kind}, "
                        f"latency predicted by {', '.join(sorted({str(d['config']['predictor']) for d in data}))}",
                        ["device", "latency ms (predicted)", "budget margin", "latency ms (measured)", "params M",
                         "MFLOPs", f"{r0.signal}", "evaluations", "arch file"], rows))
    for reason, devs in unmeasured.items():
        console.print(f"not measured on {', '.join(devs)}: {reason}", soft_wrap=True)
    cols, change_rows = arch_changes({dr.result.device: dr.result.best.arch for dr in results})
    console.print(table("chosen architecture per device (* = differs)", cols, change_rows))
    stage_rows = [[dr.result.device, s.name, f"{s.seconds:.2f}", s.table_evaluations, s.accuracy_evaluations]
                  for dr in results for s in dr.result.stages]
    console.print(table("stages", ["device", "stage", "seconds", "table evaluations", "accuracy evaluations"],
                        stage_rows))
    console.print(f"Pareto plot: {results[0].files['pareto_plot']}")
    for dr in results:
        console.print(summary_line(dr), markup=False, highlight=False, soft_wrap=True)


def summary_line(dr) -> str:
    """One line per device, at most 100 characters: the choice, its cost and where its score came from."""
    r, b = dr.result, dr.result.best
    scores = r.config.get("scores") or {}
    lat = f"{b.latency_ms:.2f} ms" if b.latency_ms == b.latency_ms else "- ms"
    cached = f" ({scores['from_cache']} cached)" if scores.get("from_cache") else ""
    line = (f"{r.device[:14]}: {lat}, {b.params / 1e6:.2f} M params, {b.flops / 1e6:.0f} MFLOPs, "
            f"{r.signal} {b.score:.4g}; {r.accuracy_evaluations} scored{cached}; "
            f"{sum(s.seconds for s in r.stages):.0f} s")
    return line if len(line) <= 100 else line[:99] + "…"


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
    from latencykit.api import export_subnet
    from latencykit.export import SUFFIX
    from latencykit.space import load_space

    sp = load_space(space)
    arch = Arch.load(arch_file)
    target = out or arch_file.with_name(arch_file.name.removesuffix(".json").removesuffix(".arch")
                                        + SUFFIX.get(fmt, "." + fmt))
    data = export_subnet(sp, arch, fmt, target, str(checkpoint) if checkpoint else None)
    emit(data, as_json, lambda d: f"wrote {d['path']} ({d['format']}, {d['params'] / 1e6:.2f} M params, "
         f"{d['resolution']}x{d['resolution']} input); weights: {d['weights']}")
