"""Removal-based accounting (AutoViT section 3.3.2): a layer's entry is the latency drop when it is
taken out of a whole model, which captures what it costs in context rather than alone.

Only layers that keep their input's shape can be taken out and leave a working network; each layer
kind says which of its specs do (`LayerKind.keeps_shape`): repeated MBConv / MobileBlock layers
(stride 1, same width), transformer layers and the attention and MLP layers of ElasticViT and NASViT.
Shape-changing layers (the stem, each stage's first layer, the MobileViT local and fusion parts, the
head) keep their isolated entries, measured in the same run; stand-ins would add a cost of their own
and still leave the shape-changing layer's context effect unmeasured. Whatever the entries miss of a
reference model's measured total is its *base overhead*; the table stores each reference's, and the
`removal` predictor adds their median to every prediction (a reference's own to that reference), so
the table reproduces each of its references exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latencykit.arch import Arch
from latencykit.devices import Device, require
from latencykit.export import ExportCache, default_cache, export_network
from latencykit.errors import LatencykitError
from latencykit.layers import LAYER_KINDS, LayerSpec
from latencykit.lut.profile import ProfileResult, export_all
from latencykit.lut.protocol import REF_KEY, REFERENCE, Journal, Progress, Protocol, export_reference, measure_models
from latencykit.files import writer_lock
from latencykit.lut.table import LatencyTable, TableMeta, default_path
from latencykit.space import SearchSpace

# Every drop is base - (base without one layer), so an error in the base reading enters all N drops of a
# reference at once and their sum N times; the base is measured this many times per round (its median
# taken): the tiny test space's overhead spread from -0.67..+0.05 to -0.50..-0.02 of the median reference.
BASE_COPIES = 4
REMOVAL_PROTOCOL = Protocol(rounds=9, warmup_runs=2, min_runs=3, max_runs=20, burst_ms=20.0, ref_every=10,
                            extra_rounds=4, cv_threshold=0.03)


def removable(spec: LayerSpec) -> bool:
    """Layers whose output has their input's shape, so the network still runs without them."""
    return LAYER_KINDS.get(spec.kind).removable(spec)


def removable_counts(space: SearchSpace) -> dict[str, tuple[int, int]]:
    """Per layer kind of the space: (removable distinct layers, distinct layers)."""
    out: dict[str, tuple[int, int]] = {}
    for layer in space.distinct_layers():
        n, total = out.get(layer.kind, (0, 0))
        out[layer.kind] = (n + removable(layer), total + 1)
    return out


def check_removable(space: SearchSpace) -> None:
    """Refuse a space none of whose layers removal can take out (its table would be isolated entries
    plus an overhead, not a removal table)."""
    if not any(removable(l) for l in space.distinct_layers()):
        kinds = ", ".join(sorted({l.kind for l in space.distinct_layers()}))
        raise LatencykitError(f"space {space.name!r} has no layer removal mode can take out (its kinds {kinds} "
                              "all change shape); profile it in isolated mode")


def choose_references(space: SearchSpace, seed: int = 0, candidates: int = 300, max_refs: int = 40) -> list[Arch]:
    """The largest and smallest subnets, then greedily the random deep subnet that covers the most
    removable layers no reference covers yet, until every removable layer is covered (bounded)."""
    rng = np.random.default_rng(seed)
    target = {l for l in space.distinct_layers() if removable(l)}
    refs = [space.largest(), space.smallest()]
    covered = {l for r in refs for l in space.layers(r)} & target
    depth_genes = [space.gene_index[f"{st.name}.depth"] for st in space.stages]
    while covered != target and len(refs) < max_refs:
        genes = space.sample_genes(candidates, rng)
        genes[:, depth_genes] = space.cardinality[depth_genes] - 1  # deep subnets remove the most layers
        genes = space.canonical(genes)
        best, gain = None, set()
        for row in genes:
            arch = space.decode(row)
            new = set(space.layers(arch)) & (target - covered)
            if len(new) > len(gain):
                best, gain = arch, new
        if best is None:
            break
        refs.append(best)
        covered |= gain
    return refs


@dataclass(frozen=True)
class ReferenceResult:
    arch: Arch
    measured_ms: float
    drops: dict[int, float]  # layer position -> latency drop (ms on the table scale)


def profile_removal(space: SearchSpace, device: Device, path: Path | None = None,
                    protocol: Protocol = Protocol(), removal_protocol: Protocol = REMOVAL_PROTOCOL,
                    cache: ExportCache | None = None, seed: int = 0, progress: Progress | None = None,
                    reference_progress: Progress | None = None) -> ProfileResult:
    """Build a removal-mode table: isolated entries for every layer, then removal drops for the
    removable ones from a few reference subnets. Resumable like isolated profiling."""
    start = time.perf_counter()
    check_removable(space)
    require(device)
    cache = cache or default_cache()
    path = Path(path) if path else default_path(device.name, space.name)
    with writer_lock(path):  # one writer per table: a second run is refused at once
        layers = space.distinct_layers()
        files = export_all(layers, cache, device.format)
        reference = export_reference(cache, device.format)
        journals: list[Journal] = []

        def journal(name: str, header: dict) -> Journal:
            j = Journal(path.with_name(f"{path.name}.{name}.journal"),
                        {"device": device.name, "space": space.name, "digest": space.digest, "mode": "removal", **header})
            journals.append(j)
            return j

        iso = measure_models(device, files, reference, protocol,
                             journal("isolated", {"protocol": protocol.to_dict()}), progress, layers=files)
        scale = iso[REF_KEY].latency_ms
        refs = choose_references(space, seed)
        results = []
        for i, arch in enumerate(refs):
            specs = space.layers(arch)
            positions = [p for p, s in enumerate(specs) if removable(s)]
            base_file = export_network(specs, cache, device.format)
            models = {f"base{c}": base_file for c in range(BASE_COPIES)}
            for p in positions:
                models[str(p)] = export_network(specs[:p] + specs[p + 1:], cache, device.format)
            stats = measure_models(device, models, reference, removal_protocol,
                                   journal(f"ref{i}", {"arch": arch.to_dict(), "base_copies": BASE_COPIES,
                                                         "protocol": removal_protocol.to_dict()}))
            base = float(np.median([stats[f"base{c}"].ratio for c in range(BASE_COPIES)]))
            results.append(ReferenceResult(arch, base * scale, {p: (base - stats[str(p)].ratio) * scale for p in positions}))
            if reference_progress:
                reference_progress(i + 1, len(refs))

        drops: dict[LayerSpec, list[float]] = {}
        for r in results:
            specs = space.layers(r.arch)
            for p, d in r.drops.items():
                drops.setdefault(specs[p], []).append(d)
        entries = []
        for spec in layers:
            if spec in drops:
                d = np.array(drops[spec])
                q1, med, q3 = np.percentile(d, [25, 50, 75])
                cv = float(d.std() / abs(d.mean())) if len(d) > 1 and d.mean() else float("nan")
                entries.append({"latency_ms": float(med), "q1_ms": float(q1), "q3_ms": float(q3), "cv": cv,
                                "runs": len(d), "raw_ms": float("nan"), "ratio": float(med / scale),
                                "source": "measured", "method": "removal"})
            else:
                entries.append({**iso[spec.key].to_dict(), "source": "measured", "method": "isolated"})
        by_key = {s.key: e["latency_ms"] for s, e in zip(layers, entries)}
        ref_rows = [{"arch": r.arch.to_dict(), "measured_ms": r.measured_ms,
                     "entries_ms": sum(by_key[s.key] for s in space.layers(r.arch))} for r in results]
        for row in ref_rows:
            row["overhead_ms"] = row["measured_ms"] - row["entries_ms"]
        meta = TableMeta(device=device.name, space=space.name, space_digest=space.digest, mode="removal",
                         device_info=device.describe(),
                         protocol={**protocol.to_dict(), "removal": removal_protocol.to_dict()},
                         reference={"key": REFERENCE.key, "ms": scale, "cv": iso[REF_KEY].cv, "runs": iso[REF_KEY].runs},
                         provenance={"measured_by": "latencykit", "references": ref_rows,
                                     "removed_layers": sum(len(r.drops) for r in results),
                                     "seconds": round(time.perf_counter() - start, 1)})
        table = LatencyTable.from_entries(meta, layers, entries)
        table.write(path)
        for j in journals:
            j.remove()
        return ProfileResult(table, path, time.perf_counter() - start, 0)
