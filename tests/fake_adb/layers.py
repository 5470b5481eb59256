"""A few small layers exported once per test session (LiteRT conversion takes seconds each)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch

from latencykit.devices.conformance import PROBE
from latencykit.export import ExportCache, export_layer, layer_module
from latencykit.lut.protocol import REFERENCE
from latencykit.layers import LayerSpec
from latencykit.paths import home

SPECS = {
    "mbconv": PROBE,  # the layer check_device measures: one export serves both
    "reference": REFERENCE,  # the block profiling measures every round: shared with those tests
    "transformer": LayerSpec("transformer", hw=8, cin=16, cout=16, heads=2, head_dim=8, mlp_ratio=2.0,
                             patch=2),
    "fusion": LayerSpec("mvit_fusion", hw=8, cin=16, cout=8, kernel=3, patch=2),
}


@functools.lru_cache(maxsize=None)
def cache() -> ExportCache:
    """The session's export cache (conftest links every test's $LATENCYKIT_HOME/exports to it),
    so files exported here serve the CLI tests' profiles too."""
    exports = home() / "exports"
    root = exports.resolve() if exports.exists() else Path(tempfile.mkdtemp(prefix="latencykit-exports-"))
    return ExportCache(root)


def module(name: str, fmt: str = "tflite") -> tuple[torch.nn.Module, tuple]:
    """The layer's module and inputs as `export_layer` exports them to `fmt`."""
    return layer_module(SPECS[name], fmt)


@functools.lru_cache(maxsize=None)
def exported(name: str, fmt: str = "tflite") -> Path:
    return export_layer(SPECS[name], cache(), fmt)
