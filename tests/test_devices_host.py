"""TFLite and Core ML exports, the host-litert device, and the contract on every host device."""

import platform

import numpy as np
import pytest
import torch

from latencykit.devices import DEVICES, get_device
from latencykit.devices.conformance import ConformanceError, check_device
from latencykit.exporters import TFLITE_TOLERANCE, ExportCheckError, check_coreml, check_tflite, torch_outputs
from latencykit.tflite_runtime import run_tflite
from latencykit.errors import DeviceUnavailableError
from tests.fake_adb import layers


@pytest.mark.parametrize("name", ["mbconv", "transformer", "fusion"])
def test_tflite_export_matches_torch(name):
    path = layers.exported(name)
    module, inputs = layers.module(name)
    got = run_tflite(path, [t.numpy() for t in inputs])
    want = torch_outputs(module, inputs)
    assert [g.shape for g in got] == [w.shape for w in want]
    assert np.abs(got[0] - want[0]).max() <= TFLITE_TOLERANCE * max(1, np.abs(want[0]).max())
    assert check_tflite(path, module, inputs) <= TFLITE_TOLERANCE


def test_tflite_layers_keep_feature_maps_channels_last():
    """A layer file takes and gives feature maps as LiteRT holds them inside a network (NHWC), so it
    has no transpose at its boundary that the network would not run."""
    from latencykit.tflite_runtime import interpreter

    def shapes(details):
        return [tuple(int(v) for v in d["shape"]) for d in details]

    mb = interpreter(layers.exported("mbconv"))
    spec = layers.SPECS["mbconv"]
    assert shapes(mb.get_input_details()) == [(1, spec.hw, spec.hw, spec.cin)]
    assert shapes(mb.get_output_details()) == [(1, spec.hw, spec.hw, spec.cout)]
    assert "TRANSPOSE" not in [op["op_name"] for op in mb._get_ops_details()]
    fusion, spec = interpreter(layers.exported("fusion")), layers.SPECS["fusion"]
    assert (1, spec.hw, spec.hw, spec.cout) in shapes(fusion.get_input_details())  # the map beside the tokens
    assert shapes(fusion.get_output_details()) == [(1, spec.hw, spec.hw, spec.cout)]
    tokens = interpreter(layers.exported("transformer"))  # no feature map: as torch lays it out
    assert [len(s) for s in shapes(tokens.get_input_details())] == [3]


def test_tflite_export_is_cached_by_content():
    path = layers.exported("mbconv")
    stamp = path.stat().st_mtime_ns
    module, inputs = layers.module("mbconv")
    assert layers.cache().export(module, inputs, "tflite") == path
    assert path.stat().st_mtime_ns == stamp  # a hit: not exported again


def test_tflite_check_rejects_a_file_of_another_module():
    module, inputs = layers.module("mbconv")
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    with pytest.raises(ExportCheckError, match="differs from torch"):
        check_tflite(layers.exported("mbconv"), module, inputs)


def test_coreml_export_has_the_torch_structure():
    path = layers.exported("mbconv", "coreml")
    assert path.suffix == ".mlpackage" and (path / "Manifest.json").is_file()
    module, inputs = layers.module("mbconv", "coreml")
    info = check_coreml(path, module, inputs)
    assert len(info["inputs"]) == 1 and len(info["outputs"]) == 1


def test_host_litert_measures_and_ranks_a_bigger_layer_slower():
    device = get_device("host-litert", threads=1)
    assert device.format == "tflite" and device.check().ok
    info = device.describe()
    assert info["delegate"] == "XNNPACK" and info["threads"] == 1 and "ai-edge-litert" in info["runtime"]
    small, big = (device.open(layers.exported(n)) for n in ("mbconv", "reference"))
    try:
        t_small = min(device.measure(small, 30) for _ in range(3))
        t_big = min(device.measure(big, 30) for _ in range(3))
    finally:
        device.close(small)
        device.close(big)
    assert 0 < t_small < t_big  # 128x the MACs


def test_host_litert_says_when_a_file_cannot_load(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(DeviceUnavailableError, match="cannot load"):
        get_device("host-litert").open(bad)


@pytest.mark.parametrize("name", ["host", "host-litert", "coreml", "iphone13"])
def test_builtin_host_devices_pass_the_contract(name):
    report = check_device(get_device(name), cache=layers.cache())
    if report["available"] and get_device(name).can_measure:
        assert report["latency_ms"] > 0
    else:
        assert report["reason"]


def test_coreml_needs_macos_and_iphone_says_how_to_measure():
    coreml = get_device("coreml", compute_units="cpu_only")
    assert coreml.format == "coreml" and coreml.describe()["compute_units"] == "cpu_only"
    if platform.system() != "Darwin":
        assert "only on macOS" in coreml.check().reason
    iphone = get_device("iphone13")
    assert not iphone.check().ok and "iPhone 13" in iphone.check().reason and iphone.format == "coreml"


def test_conformance_names_the_broken_rule():
    from latencykit.devices.base import Availability, Device

    class Silent(Device):
        name, format = "silent", "tflite"

        def check(self):
            return Availability(False, "")

        def describe(self):
            return {}

        def open(self, model):
            return None

        def measure(self, handle, runs):
            return 1.0

    with pytest.raises(ConformanceError, match="must say why"):
        check_device(Silent())


def test_catalogue_lists_every_named_device():
    assert {"host", "host-litert", "android", "coreml", "pixel1", "pixel4", "pixel6", "xiaomi11",
            "iphone13"} <= set(DEVICES.names())
    assert {get_device(n).format for n in ("pixel1", "pixel4", "pixel6", "xiaomi11")} == {"tflite"}


def test_user_catalogue_adds_a_phone(home):
    import json

    from latencykit.devices import catalogue

    (home / "phones.json").write_text(json.dumps({"mylab-a55": {
        "kind": "android", "description": "lab phone", "options": {"label": "Galaxy A55", "models": ["SM-A556B"],
                                                                   "cpu_mask": "f0"}}}))
    found = catalogue.entries()
    assert found["mylab-a55"]["options"]["cpu_mask"] == "f0" and "pixel4" in found
    device = catalogue.KINDS["android"]("mylab-a55", found["mylab-a55"])(serial="X1")
    assert device.settings.models == ("SM-A556B",) and device.settings.serial == "X1"
