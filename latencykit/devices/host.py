"""`host`: ONNX Runtime's CPU provider on this machine."""

from __future__ import annotations

import json
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latencykit.devices.clock import DESCRIPTION as CLOCKS
from latencykit.devices.clock import Evictor, default_evict_mib, median_ms
from latencykit.devices.clock import resolve as resolve_clock
from latencykit.devices.base import Availability, Device, OpTime
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

    Timing follows latencykit.devices.clock: the calling thread's CPU time with one thread. Before
    every timed run `evict_mib` MiB are written through the cache (0: off; by default a quarter of the
    last-level cache, at most 8 MiB: latencykit.devices.clock), so a layer measured alone
    meets the cache state it meets inside a network, its weights pushed out by the other layers: run
    back to back instead, layers summed 2-10% below their whole network on average (autovit-xxs, -xs,
    -s, three processes), and an 8 MiB write narrowed that by 1.5-4 points in every process; 12 MiB
    overshot on autovit-xs (benchmarks/results/composition.md). Whole models are timed the same way.
    """

    format = "onnx"

    def __init__(self, threads: int = 1, name: str = "host", clock: str = "auto",
                 evict_mib: float | None = None) -> None:
        self.clock = resolve_clock(threads, clock)
        evict_mib = default_evict_mib() if evict_mib is None else evict_mib
        self.name, self.threads = name, threads
        self.evictor = Evictor(evict_mib) if evict_mib else None
        self.evict_mib = float(evict_mib)

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
                "clock": CLOCKS[self.clock], "evict_mib": self.evict_mib,
                "layer_boundary": "NCHWc reorders cut (latencykit.devices.nchwc)",
                "machine": platform.machine(), "os": platform.platform()}

    def _options(self):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return so

    def open(self, model: Path, options=None) -> _Session:
        import onnxruntime as ort

        so = options or self._options()
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

    def open_layer(self, model: Path) -> _Session:
        """A layer file without the layout changes at its boundary that a network does not run
        (latencykit.devices.nchwc); as `open` where it has none."""
        from latencykit.devices.nchwc import without_boundary_reorders

        with tempfile.TemporaryDirectory() as tmp:
            cut = Path(tmp) / "layer.onnx"
            try:
                found = without_boundary_reorders(Path(model), cut, self._options())
            except Exception as exc:
                raise DeviceUnavailableError(f"{self.name}: cannot load {model}: {exc}") from exc
            return self.open(cut if found else model)

    def layout_changes(self, model: Path) -> list:
        from latencykit.devices.nchwc import reorders

        try:
            return reorders(Path(model), self._options())
        except Exception as exc:
            raise DeviceUnavailableError(f"{self.name}: cannot load {model}: {exc}") from exc

    def measure(self, handle: _Session, runs: int) -> float:
        run, binding = handle.session.run_with_iobinding, handle.binding
        return median_ms(lambda: run(binding), runs, self.clock, self.evictor)

    def profile_ops(self, model: Path, runs: int) -> list[OpTime]:
        """ONNX Runtime's profiler over `runs` inferences: each node's median kernel time.

        Nodes are those of the optimized graph (ONNX Runtime fuses Conv+Relu and the like), which is
        what runs; their times sum to a little less than the latency (the session's own overhead)."""
        with tempfile.TemporaryDirectory() as tmp:
            so = self._options()
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "ort")
            handle = self.open(model, so)
            for _ in range(runs):
                handle.session.run_with_iobinding(handle.binding)
            events = json.loads(Path(handle.session.end_profiling()).read_text())
        times: dict[tuple[str, str], list[float]] = {}
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
                key = (e["name"][: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"))
                times.setdefault(key, []).append(e["dur"] / 1e3)
        # the median over runs drops the first, untimed inference open() ran (it packs weights)
        return sorted((OpTime(node, op, float(np.median(ts))) for (node, op), ts in times.items()),
                      key=lambda t: -t.ms)
