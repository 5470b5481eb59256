"""Kernel samples written straight to TFLite (latencykit.tflite_writer): they compute what torch computes, they
run the ops litert-torch gives the kernel (less the transposes a lone conversion adds), and they are cached."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from latencykit.export import ExportCache, export_kernel  # noqa: E402
from latencykit.exporters import ExportCheckError, check_tflite, export_tflite  # noqa: E402
from latencykit.kernels import ACTS, sample_config  # noqa: E402
from latencykit.tflite_writer import WRITTEN, _Graph, kernel_module, write_kernel  # noqa: E402

# the writer's padding rules at their edges: TF's SAME padding or not (even / odd maps at stride 2), max / average
EDGES = [("conv", {"hw": 16, "cin": 8, "cout": 12, "k": 3, "stride": 2, "relu": 1}),
         ("conv", {"hw": 15, "cin": 8, "cout": 12, "k": 5, "stride": 2, "relu": 0}),
         ("dwconv", {"hw": 14, "c": 24, "k": 5, "stride": 1, "relu": 1}),
         ("gconv", {"hw": 8, "cin": 64, "cout": 64, "k": 3, "stride": 2, "groups": 4, "relu": 0}),
         ("pool", {"hw": 15, "c": 8, "k": 3, "stride": 2, "max": 1}),
         ("pool", {"hw": 16, "c": 8, "k": 3, "stride": 2, "max": 1}),
         ("pool", {"hw": 15, "c": 8, "k": 3, "stride": 2, "max": 0}),
         ("transpose", {"elements": 4096, "run": 16}), ("matmul", {"b": 3, "m": 17, "k": 16, "n": 17}),
         ("slice", {"elements": 3000}), ("concat", {"elements": 3000, "inputs": 3}),
         ("mul", {"elements": 3000, "broadcast": 1}), ("gpool", {"hw": 7, "c": 40})]


def _ops(path: Path) -> list[tuple]:
    """(op, version, output size, options) of each op, transposes and reshapes left out."""
    from ai_edge_litert import schema_py_generated as S

    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    model = S.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    g = model.subgraphs[0]
    out = []
    for op in g.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        if name in ("TRANSPOSE", "RESHAPE"):
            continue
        options = vars(op.builtinOptions) if op.builtinOptions is not None else {}
        fields = {k: v for k, v in options.items() if np.isscalar(v)}
        out.append((name, code.version, int(np.prod(g.tensors[op.outputs[0]].shape)), fields))
    return out


def test_every_written_kernel_computes_what_torch_computes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    configs = [(kind, sample_config(kind, rng)) for kind in sorted(WRITTEN) for _ in range(4)]
    configs += [("act", {"elements": 2000, "kind": i}) for i in range(len(ACTS))] + EDGES
    for i, (kind, f) in enumerate(configs):
        write_kernel(kind, f, tmp_path / f"{i}.tflite")  # raises unless LiteRT's output matches torch's
    assert len(configs) == 4 * len(WRITTEN) + len(ACTS) + len(EDGES)


def test_written_kernels_run_the_ops_litert_torch_gives_them(tmp_path: Path) -> None:
    """Against litert-torch's conversion of the same module: the same ops, versions, sizes and options, less the
    transposes and reshapes a lone conversion adds around them. Two differences are the writer's on purpose, as
    networks converted whole run them: a concat of NHWC maps joins axis 3 (alone: NCHW, axis 1), and a global
    pooling keeps its dimensions (MobileNetV3's MEANs)."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    configs = EDGES + [("act", {"elements": 2000, "kind": ACTS.index(a)}) for a in ("hardsigmoid", "silu", "gelu")]
    configs += [("linear", {"m": 17, "k": 24, "n": 40, "relu": 1}), ("softmax", {"rows": 17, "cols": 17})]
    for i, (kind, f) in enumerate(configs):
        written, converted = tmp_path / f"w{i}.tflite", tmp_path / f"c{i}.tflite"
        write_kernel(kind, f, written)
        export_tflite(*kernel_module(kind, f), converted)
        want = _ops(converted)
        if kind == "concat":
            want = [(n, v, s, {**o, "axis": 3}) for n, v, s, o in want]
        if kind == "gpool":
            want = [(n, v, s, {**o, "keepDims": True}) for n, v, s, o in want]
        assert _ops(written) == want, (kind, f)


def test_a_written_file_that_computes_something_else_fails_its_check(tmp_path: Path) -> None:
    module, inputs = kernel_module("conv", {"hw": 8, "cin": 4, "cout": 8, "k": 1, "stride": 1, "relu": 0})
    g = _Graph()
    x = g.tensor(inputs[0].shape)
    y = g.op("CONV_2D", [x, g.const(np.zeros((8, 1, 1, 4))), g.const(np.zeros(8))], (1, 8, 8, 8),
             ("Conv2DOptions", {"strideW": 1, "strideH": 1, "padding": 1}))
    path = tmp_path / "zeros.tflite"
    path.write_bytes(g.model([x], [y]))
    with pytest.raises(ExportCheckError, match="differs from torch"):
        check_tflite(path, module, inputs)


def test_kernel_files_are_written_once_and_others_converted(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path)
    f = {"hw": 12, "c": 16, "k": 3, "stride": 1, "relu": 1}
    first = export_kernel("dwconv", f, cache, "tflite")
    stamp = first.stat().st_mtime_ns
    assert export_kernel("dwconv", f, cache, "tflite") == first and first.stat().st_mtime_ns == stamp
    assert export_kernel("dwconv", {**f, "relu": 0}, cache, "tflite") != first
    assert not list(first.parent.glob("tmp*"))  # written beside its place, then moved: nothing left over
    onnx = export_kernel("dwconv", f, cache, "onnx")
    assert onnx.suffix == ".onnx" and onnx.exists()


def test_devices_whose_networks_are_conversions_measure_fewer_random_networks() -> None:
    from latencykit.devices import get_device
    from latencykit.lut.kernels import NETWORKS_CONVERTED, default_networks

    assert default_networks(get_device("host")) == 160  # ONNX: TorchScript export, a fraction of a second each
    assert default_networks(get_device("host-litert")) == NETWORKS_CONVERTED < 160  # a conversion: seconds each
