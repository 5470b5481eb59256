"""`profile` and `validate` through the command line on host-litert, and on a Pixel 4 that is a
fake adb on PATH (tests/fake_adb): no real phone was used here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.fake_adb import FakePhones, fake_benchmark_model

MICRO = str(Path(__file__).resolve().parent / "fake_adb" / "micro.json")
PIXEL4 = "9B131FFAZ00XY2"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latencykit", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=600)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_host_litert_profiles(home):
    res = cli("profile", "--device", "host-litert", "--space", MICRO, "--rounds", "2", "--calibrate", "3", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["device"] == "host-litert" and summary["entries"] == 4
    table = pd.read_parquet(summary["path"])
    assert (table["latency_ms"] > 0).all() and set(table["source"]) == {"measured"}


@pytest.mark.slow  # two whole-network LiteRT conversions: about 10 s each on a busy 2-core machine
def test_host_litert_validates(home):
    res = cli("profile", "--device", "host-litert", "--space", MICRO, "--rounds", "2", "--json")
    assert res.returncode == 0, res.stderr
    res = cli("validate", "--device", "host-litert", "--space", MICRO, "--samples", "2", "--json")
    assert res.returncode == 0, res.stderr
    v = json.loads(res.stdout)
    assert v["device"] == "host-litert" and v["metrics"]["n"] == 2 and v["noise_floor"]["n"] == 2
    assert Path(v["files"]["plot"]).is_file()


def test_profile_pixel4_without_one_says_what_is_attached_and_what_to_do_instead(home, tmp_path, monkeypatch):
    FakePhones(tmp_path / "adb").add("R58M40ABCD", "SM-G991B").activate(monkeypatch)
    line = one_line_error(cli("profile", "--device", "pixel4", "--space", MICRO))
    assert "device pixel4 is not available: no Pixel 4 attached (attached: R58M40ABCD (SM-G991B))" in line
    assert "latencykit lut import nn-meter pixel4_lut_ln_v3.json --space elasticvit --device pixel4" in line


def test_profile_pixel4_end_to_end_keeps_what_it_measured_when_the_phone_drops(home, tmp_path, monkeypatch):
    phones = FakePhones(tmp_path / "adb").add(PIXEL4, "Pixel 4", thermal_mc=[41000, None]).activate(monkeypatch)
    (home / "config.json").write_text(json.dumps({"android": {
        "benchmark_model": str(fake_benchmark_model(tmp_path)), "extra_args": ["--min_secs=0", "--warmup_min_secs=0"],
        "retries": 1, "backoff_s": 0.05}}))
    # 6 warm-up calls (4 layers, the call-overhead model, the reference), then round 1: reference,
    # 5 models, reference (no calibration subnets here: this is about resuming).
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AFTER", "13")
    line = one_line_error(cli("profile", "--device", "pixel4", "--space", MICRO, "--rounds", "2", "--calibrate", "0"))
    assert f"phone {PIXEL4} disconnected and did not come back after 1 retries" in line
    assert "what was measured is kept" in line
    monkeypatch.setenv("FAKE_ADB_RECONNECT_AFTER", "0")  # plugged back in
    res = cli("profile", "--device", "pixel4", "--space", MICRO, "--rounds", "2", "--calibrate", "0", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["device"] == "pixel4" and summary["entries"] == 4 and summary["resumed_rounds"] == 1
    shown = json.loads(cli("show", "--device", "pixel4", "--space", MICRO, "--json").stdout)
    info = shown["device_info"]
    assert info["model"] == "Pixel 4" and info["serial"] == PIXEL4 and info["cpu_mask"] == "80"
    assert info["latency"] == "benchmark_model average of the timed runs"
    assert phones.files(PIXEL4) == []  # every model and the binary removed
