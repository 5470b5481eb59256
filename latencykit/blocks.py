"""Static torch modules for every layer kind, and `build` for whole networks.

The same modules serve profiling (one layer alone), whole-model validation, supernet extraction
and export, so a table entry and the network it predicts run identical operators.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from latencykit.layers import (
    LAYER_KINDS,
    LayerSpec,
    attention_dims,
    head_hidden,
    mbconv_hidden,
    mlp_hidden,
    se_channels,
    window_side,
)


def activation(name: str) -> nn.Module:
    return {"swish": nn.SiLU, "hswish": nn.Hardswish, "relu": nn.ReLU}[name]()


class ConvBN(nn.Sequential):
    """Convolution without bias, batch norm, optional activation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: str | None = "swish") -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if act:
            layers.append(activation(act))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int | None = None) -> None:
        super().__init__()
        sq = squeeze or se_channels(channels)
        self.reduce = nn.Conv2d(channels, sq, 1)
        self.expand = nn.Conv2d(sq, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.expand(torch.relu(self.reduce(s)))
        return x * nn.functional.hardsigmoid(s)


class Stem(ConvBN):
    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec.cin, spec.cout, spec.kernel, spec.stride, act=spec.act)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand (skipped at ratio 1), kxk depthwise, optional SE, 1x1 project."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        hidden = mbconv_hidden(spec.cin, spec.expand)
        self.expand = ConvBN(spec.cin, hidden, 1, act=spec.act) if hidden != spec.cin else nn.Identity()
        self.depthwise = ConvBN(hidden, hidden, spec.kernel, spec.stride, groups=hidden, act=spec.act)
        self.se = SqueezeExcite(hidden) if spec.se else nn.Identity()
        self.project = ConvBN(hidden, spec.cout, 1, act=None)
        self.residual = spec.stride == 1 and spec.cin == spec.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.residual else y


def unfold(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * patch^2, H*W / patch^2, C): one sequence per pixel position in a patch."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 3, 5, 2, 4, 1).reshape(b * patch * patch, (h // patch) * (w // patch), c)


def fold(tokens: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of `unfold` for a square map (its side follows from the token count)."""
    bp, n, c = tokens.shape
    b, g = bp // (patch * patch), math.isqrt(n)
    hw = g * patch
    x = tokens.reshape(b, patch, patch, g, g, c).permute(0, 5, 3, 1, 4, 2)
    return x.reshape(b, c, hw, hw)


class MobileViTLocal(nn.Module):
    """kxk conv for local context, 1x1 projection to the transformer width, then unfold into patches."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.local = ConvBN(spec.cin, spec.cin, spec.kernel, act=spec.act)
        self.project = nn.Conv2d(spec.cin, spec.cout, 1, bias=False)
        self.patch = spec.patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unfold(self.project(self.local(x)), self.patch)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, v_scale: int = 1) -> None:
        super().__init__()
        self.heads, self.head_dim, self.v_scale = heads, head_dim, max(v_scale, 1)
        qk, v = heads * head_dim, heads * head_dim * self.v_scale
        self.qkv = nn.Linear(dim, 2 * qk + v)
        self.proj = nn.Linear(v, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h, d = self.heads, self.head_dim
        q, k, v = self.qkv(x).split([h * d, h * d, h * d * self.v_scale], dim=-1)
        q = q.reshape(b, n, h, d).transpose(1, 2)
        k = k.reshape(b, n, h, d).transpose(1, 2)
        v = v.reshape(b, n, h, d * self.v_scale).transpose(1, 2)
        attn = torch.softmax((q * d**-0.5) @ k.transpose(-2, -1), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: multi-head self-attention, then an MLP."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        dim = spec.cin
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, spec.heads, spec.head_dim, spec.v_scale)
        self.norm2 = nn.LayerNorm(dim)
        hidden = mlp_hidden(dim, spec.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), activation(spec.act), nn.Linear(hidden, dim))
        assert attention_dims(spec)[0] == spec.heads * spec.head_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MobileViTFusion(nn.Module):
    """LayerNorm, fold back to a map, 1x1 projection, concatenate with the block input, kxk fusion conv."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(spec.cin)
        self.project = ConvBN(spec.cin, spec.cout, 1, act=spec.act)
        self.fuse = ConvBN(2 * spec.cout, spec.cout, spec.kernel, act=spec.act)
        self.patch = spec.patch

    def forward(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = self.project(fold(self.norm(tokens), self.patch))
        return self.fuse(torch.cat([x, y], dim=1))


class MBPool(nn.Module):
    """1x1 expansion, global average pool, linear classifier."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        hidden = head_hidden(spec)
        self.expand = ConvBN(spec.cin, hidden, 1, act=spec.act)
        self.classifier = nn.Linear(hidden, spec.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.expand(x).mean((2, 3)))


class MobileBlock(nn.Module):
    """ElasticViT's inverted residual: optional 1x1 expand, kxk depthwise, optional SE (quarter width),
    1x1 project; the shortcut is 2x2 average pooling when strided and a 1x1 conv when the width changes.
    A strided layer pads one less on an odd map, so it rounds down (7 -> 3) like nn-Meter's blocks."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        hidden = mbconv_hidden(spec.cin, spec.expand)
        self.expand = ConvBN(spec.cin, hidden, 1, act=spec.act) if spec.expand != 1 else nn.Identity()
        pad = spec.kernel // 2 - (spec.hw % 2 if spec.stride == 2 else 0)
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, spec.kernel, spec.stride, pad, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), activation(spec.act))
        self.se = SqueezeExcite(hidden, hidden // 4) if spec.se else nn.Identity()
        self.project = ConvBN(hidden, spec.cout, 1, act=None)
        self.pool = nn.AvgPool2d(spec.stride) if spec.stride > 1 else nn.Identity()
        self.shortcut = (nn.Conv2d(spec.cin, spec.cout, 1, bias=False) if spec.cin != spec.cout
                         else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return y + self.shortcut(self.pool(x))


def to_map(tokens: torch.Tensor) -> torch.Tensor:
    """(B, H*W, C) tokens of a square map -> (B, C, H, W)."""
    b, n, c = tokens.shape
    side = math.isqrt(n)
    return tokens.transpose(1, 2).reshape(b, c, side, side)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)


class TransDownsample(MobileBlock):
    """The first layer of an ElasticViT transformer stage: a MobileBlock on the token map, out as tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_tokens(super().forward(x if x.dim() == 4 else to_map(x)))


def window_partition(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """(B, H*W, C) tokens of a square map -> (B * windows, side*side, C): one sequence per side x side window."""
    b, n, c = tokens.shape
    hw = math.isqrt(n)
    g = hw // side
    x = tokens.reshape(b, g, side, g, side, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * g * g, side * side, c)


def window_reverse(windows: torch.Tensor, hw: int) -> torch.Tensor:
    """Inverse of `window_partition` for a square hw x hw map."""
    bw, n, c = windows.shape
    side = math.isqrt(n)
    g = hw // side
    x = windows.reshape(bw // (g * g), g, g, side, side, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(bw // (g * g), hw * hw, c)


class TransAttention(nn.Module):
    """ElasticViT attention: pre-norm, qkv without bias, 3x3 depthwise conv on V over the token map,
    relative position bias per head, hard-swish on the output, projection, residual. Windowed (Swin,
    NASViT): the map is split into square windows and each attends within itself (its V conv too)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        dim, self.heads, self.head_dim = spec.cin, spec.heads, spec.head_dim
        qk, v = attention_dims(spec)
        self.qk, self.v = qk, v
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 2 * qk + v, bias=False)
        self.v_conv = nn.Conv2d(v, v, 3, padding=1, groups=v, bias=False)
        self.hw, side = spec.hw, window_side(spec)
        self.side = side
        self.bias = nn.Parameter(torch.zeros(spec.heads, (2 * side - 1) ** 2))
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        index = (ys[:, None] - ys[None, :] + side - 1) * (2 * side - 1) + (xs[:, None] - xs[None, :] + side - 1)
        self.register_buffer("bias_index", index, persistent=False)
        self.act = activation(spec.act)
        self.proj = nn.Linear(v, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        if self.side != self.hw:
            y = window_partition(y, self.side)
        b, n, _ = y.shape
        h = self.heads
        q, k, v = self.qkv(y).split([self.qk, self.qk, self.v], dim=-1)
        v = to_tokens(self.v_conv(to_map(v)))
        q = q.reshape(b, n, h, -1).transpose(1, 2)
        k = k.reshape(b, n, h, -1).transpose(1, 2)
        v = v.reshape(b, n, h, -1).transpose(1, 2)
        logits = (q * self.head_dim**-0.5) @ k.transpose(-2, -1) + self.bias[:, self.bias_index]
        out = self.proj(self.act(self.attend(logits, v).transpose(1, 2).reshape(b, n, -1)))
        return x + (window_reverse(out, self.hw) if self.side != self.hw else out)

    def attend(self, logits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(batch, heads, tokens, tokens) logits applied to (batch, heads, tokens, width) values."""
        return torch.softmax(logits, dim=-1) @ v


class TalkingHeadsAttention(TransAttention):
    """NASViT attention: TransAttention with talking heads (heads x heads linear maps across heads
    before and after the softmax)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec)
        self.talk_logits = nn.Linear(spec.heads, spec.heads)
        self.talk_weights = nn.Linear(spec.heads, spec.heads)

    def attend(self, logits: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        logits = self.talk_logits(logits.permute(0, 2, 3, 1))
        return self.talk_weights(torch.softmax(logits, dim=-2)).permute(0, 3, 1, 2) @ v


class TransFFN(nn.Module):
    """Pre-norm MLP with hard-swish, residual."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        hidden = mlp_hidden(spec.cin, spec.mlp_ratio)
        self.norm = nn.LayerNorm(spec.cin)
        self.mlp = nn.Sequential(nn.Linear(spec.cin, hidden), activation(spec.act), nn.Linear(hidden, spec.cin))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class MBPoolFC(nn.Module):
    """MobileNetV3's head on tokens: linear expand + BN + act, mean over tokens, linear + act, classifier."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        wide = int(round(spec.cin * spec.expand))
        self.expand = nn.Linear(spec.cin, wide)
        self.norm = nn.BatchNorm1d(wide)
        self.act = activation(spec.act)
        self.fc = nn.Linear(wide, spec.hidden)
        self.classifier = nn.Linear(spec.hidden, spec.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm(self.expand(x).transpose(1, 2)))
        return self.classifier(self.act(self.fc(y.mean(2))))


class DoubleMLP(nn.Sequential):
    """NASViT's MLP: two pre-norm MLP layers of the same ratio, one after the other."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(TransFFN(spec), TransFFN(spec))


# ----- NAS-Bench-201 ---------------------------------------------------------------------------------

class NB201Stem(nn.Sequential):
    """3x3 conv (no bias) + BN."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(nn.Conv2d(spec.cin, spec.cout, spec.kernel, padding=spec.kernel // 2, bias=False),
                         nn.BatchNorm2d(spec.cout))


class ReLUConvBN(nn.Sequential):
    """NAS-Bench-201's nor_conv: ReLU, conv (no bias), BN."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.kernel // 2,
                                              bias=False), nn.BatchNorm2d(spec.cout))


class AvgPool3(nn.AvgPool2d):
    """3x3 average pooling, stride 1, padded zeros not counted."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__(spec.kernel, 1, spec.kernel // 2, count_include_pad=False)


class Skip(nn.Identity):
    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()


class Zero(nn.Module):
    """NAS-Bench-201's `none`: the input times zero."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class ResidualReduce(nn.Module):
    """Between NAS-Bench-201 stages: ReLU-Conv-BN 3x3 stride 2, ReLU-Conv-BN 3x3, plus a shortcut of
    2x2 average pooling and a 1x1 conv."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        c, w = spec.cin, spec.cout
        self.conv_a = ReLUConvBN(LayerSpec("nb201_conv", spec.hw, c, w, stride=2, kernel=3, act="relu"))
        self.conv_b = ReLUConvBN(LayerSpec("nb201_conv", spec.out_hw, w, w, kernel=3, act="relu"))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(c, w, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class NB201Head(nn.Module):
    """BN, ReLU, global average pooling, linear classifier."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.act = nn.Sequential(nn.BatchNorm2d(spec.cin), nn.ReLU())
        self.classifier = nn.Linear(spec.cin, spec.cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.act(x).mean((2, 3)))


CELL_EDGE_KINDS = ("nb201_conv", "nb201_pool", "nb201_skip", "nb201_none")
CELL_NODES = 4
"""A NAS-Bench-201 cell's layers are its edges in the cell string's order, 6 for its 4 nodes."""


class Cell(nn.Module):
    """A cell of `nodes` nodes: node j is the sum of its incoming edges' ops on the earlier nodes."""

    def __init__(self, edges: Sequence[nn.Module], nodes: int = CELL_NODES) -> None:
        super().__init__()
        self.edges, self.nodes = nn.ModuleList(edges), nodes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, e = [x], 0
        for j in range(1, self.nodes):
            states.append(sum(self.edges[e + i](states[i]) for i in range(j)))
            e += j
        return states[-1]


def build_layer(spec: LayerSpec) -> nn.Module:
    """The static module of one layer (its kind's `module`), in eval mode."""
    return LAYER_KINDS.get(spec.kind).module_class()(spec).eval()


def static_module_classes() -> tuple[type, ...]:
    """The static module class of every registered layer kind."""
    return tuple(LAYER_KINDS.get(name).module_class() for name in LAYER_KINDS)


def layer_inputs(spec: LayerSpec, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Example inputs of one layer run alone, laid out as its kind says (a fixed seed, so exports are
    reproducible)."""
    g = torch.Generator().manual_seed(0)
    layout = LAYER_KINDS.get(spec.kind).inputs
    if layout == "tokens":
        return (torch.randn(batch, spec.hw**2, spec.cin, generator=g),)
    if layout in ("patches", "patches+map"):
        p2 = spec.patch**2
        tokens = torch.randn(batch * p2, spec.hw**2 // p2, spec.cin, generator=g)
        if layout == "patches":
            return (tokens,)
        return tokens, torch.randn(batch, spec.cout, spec.hw, spec.hw, generator=g)
    return (torch.randn(batch, spec.cin, spec.hw, spec.hw, generator=g),)


class MobileViTBlock(nn.Module):
    """Local conv + unfold, transformer layers, fold + fusion with the block input."""

    def __init__(self, local: nn.Module, layers: Sequence[nn.Module], fusion: nn.Module) -> None:
        super().__init__()
        self.local, self.layers, self.fusion = local, nn.Sequential(*layers), fusion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.layers(self.local(x)), x)


class Network(nn.Module):
    """A whole static network assembled from its layer list."""

    def __init__(self, specs: Sequence[LayerSpec]) -> None:
        super().__init__()
        self.specs = tuple(specs)
        self.body = nn.Sequential(*group_layers([build_layer(s) for s in specs], self.specs))
        self.resolution = specs[0].hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def group_layers(modules: list[nn.Module], specs: Sequence[LayerSpec]) -> list[nn.Module]:
    """Wrap each run mvit_local, transformer..., mvit_fusion into a MobileViTBlock, and each NAS-Bench-201
    cell's edge layers into a Cell."""
    out: list[nn.Module] = []
    i = 0
    per_cell = CELL_NODES * (CELL_NODES - 1) // 2
    while i < len(specs):
        if specs[i].kind in CELL_EDGE_KINDS:
            if len(specs) < i + per_cell or any(s.kind not in CELL_EDGE_KINDS for s in specs[i:i + per_cell]):
                raise ValueError(f"layer {i} opens a cell of {per_cell} edges that the layer list does not hold")
            out.append(Cell(modules[i:i + per_cell]))
            i += per_cell
        elif specs[i].kind == "mvit_local":
            j = i + 1
            while specs[j].kind == "transformer":
                j += 1
            if specs[j].kind != "mvit_fusion":
                raise ValueError(f"layer {j} should close the MobileViT block opened at {i}")
            out.append(MobileViTBlock(modules[i], modules[i + 1:j], modules[j]))
            i = j + 1
        else:
            out.append(modules[i])
            i += 1
    return out


def build(specs: Sequence[LayerSpec]) -> Network:
    """The static network of a layer list (use `space.layers(arch)`), in eval mode."""
    return Network(specs).eval()
