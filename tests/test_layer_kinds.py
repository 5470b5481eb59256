"""Layer kinds are registered units: each resolves its module, and removal mode takes out every kind
that keeps shape in the elasticvit and nasvit spaces, leaving networks that still run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latencykit.blocks import build, build_layer, layer_inputs
from latencykit.errors import LatencykitError
from latencykit.layers import INPUT_LAYOUTS, LAYER_KINDS, LayerKind, LayerSpec
from latencykit.lut.removal import check_removable, removable, removable_counts
from latencykit.space import SearchSpace, load_space

CLAIMED = {"elasticvit": {"mbblock", "transattn", "transffn"},
           "nasvit": {"mbconv", "nasvit_attn", "nasvit_ffn"}}
"""The kinds removal mode takes out of each space (every kind of it whose layers can keep shape)."""


def test_every_kind_resolves_its_module() -> None:
    for name in LAYER_KINDS:
        kind = LAYER_KINDS.get(name)
        assert kind.name == name and kind.inputs in INPUT_LAYOUTS
        assert issubclass(kind.module_class(), nn.Module)
        assert isinstance(kind.slice_rules(), dict)


@pytest.mark.parametrize("name", sorted(CLAIMED))
def test_removal_counts_per_kind(name: str) -> None:
    counts = removable_counts(load_space(name))
    claimed = {k for k, (n, _) in counts.items() if n}
    assert claimed == CLAIMED[name], counts
    shape_keeping = {k for k in counts if LAYER_KINDS.get(k).keeps_shape is not None}
    assert shape_keeping == CLAIMED[name]  # no kind that may keep shape is left without removals


@pytest.mark.parametrize("name", sorted(CLAIMED))
def test_a_network_runs_with_each_removable_kind_taken_out(name: str) -> None:
    space = load_space(name)
    arch = space.smallest()
    specs = space.layers(arch)
    x = torch.randn(1, 3, arch.resolution, arch.resolution)
    for kind in sorted(CLAIMED[name]):
        p = next(i for i, s in enumerate(specs) if s.kind == kind and removable(s))
        rest = specs[:p] + specs[p + 1:]
        net = build(rest)
        assert sum(q.numel() for q in net.parameters()) == sum(s.params for s in rest)
        with torch.no_grad():
            assert net(x).shape == (1, space.head.classes), kind


def test_a_space_nothing_can_be_removed_from_is_refused() -> None:
    space = SearchSpace.from_dict({
        "name": "strided", "resolution": [32], "stem": {"widths": [8]},
        "stages": [{"name": "s1", "kind": "mbconv", "widths": [16], "depths": [1], "stride": 2,
                    "expand": [2.0], "kernel": [3]}],
        "head": {"kind": "mbpool", "classes": 10}})
    with pytest.raises(LatencykitError, match="isolated mode"):
        check_removable(space)


class Scale(nn.Module):
    """A test kind: a per-channel scale (keeps shape, 1 MAC per element)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(spec.cin, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def test_a_new_kind_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    kind = LayerKind("scale", lambda s: (s.cin, s.cin * s.hw**2), f"{__name__}:Scale",
                     keeps_shape=lambda s: s.cin == s.cout)
    monkeypatch.setitem(LAYER_KINDS._items, "scale", kind)
    spec = LayerSpec("scale", 8, 4, 4)
    module = build_layer(spec)
    (x,) = layer_inputs(spec)
    assert module(x).shape == x.shape and spec.params == 4 and removable(spec)
