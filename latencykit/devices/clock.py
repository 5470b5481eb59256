"""How in-process runtimes (host, host-litert) time a run.

With one thread the runtime computes on the calling thread, so that thread's CPU time is the latency
and is immune to other processes sharing the cores (wall time inflates a 12 ms model 2-3x under
load, but a 1 ms reference block hardly at all, which no reference correction can undo). With more
threads only wall time means latency.

A layer run back to back finds its weights in the core's cache, where inside a network the other
layers have just pushed them out; `Evictor` writes a buffer through the cache before every timed run
so both meet the same cache state (benchmarks/results/composition.md).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

DESCRIPTION = {"cpu": "calling thread's CPU time", "wall": "wall time"}


def resolve(threads: int, clock: str = "auto") -> str:
    """The clock to use: `cpu` for one thread and `wall` for more, unless asked for explicitly."""
    if threads < 1:
        raise ValueError("threads must be at least 1")
    if clock not in ("auto", "cpu", "wall"):
        raise ValueError("clock must be auto, cpu or wall")
    if clock == "cpu" and threads > 1:
        raise ValueError("the cpu clock times the calling thread only; use it with threads=1")
    return ("cpu" if threads == 1 else "wall") if clock == "auto" else clock


class Evictor:
    """Writes `mib` MiB, one store per 64-byte cache line, pushing earlier data out of the core's caches."""

    def __init__(self, mib: float) -> None:
        if not mib >= 0:
            raise ValueError("the eviction buffer must be 0 MiB (off) or more")
        self.buffer = np.zeros(int(mib * 2**20) // 8)

    def __call__(self) -> None:
        self.buffer[::8] += 1.0


def median_ms(run: Callable[[], object], runs: int, clock: str,
              before: Callable[[], object] | None = None) -> float:
    """Median latency in ms of `runs` calls of `run`, each after an untimed call of `before` if given."""
    now = time.thread_time if clock == "cpu" else time.perf_counter
    times = np.empty(runs)
    for i in range(runs):
        if before is not None:
            before()
        t0 = now()
        run()
        times[i] = now() - t0
    return float(np.median(times) * 1e3)
