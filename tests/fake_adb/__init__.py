"""Fake phones behind a fake `adb` on PATH (see adb.py): what tests use instead of a phone."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ADB_SCRIPT = Path(__file__).with_name("adb.py")


class FakePhones:
    """A fake adb's world: its phones, their files, and the environment that puts it on PATH."""

    def __init__(self, home: Path, fmt: str = "inference") -> None:
        self.home = Path(home)
        self.bin = self.home / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        wrapper = self.bin / "adb"
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ADB_SCRIPT}" "$@"\n')
        wrapper.chmod(0o755)
        self._write({"phones": {}, "format": fmt})

    @property
    def state(self) -> dict:
        return json.loads((self.home / "state.json").read_text())

    def _write(self, state: dict) -> None:
        (self.home / "state.json").write_text(json.dumps(state, indent=1))

    def add(self, serial: str, model: str, state: str = "device", cpus: int = 8,
            thermal_mc: list | None = None, heat_per_run_mc: int = 0, cool_per_read_mc: int = 0,
            props: dict | None = None) -> "FakePhones":
        world = self.state
        world["phones"][serial] = {
            "model": model, "state": state, "cpus": cpus, "thermal_mc": list(thermal_mc or []),
            "heat_per_run_mc": heat_per_run_mc, "cool_per_read_mc": cool_per_read_mc,
            "product": model.lower().replace(" ", ""), "device": model.lower().replace(" ", ""),
            "props": {"ro.board.platform": "fakesoc", "ro.build.version.release": "13",
                      "ro.product.cpu.abi": "arm64-v8a", **(props or {})}}
        self._write(world)
        fs = self.home / serial / "fs"
        (fs / "data" / "local" / "tmp").mkdir(parents=True, exist_ok=True)
        for i in range(len(thermal_mc or [])):  # the files exist; their values live in state.json
            zone = fs / "sys" / "class" / "thermal" / f"thermal_zone{i}"
            zone.mkdir(parents=True, exist_ok=True)
            (zone / "temp").write_text("")
        return self

    def set(self, **values: object) -> None:
        world = self.state
        world.update(values)
        self._write(world)

    def files(self, serial: str, remote_dir: str = "/data/local/tmp") -> list[str]:
        folder = self.home / serial / "fs" / remote_dir.lstrip("/")
        return sorted(p.name for p in folder.iterdir())

    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["FAKE_ADB_HOME"] = str(self.home)
        return env

    def activate(self, monkeypatch) -> "FakePhones":
        """Put this fake adb first on PATH for the test (and its subprocesses)."""
        for key, value in self.env().items():
            if os.environ.get(key) != value:
                monkeypatch.setenv(key, value)
        return self


def fake_benchmark_model(folder: Path) -> Path:
    """What the user points latencykit to: stands in for TFLite's Android benchmark_model binary."""
    path = Path(folder) / "benchmark_model"
    path.write_bytes(b"\x7fELF fake benchmark_model for latencykit tests\n")
    path.chmod(0o755)
    return path
