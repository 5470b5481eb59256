"""Export torch modules to device file formats, cached by content so nothing is exported twice.

ONNX uses the TorchScript exporter (`dynamo=False`): measured here it takes 0.03-0.17 s per module
against 1.3-4 s for the dynamo exporter, and a table needs ~100 exports. It is deprecated in torch;
its warning is silenced here, and the exporter name is part of the cache key so a switch re-exports.
Other formats (TFLite, Core ML) register in `EXPORTERS` the same way.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from latencykit.blocks import build, build_layer, layer_inputs
from latencykit.errors import LatencykitError
from latencykit.exporters import channels_last_io, export_coreml, export_tflite
from latencykit.kernels import build_kernel
from latencykit.layers import LayerSpec
from latencykit.paths import home
from latencykit.registry import Registry
from latencykit.tflite_writer import WRITER, WRITTEN, write_kernel

ExportFn = Callable[[torch.nn.Module, tuple, Path], None]
EXPORTERS: Registry[ExportFn] = Registry("export format")
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "coreml": ".mlpackage"}
ONNX_OPSET = 17


EXPORTERS.add("tflite", export_tflite)  # their converters are imported on first use
EXPORTERS.add("coreml", export_coreml)


@EXPORTERS.register("onnx")
def export_onnx(module: torch.nn.Module, inputs: tuple, path: Path) -> None:
    names = [f"input{i}" for i in range(len(inputs))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), inputs, str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=names, output_names=["output"], do_constant_folding=True)


CONVERTERS = {"tflite": ("litert-torch", "ai-edge-litert"), "coreml": ("coremltools",)}
"""Distributions whose version is part of a format's cache key: a new converter re-exports."""


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def content_key(fmt: str, module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> str:
    """Hash of everything the exported file depends on: format, exporter, code, weights, shapes."""
    h = hashlib.sha256()
    h.update(f"{fmt}|torch={torch.__version__}|opset={ONNX_OPSET}|torchscript".encode())
    for dist in CONVERTERS.get(fmt, ()):
        h.update(f"|{dist}={_version(dist)}".encode())
    h.update(repr(module).encode())
    h.update(repr([tuple(t.shape) for t in inputs]).encode())
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class ExportCache:
    root: Path

    def path(self, fmt: str, key: str) -> Path:
        return self.root / fmt / key[:2] / (key + SUFFIX.get(fmt, "." + fmt))

    def export(self, module: torch.nn.Module, inputs: tuple, fmt: str = "onnx") -> Path:
        """The exported file for this module and inputs, exporting only on a cache miss."""
        exporter = EXPORTERS.get(fmt)

        def write(path: Path) -> None:
            try:
                with torch.no_grad():
                    exporter(module, inputs, path)
            except Exception as exc:
                raise LatencykitError(f"{fmt} export failed: {type(exc).__name__}: {exc}") from exc

        return self.produce(fmt, content_key(fmt, module, inputs), write)

    def produce(self, fmt: str, key: str, write: Callable[[Path], None]) -> Path:
        """The cached file of `key`, made by `write(path)` on a miss and moved into place atomically: a reader
        never sees half a file, and an interrupted write leaves nothing behind."""
        target = self.path(fmt, key)
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            tmp_path = Path(tmp) / target.name
            write(tmp_path)
            os.replace(tmp_path, target)
        return target


def default_cache() -> ExportCache:
    return ExportCache(home() / "exports")


def seeded_network(specs: Sequence[LayerSpec]) -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    """The network of `specs` with seed-0 weights and a seeded 1x3xHxW input: the same layers always
    give the same module, so its export is found in the cache."""
    torch.manual_seed(0)
    return build(list(specs)), (torch.randn(1, 3, specs[0].hw, specs[0].hw),)


def export_network(specs: Sequence[LayerSpec], cache: ExportCache, fmt: str) -> Path:
    """A whole network of layers (a subnet, or one with a layer taken out), seeded, exported once."""
    return cache.export(*seeded_network(specs), fmt)


LAYER_INTERFACES: dict[str, Callable[[torch.nn.Module, tuple], tuple[torch.nn.Module, tuple]]] = {
    "tflite": channels_last_io}
"""How a format's layer file meets its neighbours inside a network, where it differs from torch's."""


def layer_module(spec: LayerSpec, fmt: str) -> tuple[torch.nn.Module, tuple]:
    """The module and inputs `export_layer` exports: seeded weights, so the same spec always gives the
    same file, and inputs and outputs laid out as `fmt` lays them out inside a whole network
    (`LAYER_INTERFACES`), so the file costs what the layer costs there."""
    torch.manual_seed(0)
    module, inputs = build_layer(spec), layer_inputs(spec)
    return LAYER_INTERFACES[fmt](module, inputs) if fmt in LAYER_INTERFACES else (module, inputs)


def export_layer(spec: LayerSpec, cache: ExportCache, fmt: str) -> Path:
    """A layer exported alone (`layer_module`)."""
    return cache.export(*layer_module(spec, fmt), fmt)


def export_kernel(kind: str, f: dict, cache: ExportCache, fmt: str) -> Path:
    """A kernel sample (`latencykit.kernels.build_kernel`) as a `fmt` file. A TFLite kernel of
    `tflite_writer.WRITTEN` is written as a converted network runs it, in milliseconds and without the transposes
    a lone conversion adds; every other one is exported from its torch module."""
    if fmt == "tflite" and kind in WRITTEN:
        key = hashlib.sha256(f"{WRITER}|torch={torch.__version__}|{kind}|{sorted(f.items())}".encode()).hexdigest()
        return cache.produce(fmt, key[:24], lambda path: write_kernel(kind, f, path))
    return cache.export(*build_kernel(kind, f), fmt)
