"""latencykit's Python API: every step a command runs, callable from a script or a training loop.

    >>> import latencykit as lk
    >>> space = lk.load_space("autovit-xxs")
    >>> arch = space.sample(seed=0)
    >>> space.validate(arch) == arch
    True

The CLI (`latencykit.cli`) only parses arguments, calls one of these and prints the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from latencykit.arch import Arch
from latencykit.devices import Device, get_device
from latencykit.errors import ArchitectureError, TableError
from latencykit.lut.kernels import KernelPredictor, ModelPrediction, predict_model as _predict_model
from latencykit.lut.kernels import profile_kernels as _profile_kernels
from latencykit.lut.models import ModelMeasurement, measure_model as _measure_model
from latencykit.lut.measurements import MeasurementError, MeasurementSet, load_set, measured_set, table_for
from latencykit.lut.predictors import Measured, Predictor, PredictorError, get_predictor, predictor_path, resolve_predictor
from latencykit.lut.profile import ProfileResult
from latencykit.lut.protocol import Progress, Protocol
from latencykit.lut.table import LatencyTable, default_path, load_table
from latencykit.lut.validate import Validation, evaluate, measure_archs, sample_archs, save
from latencykit.nas.run import DeviceResult, export_arch, search_devices
from latencykit.nas.search import Budget, SearchConfig
from latencykit.paths import home
from latencykit.space import SearchSpace, load_space


def profile(space: SearchSpace, device: Device, path: Path | None = None, mode: str = "isolated",
            rounds: int = 15, calibrate: int = 20, progress: Progress | None = None,
            export_progress: Progress | None = None) -> ProfileResult:
    """Measure every distinct layer of `space` on `device` and write its table (resumable).

    `mode` is `isolated` (each layer alone, plus `calibrate` whole subnets in the same rounds, which
    make `calibrated` the default predictor) or `removal` (the latency drop when a layer is taken out
    of reference subnets, AutoViT 3.3.2)."""
    from latencykit.lut.profile import profile as profile_isolated
    from latencykit.lut.removal import profile_removal

    if mode == "isolated":
        return profile_isolated(space, device, path, Protocol(rounds=rounds), export_progress=export_progress,
                                progress=progress, calibrate=calibrate)
    if mode == "removal":
        return profile_removal(space, device, path, Protocol(rounds=rounds), progress=progress,
                               reference_progress=export_progress)
    raise ValueError(f"mode must be isolated or removal, not {mode!r}")


@dataclass(frozen=True)
class Prediction:
    """One architecture's predicted latency, with what answered and what the table holds."""

    device: str
    space: str
    latency_ms: float
    predictor: str
    table_sources: tuple[str, ...]
    params: int
    flops: int
    layers: int
    latency: str = "predicted"

    def to_dict(self) -> dict:
        return asdict(self)


def predictor_for(device: str, space: SearchSpace, predictor: str = "auto",
                  table_path: Path | None = None) -> Predictor:
    """The named predictor (`auto`: the best available) for the device's table of `space`, fitted (a
    device known only by a measurement set stands in an empty table, see `table_for`)."""
    table = table_for(device, space, table_path)
    return resolve_predictor(predictor, space, table, table_path or default_path(device, space.name))


def list_devices() -> list[dict]:
    """Each registered device (whether it can measure now, or why not) and each device known only by
    its tables, with the spaces it has tables for."""
    from latencykit.devices import DEVICES

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
    return rows


def describe_table(device: str, space: SearchSpace, table_path: Path | None = None) -> dict:
    """A table's summary, provenance and entries (costliest first), and the predictor `auto` picks for
    it with its coefficients and held-out error."""
    table = load_table(device, space, table_path)
    rows = table.rows.sort_values("latency_ms", ascending=False)
    model = resolve_predictor("auto", space, table, table_path or default_path(device, space.name))
    return {**table.summary(), "device_info": table.meta.device_info, "protocol": table.meta.protocol,
            "provenance": table.meta.provenance, "predictor": model.describe(),
            "entries_ms": rows[["key", "latency_ms", "q1_ms", "q3_ms", "cv", "runs", "source"]].to_dict("records")}


def predict(space: SearchSpace, arch: Arch, device: str, predictor: str = "auto",
            table_path: Path | None = None) -> Prediction:
    """An architecture's latency on a device, predicted from its table."""
    arch = space.validate(arch)
    model = predictor_for(device, space, predictor, table_path)
    return Prediction(device, space.name, model.predict(arch), model.label,
                      tuple(sorted(set(model.table.rows["source"]))), space.params(arch), space.flops(arch),
                      len(space.layers(arch)))


def measure_subnets(space: SearchSpace, device: Device, archs: list[Arch], table: LatencyTable,
                    progress: Progress | None = None) -> Measured:
    """Whole subnets measured on `device` (two passes, averaged), on the table's reference scale."""
    return Measured(tuple(archs), measure_archs(space, device, archs, table, progress=progress).measured)


def fit_predictor(space: SearchSpace, device: Device | str, predictor: str = "calibrated", samples: int = 40,
                  seed: int = 1000, table_path: Path | None = None,
                  progress: Progress | None = None) -> tuple[Predictor, Path]:
    """Fit the predictor on the device's table and whole-model measurements, and save it beside the
    table (JSON). The measurements are the device's stored measurement set where it has one
    (`lut import measurements`, `measure-set`); else `samples` random subnets are measured on `device`
    now. `device` may be a name when a set exists. Returns the predictor and its file."""
    name = device if isinstance(device, str) else device.name
    table = table_for(name, space, table_path)
    model = get_predictor(predictor)
    measured = None
    if model.requires_measurements:
        found = load_set(name, space)
        if found is not None:
            measured = found.measured()
        elif isinstance(device, str):
            raise PredictorError(f"{name} has no measurement set for {space.name}: import one with `latencykit lut "
                                 f"import measurements FILE.csv --device {name} --space {space.name}`")
        else:
            archs = sample_archs(space, samples, seed)
            measured = measure_subnets(space, device, archs, table, progress)
    model.fit(space, table, measured)
    path = model.save(predictor_path(table_path or default_path(name, space.name), predictor))
    return model, path


def measure_set(space: SearchSpace, device: Device, samples: int = 10, seed: int = 2000,
                progress: Progress | None = None) -> tuple[MeasurementSet, Path]:
    """Measure `samples` random whole architectures on `device` (two drift-corrected passes, on the
    device's table scale where it has a table) and store them as its measurement set."""
    try:
        table = load_table(device.name, space)
    except TableError:  # no table: plain drift-corrected ms
        table = None
    archs = sample_archs(space, samples, seed)
    m = measure_archs(space, device, archs, table, progress=progress)
    found = measured_set(device.name, space, [space.validate(a) for a in archs], m.measured,
                         {"seed": seed, "scale": "table reference" if table is not None else "ms now",
                          "retest_median_pct": float(np.median(np.abs(m.first - m.second) / m.measured) * 100)})
    return found, found.write()


def measure_model(model: str, devices: list[Device], input_shape: tuple[int, ...] | None = None,
                  rounds: int = 15, breakdown: bool = False) -> list[ModelMeasurement]:
    """Any model's latency on each device, side by side: a file (`.onnx`, `.tflite`, `.mlpackage`) in the
    device's format, or a PyTorch factory `package.module:function` (importing it runs that code)
    exported at `input_shape` through each device's exporter; per-operator times with `breakdown`."""
    return [_measure_model(model, d, input_shape, rounds, breakdown) for d in devices]


def profile_kernels(device: Device, samples: int = 30, rounds: int = 5, seed: int = 0, path: Path | None = None,
                    progress: Progress | None = None, networks: int | None = None) -> tuple[KernelPredictor, Path]:
    """Measure sampled configurations of every kernel type on `device` (adaptively: half where the first
    fit is least sure) and `networks` random networks whole (how kernels compose; by default 160 on ONNX
    devices, 40 where networks are converted), and save the kernel predictor that `predict_model` uses."""
    return _profile_kernels(device, samples, rounds, seed, path=path, progress=progress, networks=networks)


def predict_model(model: Path, device: str, rescale: bool = False) -> ModelPrediction:
    """Any ONNX model's latency on `device` from its kernel predictor, with the per-kernel breakdown; an
    operator no kernel rule covers is named in the error (measure that model whole instead). `rescale`:
    on the device's speed now, by its reference block measured now against its time when profiled."""
    return _predict_model(Path(model), device, rescale=rescale)


def read_archs(space: SearchSpace, file: Path) -> list[Arch]:
    """Architectures from a file: one JSON object or cell string per line, or a CSV with an `arch` column."""
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MeasurementError(f"cannot read architectures from {file}: {exc}") from None
    lines = [l for l in lines if l.strip()]
    if lines and lines[0].split(",")[0].strip() in ("arch", "index"):
        import csv

        rows = list(csv.DictReader(lines))
        if "arch" not in (rows[0] if rows else {}):
            raise MeasurementError(f"{file}: a CSV of architectures needs an `arch` column")
        lines = [r["arch"] for r in rows]
    if not lines:
        raise MeasurementError(f"{file} holds no architectures")
    out = []
    for n, text in enumerate(lines, start=1):
        try:
            out.append(space.validate(Arch.from_json(text)))
        except ArchitectureError as exc:
            raise MeasurementError(f"{file}, architecture {n}: {exc}") from None
    return out


def predict_many(space: SearchSpace, archs: list[Arch], device: str, predictor: str = "auto",
                 table_path: Path | None = None) -> tuple[Predictor, np.ndarray]:
    """Many architectures' latencies on a device at once (one vectorised call); the predictor and the ms."""
    model = predictor_for(device, space, predictor, table_path)
    return model, model.predict_many(archs)


def validate(space: SearchSpace, device: Device, predictor: str = "auto", samples: int = 50, seed: int = 0,
             table_path: Path | None = None, out: Path | None = None,
             progress: Progress | None = None) -> tuple[Validation, dict[str, Path]]:
    """Measure random whole subnets the predictor never saw, twice, and compare: the metrics, the
    test-retest noise floor, and the files written (JSON with every measurement, a scatter plot)."""
    model = predictor_for(device.name, space, predictor, table_path)
    archs = sample_archs(space, samples, seed, exclude=model.training_archs)
    m = measure_archs(space, device, archs, model.table, progress=progress)
    v = evaluate(model.name, model.predict_many, m, device.name, space.name)
    v.extra.update(answered_by=model.label, measurements_used=model.measurements, table_mode=model.table.meta.mode)
    return v, save(v, out or home() / "validation" / device.name / space.name)


def search(space: SearchSpace, devices: list[str], budget: Budget, proxy: str = "vintk",
           config: SearchConfig = SearchConfig(), out: Path | None = None, measure: bool = True,
           checkpoint: str | None = None, predictor: str = "auto",
           progress: Callable[[str], None] | None = None, threads: int = 1,
           cache: bool = True, margin: bool = True) -> list[DeviceResult]:
    """The most accurate subnet within `budget` on each device (latency through its predictor), by the
    accuracy signal `proxy` (or a supernet checkpoint); writes results, arch files and a plot to `out`.
    Each subnet is scored once for all devices, on `threads` threads, and its score kept in
    `$LATENCYKIT_HOME/scores.sqlite` for later runs (`cache=False`: neither read nor written). With
    `margin`, the latency budget is met with 95% confidence given the predictor's held-out error."""
    if checkpoint:
        proxy = "supernet"
    return search_devices(space, list(devices), budget, proxy, config, out or home() / "search" / space.name,
                          measure, {"checkpoint": checkpoint} if checkpoint else None, progress, predictor,
                          threads, cache, margin)


def export_subnet(space: SearchSpace, arch: Arch, fmt: str, out: Path, checkpoint: str | None = None) -> dict:
    """Write a subnet as ONNX, TFLite or Core ML, with a supernet's weights given a checkpoint."""
    return export_arch(space, arch, fmt, out, checkpoint)


__all__ = ["Budget", "SearchConfig", "describe_table", "list_devices", "Prediction", "fit_predictor", "measure_model", "predict_model", "profile_kernels", "measure_set", "predict_many", "read_archs", "get_device", "get_predictor", "load_space", "load_table",
           "measure_subnets", "predict", "predictor_for", "profile", "search", "export_subnet", "validate"]
