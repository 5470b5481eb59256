"""host measures a lone layer without the layout changes a network does not run at its boundary."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from latencykit.devices import get_device
from latencykit.devices.nchwc import NCHWC, without_boundary_reorders
from latencykit.export import export_layer
from latencykit.layers import LayerSpec
from tests.fake_adb import layers

RESIDUAL = LayerSpec("mbconv", hw=16, cin=16, cout=16, kernel=3, expand=2.0)
WIDER = LayerSpec("mbconv", hw=16, cin=16, cout=24, stride=2, kernel=3, expand=2.0)


def _reorder(kind: str, shape: list[int], channels: int = 0):
    """ONNX Runtime's own layout change as a one-node model: NCHW -> blocked, or back."""
    attrs = {"channels_last": 0} if kind == "ReorderInput" else {"channels_last": 0, "channels": channels}
    graph = helper.make_graph([helper.make_node(kind, ["x"], ["y"], domain=NCHWC, **attrs)], "reorder",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(NCHWC, 1)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda a: sess.run(None, {"x": a})[0]


@pytest.mark.parametrize("spec", [RESIDUAL, WIDER], ids=["residual", "strided"])
def test_cut_layer_computes_the_same_in_the_blocked_layout(tmp_path, spec):
    device = get_device("host")
    original = export_layer(spec, layers.cache(), "onnx")
    cut = tmp_path / "cut.onnx"
    if not without_boundary_reorders(original, cut, device._options()):
        pytest.skip("this CPU's ONNX Runtime does not block convolutions (NCHWc)")
    nodes = onnx.load(str(cut)).graph.node
    assert not [n.op_type for n in nodes if n.op_type.startswith("Reorder")]
    x = np.random.default_rng(0).standard_normal((1, spec.cin, spec.hw, spec.hw)).astype(np.float32)
    want = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"]).run(None, {"input0": x})[0]
    sess = ort.InferenceSession(str(cut), device._options(), providers=["CPUExecutionProvider"])
    (blocked_in,) = sess.get_inputs()
    got = sess.run(None, {blocked_in.name: _reorder("ReorderInput", list(x.shape))(x)})[0]
    got = _reorder("ReorderOutput", list(got.shape), spec.cout)(got)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_host_opens_a_layer_without_blocked_convolutions_as_it_is():
    device = get_device("host")
    handle = device.open_layer(layers.exported("transformer", "onnx"))
    try:
        assert device.measure(handle, 3) > 0
        assert [i.shape for i in handle.session.get_inputs()] == [[4, 16, 16]]
    finally:
        device.close(handle)
