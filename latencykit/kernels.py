"""Kernels: the units a runtime executes, each type with its configuration features, a torch module that
exports to exactly that kernel, and a sampler of its configuration space.

`latencykit.lut.kernels` finds these kernels in any ONNX graph (with fusion rules kept as data) and
predicts each from samples measured here, one regressor per type.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

FEATURES: dict[str, tuple[str, ...]] = {
    "conv": ("hw", "cin", "cout", "k", "stride", "relu"),
    "dwconv": ("hw", "c", "k", "stride", "relu"),
    "gconv": ("hw", "cin", "cout", "k", "stride", "groups", "relu"),
    "linear": ("m", "k", "n", "relu"),
    "matmul": ("b", "m", "k", "n"),
    "pool": ("hw", "c", "k", "stride", "max"),
    "gpool": ("hw", "c"),
    "add": ("elements", "broadcast"),
    "mul": ("elements", "broadcast"),
    "act": ("elements", "kind"),
    "softmax": ("rows", "cols"),
    "layernorm": ("rows", "cols"),
    "transpose": ("elements", "run"),
    "concat": ("elements", "inputs"),
    "slice": ("elements",),
    "reorder": ("c", "hw", "out"),
}
"""Each kernel type's configuration, as numbers (flags are 0/1; `act.kind` indexes ACTS). `reorder` is a
layout change the runtime adds itself (ONNX Runtime's blocked convolutions on x86, latencykit.devices.nchwc):
no torch module exports to it; `out` is 1 out of the blocked layout, 0 into it. A transpose's `run` is how many
values stay contiguous (its trailing axes left in place): 1 moves every value alone, 48 copies rows of 48
(a ViT's head split permutes whole rows and costs a fraction of a 2-D transpose of as many values)."""

SHARE: dict[str, int] = {"conv": 20, "dwconv": 8, "gconv": 8, "linear": 8, "matmul": 4, "act": 4, "reorder": 2,
                        "pool": 2, "gpool": 2, "add": 2, "mul": 2, "concat": 2, "slice": 2, "transpose": 2}
"""Samples of each type per unit of `profile --kernel-samples` (other types: 1): the costly, varied ones get more."""

ACTS = ("relu", "sigmoid", "hardswish", "hardsigmoid", "silu", "gelu", "relu6", "tanh")
"""Standalone activation kinds (fused ones are the `relu` flag of conv and linear)."""

_ACT_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "hardswish": nn.Hardswish, "hardsigmoid": nn.Hardsigmoid,
    "silu": nn.SiLU, "gelu": nn.GELU, "relu6": nn.ReLU6, "tanh": nn.Tanh}


class _Fn(nn.Module):
    """A function as a module; `label` names it in repr, which the export cache's key includes."""

    def __init__(self, fn: Callable[..., torch.Tensor], label: str) -> None:
        super().__init__()
        self.fn, self.label = fn, label

    def extra_repr(self) -> str:
        return self.label

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


def _with_relu(m: nn.Module, relu: int) -> nn.Module:
    return nn.Sequential(m, nn.ReLU()) if relu else m


def _grid(elements: int) -> tuple[int, int, int]:
    """A C x H x W shape of about `elements` values (H = W)."""
    c = max(1, int(round(elements ** (1 / 3))))
    hw = max(1, int(round(math.sqrt(elements / c))))
    return c, hw, hw


def node_chain(nodes: int) -> tuple[nn.Module, tuple[torch.Tensor]]:
    """`nodes` alternating Tanh and Sigmoid on 64 values: nearly no compute, so its latency less that of
    one node is the runtime's cost of dispatching `nodes - 1` more."""
    return nn.Sequential(*[(nn.Tanh if i % 2 else nn.Sigmoid)() for i in range(nodes)]), (torch.randn(1, 64),)


def build_kernel(kind: str, f: dict) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """A module computing one kernel of type `kind` with configuration `f`, and its seeded inputs."""
    torch.manual_seed(0)
    hw = f.get("hw", 1)
    label = f"{kind} {sorted(f.items())}"
    if kind == "conv":
        m = _with_relu(nn.Conv2d(f["cin"], f["cout"], f["k"], f["stride"], f["k"] // 2), f["relu"])
        return m, (torch.randn(1, f["cin"], hw, hw),)
    if kind == "dwconv":
        m = _with_relu(nn.Conv2d(f["c"], f["c"], f["k"], f["stride"], f["k"] // 2, groups=f["c"]), f["relu"])
        return m, (torch.randn(1, f["c"], hw, hw),)
    if kind == "gconv":
        m = _with_relu(nn.Conv2d(f["cin"], f["cout"], f["k"], f["stride"], f["k"] // 2, groups=f["groups"]), f["relu"])
        return m, (torch.randn(1, f["cin"], hw, hw),)
    if kind == "linear":
        return _with_relu(nn.Linear(f["k"], f["n"]), f["relu"]), (torch.randn(1, f["m"], f["k"]),)
    if kind == "matmul":
        return _Fn(torch.matmul, label), (torch.randn(1, f["b"], f["m"], f["k"]), torch.randn(1, f["b"], f["k"], f["n"]))
    if kind == "pool":
        pool = nn.MaxPool2d if f["max"] else nn.AvgPool2d
        return pool(f["k"], f["stride"], f["k"] // 2), (torch.randn(1, f["c"], hw, hw),)
    if kind == "gpool":
        return nn.AdaptiveAvgPool2d(1), (torch.randn(1, f["c"], hw, hw),)
    if kind in ("add", "mul"):
        c, h, w = _grid(f["elements"])
        op = torch.add if kind == "add" else torch.mul
        other = torch.randn(1, c, 1, 1) if f["broadcast"] else torch.randn(1, c, h, w)
        return _Fn(op, label), (torch.randn(1, c, h, w), other)
    if kind == "act":
        c, h, w = _grid(f["elements"])
        return _ACT_MODULES[ACTS[f["kind"]]](), (torch.randn(1, c, h, w),)
    if kind == "softmax":
        return _Fn(lambda x: x.softmax(-1), label), (torch.randn(1, f["rows"], f["cols"]),)
    if kind == "layernorm":
        return nn.LayerNorm(f["cols"]), (torch.randn(1, f["rows"], f["cols"]),)
    if kind == "transpose":
        rows = max(4, f["elements"] // f["run"])
        a = max(2, int(round(math.sqrt(rows))))
        shape = (1, a, max(2, rows // a), f["run"]) if f["run"] > 1 else (1, a, max(2, rows // a))
        return _Fn(lambda x: x.transpose(1, 2), label), (torch.randn(*shape),)
    if kind == "concat":
        c, h, w = _grid(f["elements"] // f["inputs"])
        return _Fn(lambda *xs: torch.cat(xs, 1), label), tuple(torch.randn(1, c, h, w) for _ in range(f["inputs"]))
    if kind == "slice":
        c, h, w = _grid(f["elements"])
        return _Fn(lambda x: x[:, c:], label), (torch.randn(1, 2 * c, h, w),)
    raise KeyError(kind)


def _pick(rng: np.random.Generator, values) -> int:
    return int(values[rng.integers(len(values))])


_CH = np.array([8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 112, 120, 128, 144, 160, 192, 224, 240, 256, 288,
                320, 384, 448, 480, 512, 576, 640, 672, 768, 960, 1024, 1152, 1280, 1536, 2048])
_HW = np.array([1, 2, 3, 4, 6, 7, 8, 12, 14, 16, 24, 28, 32, 48, 56, 64, 96, 112])


def _channels(rng: np.random.Generator, hw: int) -> int:
    """Channels typical at a resolution: about 32 * (112 / hw) ** 0.75, times 1/4 to 4, a multiple of 8."""
    c = 32 * (112 / hw) ** 0.75 * np.exp(rng.uniform(np.log(0.25), np.log(4)))
    return int(min(2048, max(8, round(c / 8) * 8)))


def _unaligned(rng: np.random.Generator, c: int, share: float = 0.25) -> int:
    """A `share` of the time (one in four by default), `c` less 2, 4 or 6 (ShuffleNet's 58 and 116, width
    multipliers' odd widths): runtimes take slower paths for channels in part blocks (ONNX Runtime's blocked
    layout wants multiples of 4, and a depthwise convolution outside it runs 7-9x slower)."""
    return c - 2 * int(rng.integers(1, 4)) if c > 8 and rng.random() < share else c


def sample_config(kind: str, rng: np.random.Generator) -> dict:
    """One random configuration of a kernel type, in the ranges mobile vision networks use (a generic prior:
    higher resolutions with fewer channels), never drawn from the zoo it is scored on."""
    hw = _pick(rng, _HW)
    c, c2 = _unaligned(rng, _channels(rng, hw)), _unaligned(rng, _channels(rng, hw))
    flag = int(rng.integers(2))
    tokens = _pick(rng, [1, 4, 9, 16, 17, 32, 49, 50, 64, 65, 100, 144, 145, 196, 197, 256, 577, 1024])
    if kind == "conv":
        k = _pick(rng, [1, 1, 1, 3, 3, 5, 7])
        hw = max(hw, 2) if k > 1 else hw
        if hw <= 2:  # a squeeze-excite or classifier 1x1 on a pooled vector: any width
            c, c2 = _pick(rng, _CH), _pick(rng, _CH)
        cin = _pick(rng, [3, 3, c]) if hw >= 96 else c
        if hw >= 16 and rng.random() < 0.3:  # narrow early layers (8 channels from 16 and back): another path
            cin, c2 = (_pick(rng, [4, 8, 12, 16, 24]), c2) if rng.random() < 0.5 else (cin, _pick(rng, [8, 12, 16, 24]))
        return {"hw": hw, "cin": cin, "cout": c2, "k": k, "stride": _pick(rng, [1, 1, 2]) if hw > 2 else 1,
                "relu": flag}
    if kind == "dwconv":
        hw = max(hw, 2)
        # half in part blocks: the step outside the blocked layout is steep, and 240 samples at one in four
        # left 34 with channels not a multiple of 4, 12 of them at 2x2 (ShuffleNet's 58 at 24x24 came out 3x)
        c = _unaligned(rng, _channels(rng, hw) * _pick(rng, [1, 4, 6]), share=0.5)
        return {"hw": hw, "c": c, "k": _pick(rng, [3, 5, 7]), "stride": _pick(rng, [1, 1, 2]), "relu": flag}
    if kind == "gconv":
        # grouped 3x3s on maps of 4x4 and more (RegNet, ResNeXt); half the samples had gone to 2x2 and 3x3
        # maps with 50-130 groups, where the trees disagreed most and no network runs them
        hw = max(hw, 4)
        width = _pick(rng, [8, 16, 24, 32])
        groups = max(2, _channels(rng, hw) // width)
        return {"hw": hw, "cin": groups * width, "cout": groups * width, "k": _pick(rng, [1, 3, 3]),
                "stride": _pick(rng, [1, 2]), "groups": groups, "relu": flag}
    if kind == "linear":
        return {"m": tokens, "k": _pick(rng, _CH), "n": _pick(rng, _CH), "relu": flag}
    if kind == "matmul":
        return {"b": _pick(rng, [1, 2, 3, 4, 6, 8, 12, 16]), "m": tokens, "k": _pick(rng, [16, 24, 32, 48, 64, 96]),
                "n": _pick(rng, [tokens, tokens, 16, 32, 64])}
    if kind == "pool":
        return {"hw": max(hw, 4), "c": c, "k": _pick(rng, [2, 3]), "stride": 2, "max": flag}
    if kind == "gpool":
        hw = max(hw, 2)
        return {"hw": hw, "c": _unaligned(rng, _channels(rng, hw) * _pick(rng, [1, 4]))}
    elements = int(np.exp(rng.uniform(np.log(256), np.log(2_000_000))))
    if kind in ("add", "mul"):
        return {"elements": elements, "broadcast": flag}
    if kind == "act":
        return {"elements": elements, "kind": int(rng.integers(len(ACTS)))}
    if kind in ("softmax", "layernorm"):
        rows = tokens * (_pick(rng, [1, 2, 3, 4, 8]) if kind == "softmax" else _pick(rng, [1, 1, 4, 16]))
        return {"rows": rows, "cols": tokens if kind == "softmax" else _pick(rng, _CH)}
    if kind == "transpose":
        # channel shuffles keep whole maps in place (runs of hw x hw: 64-576 in ShuffleNet), head splits rows
        run = _pick(rng, [1, 1, 1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 144, 256, 576, 1024])
        return {"elements": max(elements, 4 * run), "run": run}
    if kind == "concat":
        return {"elements": elements, "inputs": _pick(rng, [2, 2, 3, 4])}
    if kind == "slice":
        return {"elements": elements}
    if kind == "reorder":  # the blocked layout holds multiples of 4 channels only
        return {"c": max(4, c - c % 4), "hw": hw, "out": flag}
    raise KeyError(kind)


CHANNELS: dict[str, tuple[str, str]] = {"conv": ("cin", "cout"), "dwconv": ("c", "c"), "gconv": ("cin", "cout"),
                                        "pool": ("c", "c"), "gpool": ("c", "c"), "reorder": ("c", "c")}
"""The input and output channel counts of each kernel type whose alignment picks a runtime's code path."""


def _align(channels: int) -> int:
    return min(channels & -channels, 16)


def alignments(kind: str, f: dict) -> tuple[int, int, int]:
    """The largest power of two, up to 16, dividing the kernel's input channels, its output channels and its
    channels per group (16 where it has none). Vector and blocked-layout kernels need whole blocks of each,
    and each shortfall takes its own slower path: on ONNX Runtime with AVX-512 (blocks of 16) a 1x1
    convolution at 64x64 from 8 channels ran 2x its time from 16, and a grouped 3x3 convolution of 8
    channels per group 1.6-3x one of 16 (RegNet's), though both do less work."""
    if kind not in CHANNELS:
        return 16, 16, 16
    cin, cout = (f[k] for k in CHANNELS[kind])
    return _align(cin), _align(cout), _align(cin // f["groups"]) if kind == "gconv" else 16


def alignment(kind: str, f: dict) -> int:
    """The smallest of `alignments`: whole blocks of every channel count (16 where the kernel has none)."""
    return min(alignments(kind, f))


def flops(kind: str, f: dict) -> float:
    """Multiply-accumulates (or element operations) of a kernel: the regressors' main feature."""
    out_hw = math.ceil(f.get("hw", 1) / f.get("stride", 1)) ** 2
    if kind == "conv":
        return out_hw * f["cout"] * f["cin"] * f["k"] ** 2
    if kind == "dwconv":
        return out_hw * f["c"] * f["k"] ** 2
    if kind == "gconv":
        return out_hw * f["cout"] * f["cin"] / f["groups"] * f["k"] ** 2
    if kind == "linear":
        return f["m"] * f["k"] * f["n"]
    if kind == "matmul":
        return f["b"] * f["m"] * f["k"] * f["n"]
    if kind == "pool":
        return out_hw * f["c"] * f["k"] ** 2
    if kind == "gpool":
        return f["hw"] ** 2 * f["c"]
    if kind in ("softmax", "layernorm"):
        return f["rows"] * f["cols"]
    if kind == "reorder":
        return f["c"] * f["hw"] ** 2
    return float(f["elements"])


def weights(kind: str, f: dict) -> float:
    """Weight values of a kernel (0 for those without): what a network reads from farther away than a kernel
    measured alone does (the other layers went through the caches since its last run)."""
    if kind == "conv":
        return f["cin"] * f["cout"] * f["k"] ** 2
    if kind == "dwconv":
        return f["c"] * f["k"] ** 2
    if kind == "gconv":
        return f["cin"] * f["cout"] / f["groups"] * f["k"] ** 2
    if kind == "linear":
        return f["k"] * f["n"]
    return 0.0


def memory(kind: str, f: dict) -> float:
    """Values read and written (inputs, weights, outputs): the regressors' second feature."""
    hw, out_hw = f.get("hw", 1) ** 2, math.ceil(f.get("hw", 1) / f.get("stride", 1)) ** 2
    if kind == "conv":
        return hw * f["cin"] + out_hw * f["cout"] + f["cin"] * f["cout"] * f["k"] ** 2
    if kind == "dwconv":
        return (hw + out_hw + f["k"] ** 2) * f["c"]
    if kind == "gconv":
        return hw * f["cin"] + out_hw * f["cout"] + f["cin"] * f["cout"] / f["groups"] * f["k"] ** 2
    if kind == "linear":
        return f["m"] * (f["k"] + f["n"]) + f["k"] * f["n"]
    if kind == "matmul":
        return f["b"] * (f["m"] * f["k"] + f["k"] * f["n"] + f["m"] * f["n"])
    if kind in ("pool", "gpool"):
        return (hw + out_hw) * f["c"]
    if kind in ("softmax", "layernorm"):
        return 2 * f["rows"] * f["cols"]
    if kind == "reorder":
        return 2.0 * f["c"] * f["hw"] ** 2
    return 2.0 * f["elements"]
