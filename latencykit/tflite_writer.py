"""Kernel samples written straight to TFLite files, as a converted network runs them.

A TFLite kernel sample used to be its torch module converted alone by litert-torch, and that file is neither
cheap nor faithful: a conversion takes about 1 s (a host-litert kernel profile of 680 samples spent 11 of its
18 minutes converting), and a kernel converted alone runs transposes no network runs. Taking NCHW maps, every
kernel paid a transpose in and out; even given NHWC maps, the converter transposes around HardSwish, SiLU,
GELU, a broadcast Mul, Concat, Slice and global pooling, and three times around a MatMul, while the networks
converted whole run these ops on NHWC maps with no transpose (the zoo at width 0.5: one transpose each, at the
input, in the eight families without attention or channel shuffle).

`write_kernel` writes the ops litert-torch gives the kernel inside a network (LiteRT's own flatbuffer schema,
object API): NHWC maps, a PAD before a convolution or pooling whose padding is not TF's SAME, the torch
module's own weights. Every file is run with the LiteRT interpreter and checked against torch before it is
cached, as converted files are. `WRITTEN` lists the kernel types written so; the others are converted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from latencykit.exporters import channels_last_io, check_tflite, torch_outputs
from latencykit.kernels import ACTS, build_kernel

WRITER = "latencykit-tflite-writer-2"
"""Part of a written file's cache key: a change to what is written changes it."""

MAPS = frozenset({"conv", "dwconv", "gconv", "pool", "gpool", "add", "mul", "act", "concat", "slice"})
"""Kernel types on feature maps: NHWC in a TFLite network, so their files take and give NHWC maps. A channel slice
too: ShuffleNetV2's converted graph transposes each shuffled map back to NHWC and slices its channels there (a
strided copy: 1.5-1.8x the time of the same slice on NCHW here, which a lone conversion measured)."""

WRITTEN = MAPS | {"linear", "matmul", "softmax", "transpose"}
"""Kernel types `write_kernel` writes (a layernorm, twelve ops in a converted network, is converted)."""

_ACT_OPS = {"relu": "RELU", "sigmoid": "LOGISTIC", "hardswish": "HARD_SWISH", "relu6": "RELU6", "tanh": "TANH"}


def kernel_module(kind: str, f: dict) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The torch module a written file computes, with inputs as the file takes them: maps NHWC, a batched
    matmul on 3-D operands (a network reshapes to them before its BATCH_MATMUL)."""
    module, inputs = build_kernel(kind, f)
    if kind in MAPS:
        return channels_last_io(module, inputs)
    if kind == "matmul":
        return module, tuple(t[0] for t in inputs)
    return module, inputs


class _Graph:
    """One subgraph being written: tensors, their constant buffers, operators."""

    def __init__(self) -> None:
        from ai_edge_litert import schema_py_generated as schema

        self.S = schema
        self.tensors: list = []
        self.buffers = [schema.BufferT()]  # buffer 0: the empty one every tensor without data points at
        self.ops: list = []
        self.codes: dict[tuple[str, int], int] = {}

    def tensor(self, shape, data: np.ndarray | None = None, name: str = "") -> int:
        t = self.S.TensorT()
        t.shape = np.asarray(shape, np.int32)
        t.type = self.S.TensorType.INT32 if data is not None and data.dtype == np.int32 else self.S.TensorType.FLOAT32
        t.name = name or f"t{len(self.tensors)}"
        t.buffer = 0
        if data is not None:
            buf = self.S.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, values, dtype=np.float32) -> int:
        data = np.asarray(values, dtype)
        return self.tensor(data.shape, data)

    def op(self, name: str, inputs: list[int], shape, options: tuple[str, dict] | None = None,
           version: int = 1) -> int:
        """Append an operator computing a new tensor of `shape`; `options` is (its options table, fields)."""
        S = self.S
        if (name, version) not in self.codes:
            self.codes[(name, version)] = len(self.codes)
        o = S.OperatorT()
        o.opcodeIndex = self.codes[(name, version)]
        o.inputs = np.asarray(inputs, np.int32)
        out = self.tensor(shape)
        o.outputs = np.asarray([out], np.int32)
        if options:
            table, fields = options
            opts = getattr(S, table + "T")()
            for key, value in fields.items():
                setattr(opts, key, value)
            o.builtinOptionsType = getattr(S.BuiltinOptions, table)
            o.builtinOptions = opts
        self.ops.append(o)
        return out

    def model(self, inputs: list[int], outputs: list[int]) -> bytes:
        import flatbuffers

        S = self.S
        for i, t in enumerate(inputs):
            self.tensors[t].name = f"serving_default_args_{i}"
        sub = S.SubGraphT()
        sub.tensors, sub.operators, sub.name = self.tensors, self.ops, "main"
        sub.inputs, sub.outputs = np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
        codes = []
        for (name, version), _ in sorted(self.codes.items(), key=lambda kv: kv[1]):
            c = S.OperatorCodeT()
            c.builtinCode = getattr(S.BuiltinOperator, name)
            c.deprecatedBuiltinCode = min(c.builtinCode, S.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            c.version = version
            codes.append(c)
        sig = S.SignatureDefT()
        sig.signatureKey, sig.subgraphIndex = "serving_default", 0
        sig.inputs = [self._map(f"args_{i}", t) for i, t in enumerate(inputs)]
        sig.outputs = [self._map(f"output_{i}", t) for i, t in enumerate(outputs)]
        m = S.ModelT()
        m.version, m.description = 3, "latencykit.tflite_writer"
        m.operatorCodes, m.subgraphs, m.buffers, m.signatureDefs = codes, [sub], self.buffers, [sig]
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    def _map(self, name: str, tensor: int):
        t = self.S.TensorMapT()
        t.name, t.tensorIndex = name, tensor
        return t


def _same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
    """TF's SAME padding (before, after) of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _padded(g: _Graph, x: int, shape, p: int, k: int, stride: int, fill: float = 0.0,
            same: bool = True) -> tuple[int, int]:
    """The input of a window op after the padding a converted network gives it, and the op's own padding.
    Where torch's padding `p` is TF's SAME padding the op pads itself (`same`: not an average pool, whose
    SAME padding leaves the padded values out of the mean); elsewhere a PAD comes first (a PADV2 with a
    `fill` other than 0: -inf before a max pool)."""
    S = g.S
    if p == 0:
        return x, S.Padding.VALID
    if same and _same_pads(shape[1], k, stride) == (p, p):
        return x, S.Padding.SAME
    padded = (shape[0], shape[1] + 2 * p, shape[2] + 2 * p, shape[3])
    pads = g.const([[0, 0], [p, p], [p, p], [0, 0]], np.int32)
    if fill == 0:
        return g.op("PAD", [x, pads], padded, ("PadOptions", {})), S.Padding.VALID
    return g.op("PADV2", [x, pads, g.const(fill)], padded, ("PadV2Options", {})), S.Padding.VALID


def _model(kind: str, f: dict, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> bytes:
    g = _Graph()
    S = g.S
    shapes = [tuple(t.shape) for t in inputs]
    xs = [g.tensor(s) for s in shapes]
    out = tuple(torch_outputs(module, inputs)[0].shape)
    inner = getattr(module, "inner", module)
    first = inner[0] if isinstance(inner, nn.Sequential) else inner
    act = S.ActivationFunctionType.RELU if f.get("relu") else S.ActivationFunctionType.NONE
    x = xs[0]
    if kind in ("conv", "dwconv", "gconv"):
        k, stride, p = first.kernel_size[0], first.stride[0], first.padding[0]
        x, padding = _padded(g, x, shapes[0], p, k, stride)
        w = first.weight.detach().numpy()  # (out, in / groups, k, k)
        depthwise = kind == "dwconv"
        weight = g.const(w.transpose(1, 2, 3, 0) if depthwise else w.transpose(0, 2, 3, 1))  # 1HWO / OHWI
        fields = {"padding": padding, "strideW": stride, "strideH": stride, "fusedActivationFunction": act,
                  "dilationWFactor": 1, "dilationHFactor": 1}
        if depthwise:
            fields["depthMultiplier"] = 1
        y = g.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x, weight, g.const(first.bias.detach().numpy())],
                 out, ("DepthwiseConv2DOptions" if depthwise else "Conv2DOptions", fields),
                 version=6 if kind == "gconv" else 1)
    elif kind == "pool":
        k, stride, p = first.kernel_size, first.stride, first.padding
        biggest = isinstance(first, nn.MaxPool2d)
        x, padding = _padded(g, x, shapes[0], p, k, stride, -np.inf if biggest else 0.0, same=biggest)
        y = g.op("MAX_POOL_2D" if biggest else "AVERAGE_POOL_2D", [x], out,
                 ("Pool2DOptions", {"padding": padding, "strideW": stride, "strideH": stride, "filterWidth": k,
                                    "filterHeight": k}))
    elif kind == "gpool":
        y = g.op("MEAN", [x, g.const([1, 2], np.int32)], out, ("ReducerOptions", {"keepDims": True}))
    elif kind in ("add", "mul"):
        name = kind.upper()
        y = g.op(name, xs, out, (name.capitalize() + "Options", {"fusedActivationFunction": 0}))
    elif kind == "act":
        fn = ACTS[f["kind"]]
        if fn in _ACT_OPS:
            y = g.op(_ACT_OPS[fn], [x], out)
        elif fn == "gelu":
            y = g.op("GELU", [x], out, ("GeluOptions", {"approximate": False}))
        elif fn == "silu":
            y = g.op("MUL", [x, g.op("LOGISTIC", [x], out)], out, ("MulOptions", {"fusedActivationFunction": 0}))
        else:  # hardsigmoid: relu6(x + 3) / 6, as the converter writes it
            shifted = g.op("ADD", [x, g.const(3.0)], out,
                           ("AddOptions", {"fusedActivationFunction": S.ActivationFunctionType.RELU6}))
            y = g.op("MUL", [shifted, g.const(1 / 6)], out, ("MulOptions", {"fusedActivationFunction": 0}))
    elif kind == "linear":
        y = g.op("FULLY_CONNECTED", [x, g.const(first.weight.detach().numpy()), g.const(first.bias.detach().numpy())],
                 out, ("FullyConnectedOptions", {"fusedActivationFunction": act, "keepNumDims": True}), version=5)
    elif kind == "matmul":
        y = g.op("BATCH_MATMUL", xs, out, ("BatchMatMulOptions", {"adjX": False, "adjY": False}))
    elif kind == "softmax":
        y = g.op("SOFTMAX", [x], out, ("SoftmaxOptions", {"beta": 1.0}))
    elif kind == "transpose":
        perm = [0, 2, 1, 3][:len(shapes[0])]
        y = g.op("TRANSPOSE", [x, g.const(perm, np.int32)], out)
    elif kind == "concat":
        y = g.op("CONCATENATION", xs, out, ("ConcatenationOptions", {"axis": 3, "fusedActivationFunction": 0}))
    elif kind == "slice":  # the second half of the channels
        n, h, w, c = shapes[0]
        y = g.op("SLICE", [x, g.const([0, 0, 0, c // 2], np.int32), g.const([n, h, w, c - c // 2], np.int32)], out)
    else:
        raise KeyError(f"no TFLite writer for kernel type {kind!r}")
    return g.model(xs, [y])


def write_kernel(kind: str, f: dict, path: Path) -> None:
    """Write kernel `kind` with configuration `f` as a TFLite file at `path`, checked against torch
    (`latencykit.exporters.check_tflite`: the LiteRT interpreter's output on seeded inputs)."""
    module, inputs = kernel_module(kind, f)
    path.write_bytes(_model(kind, f, module, inputs))
    check_tflite(path, module, inputs)
