"""Build a device's lookup table for a space: export every distinct layer, measure, write."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from latencykit.devices import Device, require
from latencykit.export import ExportCache, default_cache
from latencykit.layers import LayerSpec
from latencykit.lut.protocol import REF_KEY, REFERENCE, Journal, Progress, Protocol, export_layer, measure_models
from latencykit.files import writer_lock
from latencykit.lut.table import LatencyTable, TableMeta, default_path
from latencykit.space import SearchSpace


@dataclass(frozen=True)
class ProfileResult:
    table: LatencyTable
    path: Path
    seconds: float
    resumed_rounds: int

    def summary(self) -> dict:
        return {**self.table.summary(), "path": str(self.path), "seconds": round(self.seconds, 1),
                "resumed_rounds": self.resumed_rounds}


def export_all(layers: list[LayerSpec], cache: ExportCache, fmt: str,
               progress: Progress | None = None) -> dict[str, Path]:
    """Every layer exported alone, keyed by layer key."""
    files = {}
    for i, layer in enumerate(layers):
        files[layer.key] = export_layer(layer, cache, fmt)
        if progress:
            progress(i + 1, len(layers))
    return files


def profile(space: SearchSpace, device: Device, path: Path | None = None, protocol: Protocol = Protocol(),
            cache: ExportCache | None = None, export_progress: Progress | None = None,
            progress: Progress | None = None) -> ProfileResult:
    """Measure every distinct layer of `space` on `device` (isolated mode) and write the table.

    Resumes from `<path>.journal` when a previous run with the same settings was interrupted.
    """
    start = time.perf_counter()
    require(device)
    cache = cache or default_cache()
    path = Path(path) if path else default_path(device.name, space.name)
    with writer_lock(path):  # one writer per table: a second run is refused at once
        layers = space.distinct_layers()
        files = export_all(layers, cache, device.format, export_progress)
        reference = export_layer(REFERENCE, cache, device.format)
        header = {"device": device.name, "space": space.name, "digest": space.digest,
                  "protocol": protocol.to_dict(),
                  "layers": hashlib.sha256("|".join(files).encode()).hexdigest()[:16]}
        journal = Journal(path.with_name(path.name + ".journal"), header)
        resumed = len(journal.rounds)
        stats = measure_models(device, files, reference, protocol, journal, progress)
        ref = stats[REF_KEY]
        meta = TableMeta(device=device.name, space=space.name, space_digest=space.digest, mode="isolated",
                         device_info=device.describe(), protocol=protocol.to_dict(),
                         reference={"key": REFERENCE.key, "ms": ref.latency_ms, "cv": ref.cv, "runs": ref.runs},
                         provenance={"measured_by": "latencykit", "seconds": round(time.perf_counter() - start, 1)})
        table = LatencyTable.from_entries(meta, layers, [{**stats[l.key].to_dict(), "source": "measured",
                                                          "method": "isolated"} for l in layers])
        table.write(path)
        journal.remove()
        return ProfileResult(table, path, time.perf_counter() - start, resumed)
