"""The elasticvit space: its layers count params/FLOPs like their torch modules, its subnets build and
run, the stem width is tied, and the eight published ElasticViT models are in it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from latencykit.arch import Arch
from latencykit.blocks import build, build_layer, layer_inputs
from latencykit.elasticvit import arch_from_tuple, arch_to_tuple
from latencykit.errors import ArchitectureError
from latencykit.layers import LayerSpec
from latencykit.space import load_space

from conftest import SHARED

MODELS = json.loads((SHARED / "data" / "elasticvit-models" / "models.json").read_text())["models"]

@pytest.fixture(scope="module")
def space():
    return load_space("elasticvit")


def counted(module: torch.nn.Module, inputs: tuple) -> tuple[int, int, tuple]:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        out = module(*inputs)
    return sum(p.numel() for p in module.parameters()), fc.get_total_flops(), tuple(out.shape)


NEW_KINDS = [
    LayerSpec("mbblock", 16, 16, 16, kernel=3, expand=1, act="hswish"),
    LayerSpec("mbblock", 16, 16, 24, stride=2, kernel=5, expand=4, act="hswish"),
    LayerSpec("mbblock", 7, 24, 24, stride=2, kernel=5, expand=3, se=True, act="hswish"),  # odd map rounds down
    LayerSpec("mbblock", 8, 24, 24, kernel=3, expand=6, se=True, act="hswish"),
    LayerSpec("transds", 9, 24, 48, stride=2, kernel=3, expand=6, se=True, act="hswish"),
    LayerSpec("transds", 4, 48, 64, kernel=3, expand=6, se=True, act="hswish"),
    LayerSpec("transattn", 4, 48, 48, heads=3, head_dim=16, v_scale=2, act="hswish"),
    LayerSpec("transattn", 3, 64, 64, heads=4, head_dim=16, v_scale=4, act="hswish"),
    LayerSpec("transffn", 3, 48, 48, mlp_ratio=5, act="hswish"),
    LayerSpec("mbpool_fc", 3, 48, 1000, expand=6, hidden=1984, act="hswish"),
]


@pytest.mark.parametrize("spec", NEW_KINDS, ids=lambda s: s.key)
def test_new_kinds_count_like_torch(spec: LayerSpec) -> None:
    params, flops, shape = counted(build_layer(spec), layer_inputs(spec))
    assert params == spec.params
    assert flops == 2 * spec.flops
    if spec.kind in ("transds", "transattn", "transffn"):
        out_hw = spec.hw // spec.stride
        assert shape == (1, out_hw * out_hw, spec.cout)


def test_transds_takes_a_map_or_tokens() -> None:
    spec = NEW_KINDS[4]
    m = build_layer(spec)
    tokens = layer_inputs(spec)[0]
    fmap = tokens.transpose(1, 2).reshape(1, spec.cin, spec.hw, spec.hw)
    with torch.no_grad():
        assert torch.allclose(m(tokens), m(fmap))


def test_whole_subnets_build_and_count(space) -> None:
    # res 160 has odd maps (5 -> 2) in the last stages; the networks must have the shapes the keys say.
    for arch in (space.smallest(), Arch(160, 16, space.smallest().stages), arch_from_tuple(MODELS["T1"]["tuple"])):
        specs = space.layers(arch)
        net = build(specs)
        params, flops, shape = counted(net, (torch.randn(1, 3, arch.resolution, arch.resolution),))
        assert shape == (1, 1000)
        assert params == space.params(arch)
        assert flops == 2 * space.flops(arch)


def test_stem_width_is_tied(space) -> None:
    genes = space.sample_genes(500, 0)
    for g in genes[:50]:
        arch = space.decode(g)
        assert arch.stages[0].width == arch.stem
        assert np.array_equal(space.encode(arch), g)
    bad = Arch(128, 16, (type(space.smallest().stages[0])(24, 1, expand=(1.0,), kernel=(3,)),)
               + space.smallest().stages[1:])
    with pytest.raises(ArchitectureError, match="mbv2.width"):
        space.validate(bad)


def test_summary_beside_paper(space) -> None:
    s = space.summary()
    lo, hi = s["paper"]["flops_range_M"]
    # within 5% of the paper's 37-3191 MFLOPs (the space file's notes explain the difference)
    assert abs(s["flops_min"] / 1e6 / lo - 1) < 0.05 and abs(s["flops_max"] / 1e6 / hi - 1) < 0.05
    assert s["paper"]["architectures"] == pytest.approx(1.09e17)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_published_models_are_in_the_space(space, name: str) -> None:
    model = MODELS[name]
    arch = space.validate(arch_from_tuple(model["tuple"]))
    assert arch_to_tuple(arch) == tuple(model["tuple"])
    # our FLOPs convention differs from ElasticViT's counter (see the space notes): within 8%
    assert space.flops(arch) / 1e6 == pytest.approx(model["mflops"], rel=0.08)


def test_foreign_tuple_is_refused() -> None:
    t = list(MODELS["T1"]["tuple"])
    t[7] = [7, 1, 1, 1]  # a window of 7
    with pytest.raises(ArchitectureError, match="window"):
        arch_from_tuple(t)
    with pytest.raises(ArchitectureError, match="not an ElasticViT tuple"):
        arch_from_tuple([128, [16]])


NASVIT_KINDS = [
    LayerSpec("nasvit_attn", 6, 64, 64, heads=8, head_dim=8, v_scale=4),
    LayerSpec("nasvit_attn", 3, 112, 112, heads=14, head_dim=8, v_scale=4),
    LayerSpec("nasvit_ffn", 6, 64, 64, mlp_ratio=2),
    LayerSpec("transds", 7, 40, 64, stride=2, kernel=3, expand=6, se=False),
]


@pytest.mark.parametrize("spec", NASVIT_KINDS, ids=lambda s: s.key)
def test_nasvit_kinds_count_like_torch(spec: LayerSpec) -> None:
    params, flops, _ = counted(build_layer(spec), layer_inputs(spec))
    assert params == spec.params
    assert flops == 2 * spec.flops


def test_nasvit_smallest_subnet_builds_and_counts() -> None:
    nasvit = load_space("nasvit")
    arch = nasvit.smallest()
    assert arch.resolution == 192
    params, flops, shape = counted(build(nasvit.layers(arch)), (torch.randn(1, 3, 192, 192),))
    assert shape == (1, 1000)
    assert params == nasvit.params(arch) and flops == 2 * nasvit.flops(arch)
    s = nasvit.summary()
    assert s["paper"]["flops_range_M"] == [190, 1881]
    assert s["flops_min"] < s["flops_max"]


def test_onnx_export_of_new_kinds_matches_torch(space) -> None:
    """A whole elasticvit subnet with odd maps (res 160) and the NASViT layers export to ONNX and run
    in ONNX Runtime with torch's results."""
    import onnxruntime as ort

    from latencykit.export import default_cache

    torch.manual_seed(0)
    cases = [(build(space.layers(Arch(160, 16, space.smallest().stages))), (torch.randn(1, 3, 160, 160),))]
    cases += [(build_layer(s), layer_inputs(s)) for s in NASVIT_KINDS[:3]]
    for module, inputs in cases:
        for p in module.parameters():  # non-zero position bias and talking heads, so they are exercised
            torch.nn.init.normal_(p, std=0.1)
        path = default_cache().export(module, inputs)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {f"input{i}": t.numpy() for i, t in enumerate(inputs)})
        with torch.no_grad():
            np.testing.assert_allclose(out, module(*inputs).numpy(), rtol=1e-3, atol=1e-4)
