"""`host`: ONNX Runtime's CPU provider on this machine."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

    With one thread ONNX Runtime computes on the calling thread, so the default clock is that
    thread's CPU time: when other processes share the cores, wall time inflates a 12 ms model by
    2-3x (the scheduler preempts it) but a 1 ms reference block hardly at all, which no reference
    correction can undo; thread CPU time is unaffected. With more threads the clock is wall time.
    """

    format = "onnx"

    def __init__(self, threads: int = 1, name: str = "host", clock: str = "auto") -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if clock not in ("auto", "cpu", "wall"):
            raise ValueError("clock must be auto, cpu or wall")
        if clock == "cpu" and threads > 1:
            raise ValueError("the cpu clock times the calling thread only; use it with threads=1")
        self.name, self.threads = name, threads
        self.clock = ("cpu" if threads == 1 else "wall") if clock == "auto" else clock

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
                "clock": {"cpu": "calling thread's CPU time", "wall": "wall time"}[self.clock],
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
        clock = time.thread_time if self.clock == "cpu" else time.perf_counter
        times = np.empty(runs)
        for i in range(runs):
            t0 = clock()
            run(binding)
            times[i] = clock() - t0
        return float(np.median(times) * 1e3)
