"""The drift-corrected measurement protocol shared by table profiling and whole-model validation.

Timing on shared machines drifts (up to 60% over minutes here) while ratios within one process
hold within about 2%. So every model is measured in shuffled, interleaved rounds, a fixed reference
block is measured every `ref_every` models, and each measurement is divided by its drift factor: the
reference's time where it ran (interpolated between the reference measurements before and after it)
over the reference's overall median. The machine's speed wanders within a round (a model's time follows
the reference measured next to it), so the nearest references track it better than the round's median
does (benchmarks/results/drift_correction.md). Raw figures are kept too.
Entries whose variation stays high get extra rounds. Every finished round is appended to a journal,
so an interrupted run (even `kill -9`) resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Collection, Mapping

import numpy as np
import torch

from latencykit.devices.base import Device
from latencykit.export import ExportCache, export_layer
from latencykit.files import atomic_write_text
from latencykit.layers import LayerSpec

REFERENCE = LayerSpec("mbconv", hw=32, cin=64, cout=64, kernel=3, expand=4.0)
"""The reference block measured in every round: a mid-sized inverted residual."""
REF_KEY = "__reference__"
CALL_KEY = "__call__"
"""An (almost) empty model: what one call of the runtime costs, paid once by a whole model but once
per layer by a sum of isolated entries."""

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Protocol:
    rounds: int = 15
    warmup_runs: int = 5
    min_runs: int = 3
    max_runs: int = 50
    burst_ms: float = 4.0
    ref_every: int = 20
    cv_threshold: float = 0.05
    extra_rounds: int = 10
    whole_factor: int = 4
    """Whole networks (`measure_models(whole=...)`) get `whole_factor` x `rounds` readings in all: as many as
    validation's two passes. Their readings are the labels a calibrated fit learns from, and its error on
    later sessions' subnets followed their noise (benchmarks/results/robustness.md)."""
    seed: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "reference": REFERENCE.key,
                "method": "shuffled interleaved rounds; each measurement divided by the reference block's drift "
                          "factor interpolated where it ran; per entry median, quartiles and CV over rounds"}


@dataclass(frozen=True)
class Stats:
    latency_ms: float
    q1_ms: float
    q3_ms: float
    cv: float
    runs: int
    raw_ms: float
    ratio: float

    def to_dict(self) -> dict:
        return asdict(self)


def export_reference(cache: ExportCache, fmt: str) -> Path:
    return export_layer(REFERENCE, cache, fmt)


class _Call(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0


def export_call(cache: ExportCache, fmt: str) -> Path:
    """The per-call overhead model: one elementwise add on a single number."""
    return cache.export(_Call(), (torch.zeros(1, 1),), fmt)


class Journal:
    """Append-only record of finished rounds; a torn last line (kill -9) is dropped on load."""

    def __init__(self, path: Path, header: dict) -> None:
        self.path, self.header = path, header
        self.rounds: list[dict] = []
        lines = self._read()
        if lines and lines[0] == header:
            self.rounds = lines[1:]
        self._rewrite()

    def _read(self) -> list[dict]:
        """The header and the whole rounds before the first torn or damaged line (kept no further)."""
        if not self.path.exists():
            return []
        try:
            text = self.path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return []
        out = []
        for i, line in enumerate(text.splitlines()):
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(item, dict) or (i > 0 and not _is_round(item)):
                break
            out.append(item)
        return out

    def _rewrite(self) -> None:
        atomic_write_text(self.path, "".join(json.dumps(item) + "\n" for item in [self.header, *self.rounds]))

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rounds.append(record)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _is_round(item: dict) -> bool:
    """A journal record as `measure_models` writes it: a finished round of finite times, or the end mark."""
    if item.get("phase") == "done":
        return len(item) == 1
    raw, ref, at = item.get("raw"), item.get("ref"), item.get("ref_at")
    return (item.get("phase") in ("base", "whole", "extra") and isinstance(raw, dict) and isinstance(ref, list) and bool(ref)
            and all(isinstance(k, str) for k in raw)
            and all(_finite(v) for v in [*raw.values(), *ref])
            and isinstance(at, list) and len(at) == len(ref)
            and all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= len(raw) for a in at)
            and at == sorted(at))


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def measure_models(device: Device, models: Mapping[str, Path], reference: Path, protocol: Protocol,
                   journal: Journal | None = None, progress: Progress | None = None,
                   layers: Collection[str] = (), whole: Collection[str] = ()) -> dict[str, Stats]:
    """Drift-corrected statistics for each model file, measured in interleaved rounds.

    The models keyed in `layers` are table entries, opened as lone layers (`Device.open_layer`).
    Those keyed in `whole` are whole networks, measured as validation measures them: one run per
    reading with the reference right before and after it, and `(protocol.whole_factor - 1) x
    protocol.rounds` more rounds of them alone (`whole` phase): bursts of a whole network with a
    reference only every `ref_every` models spread 2-3x more (benchmarks/results/drift_correction.md)."""
    keys, whole = list(models), set(whole)
    finished = [r for r in journal.rounds if r["phase"] != "done"] if journal else []
    if journal and len(finished) < len(journal.rounds):
        return _statistics(finished, keys)  # this measurement completed before an interruption
    handles = {k: device.open_layer(p) if k in layers else device.open(p) for k, p in models.items()}
    handles[REF_KEY] = device.open(reference)
    try:
        runs = {k: _burst_runs(device, h, protocol) for k, h in handles.items()}  # every model warmed up
        whole_keys = [k for k in keys if k in whole]
        runs.update(dict.fromkeys(whole_keys, 1))
        rounds = list(journal.rounds) if journal else []
        rng = np.random.default_rng(protocol.seed + len(rounds))
        base_left = max(protocol.rounds - sum(r["phase"] == "base" for r in rounds), 0)
        whole_rounds = (protocol.whole_factor - 1) * protocol.rounds if whole_keys else 0
        whole_left = max(whole_rounds - sum(r["phase"] == "whole" for r in rounds), 0)
        total = base_left * len(keys) + whole_left * len(whole_keys)
        done = 0

        def run_round(phase: str, subset: list[str]) -> None:
            nonlocal done
            order = list(rng.permutation(subset))
            raw: dict[str, float] = {}  # in the order measured
            ref, ref_at = [device.measure(handles[REF_KEY], runs[REF_KEY])], [0]

            def measure_reference(at: int) -> None:
                ref.append(device.measure(handles[REF_KEY], runs[REF_KEY]))
                ref_at.append(at)

            for i, key in enumerate(order):
                if key in whole and ref_at[-1] != i:
                    measure_reference(i)
                raw[key] = device.measure(handles[key], runs[key])
                if key in whole or (i + 1) % protocol.ref_every == 0 or i == len(order) - 1:
                    measure_reference(i + 1)
                done += 1
                if progress:
                    progress(done, total)
            record = {"phase": phase, "raw": raw, "ref": ref, "ref_at": ref_at}
            rounds.append(record)
            if journal:
                journal.append(record)

        for _ in range(base_left):
            run_round("base", keys)
        for _ in range(whole_left):
            run_round("whole", whole_keys)
        stats = _statistics(rounds, keys)
        noisy = [k for k in keys if stats[k].cv > protocol.cv_threshold]
        extra_done = sum(r["phase"] == "extra" for r in rounds)
        if noisy and extra_done < protocol.extra_rounds:
            total += (protocol.extra_rounds - extra_done) * len(noisy)
            for _ in range(protocol.extra_rounds - extra_done):
                run_round("extra", noisy)
            stats = _statistics(rounds, keys)
        if journal:
            journal.append({"phase": "done"})
        return stats
    finally:
        for h in handles.values():
            device.close(h)


def _burst_runs(device: Device, handle: object, protocol: Protocol) -> int:
    """Warm the model up, then pick how many back-to-back runs make one burst of about `burst_ms`."""
    t = device.measure(handle, protocol.warmup_runs)
    if not t > 0:
        return protocol.min_runs
    return int(min(max(math.ceil(protocol.burst_ms / t), protocol.min_runs), protocol.max_runs))


def _statistics(rounds: list[dict], keys: list[str]) -> dict[str, Stats]:
    ref_all = np.concatenate([r["ref"] for r in rounds])
    ref_median = float(np.median(ref_all))
    per_key: dict[str, list[tuple[float, float]]] = {k: [] for k in keys}
    for r in rounds:
        # the i-th model ran between the references taken after i and after i + 1 models
        factors = np.interp(np.arange(len(r["raw"])) + 0.5, r["ref_at"], r["ref"]) / ref_median
        for (k, v), factor in zip(r["raw"].items(), factors):
            if k in per_key:
                per_key[k].append((v / factor, v))
    out = {}
    for k, pairs in per_key.items():
        corrected = np.array([c for c, _ in pairs])
        raw = np.array([r for _, r in pairs])
        q1, med, q3 = np.percentile(corrected, [25, 50, 75])
        mean = corrected.mean()
        cv = float("nan") if len(corrected) < 2 else float(corrected.std() / mean) if mean > 0 else 0.0
        out[k] = Stats(float(med), float(q1), float(q3), cv, len(corrected), float(np.median(raw)),
                       float(med / ref_median))
    out[REF_KEY] = Stats(ref_median, *np.percentile(ref_all, [25, 75]).tolist(),
                         float(ref_all.std() / ref_all.mean()), len(ref_all), ref_median, 1.0)
    return out
