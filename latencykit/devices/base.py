"""The device contract: a transport that runs a model file, plus a description of where it ran."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latencykit.errors import LatencykitError


@dataclass(frozen=True)
class OpTime:
    """One operator's share of an inference: its node name, type and mean time per run."""

    node: str
    op: str
    ms: float


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


class Device(ABC):
    """Measures model files of one format.

    `measure` runs `runs` back-to-back inferences of an opened model and returns their median in
    milliseconds. Drift correction and statistics live in the profiling protocol, not here, so a
    device only needs a transport (load, run, time) and, for remote runtimes, a parser.
    """

    name: str = ""
    format: str = "onnx"
    can_measure: bool = True

    @abstractmethod
    def check(self) -> Availability:
        """Whether the device can measure now, or exactly why not."""

    @abstractmethod
    def describe(self) -> dict:
        """Runtime versions, threads, CPU: stored with every table this device builds."""

    @abstractmethod
    def open(self, model: Path) -> Any:
        """Load (or push) a model file; the handle goes to `measure` and `close`."""

    def open_layer(self, model: Path) -> Any:
        """Open a layer file measured alone for a table: as `open`, unless the runtime pays something at
        a lone layer's boundary that it does not pay inside a network (host: layout changes)."""
        return self.open(model)

    def layout_changes(self, model: Path) -> list:
        """The layout changes the runtime adds to `model`'s graph, each a time a kernel predictor counts
        (host: ONNX Runtime's reorders into and out of its blocked layout, latencykit.devices.nchwc.Reorder);
        none by default."""
        return []

    @abstractmethod
    def measure(self, handle: Any, runs: int) -> float:
        """Median latency in ms of `runs` inferences, back to back or each after the device's own untimed
        preparation (host writes through the cache first)."""

    def close(self, handle: Any) -> None:
        """Release what `open` took (sessions, pushed files)."""

    def profile_ops(self, model: Path, runs: int) -> list[OpTime]:
        """Per-operator mean time over `runs` inferences, for devices whose runtime has a profiler."""
        raise LatencykitError(f"device {self.name} has no per-operator profiler: --breakdown needs a runtime that "
                              "reports per-operator times (host: ONNX Runtime's profiler)")
