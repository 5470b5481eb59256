"""Dynamic layers: the weight-entangled layers of a supernet.

A dynamic layer holds the largest static module (latencykit.blocks) its position in the network can
take. For an active `LayerSpec` it only *slices*: it hands out views of its largest weights shaped
like the static module of that spec, and runs that static module's own forward on them (through
`torch.func.functional_call` on a weightless meta-device copy). The supernet and an extracted
subnet therefore run the same code on the same numbers, which is what makes extraction exact.

Slicing keeps the leading channels of every dimension and the centre of convolution kernels. A
layer kind whose dimensions are concatenations (attention's fused q/k/v, a fusion conv over two
concatenated maps) names a dict of rules for those tensors in its `LayerKind.slicing`.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from latencykit.blocks import build_layer
from latencykit.errors import LatencykitError
from latencykit.layers import LAYER_KINDS, LayerSpec, window_side

Rule = Callable[[torch.Tensor, LayerSpec, LayerSpec], torch.Tensor]
"""(largest tensor, largest spec, active spec) -> tensor with its grouped dimensions sliced."""

def lead(full: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Leading entries of every dimension; the centre of the spatial dimensions of a conv kernel."""
    index = []
    for d, (n, m) in enumerate(zip(shape, full.shape)):
        start = (m - n) // 2 if full.dim() == 4 and d >= 2 else 0
        index.append(slice(start, start + n))
    return full[tuple(index)]


def keep_heads(t: torch.Tensor, dim: int, heads: int, width: int, keep: int, keep_width: int) -> torch.Tensor:
    """`dim` holds `heads` blocks of `width`: keep the first `keep` heads, `keep_width` wide each."""
    t = t.unflatten(dim, (heads, width)).narrow(dim, 0, keep).narrow(dim + 1, 0, keep_width)
    return t.flatten(dim, dim + 1)


def _vw(spec: LayerSpec) -> int:
    return spec.head_dim * max(spec.v_scale, 1)


def _qkv(full: torch.Tensor, big: LayerSpec, spec: LayerSpec) -> torch.Tensor:
    qk = big.heads * big.head_dim
    q, k, v = full[:qk], full[qk:2 * qk], full[2 * qk:]
    parts = [keep_heads(t, 0, big.heads, big.head_dim, spec.heads, spec.head_dim) for t in (q, k)]
    parts.append(keep_heads(v, 0, big.heads, _vw(big), spec.heads, _vw(spec)))
    return torch.cat(parts, 0)


def _proj(full: torch.Tensor, big: LayerSpec, spec: LayerSpec) -> torch.Tensor:
    return keep_heads(full, 1, big.heads, _vw(big), spec.heads, _vw(spec))


def _halves(full: torch.Tensor, big: LayerSpec, spec: LayerSpec) -> torch.Tensor:
    """The fusion conv reads cat([block input, transformer output]): two blocks of `cout` channels."""
    return keep_heads(full, 1, 2, big.cout, 2, spec.cout)


def _value_channels(full: torch.Tensor, big: LayerSpec, spec: LayerSpec) -> torch.Tensor:
    """A per-channel tensor over the value width (e.g. a depthwise conv on V): whole heads."""
    return keep_heads(full, 0, big.heads, _vw(big), spec.heads, _vw(spec))


def _relative_bias(full: torch.Tensor, big: LayerSpec, spec: LayerSpec) -> torch.Tensor:
    """Relative position bias (heads, (2S-1)^2) over offsets of an S x S window: the first heads and the
    centre (2s-1) x (2s-1) offsets, so an offset keeps its bias whatever the window size."""
    n, m = 2 * window_side(big) - 1, 2 * window_side(spec) - 1
    start = (n - m) // 2
    grid = full[: spec.heads].unflatten(1, (n, n))
    return grid[:, start:start + m, start:start + m].flatten(1)


TRANSFORMER_RULES: dict[str, Rule] = {"attn.qkv.weight": _qkv, "attn.qkv.bias": _qkv, "attn.proj.weight": _proj}
"""MobileViT's transformer layer (latencykit.blocks.TransformerLayer)."""
FUSION_RULES: dict[str, Rule] = {"fuse.0.weight": _halves}
ATTENTION_RULES: dict[str, Rule] = {"qkv.weight": _qkv, "proj.weight": _proj, "v_conv.weight": _value_channels,
                                    "bias": _relative_bias}
"""ElasticViT / NASViT attention (latencykit.blocks.TransAttention)."""

_NUMERIC = ("hw", "cin", "cout", "kernel", "expand", "heads", "head_dim", "mlp_ratio", "v_scale", "patch",
            "hidden")


def largest_spec(specs: Sequence[LayerSpec]) -> LayerSpec:
    """Field-wise maximum of the specs one network position can take (they must share kind and stride);
    attention windows take the fewest (the largest window, so the largest position bias table)."""
    first = specs[0]
    for s in specs:
        if (s.kind, s.stride, s.act) != (first.kind, first.stride, first.act):
            raise LatencykitError(f"one supernet position takes both {first.key} and {s.key}; "
                                  "a position must keep its layer kind, stride and activation")
    known = {f.name for f in fields(LayerSpec)}
    values = {f: max(getattr(s, f) for s in specs) for f in _NUMERIC if f in known}
    return replace(first, se=any(s.se for s in specs), windows=min(s.windows for s in specs), **values)


class DynamicLayer(nn.Module):
    """One network position: the largest static module, sliced to whichever spec is active."""

    def __init__(self, specs: Sequence[LayerSpec], scaling: bool = False) -> None:
        super().__init__()
        self.big = largest_spec(specs)
        self.full = build_layer(self.big).train()
        self.active = self.big
        self.scale_targets = dict(LAYER_KINDS.get(self.big.kind).scaled_outputs) if scaling else {}
        self.scales = nn.ParameterDict()
        if self.scale_targets:
            # NASViT: one private channel-wise scale per width choice, initialised small (CaiT)
            for width in sorted({s.cin for s in specs}):
                for name in self.scale_targets.values():
                    self.scales[f"{name}_{width}"] = nn.Parameter(torch.full((width,), 1e-4))
        self._templates: dict[LayerSpec, tuple[nn.Module, list[tuple[str, torch.Size]]]] = {}

    def template(self, spec: LayerSpec) -> tuple[nn.Module, list[tuple[str, torch.Size]]]:
        """A weightless (meta) static module of `spec`, and the names and shapes of its weights.

        Buffers a block derives from its spec and does not save (e.g. a position index table) are not
        weights: the template gets real ones, from one real build of the block."""
        if spec not in self._templates:
            with torch.device("meta"):
                module = build_layer(spec)
            saved = set(module.state_dict())
            derived = [n for n, _ in module.named_buffers() if n not in saved]
            if derived:
                real = dict(build_layer(spec).named_buffers())
                for name in derived:
                    owner, _, attr = name.rpartition(".")
                    sub = module.get_submodule(owner) if owner else module
                    sub.register_buffer(attr, real[name], persistent=False)
            shapes = [(n, t.shape) for n, t in [*module.named_parameters(), *module.named_buffers()]
                      if n in saved]
            self._templates[spec] = (module, shapes)
        return self._templates[spec]

    def sliced_state(self, spec: LayerSpec) -> dict[str, torch.Tensor]:
        """The static module's state for `spec`, as (differentiable) slices of the largest weights."""
        full = dict(self.full.named_parameters())
        full.update(self.full.named_buffers())
        rules = LAYER_KINDS.get(spec.kind).slice_rules()
        out: dict[str, torch.Tensor] = {}
        for name, shape in self.template(spec)[1]:
            if name not in full:
                raise LatencykitError(f"{spec.key}: tensor {name} is missing from the largest layer "
                                      f"{self.big.key}; the position's largest spec is not a superset")
            t = full[name]
            if name in rules:
                t = rules[name](t, self.big, spec)
            t = lead(t, shape)
            if tuple(t.shape) != tuple(shape):
                raise LatencykitError(f"{spec.key}: cannot slice {name} {tuple(full[name].shape)} "
                                      f"to {tuple(shape)}")
            out[name] = t
        for prefix, scale in self.scale_targets.items():
            s = self.scales[f"{scale}_{spec.cin}"]
            out[f"{prefix}.weight"] = out[f"{prefix}.weight"] * s[:, None]
            out[f"{prefix}.bias"] = out[f"{prefix}.bias"] * s
        return out

    def run(self, spec: LayerSpec, *inputs: torch.Tensor) -> torch.Tensor:
        module = self.template(spec)[0]
        module.train(self.training)
        device = next(self.full.parameters()).device
        for sub in module.modules():  # derived buffers follow the weights (e.g. onto CUDA)
            for name, b in sub._buffers.items():
                if b is not None and not b.is_meta and b.device != device:
                    sub._buffers[name] = b.to(device)
        return functional_call(module, self.sliced_state(spec), inputs)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.run(self.active, *inputs)


class Bound(nn.Module):
    """A dynamic layer fixed to one spec, so the blocks' own grouping (group_layers) can run it."""

    def __init__(self, layer: DynamicLayer, spec: LayerSpec) -> None:
        super().__init__()
        self._layer = (layer,)  # a tuple: not registered, the supernet owns the weights
        self.spec = spec

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._layer[0].run(self.spec, *inputs)
