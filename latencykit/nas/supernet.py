"""A weight-entangled supernet built from any search space.

The space already cuts every architecture into slots (runs of layers that depend on a few genes).
The supernet keeps one `DynamicLayer` per slot position, sized to the largest spec that position
can take; `set_active(arch)` binds each position to the arch's spec. Nothing here knows a stage
kind: a new stage kind plugs in as soon as its layer kinds have static blocks. The forward pass
reuses `blocks.group_layers`, so the dataflow (e.g. MobileViT's fold + fusion) is the blocks' own.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from latencykit.arch import Arch
from latencykit.blocks import Network, build, group_layers, static_module_classes
from latencykit.layers import LAYER_KINDS, LayerSpec
from latencykit.nas.dynamic import Bound, DynamicLayer
from latencykit.space import SearchSpace


def with_classes(space: SearchSpace, classes: int) -> SearchSpace:
    """The same space with a classifier for `classes` classes (params are then counted for it)."""
    return space if space.head.classes == classes else replace(space, head=replace(space.head, classes=classes))


def _key(slot_name: str) -> str:
    return slot_name.replace(".", "_")


class Supernet(nn.Module):
    """Every architecture of `space` as a slice of one set of weights."""

    def __init__(self, space: SearchSpace, scaling: bool = False) -> None:
        super().__init__()
        self.space = space
        self.scaling = scaling
        self.slots = nn.ModuleDict()
        for slot in space.slots:
            combos = [layers for layers in slot.layers if layers]
            depth = max(len(layers) for layers in combos)
            self.slots[_key(slot.name)] = nn.ModuleList(
                DynamicLayer([layers[i] for layers in combos if len(layers) > i], scaling=scaling)
                for i in range(depth))
        self.resolution_bound = any(LAYER_KINDS.get(l.kind).resolution_bound for l in space.distinct_layers())
        """True when subnets must run at their own resolution (see LayerKind.resolution_bound)."""
        self._body: tuple[nn.Module, ...] = ()
        self.arch: Arch | None = None
        self.set_active(space.largest())

    # -- choosing a subnet ----------------------------------------------------------------------------
    def positions(self, arch: Arch) -> list[tuple[DynamicLayer, LayerSpec]]:
        """(dynamic layer, spec) of every layer of `arch`, in network order."""
        genes = self.space.encode(arch)
        out = []
        for slot in self.space.slots:
            # a slot lists one layer tuple per combination of its genes, in C order (itertools.product)
            combo = int(np.ravel_multi_index(tuple(int(genes[d]) for d in slot.deps), slot.dims))
            layers = self.slots[_key(slot.name)]
            out.extend((layers[i], spec) for i, spec in enumerate(slot.layers[combo]))
        return out

    def set_active(self, arch: Arch) -> "Supernet":
        if arch != self.arch:
            pos = self.positions(arch)
            self._body = tuple(group_layers([Bound(layer, spec) for layer, spec in pos], [s for _, s in pos]))
            self.arch = arch
        return self

    def smallest(self) -> Arch:
        return self.space.smallest()

    def largest(self) -> Arch:
        return self.space.largest()

    def sample(self, rng: np.random.Generator | int | None = None) -> Arch:
        return self.space.sample(rng)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self._body:
            x = module(x)
        return x

    # -- extraction -----------------------------------------------------------------------------------
    def extract(self, arch: Arch) -> Network:
        """The static network `blocks.build(space.layers(arch))` with the inherited weights copied in."""
        pos = self.positions(arch)
        net = build(self.space.layers(arch))
        statics = static_layers(net)
        assert len(statics) == len(pos), "blocks.build and the supernet disagree on the layer count"
        with torch.no_grad():
            for module, (layer, spec) in zip(statics, pos):
                state = layer.sliced_state(spec)
                module.load_state_dict({k: state[k].detach().clone() for k in module.state_dict()})
        return net.train(self.training)


def static_layers(net: nn.Module) -> list[nn.Module]:
    """The per-layer static modules of a built network, in layer order (through any grouping)."""
    kinds = static_module_classes()
    out: list[nn.Module] = []

    def walk(m: nn.Module) -> None:
        for child in m.children():
            if isinstance(child, kinds):
                out.append(child)
            else:
                walk(child)

    walk(net)
    return out


def smallest_resolution(space: SearchSpace) -> int:
    """The smallest input side that keeps whole patches in every stage that unfolds into patches.

    For the autovit layout (stem /2, strides 1,2,2 then 2,1,2,2, 2x2 patches) it is 128."""
    need, stride = space.stem.stride, space.stem.stride
    for st in space.stages:
        stride *= st.stride
        need = math.lcm(need, stride * max(st.patch, 1))
    return need
