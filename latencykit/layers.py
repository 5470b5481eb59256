"""Layer specs: the unit shared by lookup tables, networks, export and analytic counts.

A `LayerSpec` is plain data: a layer kind plus every shape parameter and its input resolution.
Two layers with equal specs cost the same on a device, so a table holds one row per distinct spec.
Params and FLOPs are counted analytically here; tests prove they equal the torch modules' counts.
FLOPs follow the NAS convention: multiply-accumulates of convolutions, linear layers and
attention matmuls (normalisation, activations and pooling are not counted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Callable

ACTIVATIONS = ("swish", "hswish", "relu")


@dataclass(frozen=True)
class LayerSpec:
    """One layer's kind, shape parameters and input resolution `hw` (height = width)."""

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
    act: str = "swish"

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ValueError(f"unknown layer kind {self.kind!r}; known: {', '.join(LAYER_KINDS)}")
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
        return LAYER_KINDS[self.kind](self)[0]

    @property
    def flops(self) -> int:
        """Multiply-accumulates of one inference at batch 1."""
        return LAYER_KINDS[self.kind](self)[1]


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
    """Pre-norm attention over hw*hw tokens: qkv (no bias), 3x3 depthwise conv on V, relative position
    bias ((2hw-1)^2 per head), hard-swish, projection."""
    c, tokens = s.cin, s.hw**2
    qk, v = attention_dims(s)
    params = 2 * c + c * (2 * qk + v) + v * 9 + (2 * s.hw - 1) ** 2 * s.heads + v * c + c
    macs = tokens * (c * (2 * qk + v) + v * 9 + v * c) + s.heads * tokens**2 * (s.head_dim + v // s.heads)
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


# NASViT layers (its Appendix B and released code): global attention with talking heads, and a double
# MLP. Token layers like ElasticViT's; windowed attention is not modelled.
def _nasvit_attn(s: LayerSpec) -> tuple[int, int]:
    """ElasticViT's attention (see _transattn) plus talking heads: a heads x heads linear map (with bias)
    across heads before and after the softmax."""
    params, macs = _transattn(s)
    return params + 2 * (s.heads * s.heads + s.heads), macs + 2 * s.heads * s.heads * s.hw**4


def _nasvit_ffn(s: LayerSpec) -> tuple[int, int]:
    """Two pre-norm MLP layers of the same ratio (MacaronNet-style), as NASViT's released code has them."""
    params, macs = _transffn(s)
    return 2 * params, 2 * macs


LAYER_KINDS: dict[str, Callable[[LayerSpec], tuple[int, int]]] = {
    "stem": _stem,
    "mbconv": _mbconv,
    "mvit_local": _mvit_local,
    "transformer": _transformer,
    "mvit_fusion": _mvit_fusion,
    "mbpool": _mbpool,
    "mbblock": _mbblock,
    "transds": _mbblock,
    "transattn": _transattn,
    "transffn": _transffn,
    "mbpool_fc": _mbpool_fc,
    "nasvit_attn": _nasvit_attn,
    "nasvit_ffn": _nasvit_ffn,
}
"""Layer kind -> analytic (params, MACs). blocks.py has the matching torch module per kind."""
