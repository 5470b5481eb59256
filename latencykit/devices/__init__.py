"""Devices: a registry of named devices; third parties register through `latencykit.devices`.

An entry is a factory taking keyword options (e.g. `threads`) and returning a `Device`.
"""

from __future__ import annotations

from typing import Callable

from latencykit.devices import catalogue
from latencykit.devices.base import Availability, Device
from latencykit.devices.host import HostOnnxDevice
from latencykit.errors import DeviceUnavailableError
from latencykit.registry import Registry

DEVICES: Registry[Callable[..., Device]] = Registry("device", "latencykit.devices",
                                                    catalogue=lambda r: catalogue.register_all(r))
"""`host` is built in; the catalogue (phones.json, here and in $LATENCYKIT_HOME) adds the rest on first use."""
DEVICES.add("host", HostOnnxDevice)


def get_device(name: str, **options: object) -> Device:
    """The named device, built with the options it accepts (unknown options are ignored)."""
    factory = DEVICES.get(name)
    import inspect

    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}
    kwargs = {k: v for k, v in options.items() if v is not None and k in accepted}
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
