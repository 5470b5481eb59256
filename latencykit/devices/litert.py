"""`host-litert`: the LiteRT (TFLite) interpreter on this machine's CPU, with XNNPACK.

The same runtime a phone runs, on the host: it profiles and validates like `host`, and it ranks
layers differently from ONNX Runtime on the same CPU, which is why tables are per device.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Sequence

import numpy as np

from latencykit.devices.clock import DESCRIPTION as CLOCKS
from latencykit.devices.clock import median_ms
from latencykit.devices.clock import resolve as resolve_clock
from latencykit.devices.base import Availability, Device
from latencykit.devices.host import cpu_name
from latencykit.devices.quiet import silenced
from latencykit.errors import DeviceUnavailableError


def litert_version() -> str:
    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "unknown"


def interpreter(model: Path, threads: int = 1, xnnpack: bool = True):
    """A LiteRT interpreter with tensors allocated; XNNPACK is LiteRT's default CPU delegate."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with silenced() as log:
        try:
            interp = Interpreter(model_path=str(model), num_threads=threads,
                                 experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
        except Exception as exc:
            raise DeviceUnavailableError(f"LiteRT cannot load {model}: {exc} {log.tail()}".strip()) from exc
    return interp


def _by_index(names: Sequence[str]) -> list[str]:
    """Signature names (args_0, args_1, ..., output_0, ...) in argument order."""
    return sorted(names, key=lambda n: int(m.group()) if (m := re.search(r"\d+$", n)) else -1)


def run_tflite(model: Path, inputs: Sequence[np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """Outputs of one inference, inputs given in the torch module's argument order."""
    interp = interpreter(model, threads)
    signature = interp.get_signature_list()
    key = next(iter(signature))
    names_in = _by_index(signature[key]["inputs"])
    if len(names_in) != len(inputs):
        raise DeviceUnavailableError(f"{model.name} takes {len(names_in)} inputs, got {len(inputs)}")
    with silenced():
        out = interp.get_signature_runner(key)(**dict(zip(names_in, inputs)))
    return [np.asarray(out[name]) for name in _by_index(list(out))]


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
