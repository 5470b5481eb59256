"""`latencykit measure`: any ONNX / TFLite / Core ML file or PyTorch factory, measured with the tables'
protocol on real runtimes (small inputs), per-operator breakdown, side by side, and clean refusals."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latencykit.cli import main
from latencykit.devices import get_device
from latencykit.export import default_cache
from latencykit.lut.models import ModelError, measure_model, model_file, parse_input
from latencykit.zoo import Variant, build
from tests.fake_adb import FakePhones, fake_benchmark_model

FACTORY = "latencykit.zoo:squeezenet"
SMALL = "1x3x64x64"


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def exported(fmt: str) -> Path:
    return default_cache().export(*build(Variant("squeezenet", 0.5, 64)), fmt)


def test_an_onnx_file_is_measured_with_the_reference_block_and_provenance(capsys) -> None:
    path = exported("onnx")
    code, out, err = run_cli(["measure", str(path), "-d", "host", "--rounds", "3", "--json"], capsys)
    assert code == 0, err
    [r] = json.loads(out)["results"]
    assert r["device"] == "host" and r["file"] == str(path)
    assert r["q1_ms"] <= r["latency_ms"] <= r["q3_ms"] and r["latency_ms"] > 0 and r["reference_ms"] > 0
    assert r["protocol"]["rounds"] == 3 and "reference" in r["protocol"]
    assert r["device_info"]["runtime"].startswith("onnxruntime") and r["breakdown"] == []


def test_a_factory_is_exported_and_broken_down_per_operator_with_a_chart(capsys, tmp_path) -> None:
    chart = tmp_path / "ops.png"
    code, out, err = run_cli(["measure", FACTORY, "--input", SMALL, "-d", "host", "--rounds", "2", "--breakdown",
                              "--chart", str(chart), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    [r] = data["results"]
    ops = r["breakdown"]
    assert {o["op"] for o in ops} >= {"Conv", "Concat", "MaxPool"}  # SqueezeNet's fire modules
    assert [o["ms"] for o in ops] == sorted((o["ms"] for o in ops), reverse=True)
    assert r["file"].endswith(".onnx") and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same factory at another input is another export, and a larger input costs more
    bigger = measure_model(FACTORY, get_device("host"), (1, 3, 128, 128), rounds=3)
    assert bigger.file != r["file"] and bigger.latency_ms > r["latency_ms"]


def test_tflite_on_host_litert_and_compare_side_by_side(capsys) -> None:
    path = exported("tflite")
    code, out, err = run_cli(["measure", str(path), "-d", "host-litert", "--rounds", "2", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["results"][0]["device_info"]["runtime"].startswith("ai-edge-litert")
    code, out, err = run_cli(["measure", FACTORY, "--input", SMALL, "--compare", "host,host-litert",
                              "--rounds", "2"], capsys)
    assert code == 0, err
    assert "host-litert" in out and "onnxruntime" in out


def test_android_measures_through_benchmark_model(tmp_path, monkeypatch) -> None:
    FakePhones(tmp_path / "adb").activate(monkeypatch).add("9A281FFAZ004TL", "Pixel 4")
    device = get_device("pixel4", benchmark_model=str(fake_benchmark_model(tmp_path)))
    device.settings = dataclasses.replace(device.settings, extra_args=("--min_secs=0", "--warmup_min_secs=0"),
                                          poll_s=0.01, cooldown_c=0)
    r = measure_model(str(exported("tflite")), device, rounds=2)
    assert r.latency_ms > 0 and r.device_info["runtime"] == "TFLite benchmark_model"
    assert device.last is not None and device.last.format == "inference"  # parsed from benchmark_model's output
    with pytest.raises(ModelError, match="is a onnx model; device pixel4 runs tflite"):
        measure_model(str(exported("onnx")), device)


@pytest.mark.parametrize(("name", "content", "args", "message"), [
    ("broken.onnx", b"\x08\x07garbage", ["-d", "host"], "is not a valid ONNX model"),
    ("empty.onnx", b"", ["-d", "host"], "is not a valid ONNX model"),
    ("broken.tflite", b"not a flatbuffer", ["-d", "host-litert"], "is not a TFLite flatbuffer"),
    ("model.pt", b"PK\x03\x04", ["-d", "host"], "unsupported model file"),
    ("model.tflite", None, ["-d", "host"], "is a tflite model; device host runs onnx"),
    ("model.onnx", None, ["-d", "host", "--input", "1x3x8x8"], "--input is for a PyTorch factory"),
    (None, None, ["-d", "host"], "give its input shape with --input"),
    ("latencykit.zoo:nosuch", None, ["-d", "host", "--input", "1x3x8x8"], "cannot import latencykit.zoo:nosuch"),
    ("json:dumps", None, ["-d", "host", "--input", "1x3x8x8"], "json:dumps() failed"),
    ("latencykit.zoo:squeezenet", None, ["-d", "host", "--input", "1x3"], "onnx export failed"),
    ("model.onnx", None, ["-d", "coreml"], "Core ML runs only on macOS"),
    ("x.mlpackage", None, ["-d", "host"], "not a Core ML package"),
])
def test_corrupt_unsupported_or_mismatched_models_fail_in_one_line(name, content, args, message, tmp_path,
                                                                   capsys) -> None:
    if name is None:
        model = FACTORY
    elif content is not None:
        (tmp_path / name).write_bytes(content)
        model = str(tmp_path / name)
    elif name.endswith(".tflite"):
        model = str(exported("tflite"))
    elif name.endswith(".onnx"):
        model = str(exported("onnx"))
    elif name.endswith(".mlpackage"):
        (tmp_path / name).mkdir()
        model = str(tmp_path / name)
    else:
        model = name
    code, out, err = run_cli(["measure", model, *args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err + out


def test_a_core_ml_package_is_refused_clearly_off_macos(tmp_path) -> None:
    if sys.platform == "darwin":
        pytest.skip("Core ML measures on macOS")
    package = tmp_path / "m.mlpackage"
    package.mkdir()
    (package / "Manifest.json").write_text("{}")
    with pytest.raises(Exception, match="Core ML runs only on macOS"):
        measure_model(str(package), get_device("coreml"))


def test_breakdown_needs_a_runtime_with_a_profiler(capsys) -> None:
    code, _, err = run_cli(["measure", str(exported("tflite")), "-d", "host-litert", "--rounds", "1",
                            "--breakdown"], capsys)
    assert code == 2 and "has no per-operator profiler" in err


def test_input_shapes_are_parsed_strictly() -> None:
    assert parse_input("1x3x224x224") == (1, 3, 224, 224)
    for bad in ("1x0x3", "", "1,3,224", "x3", "99999x99999x99"):
        with pytest.raises(ModelError):
            parse_input(bad)


def test_a_factory_file_exports_to_the_device_format() -> None:
    onnx_path = model_file(FACTORY, get_device("host"), (1, 3, 32, 32))
    assert onnx_path.suffix == ".onnx"
    assert model_file(FACTORY, get_device("host"), (1, 3, 32, 32)) == onnx_path  # cached by content


def test_through_the_real_entry_point(tmp_path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    result = subprocess.run([sys.executable, "-m", "latencykit", "measure", str(tmp_path / "bad.onnx"), "-d", "host"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
