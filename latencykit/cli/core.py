"""Core commands: devices, spaces, profile, show, predict, validate."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from latencykit.cli.app import SEED_MAX, JsonOption, app, console, emit, non_empty_file, one_of, table

DeviceOption = typer.Option(..., "--device", "-d", help="Device name (see `latencykit devices`).")
SpaceOption = typer.Option(..., "--space", "-s", help="Search space name or space file (see `latencykit spaces`).")
ThreadsOption = typer.Option(None, "--threads", min=1, max=256,
                             help="Runtime threads, for devices that take them (host: 1).")
SerialOption = typer.Option(None, "--serial", help="Android: which attached phone (adb serial).")
BenchmarkModelOption = typer.Option(None, "--benchmark-model", exists=True, dir_okay=False, readable=True,
                                    callback=non_empty_file,
                                    help="Android: path of TFLite's benchmark_model binary on this machine.")
OptionalSpaceOption = typer.Option(None, "--space", "-s", help="Search space name or space file (see `latencykit spaces`).")
TableOption = typer.Option(None, "--table", exists=True, dir_okay=False, readable=True, callback=non_empty_file,
                           help="Table file (default: $LATENCYKIT_HOME/tables/DEVICE/SPACE.parquet).")


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


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
    from latencykit.api import list_devices

    rows = list_devices()
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
         which: str = typer.Option("random", "--which", help="random, smallest, largest, or a named "
                                   "architecture of the space (e.g. A1 in nasvit)."),
         seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed for --which random.")) -> None:
    """Print an architecture of a space as JSON, or a cell space's as its cell string (to edit, or to
    feed `predict`)."""
    from latencykit.errors import LatencykitError
    from latencykit.space import load_space

    sp = load_space(space)
    pick = {"random": lambda: sp.sample(seed), "smallest": sp.smallest, "largest": sp.largest,
            **{name: (lambda name=name: sp.named(name)) for name in sp.named_archs}}
    if which not in pick:
        raise LatencykitError(f"--which must be one of {', '.join(pick)}, not {which!r}")
    typer.echo(pick[which]().to_text())


@app.command()
def profile(device: str = DeviceOption, space: Optional[str] = OptionalSpaceOption, threads: Optional[int] = ThreadsOption, serial: Optional[str] = SerialOption,
            benchmark_model: Optional[Path] = BenchmarkModelOption,
            out: Optional[Path] = typer.Option(None, "--out", dir_okay=False, help="Table file to write "
                                               "(with --kernels: the kernel predictor's JSON)."),
            rounds: Optional[int] = typer.Option(None, min=1, max=1000, help="Interleaved measurement rounds "
                                                 "(15 for a table, 5 for kernels)."),
            calibrate: int = typer.Option(20, min=0, max=1000, help="Whole subnets measured in the same rounds "
                                          "to calibrate the table (0: none); isolated mode."),
            mode: Literal["isolated", "removal"] = typer.Option("isolated", help="isolated: each layer alone; removal: the latency drop "
                                     "when a layer is taken out of reference subnets (AutoViT 3.3.2)."),
            kernels: bool = typer.Option(False, "--kernels", help="Profile kernel types (conv, depthwise, linear, "
                                         "attention matmul, pooling, elementwise, ...) for `predict MODEL.onnx`, "
                                         "instead of a space's layers."),
            kernel_samples: int = typer.Option(30, "--kernel-samples", min=2, max=10_000,
                                               help="With --kernels: samples per kernel type (the costly, varied "
                                                    "types more: x20 conv, x8 depthwise, grouped conv and linear)."),
            kernel_networks: Optional[int] = typer.Option(
                None, "--kernel-networks", min=0, max=10_000,
                help="With --kernels: random networks measured whole to fit how kernels compose inside a network "
                     "(0: none; default 160 on ONNX devices, 40 where each network is a conversion: TFLite, Core ML)."),
            as_json: bool = JsonOption) -> None:
    """Measure every distinct layer of a space on a device and write its lookup table (resumable); with
    --kernels, sample every kernel type instead and fit the kernel predictor."""
    from latencykit.api import profile as run
    from latencykit.devices import get_device
    from latencykit.errors import LatencykitError
    from latencykit.space import load_space

    if kernels == (space is not None):
        raise LatencykitError("give --space SPACE to profile a space's layers, or --kernels (and no --space) "
                              "to profile kernel types")
    dev = get_device(device, threads=threads, serial=serial, benchmark_model=_str(benchmark_model))
    if kernels:
        _profile_kernels(dev, kernel_samples, rounds or 5, out, kernel_networks, as_json)
        return
    sp, rounds = load_space(space), rounds or 15
    with progress_bar(not as_json) as task:
        steps = ("export", f"measure on {dev.name}") if mode == "isolated" else (
            "reference subnets", f"isolated on {dev.name}")
        result = run(sp, dev, out, mode, rounds, calibrate, progress=task(steps[1]), export_progress=task(steps[0]))
    s = result.summary()
    emit(s, as_json, lambda s: f"[bold]{s['entries']}[/] entries measured on {s['device']} for {s['space']} "
         f"in {s['seconds']:.1f} s" + (f" (resumed after {s['resumed_rounds']} rounds)" if s["resumed_rounds"] else "")
         + f"\ntable: {s['path']}")


def _profile_kernels(dev, samples: int, rounds: int, out: Optional[Path], networks: Optional[int],
                     as_json: bool) -> None:
    from latencykit.api import profile_kernels

    with progress_bar(not as_json) as task:
        model, path = profile_kernels(dev, samples, rounds, path=out, progress=task(f"kernels on {dev.name}"),
                                      networks=networks)
    data = {"device": dev.name, "path": str(path), "seconds": model.info["seconds"],
            "overhead_ms": model.overhead_ms, "node_ms": model.node_ms,
            "samples": {k: len(v) for k, v in model.samples.items()}, "composition": model.composition.to_dict(),
            "held_out": model.held_out()}
    held = data["held_out"]
    emit(data, as_json, lambda d: f"measured {sum(d['samples'].values())} kernel samples and "
         f"{d['composition']['networks']} random networks on {d['device']} in {d['seconds']:.0f} s ("
         + ", ".join(f"{k} {n}" for k, n in d["samples"].items()) + f")\nkernel predictor: {d['path']}"
         + (f"\nrandom networks held out in turn: {held['within_10_pct']:.0f}% within ±10%, "
            f"{held['within_5_pct']:.0f}% within ±5%" if held else ""))


@app.command()
def show(device: str = DeviceOption, space: str = SpaceOption, table_path: Optional[Path] = TableOption,
         top: int = typer.Option(10, min=1, help="How many of the costliest entries to list."),
         as_json: bool = JsonOption) -> None:
    """A table's provenance, its costliest entries, and the predictor that answers by default."""
    from latencykit.api import describe_table
    from latencykit.space import load_space

    data = describe_table(device, load_space(space), table_path)

    def render(d: dict):
        head = table(f"{d['device']} / {d['space']}: {d['entries']} entries ({d['mode']}), sum {d['total_ms']:.2f} ms",
                     ["layer", "latency ms", "IQR ms", "CV", "runs", "source"],
                     [[r["key"], f"{r['latency_ms']:.4f}", f"{r['q1_ms']:.4f}-{r['q3_ms']:.4f}",
                       f"{r['cv']:.3f}", r["runs"], r["source"]] for r in d["entries_ms"][:top]])
        p = d["predictor"]
        err = p.get("expected_error_pct")
        coef = ", ".join(f"{f} {c:.3f}" for f, c in zip(p.get("features", []), p.get("coefficients", [])))
        head.caption = (f"{d['device_info'].get('runtime', '')} {d['device_info'].get('cpu', '')}; created {d['created']}"
                        f"\ndefault predictor: {p['label']}"
                        + (f" ({coef}; intercept {p['intercept_ms']:+.3f} ms)" if coef else "")
                        + (f"; held-out error RMSPE {err:.2f}%" if err is not None else
                           "; held-out error unknown (no whole subnets measured with this table)"))
        return head

    emit(data, as_json, render)


def _predictors() -> list[str]:
    from latencykit.lut.predictors import PREDICTORS

    return ["auto", *PREDICTORS.names()]


PredictorOption = typer.Option("auto", "--predictor", "-p", callback=one_of(_predictors),
                               help="auto (the best available: calibrated where the table has whole-model "
                                    "measurements or a fitted one, else a fitted transfer, else the table's sum), "
                                    "isolated, removal, layer (per-kind random forests), flops, calibrated, transfer.")


@app.command()
def predict(arch_file: Optional[Path] = typer.Argument(None, exists=True, dir_okay=False, readable=True,
                                                   callback=non_empty_file,
                                                   help="Architecture file (JSON, or a cell string) with --space; "
                                                        "or any ONNX model (.onnx), predicted kernel by kernel."),
            device: str = DeviceOption, space: Optional[str] = OptionalSpaceOption, predictor: str = PredictorOption,
            archs: Optional[Path] = typer.Option(None, "--archs", exists=True, dir_okay=False, readable=True,
                                                 callback=non_empty_file, help="Many architectures: one JSON or cell string "
                                                 "per line, or a CSV with an `arch` column; writes a CSV."),
            out: Optional[Path] = typer.Option(None, "--out", dir_okay=False, help="With --archs: the CSV to write "
                                               "(default: ARCHS.DEVICE.predicted.csv beside it)."),
            table_path: Optional[Path] = TableOption,
            breakdown: bool = typer.Option(False, "--breakdown", help="With an ONNX model: every kernel's share."),
            rescale: bool = typer.Option(False, "--rescale", help="With an ONNX model: measure the device's reference "
                                         "block now and scale to its speed now (the device must be attached)."),
            as_json: bool = JsonOption) -> None:
    """Predict an architecture's latency on a device (or many, with --archs, into a CSV), or any ONNX
    model's from the device's kernel predictor (`profile --kernels`)."""
    from latencykit.api import predict as run
    from latencykit.arch import Arch
    from latencykit.errors import LatencykitError
    from latencykit.space import load_space

    if arch_file is not None and arch_file.suffix.lower() == ".onnx":
        if space is not None or archs is not None:
            raise LatencykitError("an ONNX model is predicted kernel by kernel: drop --space and --archs")
        _predict_onnx(arch_file, device, breakdown, rescale, as_json)
        return
    if rescale:
        raise LatencykitError("--rescale is for an ONNX model predicted kernel by kernel: drop it with --space")
    if space is None:
        raise LatencykitError("give --space SPACE with an architecture file (or an .onnx model without it)")
    sp = load_space(space)
    if archs is not None:
        _predict_file(sp, archs, device, predictor, out, table_path, as_json)
        return
    if arch_file is None:
        raise LatencykitError("give an architecture file, or --archs FILE for many")
    data = run(sp, Arch.load(arch_file), device, predictor, table_path).to_dict()
    emit(data, as_json, lambda d: f"{d['latency_ms']:.3f} ms predicted on {d['device']} by {d['predictor']} "
         f"(table entries {'/'.join(d['table_sources']) or 'none'}); {d['params'] / 1e6:.2f} M params, "
         f"{d['flops'] / 1e6:.0f} MFLOPs")


def _predict_onnx(model: Path, device: str, breakdown: bool, rescale: bool, as_json: bool) -> None:
    from latencykit.api import predict_model

    data = predict_model(model, device, rescale).to_dict()
    if not breakdown:
        data.pop("kernels")

    def render(d: dict):
        head = f"{d['latency_ms']:.3f} ms predicted on {d['device']} from its kernels" + (
            f", rescaled x{d['scale']:.3f} to its reference block measured now" if rescale else "")
        if d["held_out"]:
            h = d["held_out"]
            head += (f"\nheld out, {h['networks']} random networks: {h['within_10_pct']:.0f}% within ±10%, "
                     f"{h['within_5_pct']:.0f}% ±5%; real models do worse (docs/models.md)")
        if not breakdown:
            return head
        rows = sorted(d["kernels"], key=lambda r: -r["ms"])
        total = d["latency_ms"] or 1.0
        return table(head, ["kernel", "configuration", "ops", "ms", "%"],
                     [[r["kernel"], " ".join(f"{k}={v}" for k, v in r["config"].items()), r["ops"],
                       f"{r['ms']:.4f}", f"{100 * r['ms'] / total:.1f}"] for r in rows])

    emit(data, as_json, render)


def _predict_file(sp, archs: Path, device: str, predictor: str, out: Optional[Path], table_path: Optional[Path],
                  as_json: bool) -> None:
    import csv
    import io
    import time

    from latencykit.api import predict_many, read_archs
    from latencykit.files import atomic_write_text

    start = time.perf_counter()
    items = read_archs(sp, archs)
    model, ms = predict_many(sp, items, device, predictor, table_path)
    out = out or archs.with_name(f"{archs.stem}.{device}.predicted.csv")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["arch", "predicted_ms"])
    writer.writerows([a.to_text(), f"{v:.6g}"] for a, v in zip(items, ms))
    atomic_write_text(out, buf.getvalue())
    info = model.describe()
    data = {"device": device, "space": sp.name, "predictor": model.label, "architectures": len(items),
            "out": str(out), "seconds": time.perf_counter() - start, "cv": info.get("cv"), "model": info.get("model")}
    emit(data, as_json, lambda d: f"predicted {d['architectures']} architectures on {d['device']} by {d['predictor']}"
         + (f" ({d['model']}; cross-validated error {_cv_text(d['cv'])})" if d.get("cv") else "")
         + f" in {d['seconds']:.1f} s\nwrote {d['out']}")


def _cv_text(cv: dict) -> str:
    return (f"RMSPE {cv['rmspe_pct']:.1f}%, MAPE {cv['mape_pct']:.1f}%, {cv['within_10_pct']:.0f}% within ±10%, "
            f"{cv['method']}")


@app.command()
def fit(device: str = DeviceOption, space: str = SpaceOption,
        predictor: str = typer.Option("calibrated", "--predictor", "-p", callback=one_of(_predictors),
                                      help="calibrated (table sums per layer kind, corrected), flops (linear), or "
                                           "transfer (few-shot, from other devices' measurement sets)."),
        threads: Optional[int] = ThreadsOption, serial: Optional[str] = SerialOption,
            benchmark_model: Optional[Path] = BenchmarkModelOption,
        samples: int = typer.Option(40, min=1, max=10_000, help="Whole subnets to measure for fitting (when the "
                                    "device has no measurement set)."),
        seed: int = typer.Option(1000, min=0, max=SEED_MAX, help="Seed of the training subnets (validation uses others)."),
        table_path: Optional[Path] = TableOption, as_json: bool = JsonOption) -> None:
    """Fit a predictor on whole-model measurements and save it beside the table: the device's measurement
    set where it has one (`lut import measurements`, `measure-set`), else subnets measured now."""
    from latencykit.api import fit_predictor
    from latencykit.devices import get_device
    from latencykit.lut.measurements import load_set
    from latencykit.lut.predictors import PredictorError, get_predictor
    from latencykit.space import load_space

    if not get_predictor(predictor).requires_measurements:
        raise PredictorError(f"the {predictor} predictor is fit from the table alone; nothing to measure "
                             "(use it directly with --predictor)")
    sp = load_space(space)
    dev = device if load_set(device, sp) is not None else get_device(
        device, threads=threads, serial=serial, benchmark_model=_str(benchmark_model))
    with progress_bar(not as_json and not isinstance(dev, str)) as task:
        model, path = fit_predictor(sp, dev, predictor, samples, seed, table_path,
                                    task(f"measure {samples} subnets twice"))
    data = {"device": device, "space": sp.name, **model.describe(), "path": str(path)}

    def render(d: dict) -> str:
        if "cv" in d:
            return (f"fitted {d['label']} ({d['model']}; references: {', '.join(d['references']) or 'none'})\n"
                    f"cross-validated error on the {d['measurements']} measurements: {_cv_text(d['cv'])}\n"
                    "candidates (leave-one-out RMSPE): "
                    + ", ".join(f"{k} {v['rmspe_pct']:.1f}%" for k, v in d["candidates"].items())
                    + f"\nsaved to {d['path']}")
        return (f"fitted {d['label']} on {d['measurements']} whole-subnet measurements"
                + (f" (leave-one-out RMSPE {d['loo_rmspe_pct']:.2f}%)" if "loo_rmspe_pct" in d else "")
                + "; " + ", ".join(f"{f} {c:.3f}" for f, c in zip(d["features"], d["coefficients"]))
                + f", intercept {d['intercept_ms']:+.3f} ms\nsaved to {d['path']}")

    emit(data, as_json, render)


@app.command("measure-set")
def measure_set(device: str = DeviceOption, space: str = SpaceOption, threads: Optional[int] = ThreadsOption,
                serial: Optional[str] = SerialOption, benchmark_model: Optional[Path] = BenchmarkModelOption,
                samples: int = typer.Option(10, min=1, max=10_000, help="Random whole architectures to measure."),
                seed: int = typer.Option(2000, min=0, max=SEED_MAX, help="Seed of the architectures."),
                as_json: bool = JsonOption) -> None:
    """Measure k random whole architectures on a device and store them as its measurement set (what
    `fit --predictor transfer` learns from)."""
    from latencykit.api import measure_set as run
    from latencykit.devices import get_device
    from latencykit.space import load_space

    sp, dev = load_space(space), get_device(device, threads=threads, serial=serial, benchmark_model=_str(benchmark_model))
    with progress_bar(not as_json) as task:
        found, path = run(sp, dev, samples, seed, task(f"measure {samples} architectures twice"))
    s = {**found.summary(), "path": str(path)}
    emit(s, as_json, lambda s: f"measured [bold]{s['count']}[/] whole architectures of {s['space']} on {s['device']} "
         f"({s['min_ms']:.3g}-{s['max_ms']:.3g} ms, retest median {s['retest_median_pct']:.1f}%)\n"
         f"measurement set: {s['path']}")


@app.command()
def validate(device: str = DeviceOption, space: str = SpaceOption, predictor: str = PredictorOption,
             threads: Optional[int] = ThreadsOption, serial: Optional[str] = SerialOption,
            benchmark_model: Optional[Path] = BenchmarkModelOption,
             samples: int = typer.Option(50, min=2, max=10_000, help="Random subnets to measure whole."),
             seed: int = typer.Option(0, min=0, max=SEED_MAX), table_path: Optional[Path] = TableOption,
             out: Optional[Path] = typer.Option(None, "--out", file_okay=False, help="Folder for the JSON and the plot."),
             as_json: bool = JsonOption) -> None:
    """Measure random whole subnets, compare with a predictor, report the test-retest noise floor."""
    from latencykit.api import validate as run
    from latencykit.devices import get_device
    from latencykit.space import load_space

    sp, dev = load_space(space), get_device(device, threads=threads, serial=serial, benchmark_model=_str(benchmark_model))
    with progress_bar(not as_json) as task:
        v, files = run(sp, dev, predictor, samples, seed, table_path, out, task(f"measure {samples} subnets twice"))
    data = {**v.summary(), "files": {k: str(p) for k, p in files.items()}}

    def render(d: dict):
        m, f = d["metrics"], d["noise_floor"]
        t = table(f"{d['space']} on {d['device']}: predicted ({d['answered_by']}, {d['table_mode']} table) "
                  f"vs measured, {m['n']} held-out subnets",
                  ["", "RMSE ms", "MAPE %", "RMSPE %", "bias %", "±5%", "±10%", "tau"],
                  [[name, f"{x['rmse_ms']:.3f}", f"{x['mape_pct']:.2f}", f"{x['rmspe_pct']:.2f}",
                    f"{x['bias_pct']:+.2f}", f"{x['within_5_pct']:.0f}%", f"{x['within_10_pct']:.0f}%",
                    f"{x['kendall_tau']:.3f}"] for name, x in (("predicted", m), ("retest", f))])
        t.caption = (f"retest = the second measurement pass against the first (noise floor); "
                     f"tau = Kendall tau; bias > 0 = predicts low. Plot: {d['files']['plot']}")
        return t

    emit(data, as_json, render)
