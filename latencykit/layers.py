"""Layer specs: the unit shared by lookup tables, networks, export and analytic counts.

A `LayerSpec` is plain data: a layer kind plus every shape parameter and its input resolution.
Two layers with equal specs cost the same on a device, so a table holds one row per distinct spec.
Params and FLOPs are counted analytically here; tests prove they equal the torch modules' counts.
FLOPs follow the NAS convention: multiply-accumulates of convolutions, linear layers and
attention matmuls (normalisation, activations and pooling are not counted).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Callable, Mapping

from latencykit.registry import Registry, load_object

ACTIVATIONS = ("swish", "hswish", "relu")


@dataclass(frozen=True)
class LayerSpec:
    """One layer's kind, shape parameters and input resolution `hw` (height = width).

    `windows` > 1 splits an attention layer's square token map into that many square windows
    (4 = 2 x 2, as Swin and NASViT); 0 is global attention."""

    kind: str
    hw: int
    cin: int
    cout: int
    stride: int = 1
    kernel: int = 0
    expand: float = 0.0
    se: bool = False
    heads: int = 0
    head_dim: int = 0
    mlp_ratio: float = 0.0
    v_scale: int = 0
    patch: int = 0
    hidden: int = 0
    windows: int = 0
    act: str = "swish"

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}; known: {', '.join(LAYER_KINDS)}")
        if self.windows and (self.windows == 1 or math.isqrt(self.windows) ** 2 != self.windows
                             or self.hw % math.isqrt(self.windows)):
            raise ValueError(f"windows={self.windows} must be 0 (global) or a square >= 4 whose root divides "
                             f"hw={self.hw}")
        if self.act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.act!r}; known: {', '.join(ACTIVATIONS)}")
        object.__setattr__(self, "expand", float(self.expand))
        object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))

    @cached_property
    def key(self) -> str:
        """Stable, readable key: the kind, then every field that differs from its default (computed once
        per object: a space's slots hold hundreds of thousands of specs, looked up once per table)."""
        parts = [f"{f.name}={_fmt(getattr(self, f.name))}" for f in fields(self)[1:]
                 if f.name in ("hw", "cin", "cout") or getattr(self, f.name) != f.default]
        return f"{self.kind}:" + ",".join(parts)

    @classmethod
    def from_key(cls, key: str) -> "LayerSpec":
        kind, _, rest = key.partition(":")
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, object] = {}
        for item in filter(None, rest.split(",")):
            name, _, raw = item.partition("=")
            if name not in types:
                raise ValueError(f"layer key {key!r} has unknown field {name!r}")
            values[name] = _parse(types[name], raw)
        return cls(kind=kind, **values)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def out_hw(self) -> int:
        return -(-self.hw // self.stride)

    @property
    def params(self) -> int:
        return LAYER_KINDS.get(self.kind).counts(self)[0]

    @property
    def flops(self) -> int:
        """Multiply-accumulates of one inference at batch 1."""
        return LAYER_KINDS.get(self.kind).counts(self)[1]


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parse(typ: object, raw: str) -> object:
    typ = str(typ)
    if typ == "bool":
        return raw == "1"
    if typ == "float":
        return float(raw)
    if typ == "int":
        return int(raw)
    return raw


def mbconv_hidden(cin: int, expand: float) -> int:
    return int(round(cin * expand))


def se_channels(hidden: int) -> int:
    """Squeeze width of squeeze-excite: a quarter of the expanded width, rounded to 8."""
    return max(8, int(hidden / 4 + 4) // 8 * 8)


def mlp_hidden(dim: int, ratio: float) -> int:
    return int(round(dim * ratio))


def head_hidden(spec: LayerSpec) -> int:
    return spec.hidden or int(round(spec.cin * spec.expand))


def window_side(spec: LayerSpec) -> int:
    """Side of the square token map one attention window covers (the whole map when global)."""
    return spec.hw // math.isqrt(max(spec.windows, 1))


def attention_dims(spec: LayerSpec) -> tuple[int, int]:
    """(query/key width, value width) of multi-head attention."""
    qk = spec.heads * spec.head_dim
    return qk, qk * max(spec.v_scale, 1)


# Each counter returns (params, MACs) for batch 1. BatchNorm and LayerNorm carry 2 params per channel.
def _stem(s: LayerSpec) -> tuple[int, int]:
    k2 = s.kernel * s.kernel
    return s.cin * s.cout * k2 + 2 * s.cout, s.out_hw**2 * s.cin * s.cout * k2


def _mbconv(s: LayerSpec) -> tuple[int, int]:
    hidden = mbconv_hidden(s.cin, s.expand)
    params = macs = 0
    if hidden != s.cin:
        params += s.cin * hidden + 2 * hidden
        macs += s.hw**2 * s.cin * hidden
    params += hidden * s.kernel**2 + 2 * hidden
    macs += s.out_hw**2 * hidden * s.kernel**2
    if s.se:
        sq = se_channels(hidden)
        params += hidden * sq + sq + sq * hidden + hidden
        macs += 2 * hidden * sq
    params += hidden * s.cout + 2 * s.cout
    macs += s.out_hw**2 * hidden * s.cout
    return params, macs


def _mvit_local(s: LayerSpec) -> tuple[int, int]:
    k2 = s.kernel**2
    params = s.cin * s.cin * k2 + 2 * s.cin + s.cin * s.cout
    return params, s.hw**2 * (s.cin * s.cin * k2 + s.cin * s.cout)


def _transformer(s: LayerSpec) -> tuple[int, int]:
    d = s.cin
    qk, v = attention_dims(s)
    h = mlp_hidden(d, s.mlp_ratio)
    params = 2 * d + d * (2 * qk + v) + (2 * qk + v) + v * d + d + 2 * d + d * h + h + h * d + d
    tokens = s.hw**2
    seq = tokens // (s.patch**2) if s.patch else tokens
    sequences = tokens // seq
    attn = sequences * s.heads * seq * seq * (s.head_dim + s.head_dim * max(s.v_scale, 1))
    macs = tokens * (d * (2 * qk + v) + v * d + 2 * d * h) + attn
    return params, macs


def _mvit_fusion(s: LayerSpec) -> tuple[int, int]:
    d, c, k2 = s.cin, s.cout, s.kernel**2
    params = 2 * d + d * c + 2 * c + 2 * c * c * k2 + 2 * c
    return params, s.hw**2 * (d * c + 2 * c * c * k2)


def _mbpool(s: LayerSpec) -> tuple[int, int]:
    hidden = head_hidden(s)
    params = s.cin * hidden + 2 * hidden + hidden * s.cout + s.cout
    return params, s.hw**2 * s.cin * hidden + hidden * s.cout


# ElasticViT layers (its released code, as nn-Meter measured them on phones). Token layers take
# (batch, hw*hw, channels); `transds` also accepts a map, since it opens the first transformer stage.
def _mbblock(s: LayerSpec) -> tuple[int, int]:
    """ElasticViT's inverted residual: like mbconv, but SE squeezes to a quarter (not rounded), a
    changed width adds a 1x1 shortcut conv (after 2x2 average pooling when strided), and a strided
    layer rounds an odd map down (7 -> 3), as nn-Meter measured and summed these blocks."""
    hidden = mbconv_hidden(s.cin, s.expand)
    out2 = (s.hw // s.stride) ** 2
    params = macs = 0
    if s.expand != 1:
        params += s.cin * hidden + 2 * hidden
        macs += s.hw**2 * s.cin * hidden
    params += hidden * s.kernel**2 + 2 * hidden
    macs += out2 * hidden * s.kernel**2
    if s.se:
        sq = hidden // 4
        params += hidden * sq + sq + sq * hidden + hidden
        macs += 2 * hidden * sq
    params += hidden * s.cout + 2 * s.cout
    macs += out2 * hidden * s.cout
    if s.cin != s.cout:
        params += s.cin * s.cout
        macs += out2 * s.cin * s.cout
    return params, macs


def _transattn(s: LayerSpec) -> tuple[int, int]:
    """Pre-norm attention over hw*hw tokens (within each window when windowed): qkv (no bias), 3x3
    depthwise conv on V, relative position bias ((2w-1)^2 per head for a w x w window), hard-swish,
    projection."""
    c, tokens, side = s.cin, s.hw**2, window_side(s)
    qk, v = attention_dims(s)
    params = 2 * c + c * (2 * qk + v) + v * 9 + (2 * side - 1) ** 2 * s.heads + v * c + c
    macs = tokens * (c * (2 * qk + v) + v * 9 + v * c) + s.heads * tokens * side**2 * (s.head_dim + v // s.heads)
    return params, macs


def _transffn(s: LayerSpec) -> tuple[int, int]:
    c, h = s.cin, mlp_hidden(s.cin, s.mlp_ratio)
    return 2 * c + c * h + h + h * c + c, s.hw**2 * 2 * c * h


def _mbpool_fc(s: LayerSpec) -> tuple[int, int]:
    """MobileNetV3's head on tokens: linear to expand x width + BN + act, mean over tokens, linear to
    `hidden` + act, classifier."""
    wide = int(round(s.cin * s.expand))
    params = s.cin * wide + wide + 2 * wide + wide * s.hidden + s.hidden + s.hidden * s.cout + s.cout
    return params, s.hw**2 * s.cin * wide + wide * s.hidden + s.hidden * s.cout


# NASViT layers (its Appendix B and released code): attention with talking heads (global, or in 2 x 2
# windows as its first transformer stage may choose), and a double MLP. Token layers like ElasticViT's.
def _nasvit_attn(s: LayerSpec) -> tuple[int, int]:
    """ElasticViT's attention (see _transattn) plus talking heads: a heads x heads linear map (with bias)
    across heads before and after the softmax, on every (query, key) pair of a window."""
    params, macs = _transattn(s)
    pairs = s.hw**2 * window_side(s) ** 2
    return params + 2 * (s.heads * s.heads + s.heads), macs + 2 * s.heads * s.heads * pairs


def _nasvit_ffn(s: LayerSpec) -> tuple[int, int]:
    """Two pre-norm MLP layers of the same ratio (MacaronNet-style), as NASViT's released code has them."""
    params, macs = _transffn(s)
    return 2 * params, 2 * macs


# NAS-Bench-201 layers: ReLU-Conv-BN edges (bias-free convs), pooling and identities, its stem, its
# residual reduction block (3x3 stride-2 and 3x3 ReLU-Conv-BN, shortcut 2x2 avg pool + 1x1 conv) and head.
def _nb201_conv(s: LayerSpec) -> tuple[int, int]:
    k2 = s.kernel**2
    return s.cin * s.cout * k2 + 2 * s.cout, s.out_hw**2 * s.cin * s.cout * k2


def _nothing(s: LayerSpec) -> tuple[int, int]:
    return 0, 0


def _nb201_reduce(s: LayerSpec) -> tuple[int, int]:
    a, b, short = 9 * s.cin * s.cout, 9 * s.cout * s.cout, s.cin * s.cout
    return a + b + short + 4 * s.cout, s.out_hw**2 * (a + b + short)


def _nb201_head(s: LayerSpec) -> tuple[int, int]:
    return 2 * s.cin + s.cin * s.cout + s.cout, s.cin * s.cout


# ----- nn-Meter keys (ElasticViT's LUT files; latencykit.lut.importers reads them) -------------------

_NNMETER_ACT = {"hswish": "hard_swish"}


def _whole(x: float) -> str | None:
    return str(int(x)) if float(x).is_integer() else None


def _nnmeter(key: Callable[[LayerSpec, str], str | None]) -> Callable[[LayerSpec], str | None]:
    """A kind's nn-Meter key, None for activations nn-Meter's tables do not hold."""
    return lambda s: key(s, _NNMETER_ACT[s.act]) if s.act in _NNMETER_ACT else None


def _nnmeter_stem(s: LayerSpec, act: str) -> str | None:
    return f"firstconv_{s.hw}_3_{s.cout}_2_3" if (s.cin, s.stride, s.kernel) == (3, 2, 3) else None


def _nnmeter_mbblock(s: LayerSpec, act: str) -> str | None:
    if not _whole(s.expand):
        return None
    return f"conv_{s.hw}_{s.cin}_{s.cout}_{_whole(s.expand)}_{s.stride}_{act}_{s.kernel}_{'se' if s.se else 'nose'}"


def _nnmeter_transds(s: LayerSpec, act: str) -> str | None:
    if s.kernel != 3 or not s.se or not _whole(s.expand):
        return None
    return f"transds_{s.hw}_{s.cin}_{s.cout}_{s.stride}_{_whole(s.expand)}"


def _nnmeter_transattn(s: LayerSpec, act: str) -> str | None:
    if s.head_dim != 16 or not s.heads * 16 == s.cin == s.cout or s.windows:
        return None
    return f"transattn_{s.hw}_{s.cin}_{act}_{s.v_scale}_ln"


def _nnmeter_transffn(s: LayerSpec, act: str) -> str | None:
    if s.cin != s.cout or not _whole(s.mlp_ratio):
        return None
    return f"transffn_{s.hw}_{s.cin}_{_whole(s.mlp_ratio)}_{act}_ln"


def _nnmeter_mbpool(s: LayerSpec, act: str) -> str | None:
    if (s.hidden, s.expand, s.cout) != (1984, 6, 1000):
        return None
    return f"mbpool_{s.hw}_{s.cin}_1984_6_{act}"


# ----- layer kinds ------------------------------------------------------------------------------------

INPUT_LAYOUTS = ("map", "tokens", "patches", "patches+map")
"""How a layer run alone takes its input: a (B, C, H, W) map; (B, hw*hw, C) tokens; MobileViT's unfolded
patches (B * patch^2, hw*hw / patch^2, C); patches plus the block's (B, cout, H, W) input map."""


@dataclass(frozen=True)
class LayerKind:
    """Everything latencykit knows about one layer kind. Register one in LAYER_KINDS (third parties: the
    entry-point group `latencykit.layer_kinds`, naming a LayerKind object) and profiling, removal,
    supernets, export and importers pick it up. The torch parts are dotted paths ('module:attribute'),
    imported on first use, so specs, spaces and counts need no torch."""

    name: str
    counts: Callable[[LayerSpec], tuple[int, int]]
    """(params, multiply-accumulates) at batch 1; tests prove they equal the torch module's."""
    module: str
    """The static torch module class, built as `Class(spec)` (e.g. 'latencykit.blocks:MBConv')."""
    inputs: str = "map"
    """The layout of its example inputs, one of INPUT_LAYOUTS."""
    keeps_shape: Callable[[LayerSpec], bool] | None = None
    """Whether a spec's output has its input's shape and layout, so removal mode can take the layer out
    of a network and the rest still runs; None: the kind never does (removal keeps its isolated entry)."""
    slicing: str = ""
    """The supernet's slicing rules {tensor name: rule} for tensors that keeping leading channels gets
    wrong (fused q/k/v, concatenated inputs); see latencykit.nas.dynamic. Empty: leading channels only."""
    scaled_outputs: tuple[tuple[str, str], ...] = ()
    """(output linear layer, scale name) pairs where NASViT's switchable scaling layers sit."""
    resolution_bound: bool = False
    """The module only runs on the map size it was built for (a relative position bias table)."""
    importer_keys: Mapping[str, Callable[[LayerSpec], str | None]] = field(default_factory=dict, compare=False)
    """Importer name -> the key of a spec in that importer's files (None when the format cannot hold it)."""

    def __post_init__(self) -> None:
        if self.inputs not in INPUT_LAYOUTS:
            raise ValueError(f"layer kind {self.name}: inputs {self.inputs!r} is not one of {', '.join(INPUT_LAYOUTS)}")

    def removable(self, spec: LayerSpec) -> bool:
        return self.keeps_shape is not None and self.keeps_shape(spec)

    def importer_key(self, importer: str, spec: LayerSpec) -> str | None:
        key = self.importer_keys.get(importer)
        return key(spec) if key else None

    def module_class(self) -> type:
        return load_object(self.module)

    def slice_rules(self) -> dict:
        return load_object(self.slicing) if self.slicing else {}


LAYER_KINDS: Registry[LayerKind] = Registry("layer kind", "latencykit.layer_kinds")
"""Layer kind name -> LayerKind."""


def layer_kind(name: str) -> LayerKind:
    return LAYER_KINDS.get(name)


def _residual(s: LayerSpec) -> bool:
    return s.stride == 1 and s.cin == s.cout


def _same_width(s: LayerSpec) -> bool:
    return s.cin == s.cout


_BLOCKS, _DYNAMIC = "latencykit.blocks:", "latencykit.nas.dynamic:"
for _kind in (
    LayerKind("stem", _stem, _BLOCKS + "Stem", importer_keys={"nn-meter": _nnmeter(_nnmeter_stem)}),
    LayerKind("mbconv", _mbconv, _BLOCKS + "MBConv", keeps_shape=_residual),
    LayerKind("mvit_local", _mvit_local, _BLOCKS + "MobileViTLocal"),
    LayerKind("transformer", _transformer, _BLOCKS + "TransformerLayer", "patches", _same_width,
              _DYNAMIC + "TRANSFORMER_RULES", (("attn.proj", "attn"), ("mlp.2", "mlp"))),
    LayerKind("mvit_fusion", _mvit_fusion, _BLOCKS + "MobileViTFusion", "patches+map", slicing=_DYNAMIC + "FUSION_RULES"),
    LayerKind("mbpool", _mbpool, _BLOCKS + "MBPool"),
    LayerKind("mbblock", _mbblock, _BLOCKS + "MobileBlock", keeps_shape=_residual,
              importer_keys={"nn-meter": _nnmeter(_nnmeter_mbblock)}),
    # transds opens a token stage (a map in, tokens out), so it never keeps its input's layout
    LayerKind("transds", _mbblock, _BLOCKS + "TransDownsample", "tokens",
              importer_keys={"nn-meter": _nnmeter(_nnmeter_transds)}),
    LayerKind("transattn", _transattn, _BLOCKS + "TransAttention", "tokens", _same_width, _DYNAMIC + "ATTENTION_RULES",
              resolution_bound=True, importer_keys={"nn-meter": _nnmeter(_nnmeter_transattn)}),
    LayerKind("transffn", _transffn, _BLOCKS + "TransFFN", "tokens", _same_width,
              importer_keys={"nn-meter": _nnmeter(_nnmeter_transffn)}),
    LayerKind("mbpool_fc", _mbpool_fc, _BLOCKS + "MBPoolFC", "tokens",
              importer_keys={"nn-meter": _nnmeter(_nnmeter_mbpool)}),
    LayerKind("nasvit_attn", _nasvit_attn, _BLOCKS + "TalkingHeadsAttention", "tokens", _same_width,
              _DYNAMIC + "ATTENTION_RULES", resolution_bound=True),
    LayerKind("nasvit_ffn", _nasvit_ffn, _BLOCKS + "DoubleMLP", "tokens", _same_width),
    LayerKind("nb201_stem", _nb201_conv, _BLOCKS + "NB201Stem"),
    LayerKind("nb201_conv", _nb201_conv, _BLOCKS + "ReLUConvBN"),
    LayerKind("nb201_pool", _nothing, _BLOCKS + "AvgPool3"),
    LayerKind("nb201_skip", _nothing, _BLOCKS + "Skip"),
    LayerKind("nb201_none", _nothing, _BLOCKS + "Zero"),
    LayerKind("nb201_reduce", _nb201_reduce, _BLOCKS + "ResidualReduce"),
    LayerKind("nb201_head", _nb201_head, _BLOCKS + "NB201Head"),
):
    LAYER_KINDS.add(_kind.name, _kind)
