"""Core commands: devices, spaces, profile, show, predict, validate."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from latencykit.cli import JsonOption, app, console, emit, table

DeviceOption = typer.Option(..., "--device", "-d", help="Device name (see `latencykit devices`).")
SpaceOption = typer.Option(..., "--space", "-s", help="Search space name or space file (see `latencykit spaces`).")
ThreadsOption = typer.Option(None, "--threads", help="Runtime threads, for devices that take them (host: 1).")
SerialOption = typer.Option(None, "--serial", help="Android: which attached phone (adb serial).")
BenchmarkModelOption = typer.Option(None, "--benchmark-model",
                                    help="Android: path of TFLite's benchmark_model binary on this machine.")
TableOption = typer.Option(None, "--table", help="Table file (default: $LATENCYKIT_HOME/tables/DEVICE/SPACE.parquet).")


@contextmanager
def progress_bar(enabled: bool) -> Iterator:
    """Yields a factory of progress callbacks, one task each; silent when `enabled` is false."""
    if not enabled:
        yield lambda description: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        def task(description: str):
            tid = bar.add_task(description, total=None)
            return lambda done, total: bar.update(tid, completed=done, total=total)

        yield task


@app.command()
def devices(as_json: bool = JsonOption) -> None:
    """Each device, whether it can measure now, or exactly why not."""
    from latencykit.devices import DEVICES, get_device
    from latencykit.lut.table import default_path

    rows = []
    for name in DEVICES.names():
        dev = get_device(name)
        status = dev.check()
        tables = sorted(p.stem for p in default_path(name, "x").parent.glob("*.parquet"))
        rows.append({"device": name, "format": dev.format, "available": status.ok, "reason": status.reason,
                     "tables": tables})
        if tables and not status.ok:  # a catalogued phone known by its (imported) tables: say so first
            rows[-1].update(reason="table only, no device attached", check=status.reason)
    known = {r["device"] for r in rows}
    root = default_path("x", "x").parent.parent
    for folder in sorted(p for p in root.glob("*") if p.is_dir() and p.name not in known):
        tables = sorted(p.stem for p in folder.glob("*.parquet"))
        if tables:
            rows.append({"device": folder.name, "format": "-", "available": False,
                         "reason": "table only, no device attached", "tables": tables})
    emit(rows, as_json, lambda rs: table("devices", ["device", "format", "status", "tables"], [
        [r["device"], r["format"], "available" if r["available"] else r["reason"], ", ".join(r["tables"]) or "-"]
        for r in rs]))


@app.command()
def spaces(as_json: bool = JsonOption) -> None:
    """Each search space's size and its params and FLOPs range."""
    from latencykit.space import SPACES, load_space

    rows = [load_space(n).summary() for n in SPACES.names()]
    emit(rows, as_json, lambda rs: table("search spaces (FLOPs = multiply-accumulates)",
                                         ["space", "architectures", "layers", "params (M)", "MFLOPs", "paper"], [
        [r["space"], f"{r['architectures']:.3g}", r["distinct_layers"],
         f"{r['params_min'] / 1e6:.2f}-{r['params_max'] / 1e6:.2f}",
         f"{r['flops_min'] / 1e6:.0f}-{r['flops_max'] / 1e6:.0f}",
         "; ".join(f"{k.replace('_range', '')}: {'-'.join(map(str, v)) if isinstance(v, list) else v}"
                   for k, v in r["paper"].items() if k != "source")] for r in rs]))


@app.command()
def arch(space: str = SpaceOption,
         which: str = typer.Option("random", "--which", help="random, smallest or largest."),
         seed: int = typer.Option(0, help="Seed for --which random.")) -> None:
    """Print an architecture of a space as JSON (to edit, or to feed `predict`)."""
    from latencykit.errors import LatencykitError
    from latencykit.space import load_space

    sp = load_space(space)
    pick = {"random": lambda: sp.sample(seed), "smallest": sp.smallest, "largest": sp.largest}
    if which not in pick:
        raise LatencykitError(f"--which must be one of {', '.join(pick)}, not {which!r}")
    typer.echo(pick[which]().to_json())


@app.command()
def profile(device: str = DeviceOption, space: str = SpaceOption, threads: Optional[int] = ThreadsOption, serial: Optional[str] = SerialOption,
            benchmark_model: Optional[str] = BenchmarkModelOption,
            out: Optional[Path] = typer.Option(None, "--out", help="Table file to write."),
            rounds: int = typer.Option(15, help="Interleaved measurement rounds."),
            calibrate: int = typer.Option(20, help="Whole subnets measured in the same rounds to calibrate the table (0: none)."),
            mode: str = typer.Option("isolated", help="isolated: each layer alone; removal: the latency drop "
                                     "when a layer is taken out of reference subnets (AutoViT 3.3.2)."),
            as_json: bool = JsonOption) -> None:
    """Measure every distinct layer of a space on a device and write its lookup table (resumable)."""
    from latencykit.devices import get_device
    from latencykit.errors import LatencykitError
    from latencykit.lut.profile import profile as run
    from latencykit.lut.protocol import Protocol
    from latencykit.lut.removal import profile_removal
    from latencykit.space import load_space

    if mode not in ("isolated", "removal"):
        raise LatencykitError(f"--mode must be isolated or removal, not {mode!r}")
    sp, dev = load_space(space), get_device(device, threads=threads, serial=serial, benchmark_model=benchmark_model)
    with progress_bar(not as_json) as task:
        if mode == "isolated":
            result = run(sp, dev, out, Protocol(rounds=rounds), export_progress=task("export"),
                         progress=task(f"measure on {dev.name}"), calibrate=calibrate)
        else:
            result = profile_removal(sp, dev, out, Protocol(rounds=rounds), progress=task(f"isolated on {dev.name}"),
                                     reference_progress=task("reference subnets"))
    s = result.summary()
    emit(s, as_json, lambda s: f"[bold]{s['entries']}[/] entries measured on {s['device']} for {s['space']} "
         f"in {s['seconds']:.1f} s" + (f" (resumed after {s['resumed_rounds']} rounds)" if s["resumed_rounds"] else "")
         + f"\ntable: {s['path']}")


@app.command()
def show(device: str = DeviceOption, space: str = SpaceOption, table_path: Optional[Path] = TableOption,
         top: int = typer.Option(10, help="How many of the costliest entries to list."),
         as_json: bool = JsonOption) -> None:
    """A table's provenance and its costliest entries."""
    from latencykit.lut.table import load_table
    from latencykit.space import load_space

    t = load_table(device, load_space(space), table_path)
    rows = t.rows.sort_values("latency_ms", ascending=False)
    data = {**t.summary(), "device_info": t.meta.device_info, "protocol": t.meta.protocol,
            "provenance": t.meta.provenance,
            "entries_ms": rows[["key", "latency_ms", "q1_ms", "q3_ms", "cv", "runs", "source"]].to_dict("records")}

    def render(d: dict):
        head = table(f"{d['device']} / {d['space']}: {d['entries']} entries ({d['mode']}), sum {d['total_ms']:.2f} ms",
                     ["layer", "latency ms", "IQR ms", "CV", "runs", "source"],
                     [[r["key"], f"{r['latency_ms']:.4f}", f"{r['q1_ms']:.4f}-{r['q3_ms']:.4f}",
                       f"{r['cv']:.3f}", r["runs"], r["source"]] for r in d["entries_ms"][:top]])
        head.caption = f"{d['device_info'].get('runtime', '')} {d['device_info'].get('cpu', '')}; created {d['created']}"
        return head

    emit(data, as_json, render)


@app.command()
def predict(arch_file: Path = typer.Argument(..., help="Architecture JSON file."),
            device: str = DeviceOption, space: str = SpaceOption, table_path: Optional[Path] = TableOption,
            as_json: bool = JsonOption) -> None:
    """Predict an architecture's latency on a device from its lookup table."""
    from latencykit.arch import Arch
    from latencykit.lut.predict import TablePredictor
    from latencykit.lut.table import load_table
    from latencykit.space import load_space

    sp = load_space(space)
    t = load_table(device, sp, table_path)
    arch = sp.validate(Arch.load(arch_file))
    ms = TablePredictor(t, sp).predict(arch)
    data = {"device": device, "space": sp.name, "latency_ms": ms, "latency": "predicted",
            "predictor": "table (sum of isolated entries)", "table_source": sorted(set(t.rows["source"])),
            "params": sp.params(arch), "flops": sp.flops(arch), "layers": len(sp.layers(arch))}
    emit(data, as_json, lambda d: f"{d['latency_ms']:.3f} ms predicted on {d['device']} ({d['predictor']}, "
         f"table entries {'/'.join(d['table_source'])}); {d['params'] / 1e6:.2f} M params, "
         f"{d['flops'] / 1e6:.0f} MFLOPs")


PredictorOption = typer.Option("table", "--predictor", "-p",
                               help="table (sum of entries), layer (per-kind random forests), flops (linear), "
                                    "calibrated (table + per-group correction); fit the last two with `fit`.")


@app.command()
def fit(device: str = DeviceOption, space: str = SpaceOption, predictor: str = PredictorOption,
        threads: Optional[int] = ThreadsOption, serial: Optional[str] = SerialOption,
            benchmark_model: Optional[str] = BenchmarkModelOption,
        samples: int = typer.Option(40, help="Whole subnets to measure for fitting."),
        seed: int = typer.Option(1000, help="Seed of the training subnets (validation uses others)."),
        table_path: Optional[Path] = TableOption, as_json: bool = JsonOption) -> None:
    """Fit a learned predictor on whole-subnet measurements and save it beside the table."""
    from latencykit.devices import get_device
    from latencykit.lut.learned import PREDICTORS, predictor_path
    from latencykit.lut.table import default_path, load_table
    from latencykit.lut.validate import measure_archs, sample_archs
    from latencykit.space import load_space

    sp = load_space(space)
    t = load_table(device, sp, table_path)
    model = PREDICTORS.get(predictor)(sp, t)
    archs, measured = [], None
    if predictor in ("flops", "calibrated"):
        dev = get_device(device, threads=threads, serial=serial, benchmark_model=benchmark_model)
        archs = sample_archs(sp, samples, seed)
        with progress_bar(not as_json) as task:
            measured = measure_archs(sp, dev, archs, t, progress=task(f"measure {samples} subnets twice")).measured
    model.fit(archs, measured)
    path = model.save(predictor_path(table_path or default_path(device, sp.name), predictor))
    data = {"predictor": predictor, "device": device, "space": sp.name, "measurements": model.measurements,
            "path": str(path), **({"coefficients": model.coefficients} if hasattr(model, "coefficients") else {})}
    emit(data, as_json, lambda d: f"fitted {d['predictor']} on {d['measurements']} whole-subnet measurements; "
         f"saved to {d['path']}")


@app.command()
def validate(device: str = DeviceOption, space: str = SpaceOption, predictor: str = PredictorOption,
             threads: Optional[int] = ThreadsOption, serial: Optional[str] = SerialOption,
            benchmark_model: Optional[str] = BenchmarkModelOption,
             samples: int = typer.Option(50, help="Random subnets to measure whole."),
             seed: int = typer.Option(0), table_path: Optional[Path] = TableOption,
             out: Optional[Path] = typer.Option(None, "--out", help="Folder for the JSON and the plot."),
             as_json: bool = JsonOption) -> None:
    """Measure random whole subnets, compare with a predictor, report the test-retest noise floor."""
    from latencykit.devices import get_device
    from latencykit.lut.learned import PREDICTORS, load_predictor, predictor_path
    from latencykit.lut.table import default_path, load_table
    from latencykit.lut.validate import evaluate, measure_archs, sample_archs, save
    from latencykit.paths import home
    from latencykit.space import load_space

    sp, dev = load_space(space), get_device(device, threads=threads, serial=serial, benchmark_model=benchmark_model)
    t = load_table(device, sp, table_path)
    if predictor in ("table", "layer"):
        model = PREDICTORS.get(predictor)(sp, t)
    else:
        PREDICTORS.get(predictor)
        model = load_predictor(predictor_path(table_path or default_path(device, sp.name), predictor), sp, t)
    archs = sample_archs(sp, samples, seed, exclude=model.training_archs)
    with progress_bar(not as_json) as task:
        m = measure_archs(sp, dev, archs, t, progress=task(f"measure {samples} subnets twice"))
    v = evaluate(predictor, model.predict_many, m, dev.name, sp.name)
    v.extra["measurements_used"] = model.measurements
    v.extra["table_mode"] = t.meta.mode
    files = save(v, out or home() / "validation" / dev.name / sp.name)
    data = {**v.summary(), "files": {k: str(p) for k, p in files.items()}}

    def render(d: dict):
        m, f = d["metrics"], d["noise_floor"]
        t = table(f"{d['space']} on {d['device']}: predicted ({d['predictor']}, {d['table_mode']} table) "
                     f"vs measured, {m['n']} held-out subnets",
                     ["", "RMSE ms", "MAPE %", "RMSPE %", "bias %", "±5%", "±10%", "tau"],
                     [[name, f"{x['rmse_ms']:.3f}", f"{x['mape_pct']:.2f}", f"{x['rmspe_pct']:.2f}",
                       f"{x['bias_pct']:+.2f}", f"{x['within_5_pct']:.0f}%", f"{x['within_10_pct']:.0f}%",
                       f"{x['kendall_tau']:.3f}"] for name, x in (("predicted", m), ("retest", f))])
        t.caption = (f"retest = the second measurement pass against the first (noise floor); "
                     f"tau = Kendall tau; bias > 0 = predicts low. Plot: {d['files']['plot']}")
        return t

    emit(data, as_json, render)
