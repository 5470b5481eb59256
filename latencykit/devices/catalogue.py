"""Named devices from a data file: `phones.json` here, plus `$LATENCYKIT_HOME/phones.json`.

Each entry names a kind (the implementation) and its options, so adding a phone is adding data:
a Pixel 4 is the `android` kind matched on `ro.product.model` and pinned to its prime core. A
user's file adds entries or replaces built-in ones of the same name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from latencykit.devices.android import AndroidDevice, AndroidSettings, settings_from
from latencykit.devices.base import Device
from latencykit.devices.coreml import CoreMLDevice
from latencykit.devices.host import HostOnnxDevice
from latencykit.devices.litert import HostLiteRTDevice
from latencykit.errors import LatencykitError
from latencykit.paths import home
from latencykit.registry import Registry

BUILTIN = Path(__file__).with_name("phones.json")


def user_file() -> Path:
    return home() / "phones.json"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LatencykitError(f"cannot read device catalogue {path}: {exc}") from exc
    entries = {k: v for k, v in data.items() if not k.startswith("_")}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("kind") not in KINDS:
            raise LatencykitError(f"{path}: device {name!r} needs a kind, one of {', '.join(KINDS)}")
    return entries


def entries() -> dict[str, dict]:
    """Every catalogued device: built-in entries, then the user's file over them."""
    found = _read(BUILTIN)
    if user_file().exists():
        found.update(_read(user_file()))
    return found


def _android(name: str, entry: dict) -> Callable[..., Device]:
    def make(serial: str | None = None, benchmark_model: str | None = None, threads: int | None = None,
             cpu_mask: str | None = None, warmup_runs: int | None = None, adb: str | None = None) -> Device:
        catalogue = AndroidSettings(**_tuples(entry.get("options", {})))
        explicit = dict(serial=serial, benchmark_model=benchmark_model, threads=threads,
                        cpu_mask=cpu_mask, warmup_runs=warmup_runs, adb=adb)
        return AndroidDevice(settings_from(explicit, catalogue, name), name=name)

    return make


def _tuples(options: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def _host(name: str, entry: dict) -> Callable[..., Device]:
    def make(threads: int | None = None) -> Device:
        opts = {**entry.get("options", {}), **({"threads": threads} if threads else {})}
        return HostOnnxDevice(name=name, **opts)

    return make


def _host_litert(name: str, entry: dict) -> Callable[..., Device]:
    def make(threads: int | None = None) -> Device:
        opts = {**entry.get("options", {}), **({"threads": threads} if threads else {})}
        return HostLiteRTDevice(name=name, **opts)

    return make


def _coreml(name: str, entry: dict) -> Callable[..., Device]:
    def make(compute_units: str | None = None) -> Device:
        opts = {**entry.get("options", {}), **({"compute_units": compute_units} if compute_units else {})}
        return CoreMLDevice(name=name, **opts)

    return make


KINDS: dict[str, Callable[[str, dict], Callable[..., Device]]] = {
    "host": _host, "host-litert": _host_litert, "android": _android, "coreml": _coreml, "iphone": _coreml,
}


def register_all(registry: Registry, skip: tuple[str, ...] = ("host",)) -> None:
    """Add a factory for every catalogued device but those registered in code (`host`)."""
    for name, entry in entries().items():
        if name not in skip:
            registry.add(name, KINDS[entry["kind"]](name, entry))


def description(name: str) -> str:
    return entries().get(name, {}).get("description", "")
