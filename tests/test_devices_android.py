"""The android device against a fake adb on PATH (tests/fake_adb): no phone was used here."""

import dataclasses
import json

import pytest

from latencykit.devices import get_device, require
from latencykit.devices.adb import AdbError, DisconnectedError
from latencykit.devices.android import AndroidDevice
from latencykit.devices.conformance import check_device
from latencykit.errors import DeviceUnavailableError
from tests.fake_adb import FakePhones, fake_benchmark_model, layers

QUICK = ("--min_secs=0", "--warmup_min_secs=0")  # current builds otherwise run for >= 1.5 s
PIXEL4 = "9A281FFAZ004TL"


@pytest.fixture
def phones(tmp_path, monkeypatch):
    return FakePhones(tmp_path / "adb").activate(monkeypatch)


@pytest.fixture
def binary(tmp_path):
    return str(fake_benchmark_model(tmp_path))


def pixel4(binary, **changes) -> AndroidDevice:
    device = get_device("pixel4", benchmark_model=binary)
    quick = {"extra_args": QUICK, "poll_s": 0.01, "backoff_s": 0.01}
    device.settings = dataclasses.replace(device.settings, **{**quick, **changes})
    return device


def test_no_pixel4_attached_says_so_lists_what_is_and_points_to_published_tables(phones, binary):
    phones.add("R58M123", "SM-G991B")
    status = get_device("pixel4", benchmark_model=binary).check()
    assert not status.ok and "\n" not in status.reason
    assert status.reason.startswith("no Pixel 4 attached (attached: R58M123 (SM-G991B))")
    assert "latencykit lut import nn-meter pixel4_lut_ln_v3.json" in status.reason
    with pytest.raises(DeviceUnavailableError, match="device pixel4 is not available: no Pixel 4"):
        require(get_device("pixel4"))


def test_nothing_attached(phones):
    assert "attached: none" in get_device("pixel6").check().reason


def test_phone_choice_by_model_and_serial(phones, binary, monkeypatch):
    phones.add("AAA", "Pixel 4").add("BBB", "Pixel 4 XL").add("CCC", "Pixel 6").add("DDD", "Pixel 4", state="unauthorized")
    assert "2 Pixel 4 phones attached (AAA, BBB): choose one with ANDROID_SERIAL=SERIAL" in get_device(
        "pixel4", benchmark_model=binary).check().reason
    assert get_device("pixel4", serial="BBB", benchmark_model=binary).check().ok
    monkeypatch.setenv("ANDROID_SERIAL", "AAA")
    assert get_device("pixel4", benchmark_model=binary).check().ok and get_device("pixel4").settings.serial == "AAA"
    monkeypatch.delenv("ANDROID_SERIAL")
    assert "is a Pixel 6, not a Pixel 4" in get_device("pixel4", serial="CCC", benchmark_model=binary).check().reason
    assert "unauthorized: accept the USB debugging prompt" in get_device("pixel4", serial="DDD").check().reason
    assert "no phone with serial ZZZ attached" in get_device("pixel4", serial="ZZZ").check().reason
    assert get_device("pixel6", benchmark_model=binary).check().ok
    assert "choose one with" in get_device("android", benchmark_model=binary).check().reason


def test_benchmark_model_comes_from_the_flag_or_the_config_file(phones, binary, home):
    phones.add(PIXEL4, "Pixel 4")
    reason = get_device("pixel4").check().reason
    assert "needs TFLite's benchmark_model" in reason and "config.json" in reason
    (home / "config.json").write_text(json.dumps({"android": {"benchmark_model": binary, "warmup_runs": 3}}))
    device = get_device("pixel4")
    assert device.check().ok and device.settings.warmup_runs == 3 and device.settings.cpu_mask == "80"


@pytest.mark.parametrize("fmt", ["inference", "average", "timings"])
def test_measures_through_benchmark_model_and_removes_what_it_pushed(phones, binary, fmt):
    phones.add(PIXEL4, "Pixel 4")
    phones.set(format=fmt)
    device = pixel4(binary, extra_args=QUICK if fmt == "inference" else ())
    assert device.check().ok
    handle = device.open(layers.exported("mbconv"))
    assert sorted(phones.files(PIXEL4)) == ["benchmark_model", handle.remote.rsplit("/", 1)[1]]
    ms = device.measure(handle, 7)
    assert ms > 0 and device.last.format == fmt and device.last.avg_ms == ms
    if fmt != "average":
        assert device.last.count == 7
    device.close(handle)
    assert phones.files(PIXEL4) == ["benchmark_model"]
    device.release()
    assert phones.files(PIXEL4) == []
    info = device.describe()
    assert info["model"] == "Pixel 4" and info["cpu_mask"] == "80" and "average" in info["latency"]


def test_flags_an_old_build_lacks_fail_with_its_message(phones, binary):
    phones.add(PIXEL4, "Pixel 4")
    phones.set(format="average")
    device = pixel4(binary)
    handle = device.open(layers.exported("mbconv"))
    with pytest.raises(AdbError, match="Unconsumed cmdline flags: --min_secs=0"):
        device.measure(handle, 3)
    device.close(handle)


def test_core_mask_beyond_the_phone_is_an_error(phones, binary):
    phones.add(PIXEL4, "Pixel 4", cpus=4)
    device = pixel4(binary)
    handle = device.open(layers.exported("mbconv"))
    with pytest.raises(AdbError, match="sched_setaffinity"):
        device.measure(handle, 3)


def test_cools_down_while_a_readable_zone_is_hot(phones, binary):
    phones.add(PIXEL4, "Pixel 4", thermal_mc=[52000, None, 38000], cool_per_read_mc=2000)
    device = pixel4(binary, cooldown_c=45.0)
    handle = device.open(layers.exported("mbconv"))
    device.measure(handle, 3)
    assert device.thermal.readable and device.thermal.last_max_c == 44.0  # read 52, 50, 48, 46, 44
    assert len(device.thermal.history) == 1 and device.thermal.waited_s > 0


def test_unreadable_thermal_zones_are_skipped(phones, binary):
    phones.add(PIXEL4, "Pixel 4", thermal_mc=[None, None])
    device = pixel4(binary)
    device.measure(device.open(layers.exported("mbconv")), 3)
    assert device.thermal.readable is False and device.thermal.waited_s == 0


def test_a_phone_that_comes_back_is_retried(phones, binary, monkeypatch):
    phones.add(PIXEL4, "Pixel 4")
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AFTER", "1")
    monkeypatch.setenv("FAKE_ADB_RECONNECT_AFTER", "2")
    device = pixel4(binary, retries=3)
    handle = device.open(layers.exported("mbconv"))
    first = device.measure(handle, 3)
    second = device.measure(handle, 3)  # drops mid-run, comes back, files pushed again
    assert first > 0 and second > 0 and phones.state["reconnected"] == 1


def test_a_phone_that_stays_away_stops_with_a_clear_message(phones, binary, monkeypatch):
    phones.add(PIXEL4, "Pixel 4")
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AFTER", "1")
    device = pixel4(binary, retries=2)
    handle = device.open(layers.exported("mbconv"))
    kept = device.measure(handle, 3)
    with pytest.raises(DisconnectedError) as exc:
        device.measure(handle, 3)
    message = str(exc.value)
    assert f"phone {PIXEL4} disconnected and did not come back after 2 retries" in message
    assert "what was measured is kept" in message and "\n" not in message
    assert kept > 0


def test_android_passes_the_contract(phones, binary, home):
    phones.add(PIXEL4, "Pixel 4")
    (home / "config.json").write_text(json.dumps({"android": {"extra_args": list(QUICK)}}))
    report = check_device(get_device("pixel4", benchmark_model=binary), cache=layers.cache())
    assert report["available"] and report["latency_ms"] > 0
    assert not check_device(get_device("pixel6"), cache=layers.cache())["available"]


def test_settings_precedence_catalogue_config_environment_options(home, monkeypatch):
    (home / "config.json").write_text(json.dumps({"android": {"serial": "A", "warmup_runs": 4, "cpu_mask": "f0"},
                                                  "devices": {"pixel4": {"serial": "B", "cpu_mask": "40"}}}))
    s = get_device("pixel4").settings
    assert (s.serial, s.warmup_runs, s.cpu_mask, s.label) == ("B", 4, "40", "Pixel 4")
    assert get_device("pixel6").settings.serial == "A" and get_device("pixel6").settings.cpu_mask == "f0"
    monkeypatch.setenv("ANDROID_SERIAL", "C")
    assert get_device("pixel4").settings.serial == "C"
    assert get_device("pixel4", serial="D").settings.serial == "D"
