"""Search spaces: sampling, validation, counting, JSON round trips and the slot mechanism."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest

from latencykit.arch import Arch, StageArch
from latencykit.errors import ArchitectureError, LatencykitError, UnknownNameError
from latencykit.space import SPACES, load_space

AUTOVIT = ["autovit-xxs", "autovit-xs", "autovit-s"]


def test_builtin_spaces_are_registered() -> None:
    assert set(AUTOVIT) <= set(SPACES.names())
    with pytest.raises(UnknownNameError, match="unknown space 'nope'"):
        load_space("nope")


@pytest.mark.parametrize("name", AUTOVIT)
def test_autovit_layout_follows_table_1(name: str) -> None:
    space = load_space(name)
    assert space.resolution == (256,)
    assert [s.kind for s in space.stages] == ["mbconv"] * 3 + ["mvit"] * 4
    assert [s.optional for s in space.stages] == [False] * 6 + [True]
    assert all(s.depths == (2, 3, 4, 5) and s.mlp_ratio == (1.5, 2.0) for s in space.stages[3:])
    small, large = space.smallest(), space.largest()
    assert len(small.stages) == 6 and len(large.stages) == 7
    assert space.params(small) < space.params(large) and space.flops(small) < space.flops(large)
    assert space.summary()["paper"]["params_range_M"]


def test_count_matches_enumeration(tiny) -> None:
    # tiny: mbconv2 has 2 widths x (2 + 2^2) per-layer choices, transformer1 2 widths x (2 + 2^2),
    # transformer2 optional: 1 + 2 widths. Enumerate canonical gene rows and compare.
    rows = {tuple(tiny.canonical(np.array(g))) for g in itertools.product(*[range(c) for c in tiny.cardinality])}
    assert tiny.size() == len(rows) == 2 * 6 * 2 * 6 * 3
    assert len({tiny.decode(r) for r in rows}) == len(rows)


def test_sampling_is_seeded_and_valid(tiny) -> None:
    space = load_space("autovit-xxs")
    assert space.sample(3) == space.sample(3)
    archs = [space.sample(i) for i in range(30)]
    assert len(set(archs)) > 25
    for a in archs:
        space.validate(a)
        assert space.decode(space.encode(a)) == a


def test_arch_json_round_trip_and_hashable(tmp_path) -> None:
    space = load_space("autovit-s")
    arch = space.sample(7)
    path = tmp_path / "arch.json"
    path.write_text(arch.to_json())
    again = Arch.load(path)
    assert again == arch and hash(again) == hash(arch)
    assert {arch, again} == {arch}
    assert Arch.from_json(json.dumps({"arch": arch.to_dict()})) == arch


@pytest.mark.parametrize("change, field", [
    (lambda a: replace(a, resolution=200), "resolution = 200"),
    (lambda a: replace(a, stem=20), "stem = 20"),
    (lambda a: replace(a, stages=a.stages[:5]), "stages has 5 entries"),
    (lambda a: replace(a, stages=(replace(a.stages[0], width=17),) + a.stages[1:]), "mbconv1.width = 17"),
    (lambda a: replace(a, stages=a.stages[:3] + (replace(a.stages[3], heads=(2, 9)),) + a.stages[4:]),
     r"transformer1.heads\[1\] = 9"),
    (lambda a: replace(a, stages=a.stages[:3] + (replace(a.stages[3], depth=3),) + a.stages[4:]),
     "transformer1.heads has 2 values for depth 3"),
    (lambda a: replace(a, stages=(replace(a.stages[0], heads=(2,)),) + a.stages[1:]), "mbconv1.heads is not searched"),
])
def test_validation_names_the_offending_field(change, field) -> None:
    space = load_space("autovit-xxs")
    arch = Arch(256, 16, tuple(
        StageArch(w, 2, expand=(2.0, 2.0), kernel=(3, 3)) if i < 3 else StageArch(w, 2, heads=(2, 2), mlp_ratio=(2.0, 2.0))
        for i, w in enumerate([16, 24, 32, 48, 64, 80])))
    space.validate(arch)
    with pytest.raises(ArchitectureError, match=field):
        space.validate(change(arch))


def test_malformed_arch_json_is_an_architecture_error() -> None:
    with pytest.raises(ArchitectureError):
        Arch.from_json("[1, 2]")
    with pytest.raises(ArchitectureError, match="unknown field"):
        Arch.from_dict({"resolution": 64, "stem": 8, "stages": [{"width": 8, "depth": 1, "colour": [1]}]})


def test_layers_follow_the_network_order(tiny) -> None:
    arch = tiny.largest()
    kinds = [l.kind for l in tiny.layers(arch)]
    assert kinds[0] == "stem" and kinds[-1] == "mbpool"
    assert kinds[1:4] == ["mbconv"] * 3
    assert kinds[4:9] == ["mbconv", "mvit_local", "transformer", "transformer", "mvit_fusion"]
    layers = tiny.layers(arch)
    for a, b in zip(layers, layers[1:]):
        if b.kind in ("mbconv", "mvit_local", "mbpool"):
            assert b.hw == a.out_hw and b.cin == a.cout


def test_distinct_layers_cover_every_architecture(tiny) -> None:
    distinct = set(tiny.distinct_layers())
    used = set()
    for row in itertools.product(*[range(c) for c in tiny.cardinality]):
        used.update(tiny.layers(tiny.decode(row)))
    assert used == distinct


def test_vectorised_counts_equal_per_arch_counts() -> None:
    space = load_space("autovit-xs")
    genes = space.sample_genes(200, 0)
    flops = space.evaluate(space.flops_values, genes)
    params = space.evaluate(space.params_values, genes)
    for row, f, p in zip(genes[:40], flops, params):
        arch = space.decode(row)
        assert f == space.flops(arch) and p == space.params(arch)


def test_bad_space_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "bad", "resolution": [64], "stem": {"widths": [8]},
                                "stages": [{"name": "s", "kind": "warp", "widths": [8], "depths": [1], "stride": 1}]}))
    with pytest.raises(LatencykitError, match="unknown kind 'warp'"):
        load_space(str(path))
    path.write_text("{")
    with pytest.raises(LatencykitError, match="cannot read space file"):
        load_space(str(path))
