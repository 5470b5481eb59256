"""How in-process runtimes (host, host-litert) time a run.

With one thread the runtime computes on the calling thread, so that thread's CPU time is the latency
and is immune to other processes sharing the cores (wall time inflates a 12 ms model 2-3x under
load, but a 1 ms reference block hardly at all, which no reference correction can undo). With more
threads only wall time means latency.

A layer run back to back finds its weights in the core's cache, where inside a network the other
layers have just pushed them out; `Evictor` writes a buffer through the cache before every timed run
so both meet the same cache state (benchmarks/results/composition.md). The buffer is a quarter of the
last-level cache, at most 8 MiB (`default_evict_mib`): writing as much as the whole last level also
pushes out the runtime's own code and state, which a network keeps hot, and each isolated layer then pays
a cold start a whole network pays once (on a 2-core EPYC with an 8 MiB L3, an almost empty model took
8 µs with no eviction, 12 µs after 2 MiB, 19 µs after 4 and 77-91 µs after 8).
"""

from __future__ import annotations

import time
from pathlib import Path
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


EVICT_MAX_MIB = 8.0
"""The eviction measured best where the last level is large (composition.md: 8 MiB, against 0, 4 and 12)."""


def last_level_cache_mib(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> float | None:
    """Size of this CPU's last-level data cache in MiB, from Linux's sysfs; None where it cannot be read."""
    best: tuple[int, float] | None = None
    try:
        for index in root.glob("index*"):
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip().upper()
            units = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}
            mib = float(size[:-1]) * units[size[-1]] if size[-1] in units else float(size) / 2**20
            if best is None or level > best[0]:
                best = (level, mib)
    except (OSError, ValueError):
        return None
    return best[1] if best else None


def default_evict_mib() -> float:
    """A quarter of the last-level cache, at most EVICT_MAX_MIB (that, where the cache size is unknown)."""
    llc = last_level_cache_mib()
    return EVICT_MAX_MIB if llc is None else min(EVICT_MAX_MIB, llc / 4)


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
