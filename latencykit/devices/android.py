"""`android`: an Android phone over adb, timed by TFLite's `benchmark_model`.

The transport (adb.py) pushes and runs; the parser (benchmark_model.py) reads the output; this
module is the protocol between them: pick the phone (by `ro.product.model` and serial), push
the binary once and each model, pin to a core mask with `taskset`, cool down while the phone's
thermal zones read hot, retry with backoff when the phone drops off, and remove what it pushed.

The latency is benchmark_model's reported average over `--num_runs` timed runs (it prints no
median). benchmark_model cannot be downloaded for the user: point to it in
`$LATENCYKIT_HOME/config.json` as `{"android": {"benchmark_model": "/path"}}`, with
LATENCYKIT_BENCHMARK_MODEL, or with the `benchmark_model` option.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from latencykit.devices.adb import Adb, DisconnectedError
from latencykit.devices.base import Availability, Device
from latencykit.devices.benchmark_model import BenchmarkResult, parse
from latencykit.errors import DeviceUnavailableError, LatencykitError
from latencykit.paths import home

REMOTE_DIR = "/data/local/tmp"
THERMAL_GLOB = "/sys/class/thermal/thermal_zone*/temp"


def config_path() -> Path:
    return home() / "config.json"


def load_config() -> dict:
    """`$LATENCYKIT_HOME/config.json`, or {} when there is none."""
    path = config_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LatencykitError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise LatencykitError(f"{path} must hold a JSON object")
    return data


@dataclass(frozen=True)
class AndroidSettings:
    """How to find the phone and how to time on it; catalogue entries fill these in."""

    label: str = "Android phone"  # how messages name the phone ("Pixel 4")
    models: tuple[str, ...] = ()  # accepted ro.product.model values; empty accepts any phone
    serial: str | None = None
    benchmark_model: str | None = None
    adb: str = "adb"
    threads: int = 1
    cpu_mask: str | None = None  # hex taskset mask, e.g. "80" for core 7
    warmup_runs: int = 10
    extra_args: tuple[str, ...] = ()  # more benchmark_model flags, e.g. "--min_secs=0"
    timeout_s: float = 300.0
    retries: int = 3
    backoff_s: float = 2.0
    cooldown_c: float = 45.0  # wait while any readable thermal zone is hotter (0: never wait)
    cooldown_max_s: float = 120.0
    poll_s: float = 5.0
    published: str | None = None  # published table of this phone, for when none is attached

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        if self.cpu_mask is not None:
            int(self.cpu_mask, 16)  # a hex mask, or ValueError


def settings_from(options: dict, base: AndroidSettings = AndroidSettings(), name: str | None = None) -> AndroidSettings:
    """`base` (the catalogue's entry), then the config file's `android` section, then its
    `devices.NAME` section, then the environment (LATENCYKIT_BENCHMARK_MODEL, and ANDROID_SERIAL
    as adb itself reads it), then explicit `options`: each layer wins over the ones before."""
    config = load_config()
    known = AndroidSettings.__dataclass_fields__
    merged = {k: getattr(base, k) for k in known}
    for layer in (config.get("android", {}), config.get("devices", {}).get(name, {}) if name else {},
                  {k: os.environ[v] for k, v in (("benchmark_model", "LATENCYKIT_BENCHMARK_MODEL"),
                                                  ("serial", "ANDROID_SERIAL")) if os.environ.get(v)},
                  options):
        merged.update({k: v for k, v in layer.items() if k in known and v is not None})
    for key in ("models", "extra_args"):
        merged[key] = tuple(merged[key])
    return AndroidSettings(**merged)


@dataclass
class Pushed:
    """A model on the phone: where it came from (to push again after a reconnect) and where it is."""

    local: Path
    remote: str


@dataclass
class Thermal:
    """What the cool-downs saw: whether zones are readable, the waits, the last hottest zone."""

    readable: bool | None = None
    waited_s: float = 0.0
    last_max_c: float | None = None
    history: list = field(default_factory=list)


class AndroidDevice(Device):
    """One phone, found by model and serial; `measure` is benchmark_model's average in ms."""

    format = "tflite"

    def __init__(self, settings: AndroidSettings = AndroidSettings(), name: str = "android") -> None:
        self.name, self.settings = name, settings
        self.serial: str | None = None
        self.binary_remote: str | None = None
        self.thermal = Thermal()
        self.last: BenchmarkResult | None = None

    # -- finding the phone -------------------------------------------------------------------
    def _adb(self) -> Adb:
        return Adb(self.settings.adb, self.serial, timeout_s=min(60.0, self.settings.timeout_s))

    def matches(self, model: str) -> bool:
        wanted = {m.casefold() for m in self.settings.models}
        return not wanted or model.strip().casefold() in wanted

    def check(self) -> Availability:
        s = self.settings
        adb = Adb(s.adb, None, timeout_s=30.0)
        if not adb.available():
            return Availability(False, f"adb not found (looked for {s.adb!r}): install Android platform-tools"
                                + self._published_hint())
        try:
            attached = adb.devices()
        except DeviceUnavailableError as exc:
            return Availability(False, str(exc))
        models: dict[str, str] = {}
        for a in attached:
            if a.state == "device":
                try:
                    models[a.serial] = adb.with_serial(a.serial).getprop("ro.product.model")
                except DeviceUnavailableError:
                    pass
        listing = ", ".join(f"{a.serial} ({models.get(a.serial) or a.state})" for a in attached) or "none"
        if s.serial:
            states = {a.serial: a.state for a in attached}
            if s.serial not in states:
                return Availability(False, f"no phone with serial {s.serial} attached (attached: {listing})")
            if s.serial not in models:
                return Availability(False, f"phone {s.serial} is {states[s.serial]}"
                                    + (": accept the USB debugging prompt on it" if states[s.serial] == "unauthorized" else ""))
            if not self.matches(models[s.serial]):
                return Availability(False, f"phone {s.serial} is a {models[s.serial]}, not a {s.label}")
            serial = s.serial
        else:
            candidates = [sn for sn, model in models.items() if self.matches(model)]
            if not candidates:
                return Availability(False, f"no {s.label} attached (attached: {listing})"
                                    + self._published_hint())
            if len(candidates) > 1:
                return Availability(False, f"{len(candidates)} {s.label} phones attached "
                                    f"({', '.join(candidates)}): choose one with ANDROID_SERIAL=SERIAL")
            serial = candidates[0]
        if not s.benchmark_model:
            return Availability(False, "needs TFLite's benchmark_model built for Android: set "
                                f"{{\"android\": {{\"benchmark_model\": PATH}}}} in {config_path()} "
                                "or LATENCYKIT_BENCHMARK_MODEL=PATH")
        if not Path(s.benchmark_model).is_file():
            return Availability(False, f"benchmark_model {s.benchmark_model} is not a file")
        self.serial = serial
        return Availability(True)

    def _published_hint(self) -> str:
        s = self.settings
        if not s.published:
            return ""
        return (f"; to use published {s.label} measurements instead: "
                f"latencykit lut import {s.published} --device {self.name}")

    def _ready(self) -> Adb:
        if self.serial is None:
            status = self.check()
            if not status.ok:
                raise DeviceUnavailableError(f"device {self.name} is not available: {status.reason}")
        adb = self._adb()
        if self.binary_remote is None:
            remote = f"{REMOTE_DIR}/benchmark_model"
            adb.push(str(self.settings.benchmark_model), remote)
            adb.shell(f"chmod 755 {remote}")
            self.binary_remote = remote
            atexit.register(self.release)
        return adb

    def describe(self) -> dict:
        s = self.settings
        info = {"device": self.name, "runtime": "TFLite benchmark_model", "format": self.format,
                "latency": "benchmark_model average of the timed runs", "threads": s.threads,
                "cpu_mask": s.cpu_mask, "warmup_runs": s.warmup_runs, "cooldown_c": s.cooldown_c,
                "benchmark_model": s.benchmark_model, "serial": self.serial}
        if self.serial is not None:
            adb = self._adb()
            for key, prop in (("model", "ro.product.model"), ("soc", "ro.board.platform"),
                              ("android", "ro.build.version.release"), ("abi", "ro.product.cpu.abi")):
                try:
                    info[key] = adb.getprop(prop)
                except DeviceUnavailableError:
                    info[key] = None
            info["thermal_zones_readable"] = self.thermal.readable
            info["cooldown_waited_s"] = round(self.thermal.waited_s, 3)
        return info

    # -- measuring ---------------------------------------------------------------------------
    def open(self, model: Path) -> Pushed:
        model = Path(model)
        handle = Pushed(model, f"{REMOTE_DIR}/latencykit_{model.name}")
        self._retrying(lambda: self._ready().push(str(model), handle.remote), handle=None)
        return handle

    def measure(self, handle: Pushed, runs: int) -> float:
        s = self.settings

        def run() -> float:
            adb = self._ready()
            self.cool_down(adb)
            pin = f"taskset {s.cpu_mask} " if s.cpu_mask else ""
            cmd = (f"{pin}{self.binary_remote} --graph={shlex.quote(handle.remote)} "
                   f"--num_threads={s.threads} --warmup_runs={s.warmup_runs} --num_runs={runs}")
            cmd += "".join(" " + shlex.quote(a) for a in s.extra_args)
            self.last = parse(adb.shell(cmd, timeout_s=s.timeout_s).output)
            return self.last.avg_ms

        return self._retrying(run, handle)

    def close(self, handle: Pushed) -> None:
        if self.serial is not None:
            self._adb().remove(handle.remote)

    def release(self) -> None:
        """Remove the pushed benchmark_model (done at exit; models are removed by `close`)."""
        if self.binary_remote is not None and self.serial is not None:
            self._adb().remove(self.binary_remote)
        self.binary_remote = None

    def _retrying(self, action, handle: Pushed | None):
        """Run `action`; when the phone drops off, wait with exponential backoff and try again."""
        s = self.settings
        waited = 0.0
        for attempt in range(s.retries + 1):
            try:
                return action()
            except DisconnectedError as exc:
                last = exc
            if attempt == s.retries:
                break
            delay = s.backoff_s * 2**attempt
            time.sleep(delay)
            waited += delay
            if self._adb().state() == "device":  # back: files may be gone, push again
                self.binary_remote = None
                if handle is not None:
                    try:
                        self._ready().push(str(handle.local), handle.remote)
                    except DisconnectedError:
                        pass
        raise DisconnectedError(
            f"{self.name}: phone {self.serial} disconnected and did not come back after {s.retries} "
            f"retries over {waited:g} s ({last}); what was measured is kept: reconnect it and run "
            "the same command again to resume")

    # -- thermals ----------------------------------------------------------------------------
    def temperatures(self, adb: Adb) -> list[float]:
        """Readable thermal zones in degrees Celsius (Android reports milli-degrees)."""
        res = adb.shell(f"cat {THERMAL_GLOB}", timeout_s=15.0, check=False)
        temps = []
        for line in res.output.splitlines():
            try:
                value = float(line.strip())
            except ValueError:
                continue
            celsius = value / 1000 if abs(value) >= 200 else value
            if 0 < celsius < 150:
                temps.append(celsius)
        return temps

    def cool_down(self, adb: Adb) -> float:
        """Wait (up to cooldown_max_s) while the hottest readable zone is above cooldown_c."""
        s, t = self.settings, self.thermal
        if s.cooldown_c <= 0 or t.readable is False:
            return 0.0
        start = time.monotonic()
        while True:
            temps = self.temperatures(adb)
            if not temps:
                t.readable = False
                return 0.0
            t.readable, t.last_max_c = True, max(temps)
            waited = time.monotonic() - start
            if t.last_max_c <= s.cooldown_c or waited >= s.cooldown_max_s:
                t.waited_s += waited
                if waited:
                    t.history.append(round(waited, 3))
                return waited
            time.sleep(s.poll_s)
