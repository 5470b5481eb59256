"""`host`: ONNX Runtime's CPU provider on this machine."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latencykit.devices.clock import DESCRIPTION as CLOCKS
from latencykit.devices.clock import median_ms
from latencykit.devices.clock import resolve as resolve_clock
from latencykit.devices.base import Availability, Device
from latencykit.errors import DeviceUnavailableError


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass
class _Session:
    session: object
    binding: object


class HostOnnxDevice(Device):
    """ONNX Runtime, CPU execution provider, `threads` intra-op threads (1 by default).

    Inputs and outputs are bound once (IOBinding), so a timed run does no input copy: what is
    timed is the graph, which is what the layer costs inside a whole network.

    Timing follows latencykit.devices.clock: the calling thread's CPU time with one thread.
    """

    format = "onnx"

    def __init__(self, threads: int = 1, name: str = "host", clock: str = "auto") -> None:
        self.clock = resolve_clock(threads, clock)
        self.name, self.threads = name, threads

    def check(self) -> Availability:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"onnxruntime is not installed ({exc})")
        return Availability(True)

    def describe(self) -> dict:
        import onnxruntime as ort

        return {"device": self.name, "runtime": f"onnxruntime {ort.__version__}",
                "provider": "CPUExecutionProvider", "threads": self.threads, "cpu": cpu_name(),
                "clock": CLOCKS[self.clock],
                "machine": platform.machine(), "os": platform.platform()}

    def open(self, model: Path) -> _Session:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise DeviceUnavailableError(f"{self.name}: cannot load {model}: {exc}") from exc
        rng = np.random.default_rng(0)
        feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in sess.get_inputs()}
        outputs = sess.run(None, feeds)
        binding = sess.io_binding()
        for name, value in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
        for meta, value in zip(sess.get_outputs(), outputs):
            binding.bind_ortvalue_output(meta.name, ort.OrtValue.ortvalue_from_numpy(np.empty_like(value)))
        return _Session(sess, binding)

    def measure(self, handle: _Session, runs: int) -> float:
        run, binding = handle.session.run_with_iobinding, handle.binding
        return median_ms(lambda: run(binding), runs, self.clock)
