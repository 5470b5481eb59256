"""The model zoo: every family builds at two widths, runs, and exports to ONNX that ONNX Runtime runs
with torch's output (small inputs)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from latencykit.export import default_cache
from latencykit.zoo import ZOO, Variant, build, variants


def test_at_least_ten_families_at_several_widths_and_resolutions() -> None:
    assert len(ZOO) >= 10
    vs = variants()
    assert len({v.width for v in vs}) >= 2 and len({v.resolution for v in vs}) >= 2 and len(vs) == len(set(vs))


@pytest.mark.parametrize("family", sorted(ZOO))
def test_each_family_builds_and_exports(family: str) -> None:
    small, big = (build(Variant(family, w, 64))[0] for w in (0.5, 1.0))
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in big.parameters())
    module, inputs = build(Variant(family, 0.5, 64))
    with torch.no_grad():
        want = module(*inputs).numpy()
    assert want.shape == (1, 1000)
    path = default_cache().export(module, inputs, "onnx")
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input0": inputs[0].numpy()})[0]
    assert np.abs(got - want).max() <= 1e-3 * max(1.0, float(np.abs(want).max()))


def test_families_are_factories_for_measure() -> None:
    import latencykit.zoo as zoo

    assert isinstance(zoo.mobilenet_v2(), torch.nn.Module)
    with pytest.raises(AttributeError):
        zoo.no_such_family
