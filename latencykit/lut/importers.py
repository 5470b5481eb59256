"""Import latency tables measured elsewhere into latencykit tables.

An importer reads a published file of per-block latencies and names, for each layer of a space, the
file's key for it (one to one), so a phone nobody here owns still gets a table. Layers the file lacks
are refused, or filled by a layer-level predictor (a `Filler`) and marked "predicted" in the table.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from latencykit.errors import LatencykitError, TableError
from latencykit.files import writer_lock
from latencykit.layers import LAYER_KINDS, LayerSpec
from latencykit.lut.table import LatencyTable, TableMeta, default_path
from latencykit.registry import Registry
from latencykit.space import SearchSpace

Filler = Callable[[SearchSpace, Sequence[LayerSpec], Mapping[LayerSpec, float]], Mapping[LayerSpec, float]]
"""A layer-level predictor: given the space, its missing layers and the imported (layer -> ms) entries,
the missing layers' predicted latencies in ms. Registered in FILLERS (entry points `latencykit.fillers`)."""

FILLERS: Registry[Callable[[], Filler]] = Registry("layer predictor", "latencykit.fillers")


@FILLERS.register("layer")
def layer_filler() -> Filler:
    """latencykit's `layer` predictor (one random forest per layer kind on shape features and FLOPs,
    latencykit.lut.predictors.LayerForests), fit on the imported entries."""

    def fill(space: SearchSpace, missing: Sequence[LayerSpec], known: Mapping[LayerSpec, float]) -> dict:
        from latencykit.lut.predictors import LayerForests

        return dict(zip(missing, LayerForests(known).predict_layers(list(missing))))

    return fill


@dataclass(frozen=True)
class Importer:
    """A published table format: `read` parses a file into key -> ms (raising TableError with one line
    when it is malformed or foreign); `key` names a layer's key, or None when the format cannot hold it."""

    name: str
    read: Callable[[Path], dict[str, float]]
    key: Callable[[LayerSpec], str | None]
    provenance: dict = field(default_factory=dict)


IMPORTERS: Registry[Importer] = Registry("table importer", "latencykit.importers")


@dataclass(frozen=True)
class Coverage:
    """How much of a space's distinct layers a file holds."""

    layers: int
    covered: int
    missing: tuple[str, ...]
    file_entries: int
    unused_entries: int

    @property
    def share(self) -> float:
        return self.covered / self.layers if self.layers else 1.0


@dataclass(frozen=True)
class ImportResult:
    table: LatencyTable
    coverage: Coverage
    path: Path | None = None

    def summary(self) -> dict:
        c, p = self.coverage, self.table.meta.provenance
        return {"device": self.table.meta.device, "space": self.table.meta.space, "path": str(self.path),
                "entries": len(self.table), "sources": self.table.rows["source"].value_counts().to_dict(),
                "layers": c.layers, "covered": c.covered, "coverage": c.share, "missing": list(c.missing),
                "file_entries": c.file_entries, "unused_entries": c.unused_entries,
                "file": p.get("file"), "sha256": p.get("sha256"), "measured_by": p.get("measured_by"),
                "runtime": p.get("runtime")}


# ----- nn-Meter --------------------------------------------------------------------------------------

_N = r"(\d+)"
NNMETER_PATTERNS = {
    "firstconv": re.compile(rf"firstconv_{_N}_3_{_N}_2_3"),
    "conv": re.compile(rf"conv_{_N}_{_N}_{_N}_{_N}_{_N}_hard_swish_{_N}_(se|nose)"),
    "transds": re.compile(rf"transds_{_N}_{_N}_{_N}_{_N}_{_N}"),
    "transattn": re.compile(rf"transattn_{_N}_{_N}_hard_swish_{_N}_ln"),
    "transffn": re.compile(rf"transffn_{_N}_{_N}_{_N}_hard_swish_ln"),
    "mbpool": re.compile(rf"mbpool_{_N}_{_N}_1984_6_hard_swish"),
}


def nnmeter_key(s: LayerSpec) -> str | None:
    """The nn-Meter (ElasticViT LUT) key of a layer, or None when nn-Meter's tables cannot hold it
    (each layer kind owns its key: LayerKind.importer_keys["nn-meter"])."""
    return LAYER_KINDS.get(s.kind).importer_key("nn-meter", s)


def read_nnmeter(path: Path) -> dict[str, float]:
    """An nn-Meter LUT file: one JSON object, block key -> latency in ms."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise TableError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise TableError(f"{path} is not an nn-Meter table: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise TableError(f"{path} is not an nn-Meter table: expected a non-empty JSON object of "
                         f"block key -> latency in ms, got {type(data).__name__}")
    unknown = [k for k in data if not any(p.fullmatch(k) for p in NNMETER_PATTERNS.values())]
    if len(unknown) == len(data):
        raise TableError(f"{path} is not an nn-Meter ElasticViT table: none of its {len(data)} keys is an "
                         f"nn-Meter block key (e.g. {unknown[0]!r}; expected e.g. "
                         "'conv_64_16_16_1_1_hard_swish_3_nose')")
    if unknown:
        raise TableError(f"{path} is malformed: key {unknown[0]!r} is not an nn-Meter block key")
    out: dict[str, float] = {}
    for key, value in data.items():
        ms = _positive_ms(value)
        if ms is None:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise TableError(f"{path} is malformed: {key!r} has latency {shown}; expected a positive number of ms")
        out[key] = ms
    return out


def _positive_ms(value: object) -> float | None:
    """A finite positive latency in ms, or None (not a number, NaN, infinite, zero, negative, too large)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        ms = float(value)
    except OverflowError:
        return None
    return ms if math.isfinite(ms) and ms > 0 else None


IMPORTERS.add("nn-meter", Importer(
    "nn-meter", read_nnmeter, nnmeter_key,
    {"measured_by": "nn-Meter (microsoft/nn-Meter, MIT licence)", "runtime": "TFLite CPU, 1 thread",
     "format": "nn-Meter ElasticViT block LUT (JSON key -> ms)"}))


# ----- the import ---------------------------------------------------------------------------------------

_DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_device_name(device: str) -> str:
    if not _DEVICE_NAME.fullmatch(device):
        raise LatencykitError(f"device name {device!r} must be letters, digits, '.', '_' or '-'")
    return device


def coverage(entries: Mapping[str, float], space: SearchSpace, key: Callable[[LayerSpec], str | None]) -> Coverage:
    layers = space.distinct_layers()
    keys = [key(layer) for layer in layers]
    missing = tuple(layer.key for layer, k in zip(layers, keys) if k is None or k not in entries)
    used = {k for k in keys if k is not None and k in entries}
    return Coverage(len(layers), len(layers) - len(missing), missing, len(entries), len(entries) - len(used))


def import_table(importer: str, file: str | Path, device: str, space: SearchSpace,
                 fill: Filler | None = None, fill_name: str = "") -> ImportResult:
    """Convert a published file into the device's table for `space` (not written; see `write_import`).

    Every distinct layer of the space must be in the file, or `fill` predicts the missing ones (rows
    marked source="predicted"); otherwise TableError names how many are missing and the first few.
    """
    check_device_name(device)
    imp, path = IMPORTERS.get(importer), Path(file)
    entries = imp.read(path)
    cov = coverage(entries, space, imp.key)
    layers = space.distinct_layers()
    latency = {l: entries[k] for l in layers if (k := imp.key(l)) is not None and k in entries}
    missing = [l for l in layers if l not in latency]
    predicted: Mapping[LayerSpec, float] = {}
    if missing:
        if fill is None:
            keyless = sum(imp.key(l) is None for l in missing)
            why = f"; {keyless} of them have no {imp.name} key at all (the format cannot describe them)" if keyless else ""
            raise TableError(f"{path.name} lacks {len(missing)} of the {len(layers)} layers of space {space.name!r} "
                             f"({cov.share:.1%} covered), e.g. {', '.join(l.key for l in missing[:3])}{why}; "
                             "pass a layer predictor to fill them (--fill)")
        predicted = fill(space, missing, latency)
        unfilled = [l.key for l in missing if not math.isfinite(predicted.get(l, math.nan))]
        if unfilled:
            raise TableError(f"layer predictor {fill_name or 'fill'} left {len(unfilled)} layer(s) without a "
                             f"latency, e.g. {unfilled[0]}")
    specs = list(latency) + missing
    stats = ([{"latency_ms": latency[l], "source": "imported"} for l in latency]
             + [{"latency_ms": float(predicted[l]), "source": "predicted"} for l in missing])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    provenance = {**imp.provenance, "importer": imp.name, "file": str(path.resolve()), "sha256": digest,
                  "file_entries": cov.file_entries, "covered": cov.covered, "layers": cov.layers,
                  "filled": len(missing), "filled_by": fill_name if missing else ""}
    meta = TableMeta(device=device, space=space.name, space_digest=space.digest, mode="imported",
                     device_info={"name": device, "runtime": imp.provenance.get("runtime", ""),
                                  "attached": False, "note": "table only, no device attached"},
                     provenance=provenance)
    return ImportResult(LatencyTable.from_entries(meta, specs, stats), cov)


def write_import(importer: str, file: str | Path, device: str, space: SearchSpace, out: str | Path | None = None,
                 fill: Filler | None = None, fill_name: str = "") -> ImportResult:
    """`import_table`, then write the table (atomically) to `out` or the device's default path."""
    result = import_table(importer, file, device, space, fill, fill_name)  # a bad file touches no table
    target = Path(out) if out else default_path(device, space.name)
    with writer_lock(target):  # one writer per table: refused while a profile writes it
        path = result.table.write(target)
    return ImportResult(result.table, result.coverage, path)
