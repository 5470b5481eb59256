"""`check_device`: the Device contract, checked on any device, built in or installed as a plugin.

Like scikit-learn's `check_estimator`: a plugin author runs it on their device, and the test
suite runs it on every built-in one. A device that cannot measure here must still say exactly
why (`check`), describe itself, and name a format latencykit can export.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


from latencykit.devices.base import Availability, Device
from latencykit.errors import LatencykitError
from latencykit.export import EXPORTERS, ExportCache, default_cache, export_layer
from latencykit.layers import LayerSpec

PROBE = LayerSpec("mbconv", hw=8, cin=8, cout=8, kernel=3, expand=2.0)


class ConformanceError(LatencykitError):
    """A device that breaks the Device contract; the message says which rule."""


def _require(ok: bool, device: object, rule: str) -> None:
    if not ok:
        raise ConformanceError(f"device {getattr(device, 'name', device)!r} breaks the contract: {rule}")


def check_device(device: Device, cache: ExportCache | None = None, runs: int = 3) -> dict:
    """Check `device` against the contract; measure a tiny layer when it is available.

    Returns what was found ({"device", "format", "available", "reason", "latency_ms"}); raises
    ConformanceError naming the first rule broken.
    """
    _require(isinstance(device, Device), device, "it is not a latencykit.devices.base.Device")
    _require(isinstance(device.name, str) and bool(device.name), device, "name must be a non-empty string")
    _require(device.format in EXPORTERS, device,
             f"format {device.format!r} is not an export format ({', '.join(EXPORTERS.names())})")
    status = device.check()
    _require(isinstance(status, Availability), device, "check() must return an Availability")
    _require(status.ok or bool(status.reason.strip()), device, "check() must say why it is unavailable")
    info = device.describe()
    _require(isinstance(info, dict), device, "describe() must return a dict")
    try:
        json.dumps(info)
    except (TypeError, ValueError) as exc:
        raise ConformanceError(f"device {device.name!r} breaks the contract: describe() is not JSON ({exc})") from exc
    report = {"device": device.name, "format": device.format, "available": status.ok,
              "reason": status.reason, "latency_ms": None}
    if not (status.ok and device.can_measure):
        return report
    path = export_layer(PROBE, cache or default_cache(), device.format)
    handle = device.open(Path(path))
    try:
        first = device.measure(handle, runs)
        second = device.measure(handle, runs)
    finally:
        device.close(handle)
    for value in (first, second):
        _require(isinstance(value, float) and math.isfinite(value) and value > 0, device,
                 f"measure() must return a positive float of milliseconds, got {value!r}")
    _require(max(first, second) / min(first, second) < 1000, device,
             f"two measurements of one layer differ a thousandfold ({first:g}, {second:g} ms)")
    report["latency_ms"] = min(first, second)
    return report
