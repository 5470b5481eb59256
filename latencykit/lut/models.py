"""Bring your own model: measure any ONNX / TFLite / Core ML file, or a PyTorch factory, on a device.

A model is a file (its suffix gives its format, which must be the device's) or a factory
`package.module:function` returning an `nn.Module`, exported through the device's own exporter at
`--input` shape. Importing a factory runs its module's code: that is the point, and it is the
user's code. Measurement is the tables' protocol (shuffled interleaved rounds with the reference
block, drift-corrected), so a model's latency is on the same footing as a table's entries.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from latencykit.devices import Device, require
from latencykit.devices.base import OpTime
from latencykit.errors import LatencykitError
from latencykit.export import ExportCache, default_cache
from latencykit.lut.protocol import REF_KEY, Protocol, export_reference, measure_models

FORMAT_OF_SUFFIX = {".onnx": "onnx", ".tflite": "tflite", ".mlpackage": "coreml", ".mlmodel": "coreml"}
FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
INPUT = re.compile(r"^\d+(x\d+)*$")
MAX_INPUT_ELEMENTS = 1 << 28


class ModelError(LatencykitError):
    """A model that cannot be read, built or run: corrupt, unsupported, or not the device's format."""


def parse_input(text: str) -> tuple[int, ...]:
    """`1x3x224x224` -> (1, 3, 224, 224); every size at least 1, the whole at most 2**28 elements."""
    text = text.strip().lower()
    if not INPUT.match(text):
        raise ModelError(f"--input must be sizes joined by x, like 1x3x224x224, not {text!r}")
    shape = tuple(int(s) for s in text.split("x"))
    n = 1
    for s in shape:
        n *= s
    if min(shape) < 1 or n > MAX_INPUT_ELEMENTS:
        raise ModelError(f"--input {text}: every size must be at least 1 and the input at most {MAX_INPUT_ELEMENTS} values")
    return shape


def is_factory(model: str) -> bool:
    return bool(FACTORY.match(model)) and not Path(model).exists()


def load_factory(spec: str):
    """The `nn.Module` that `package.module:function()` returns (this imports and runs the user's code)."""
    import importlib

    import torch

    module_name, _, attr = spec.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # the user's module may raise anything while importing
        raise ModelError(f"cannot import {spec}: {type(exc).__name__}: {exc}") from None
    if not callable(obj):
        raise ModelError(f"{spec} is not callable: a factory is a function returning a torch.nn.Module")
    try:
        module = obj()
    except Exception as exc:
        raise ModelError(f"{spec}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{spec}() returned a {type(module).__name__}, not a torch.nn.Module")
    return module.eval()


def file_format(path: Path) -> str:
    fmt = FORMAT_OF_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise ModelError(f"{path.name}: unsupported model file (known: {', '.join(FORMAT_OF_SUFFIX)}, "
                         "or a PyTorch factory package.module:function)")
    return fmt


def check_file(path: Path) -> str:
    """The file's format, after a structural check that refuses a corrupt file before any runtime sees it."""
    if not path.exists():
        raise ModelError(f"{path}: no such model file")
    fmt = file_format(path)
    if fmt == "onnx":
        import onnx

        try:
            onnx.checker.check_model(onnx.load(str(path), load_external_data=False))
        except Exception as exc:
            raise ModelError(f"{path.name} is not a valid ONNX model: {' '.join(str(exc).split())[:200]}") from None
    elif fmt == "tflite":
        head = path.read_bytes()[:8] if path.is_file() else b""
        if head[4:8] != b"TFL3":
            raise ModelError(f"{path.name} is not a TFLite flatbuffer (no TFL3 identifier)")
    elif path.suffix.lower() == ".mlpackage" and not (path / "Manifest.json").is_file():
        raise ModelError(f"{path.name} is not a Core ML package (no Manifest.json)")
    return fmt


def model_file(model: str, device: Device, input_shape: tuple[int, ...] | None,
               cache: ExportCache | None = None) -> Path:
    """The file `device` runs for `model`: the file itself, or the factory exported to the device's format."""
    if is_factory(model):
        if input_shape is None:
            raise ModelError(f"{model} is a PyTorch factory: give its input shape with --input, e.g. 1x3x224x224")
        import torch

        torch.manual_seed(0)  # seeded weights and input: the same factory gives the same file, found in the cache
        module = load_factory(model)
        inputs = (torch.randn(*input_shape),)
        try:
            return (cache or default_cache()).export(module, inputs, device.format)
        except LatencykitError as exc:
            raise ModelError(f"{model} at input {'x'.join(map(str, input_shape))}: {exc}") from None
    path = Path(model)
    fmt = check_file(path)
    if input_shape is not None:
        raise ModelError("--input is for a PyTorch factory; a model file carries its own input shape")
    if fmt != device.format:
        raise ModelError(f"{path.name} is a {fmt} model; device {device.name} runs {device.format} models "
                         f"(pass a PyTorch factory to export it, or a {device.format} file)")
    return path


@dataclass(frozen=True)
class ModelMeasurement:
    """One model measured on one device, with where and how, and optionally its per-operator times."""

    model: str
    device: str
    file: str
    latency_ms: float
    q1_ms: float
    q3_ms: float
    cv: float
    rounds: int
    raw_ms: float
    reference_ms: float
    seconds: float
    device_info: dict
    protocol: dict
    breakdown: list[OpTime] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def measure_model(model: str, device: Device, input_shape: tuple[int, ...] | None = None, rounds: int = 15,
                  breakdown: bool = False, cache: ExportCache | None = None) -> ModelMeasurement:
    """A model's drift-corrected latency on `device` (and its per-operator times with `breakdown`)."""
    require(device)
    cache = cache or default_cache()
    path = model_file(model, device, input_shape, cache)
    protocol = Protocol(rounds=rounds)
    start = time.perf_counter()
    try:
        stats = measure_models(device, {"model": path}, export_reference(cache, device.format), protocol,
                               whole={"model"})  # as tables measure whole networks
    except LatencykitError as exc:
        raise ModelError(f"{path.name} cannot run on {device.name}: {exc}") from None
    except Exception as exc:  # a runtime's own error on a file it loaded: still one line for the user
        raise ModelError(f"{path.name} failed on {device.name}: {type(exc).__name__}: {exc}") from None
    ops = device.profile_ops(path, max(10, rounds)) if breakdown else []
    s = stats["model"]
    return ModelMeasurement(model, device.name, str(path), s.latency_ms, s.q1_ms, s.q3_ms, s.cv, s.runs,
                            s.raw_ms, stats[REF_KEY].latency_ms, time.perf_counter() - start,
                            device.describe(), protocol.to_dict(), ops)


def by_op_type(ops: list[OpTime]) -> list[tuple[str, float, int]]:
    """Per-operator times summed by operator type, costliest first: (type, ms, nodes)."""
    totals: dict[str, list] = {}
    for o in ops:
        entry = totals.setdefault(o.op, [0.0, 0])
        entry[0] += o.ms
        entry[1] += 1
    return sorted(((op, ms, n) for op, (ms, n) in totals.items()), key=lambda t: -t[1])


def breakdown_chart(results: list[ModelMeasurement], path: Path, top: int = 15) -> Path:
    """A horizontal bar chart of time per operator type (one bar group per device), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from latencykit.files import atomic_write

    types = [op for op, _, _ in by_op_type([o for r in results for o in r.breakdown])][:top]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(types) + 1.5))
    height = 0.8 / max(1, len(results))
    y = np.arange(len(types))
    for i, r in enumerate(results):
        ms = dict((op, t) for op, t, _ in by_op_type(r.breakdown))
        ax.barh(y + i * height, [ms.get(t, 0.0) for t in types], height, label=r.device)
    ax.set_yticks(y + height * (len(results) - 1) / 2, types)
    ax.invert_yaxis()
    ax.set_xlabel("ms per inference")
    ax.set_title(f"{Path(results[0].model).name}: time per operator type")
    ax.legend()
    fig.tight_layout()
    suffix = path.suffix or ".png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix.lstrip(".")))
    plt.close(fig)
    return path
