"""A device whose every number is known, for exact tests of the measurement protocol.

Each model file costs a given number of ms. On top of that the device's speed is scripted: a drift
factor per round (the whole device runs that much slower in that round, reference block included),
a wander factor per measurement (the device's speed changing within rounds, by how many measurements
it has made), noise factors for chosen models (cycled through their timed measurements), and a slow warm-up (the
first measurement after `open`). It counts every call, so a test can tell which models were measured
how often, and it can stop in a chosen round the way Ctrl-C would.

Rounds are told apart the way the protocol runs them: every round opens and closes with the
reference block, and the warm-up measures the reference last, so two reference measurements in a row
mark the start of a round.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from latencykit.devices.base import Availability, Device


def _key(path: Path | str) -> Path:
    """A model file by its real path: the export cache is reached through a link in LATENCYKIT_HOME."""
    return Path(path).resolve()


@dataclass
class _Handle:
    path: Path
    measured: int = 0  # measurements since open; the first one is the warm-up


class ScriptedDevice(Device):
    name = "scripted"
    format = "onnx"

    def __init__(self, costs: Mapping[Path, float], reference: Path, drift: Callable[[int], float] = lambda r: 1.0,
                 noise: Mapping[Path, Sequence[float]] | None = None, warmup_factor: float = 1.0,
                 stop_in_round: int | None = None, wander: Callable[[int], float] = lambda i: 1.0) -> None:
        self.costs = {_key(p): float(ms) for p, ms in costs.items()}
        self.reference = _key(reference)
        self.drift, self.noise, self.warmup_factor = drift, {_key(p): list(f) for p, f in (noise or {}).items()}, warmup_factor
        self.stop_in_round, self.wander, self.calls = stop_in_round, wander, 0
        self.round = -1
        self.timed: Counter[Path] = Counter()  # measurements after the warm-up, per model file
        self.runs: dict[Path, set[int]] = {}  # the `runs` asked for after the warm-up, per model file
        self.opened: Counter[Path] = Counter()
        self.opened_as_layer: Counter[Path] = Counter()  # through `open_layer`: table entries
        self._last: Path | None = None

    def check(self) -> Availability:
        return Availability(True)

    def describe(self) -> dict:
        return {"device": self.name, "runtime": "scripted"}

    def open(self, model: Path) -> _Handle:
        model = _key(model)
        if model not in self.costs:
            raise KeyError(f"the scripted device has no cost for {model}")
        self.opened[model] += 1
        return _Handle(model)

    def open_layer(self, model: Path) -> _Handle:
        self.opened_as_layer[_key(model)] += 1
        return self.open(model)

    def measure(self, handle: _Handle, runs: int) -> float:
        path = handle.path
        if path == self.reference and self._last == self.reference:
            self.round += 1
        self._last = path
        ms = self.costs[path] * self.drift(self.round) * self.wander(self.calls)
        self.calls += 1
        if handle.measured == 0:
            ms *= self.warmup_factor
        else:
            if self.stop_in_round is not None and self.round == self.stop_in_round and path != self.reference:
                raise KeyboardInterrupt
            factors = self.noise.get(path)
            if factors:
                ms *= factors[self.timed[path] % len(factors)]
            self.timed[path] += 1
            self.runs.setdefault(path, set()).add(runs)
        handle.measured += 1
        return ms
