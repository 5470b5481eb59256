"""`coreml`: Core ML on this Mac, timing `MLModel.predict` with a choice of compute units.

Core ML's runtime exists only on macOS, so elsewhere `check` says so and nothing is measured;
export to Core ML works on every OS. iPhones (`iphone13`) are catalogued for their file format:
latencykit cannot drive an iPhone, so their check says how to measure the exported packages.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from latencykit.devices.base import Availability, Device
from latencykit.devices.host import cpu_name
from latencykit.quiet import silenced
from latencykit.errors import DeviceUnavailableError

COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")


@dataclass
class _Loaded:
    model: object
    feeds: dict


class CoreMLDevice(Device):
    """coremltools' MLModel on macOS; `compute_units` is one of COMPUTE_UNITS ("all" by default)."""

    format = "coreml"

    def __init__(self, compute_units: str = "all", name: str = "coreml", target: str | None = None) -> None:
        compute_units = compute_units.lower()
        if compute_units not in COMPUTE_UNITS:
            raise ValueError(f"compute_units must be one of {', '.join(COMPUTE_UNITS)}")
        self.name, self.compute_units, self.target = name, compute_units, target
        self.can_measure = target is None

    def check(self) -> Availability:
        if self.target is not None:
            return Availability(False, f"latencykit cannot run models on an {self.target} itself: export "
                                "layers as Core ML packages (format coreml, on any OS) and time them on the "
                                "phone with Xcode's Core ML performance report, or measure `coreml` on a Mac")
        if platform.system() != "Darwin":
            return Availability(False, f"Core ML runs only on macOS (this is {platform.system()}); "
                                "Core ML export works here, measuring needs a Mac")
        try:
            import coremltools  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"coremltools is not installed: pip install 'latencykit[coreml]' ({exc})")
        return Availability(True)

    def describe(self) -> dict:
        try:
            ct_version = version("coremltools")
        except PackageNotFoundError:
            ct_version = "not installed"
        info = {"device": self.name, "runtime": f"Core ML via coremltools {ct_version}",
                "compute_units": self.compute_units, "format": self.format}
        if self.target is not None:
            info["target"] = self.target
        else:
            info.update(cpu=cpu_name(), machine=platform.machine(),
                        os=f"macOS {platform.mac_ver()[0]}" if platform.system() == "Darwin" else platform.platform())
        return info

    def open(self, model: Path) -> _Loaded:
        status = self.check()
        if not status.ok:
            raise DeviceUnavailableError(f"device {self.name} is not available: {status.reason}")
        import coremltools as ct

        units = getattr(ct.ComputeUnit, self.compute_units.upper())
        with silenced():
            loaded = ct.models.MLModel(str(model), compute_units=units)
        rng = np.random.default_rng(0)
        feeds = {i.name: rng.standard_normal(tuple(i.type.multiArrayType.shape)).astype(np.float32)
                 for i in loaded.get_spec().description.input}
        loaded.predict(feeds)  # compiles and warms the model: not timed
        return _Loaded(loaded, feeds)

    def measure(self, handle: _Loaded, runs: int) -> float:
        predict, feeds = handle.model.predict, handle.feeds
        times = np.empty(runs)
        for i in range(runs):
            t0 = time.perf_counter()
            predict(feeds)
            times[i] = time.perf_counter() - t0
        return float(np.median(times) * 1e3)

    def close(self, handle: _Loaded) -> None:
        handle.model = None
