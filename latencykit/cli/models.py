"""Bring-your-own-model commands: measure any ONNX / TFLite / Core ML file or PyTorch factory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from latencykit.cli.app import JsonOption, app, emit, table
from latencykit.cli.core import BenchmarkModelOption, SerialOption, ThreadsOption, _str


def _input_shape(value: Optional[str]) -> Optional[str]:
    """Typer callback: --input must parse as sizes joined by x."""
    if value is not None:
        from latencykit.lut.models import ModelError, parse_input

        try:
            parse_input(value)
        except ModelError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _device_list(value: Optional[str]) -> Optional[str]:
    """Typer callback: --compare is device names separated by commas, each known, none twice."""
    if value is None:
        return value
    from latencykit.devices import DEVICES

    names = [v.strip() for v in value.split(",")]
    known = DEVICES.names()
    for n in names:
        if n not in known:
            raise typer.BadParameter(f"{n!r} is not one of {', '.join(map(repr, known))}.")
    if len(set(names)) != len(names):
        raise typer.BadParameter(f"{value!r} names a device twice.")
    return value


@app.command()
def measure(model: str = typer.Argument(..., help="A model file (.onnx, .tflite, .mlpackage) in the device's "
                                        "format, or a PyTorch factory package.module:function (imported and run)."),
            device: Optional[str] = typer.Option(None, "--device", "-d", help="Device name (see `latencykit devices`)."),
            compare: Optional[str] = typer.Option(None, "--compare", callback=_device_list,
                                                  help="Several devices side by side, comma-separated: host,host-litert."),
            input_shape: Optional[str] = typer.Option(None, "--input", callback=_input_shape,
                                                      help="A factory's input shape, e.g. 1x3x224x224."),
            rounds: int = typer.Option(15, min=1, max=1000, help="Interleaved measurement rounds."),
            breakdown: bool = typer.Option(False, "--breakdown", help="Per-operator times (ONNX Runtime profiler)."),
            top: int = typer.Option(15, min=1, max=10_000, help="With --breakdown: how many operators to list."),
            chart: Optional[Path] = typer.Option(None, "--chart", dir_okay=False,
                                                 help="With --breakdown: a bar chart PNG of time per operator type."),
            threads: Optional[int] = ThreadsOption, serial: Optional[str] = SerialOption,
            benchmark_model: Optional[Path] = BenchmarkModelOption, as_json: bool = JsonOption) -> None:
    """Measure any model on a device (or several) with the tables' drift-corrected protocol."""
    from latencykit.api import measure_model
    from latencykit.devices import get_device
    from latencykit.errors import LatencykitError
    from latencykit.lut.models import breakdown_chart, by_op_type, parse_input

    if (device is None) == (compare is None):
        raise LatencykitError("give one device with --device, or several with --compare D1,D2")
    if chart is not None and not breakdown:
        raise LatencykitError("--chart draws the per-operator breakdown: add --breakdown")
    names = [device] if device else [n.strip() for n in compare.split(",")]
    devices = [get_device(n, threads=threads, serial=serial, benchmark_model=_str(benchmark_model)) for n in names]
    shape = parse_input(input_shape) if input_shape else None
    results = measure_model(model, devices, shape, rounds, breakdown)
    data = {"model": model, "results": [r.to_dict() for r in results]}
    if chart is not None:
        data["chart"] = str(breakdown_chart(results, chart))

    def render(d: dict):
        rows = [[r.device, f"{r.latency_ms:.3f}", f"{r.q1_ms:.3f}-{r.q3_ms:.3f}", f"{r.cv:.3f}", r.rounds,
                 f"{r.raw_ms:.3f}", r.device_info.get("runtime", "")] for r in results]
        out = [table(f"{model}: drift-corrected latency", ["device", "ms", "IQR ms", "CV", "rounds", "raw ms",
                                                           "runtime"], rows)]
        for r in results if breakdown else []:
            total = sum(o.ms for o in r.breakdown) or 1.0
            out.append(table(f"{r.device}: costliest operators ({len(r.breakdown)} nodes, "
                             f"{sum(o.ms for o in r.breakdown):.3f} ms of kernels)", ["operator", "node", "ms", "%"],
                             [[o.op, o.node, f"{o.ms:.4f}", f"{100 * o.ms / total:.1f}"] for o in r.breakdown[:top]]))
            out.append(table(f"{r.device}: by operator type", ["operator", "nodes", "ms", "%"],
                             [[op, n, f"{ms:.4f}", f"{100 * ms / total:.1f}"] for op, ms, n in by_op_type(r.breakdown)]))
        from rich.console import Group

        return Group(*out, *([f"chart: {d['chart']}"] if "chart" in d else []))

    emit(data, as_json, render)
