"""`host-litert`: the LiteRT (TFLite) interpreter on this machine's CPU, with XNNPACK.

The same runtime a phone runs, on the host: it profiles and validates like `host`, and it ranks
layers differently from ONNX Runtime on the same CPU, which is why tables are per device.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from latencykit.devices.clock import DESCRIPTION as CLOCKS
from latencykit.devices.clock import median_ms
from latencykit.devices.clock import resolve as resolve_clock
from latencykit.devices.base import Availability, Device
from latencykit.devices.host import cpu_name
from latencykit.quiet import silenced
from latencykit.tflite_runtime import interpreter, run_tflite  # noqa: F401  (run_tflite: re-exported)


def litert_version() -> str:
    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class _Loaded:
    interp: object


class HostLiteRTDevice(Device):
    """ai-edge-litert's interpreter, XNNPACK delegate, `threads` threads (1 by default).

    Inputs are set once at open: a timed run is `invoke()` alone, the graph's own cost. As for
    `host`, one thread computes on the calling thread (measured here: its CPU time equals wall
    time within 1% when the machine is idle), so the default clock is that thread's CPU time,
    which other processes sharing the cores do not inflate; with more threads it is wall time.
    """

    format = "tflite"

    def __init__(self, threads: int = 1, name: str = "host-litert", xnnpack: bool = True,
                 clock: str = "auto") -> None:
        self.clock = resolve_clock(threads, clock)
        self.name, self.threads, self.xnnpack = name, threads, xnnpack

    def check(self) -> Availability:
        try:
            import ai_edge_litert.interpreter  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"ai-edge-litert is not installed: pip install 'latencykit[tflite]' ({exc})")
        return Availability(True)

    def describe(self) -> dict:
        return {"device": self.name, "runtime": f"ai-edge-litert {litert_version()}",
                "delegate": "XNNPACK" if self.xnnpack else "none (builtin kernels)",
                "threads": self.threads, "cpu": cpu_name(), "machine": platform.machine(),
                "clock": CLOCKS[self.clock],
                "os": platform.platform()}

    def open(self, model: Path) -> _Loaded:
        interp = interpreter(Path(model), self.threads, self.xnnpack)
        rng = np.random.default_rng(0)
        for detail in interp.get_input_details():
            interp.set_tensor(detail["index"], rng.standard_normal(detail["shape"]).astype(detail["dtype"]))
        with silenced():
            interp.invoke()  # the first run plans memory and packs weights: not timed
        return _Loaded(interp)

    def measure(self, handle: _Loaded, runs: int) -> float:
        invoke = handle.interp.invoke
        return median_ms(invoke, runs, self.clock)

    def close(self, handle: _Loaded) -> None:
        handle.interp = None
