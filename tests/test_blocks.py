"""Analytic params and FLOPs equal those of the built torch modules; exports match torch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from latencykit.blocks import build, build_layer, layer_inputs
from latencykit.export import default_cache
from latencykit.space import load_space


def torch_counts(module: torch.nn.Module, inputs: tuple) -> tuple[int, int]:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*inputs)
    return sum(p.numel() for p in module.parameters()), counter.get_total_flops()


@pytest.mark.parametrize("name", ["autovit-xxs", "autovit-xs", "autovit-s"])
def test_every_layer_counts_match_torch(name: str) -> None:
    for spec in load_space(name).distinct_layers():
        params, flops = torch_counts(build_layer(spec), layer_inputs(spec))
        assert params == spec.params, spec.key
        assert flops == 2 * spec.flops, spec.key  # torch counts a multiply-accumulate as 2 FLOPs


@pytest.mark.parametrize("name", ["autovit-xxs", "autovit-s"])
def test_whole_network_counts_match_torch(name: str) -> None:
    space = load_space(name)
    for arch in [space.smallest(), space.largest(), space.sample(1)]:
        net = build(space.layers(arch))
        params, flops = torch_counts(net, (torch.randn(1, 3, arch.resolution, arch.resolution),))
        assert params == space.params(arch)
        assert flops == 2 * space.flops(arch)


def test_onnx_export_matches_torch_and_is_cached(tiny) -> None:
    cache = default_cache()
    arch = tiny.largest()
    torch.manual_seed(0)
    net = build(tiny.layers(arch))
    x = torch.randn(1, 3, 64, 64)
    path = cache.export(net, (x,))
    mtime = path.stat().st_mtime_ns
    assert cache.export(net, (x,)) == path and path.stat().st_mtime_ns == mtime  # a hit, not a re-export
    (out,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input0": x.numpy()})
    np.testing.assert_allclose(out, net(x).detach().numpy(), rtol=1e-4, atol=1e-4)
    torch.manual_seed(1)
    other = build(tiny.layers(arch))
    assert cache.export(other, (x,)) != path  # other weights, other content
