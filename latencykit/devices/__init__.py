"""Devices: a registry of named devices; third parties register through `latencykit.devices`.

An entry is a factory taking keyword options (e.g. `threads`) and returning a `Device`.
"""

from __future__ import annotations

from typing import Callable

from latencykit.devices import catalogue
from latencykit.devices.base import Availability, Device
from latencykit.devices.host import HostOnnxDevice
from latencykit.errors import DeviceUnavailableError, LatencykitError
from latencykit.registry import Registry

DEVICES: Registry[Callable[..., Device]] = Registry("device", "latencykit.devices",
                                                    catalogue=lambda r: catalogue.register_all(r))
"""`host` is built in; the catalogue (phones.json, here and in $LATENCYKIT_HOME) adds the rest on first use."""
DEVICES.add("host", HostOnnxDevice)


def get_device(name: str, **options: object) -> Device:
    """The named device, built with the options given (None: not given); one it does not take is refused."""
    factory = DEVICES.get(name)
    import inspect

    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    given = {k: v for k, v in options.items() if v is not None}
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(given) - set(accepted))
        if unknown:
            takes = ", ".join(k for k in accepted if k != "name") or "none"
            raise LatencykitError(f"device {name} does not take option(s) {', '.join(unknown)} (it takes: {takes})")
    kwargs = given
    device = factory(**kwargs)
    if not device.name:
        device.name = name
    return device


def require(device: Device) -> Device:
    """The device if it can measure now; else DeviceUnavailableError with the reason."""
    status = device.check()
    if not status.ok:
        raise DeviceUnavailableError(f"device {device.name} is not available: {status.reason}")
    return device


__all__ = ["DEVICES", "Availability", "Device", "HostOnnxDevice", "get_device", "require"]
