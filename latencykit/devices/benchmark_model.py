"""Parse the timings TFLite's `benchmark_model` prints; the three formats its versions use.

- `Timings (microseconds): count=50 first=... curr=... min=... max=... avg=... std=...`
  (the stat-summarizer line of older builds);
- `Average inference timings in us: Warmup: ..., Init: ..., no stats: ...` (TF 1.x builds);
- `Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ..., Inference (avg): ...`
  (current builds), whose timed run's `count=... avg=... std=...` line precedes it.

The device's latency is benchmark_model's reported average of the timed runs (it does not
print a median); the parser keeps every figure found so tables can record them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from latencykit.errors import LatencykitError

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_STATS = re.compile(r"count=(\d+)(?:\s+first=" + _NUM + r")?(?:\s+curr=" + _NUM + r")?"
                    r"(?:\s+min=" + _NUM + r")?(?:\s+max=" + _NUM + r")?\s+avg=" + _NUM
                    + r"(?:\s+std=" + _NUM + r")?")
_TIMINGS = re.compile(r"Timings \(microseconds\):\s*(.*)")
_AVERAGE = re.compile(r"Average inference timings in us:\s*(.*)")
_INFERENCE = re.compile(r"\bInference timings in us:\s*(.*)")  # capital I: not "Average inference"
_PAIR = re.compile(r"([A-Za-z][A-Za-z ()]*?):\s*" + _NUM)


class BenchmarkOutputError(LatencykitError):
    """benchmark_model printed no timings (it failed, or its output format is unknown)."""


@dataclass(frozen=True)
class BenchmarkResult:
    avg_us: float
    format: str  # "timings", "average" or "inference"
    std_us: float | None = None
    count: int | None = None
    min_us: float | None = None
    max_us: float | None = None
    init_us: float | None = None
    first_us: float | None = None
    warmup_avg_us: float | None = None

    @property
    def avg_ms(self) -> float:
        return self.avg_us / 1e3


def _pairs(text: str) -> dict[str, float]:
    return {k.strip().lower(): float(v) for k, v in _PAIR.findall(text)}


def _stats(line: str) -> dict:
    m = _STATS.search(line)
    if not m:
        return {}
    count, first, _curr, lo, hi, avg, std = m.groups()
    return {"count": int(count), "first_us": _f(first), "min_us": _f(lo), "max_us": _f(hi),
            "avg_us": float(avg), "std_us": _f(std)}


def _f(value: str | None) -> float | None:
    return None if value is None else float(value)


def _checked(**figures) -> BenchmarkResult:
    """A result whose average is a real duration; anything else is refused, never stored in a table."""
    avg = figures["avg_us"]
    if not (math.isfinite(avg) and avg > 0):
        raise BenchmarkOutputError(f"benchmark_model reported an average of {avg:g} us; expected a positive time")
    return BenchmarkResult(**figures)


def parse(output: str) -> BenchmarkResult:
    """The timed runs' figures from benchmark_model's output (stdout and stderr together)."""
    m = _INFERENCE.search(output)
    if m:
        pairs = _pairs(m.group(1))
        avg = pairs.get("inference (avg)")
        if avg is not None:
            # the timed run's stats line is the last count=... line before the summary
            before = [s for s in (_stats(line) for line in output[:m.start()].splitlines()) if s]
            stats = before[-1] if before else {}
            stats = {k: v for k, v in stats.items() if k not in ("avg_us", "first_us")}
            return _checked(avg_us=avg, format="inference", init_us=pairs.get("init"),
                                   first_us=pairs.get("first inference"),
                                   warmup_avg_us=pairs.get("warmup (avg)"), **stats)
    m = _AVERAGE.search(output)
    if m:
        pairs = _pairs(m.group(1))
        avg = pairs.get("no stats", pairs.get("inference"))
        if avg is not None:
            return _checked(avg_us=avg, format="average", init_us=pairs.get("init"),
                                   warmup_avg_us=pairs.get("warmup"))
    found = [s for s in (_stats(m.group(1)) for m in _TIMINGS.finditer(output)) if s]
    if found:
        return _checked(format="timings", **found[-1])
    tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:]) or "no output"
    raise BenchmarkOutputError(f"benchmark_model printed no timings: {tail}")
