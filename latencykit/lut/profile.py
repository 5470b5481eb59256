"""Build a device's lookup table for a space: export every distinct layer, measure, write.

In the same interleaved rounds as the layers, `profile` measures a calibration set of whole subnets
spread like random subnets (latencykit.lut.calibration), stored in the table's metadata on the table's scale for a calibrated
predictor to fit on (`LatencyTable.calibration_set`) and read as validation reads whole subnets
(a reference beside each reading), and an almost empty model: the runtime's
per-call overhead, recorded in the provenance. Entries keep it: subtracting it (a sum of N entries pays
it N times, a whole model once) moved the isolated sum's bias the wrong way by about 1% in every
session of benchmarks/bias.py, since whole subnets cost a few % more than their isolated layers.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from latencykit.devices import Device, require
from latencykit.export import ExportCache, default_cache, export_layer, export_network
from latencykit.layers import LayerSpec
from latencykit.files import writer_lock
from latencykit.lut.calibration import SELECTION, select_calibration
from latencykit.lut.protocol import CALL_KEY, REF_KEY, REFERENCE, Journal, Progress, Protocol, export_call, measure_models
from latencykit.lut.table import LatencyTable, TableMeta, default_path
from latencykit.space import SearchSpace

WHOLE_READINGS = "1 run per reading, the reference before and after it, protocol.whole_factor x rounds"
"""How the calibration subnets are read (`measure_models(whole=...)`), recorded with the table."""


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
            progress: Progress | None = None, calibrate: int = 20, calibration_seed: int = 0) -> ProfileResult:
    """Measure every distinct layer of `space` on `device` (isolated mode) and write the table.

    `calibrate` whole subnets (0: none) are measured in the same rounds and stored with the table.
    Resumes from `<path>.journal` when a previous run with the same settings was interrupted.
    """
    start = time.perf_counter()
    require(device)
    cache = cache or default_cache()
    path = Path(path) if path else default_path(device.name, space.name)
    with writer_lock(path):  # one writer per table: a second run is refused at once
        layers = space.distinct_layers()
        archs = select_calibration(space, calibrate, calibration_seed)
        total = len(layers) + len(archs)
        files = export_all(layers, cache, device.format,
                           export_progress and (lambda done, _: export_progress(done, total)))
        reference = export_layer(REFERENCE, cache, device.format)
        models = {**files, CALL_KEY: export_call(cache, device.format)}
        subnets = [f"subnet{i}" for i in range(len(archs))]
        for i, (key, arch) in enumerate(zip(subnets, archs)):  # the calibration subnets, whole
            models[key] = export_network(space.layers(arch), cache, device.format)
            if export_progress:
                export_progress(len(layers) + i + 1, total)
        header = {"device": device.name, "space": space.name, "digest": space.digest,
                  "protocol": protocol.to_dict(),
                  "calibration": {"n": len(archs), "seed": calibration_seed, "readings": WHOLE_READINGS},
                  "layers": hashlib.sha256("|".join(models).encode()).hexdigest()[:16]}
        journal = Journal(path.with_name(path.name + ".journal"), header)
        resumed = len(journal.rounds)
        stats = measure_models(device, models, reference, protocol, journal, progress,
                               layers=files, whole=subnets)
        ref, call = stats[REF_KEY], stats[CALL_KEY]
        calibration = {"archs": [a.to_dict() for a in archs],
                       "measured_ms": [stats[k].latency_ms for k in subnets],
                       "ratio": [stats[k].ratio for k in subnets],
                       "seed": calibration_seed, "selection": SELECTION, "readings": WHOLE_READINGS} if archs else {}
        meta = TableMeta(device=device.name, space=space.name, space_digest=space.digest, mode="isolated",
                         device_info=device.describe(), protocol=protocol.to_dict(),
                         reference={"key": REFERENCE.key, "ms": ref.latency_ms, "cv": ref.cv, "runs": ref.runs},
                         provenance={"measured_by": "latencykit", "seconds": round(time.perf_counter() - start, 1),
                                     "call_overhead": {"ms": call.latency_ms, "cv": call.cv, "runs": call.runs}},
                         calibration=calibration)
        table = LatencyTable.from_entries(meta, layers, [{**stats[l.key].to_dict(), "source": "measured",
                                                          "method": "isolated"} for l in layers])
        table.write(path)
        journal.remove()
        return ProfileResult(table, path, time.perf_counter() - start, resumed)
