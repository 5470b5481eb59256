"""Supernet: weight slicing, set_active/extract, and the conformance check on every autovit space."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from latencykit.export import ExportCache
from latencykit.layers import LayerSpec
from latencykit.nas.check import check_supernet
from latencykit.nas.conflict import gradient_cosine
from latencykit.nas.dynamic import DynamicLayer
from latencykit.nas.supernet import Supernet, smallest_resolution, with_classes
from latencykit.space import SearchSpace, load_space

TINY = {
    "name": "tiny-hybrid", "resolution": [32], "act": "swish",
    "stem": {"widths": [8], "kernel": 3, "stride": 2},
    "stages": [
        {"name": "mb1", "kind": "mbconv", "widths": [8, 12], "depths": [1, 2], "stride": 2,
         "expand": [1.0, 2.0], "kernel": [3, 5], "se": True},
        {"name": "vit1", "kind": "mvit", "widths": [16, 24], "depths": [1, 2], "stride": 2, "heads": [1, 2],
         "mlp_ratio": [1.0, 2.0], "v_scale": [1, 2], "head_dim": 8, "patch": 2, "downsample_expand": 2.0,
         "local_kernel": 3, "optional": True},
    ],
    "head": {"kind": "mbpool", "expand": 2.0, "classes": 10},
}


def tiny() -> SearchSpace:
    return SearchSpace.from_dict(json.loads(json.dumps(TINY)), "tiny")


@pytest.mark.parametrize("name", ["autovit-xxs", "autovit-xs", "autovit-s"])
def test_check_supernet_on_every_autovit_space(name, tmp_path):
    space = with_classes(load_space(name), 10)
    assert smallest_resolution(space) == 128
    results = check_supernet(space, ExportCache(tmp_path), random=1, batch=1, resolution=128,  # train res
                             supernet=Supernet(space, scaling=name == "autovit-xs"))
    assert len(results) == 3
    for r in results:
        assert r.max_abs_diff < 1e-5
        assert r.params == r.analytic_params == space.params(r.arch)
        assert (tmp_path / "onnx").exists() and r.onnx.endswith(".onnx")
    assert results[0].params < results[1].params  # smallest < largest


def test_check_supernet_on_a_space_with_se_v_scale_and_optional_stage(tmp_path):
    space = tiny()
    archs = [space.smallest(), space.largest(), *(space.sample(i) for i in range(4))]
    assert len(space.smallest().stages) == 1 and len(space.largest().stages) == 2  # optional stage off/on
    results = check_supernet(space, ExportCache(tmp_path), archs=archs, resolution=16)
    assert all(r.max_abs_diff < 1e-5 and r.params == r.analytic_params for r in results)


def test_attention_slices_whole_heads_and_value_blocks():
    big = LayerSpec("transformer", 8, 16, 16, heads=2, head_dim=4, mlp_ratio=2.0, v_scale=2, patch=2)
    small = LayerSpec("transformer", 8, 12, 12, heads=1, head_dim=4, mlp_ratio=1.0, v_scale=1, patch=2)
    layer = DynamicLayer([big, small])
    qkv = layer.full.attn.qkv.weight  # rows: q (2 heads x 4), k (2 x 4), v (2 heads x 8)
    state = layer.sliced_state(small)
    expect = torch.cat([qkv[0:4, :12], qkv[8:12, :12], qkv[16:20, :12]])  # head 0, first 4 value columns
    assert torch.equal(state["attn.qkv.weight"], expect)
    proj = layer.full.attn.proj.weight  # columns: 2 heads x 8 value channels
    assert torch.equal(state["attn.proj.weight"], proj[:12, 0:4])
    assert state["mlp.0.weight"].shape == (12, 12)


def test_fusion_conv_slices_both_concatenated_inputs_and_kernel_centres():
    big = LayerSpec("mvit_fusion", 8, 24, 24, kernel=3, patch=2)
    small = LayerSpec("mvit_fusion", 8, 16, 16, kernel=3, patch=2)
    layer = DynamicLayer([big, small])
    w = layer.full.fuse[0].weight  # (24, 48, 3, 3): input = cat([block input 24, transformer 24])
    got = layer.sliced_state(small)["fuse.0.weight"]
    assert torch.equal(got, torch.cat([w[:16, :16], w[:16, 24:40]], 1))
    k5, k3 = LayerSpec("mbconv", 8, 8, 8, kernel=5, expand=2.0), LayerSpec("mbconv", 8, 8, 8, kernel=3, expand=2.0)
    mb = DynamicLayer([k5, k3])
    assert torch.equal(mb.sliced_state(k3)["depthwise.0.weight"], mb.full.depthwise[0].weight[:, :, 1:4, 1:4])


def test_subnets_share_weights_and_training_one_moves_the_other():
    space = tiny()
    net = Supernet(space).train()
    small, large = space.smallest(), space.largest()
    before = net.extract(small).state_dict()
    net.set_active(large)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    torch.nn.functional.cross_entropy(net(x), y).backward()
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    after = net.extract(small).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert net.set_active(small).arch == small and net(x).shape == (4, 10)


def test_gradient_cosine_is_one_for_a_subnet_with_itself():
    space = tiny()
    net = Supernet(space)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    assert gradient_cosine(net, space.largest(), space.largest(), x, y) == pytest.approx(1.0, abs=1e-5)


def test_gradient_cosine_is_over_the_weights_both_subnets_use():
    """Against gradients taken separately per parameter and a cosine summed by hand over the entries
    where both are non-zero (weights the smallest subnet does not use do not count)."""
    space = tiny()
    torch.manual_seed(0)
    net = Supernet(space).train()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])

    def grads(arch) -> list[torch.Tensor]:
        net.set_active(arch)
        params = list(net.parameters())
        gs = torch.autograd.grad(F.cross_entropy(net(x), y), params, allow_unused=True)
        return [(torch.zeros_like(p) if g is None else g).double().reshape(-1) for p, g in zip(params, gs)]

    dot = norm_a = norm_b = 0.0
    for ga, gb in zip(grads(space.smallest()), grads(space.largest())):
        both = (ga != 0) & (gb != 0)
        dot += float((ga[both] * gb[both]).sum())
        norm_a += float((ga[both] ** 2).sum())
        norm_b += float((gb[both] ** 2).sum())
    want = dot / (norm_a * norm_b) ** 0.5
    assert abs(want) < 0.999  # two different subnets: their gradients are not parallel
    assert gradient_cosine(net, space.smallest(), space.largest(), x, y) == pytest.approx(want, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", ["elasticvit", "nasvit"])
def test_check_supernet_on_position_bias_spaces_at_the_arch_resolution(name, tmp_path):
    space = with_classes(load_space(name), 10)
    net = Supernet(space)
    assert net.resolution_bound
    results = check_supernet(space, ExportCache(tmp_path), archs=[space.smallest()], supernet=net)
    assert results[0].max_abs_diff < 1e-5 and results[0].params == space.params(space.smallest())


def test_relative_position_bias_keeps_each_offset_when_the_map_shrinks():
    big = LayerSpec("transattn", 4, 16, 16, heads=2, head_dim=8, act="hswish")
    small = LayerSpec("transattn", 2, 16, 16, heads=1, head_dim=8, act="hswish")
    layer = DynamicLayer([big, small])
    with torch.no_grad():
        layer.full.bias.copy_(torch.arange(2 * 49, dtype=torch.float32).reshape(2, 49))
    got = layer.sliced_state(small)["bias"]  # (1, 9): offsets -1..1 of a 2x2 map
    grid = torch.arange(49, dtype=torch.float32).reshape(7, 7)  # offsets -3..3 of a 4x4 map
    assert torch.equal(got, grid[2:5, 2:5].reshape(1, 9))
