"""Whole-model measurement sets: measured latencies of whole architectures on one device, as data.

A set is imported from a CSV (`arch,ms` rows, or one device column of a wide CSV such as the
NAS-Bench-201 latency file) or measured on an attached device (`measure-set`), and stored as JSON
under $LATENCYKIT_HOME/measurements/DEVICE/SPACE.json with its provenance (file, sha256, column,
count). Predictors that learn from whole models (`transfer`, `calibrated`, `flops`) read it.

A device known only by a measurement set has no lookup table; `table_for` then stands in an empty
table of mode `measured` (no layers), so predictors bind to the device as to any other.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latencykit.arch import Arch
from latencykit.errors import ArchitectureError, LatencykitError, TableError
from latencykit.files import atomic_write_text
from latencykit.lut.predictors import Measured
from latencykit.lut.table import LatencyTable, TableMeta, default_path, load_table, now
from latencykit.paths import home
from latencykit.space import SearchSpace

SCHEMA = "latencykit.measurements"
SCHEMA_VERSION = 1


class MeasurementError(LatencykitError):
    """A measurement file or set that cannot be read, imported or used."""


@dataclass(frozen=True)
class MeasurementSet:
    """Whole-model latencies (ms) of architectures of one space on one device."""

    device: str
    space: str
    space_digest: str
    archs: tuple[Arch, ...]
    latency_ms: np.ndarray
    provenance: dict = field(default_factory=dict)
    created: str = ""

    def __len__(self) -> int:
        return len(self.archs)

    def measured(self) -> Measured:
        return Measured(self.archs, self.latency_ms)

    def genes(self, space: SearchSpace) -> np.ndarray:
        return np.stack([space.encode(a) for a in self.archs])

    def summary(self) -> dict:
        ms = self.latency_ms
        return {"device": self.device, "space": self.space, "count": len(self), "created": self.created,
                "min_ms": float(ms.min()), "median_ms": float(np.median(ms)), "max_ms": float(ms.max()),
                **self.provenance}

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "device": self.device, "space": self.space,
                "space_digest": self.space_digest, "created": self.created, "provenance": self.provenance,
                "archs": [a.to_text() for a in self.archs], "latency_ms": self.latency_ms.tolist()}

    def write(self, path: Path | None = None) -> Path:
        """Write atomically (a reader sees the old set or the new one) to `path` or the default place."""
        return atomic_write_text(path or set_path(self.device, self.space), json.dumps(self.to_dict()) + "\n")


def set_path(device: str, space: str) -> Path:
    return home() / "measurements" / device / f"{space}.json"


def read_set(path: Path, space: SearchSpace, parsed: dict[str, Arch] | None = None) -> MeasurementSet:
    """A stored set, refused when it is not one or was made for another space (or version of it).

    `parsed` maps architecture texts already parsed and validated to their Arch: sets of one space
    share most architectures, so reading many of them parses each only once."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MeasurementError(f"cannot read measurement set {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MeasurementError(f"{path} is not a latencykit measurement set (not JSON); import it again") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise MeasurementError(f"{path} is not a latencykit measurement set")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise MeasurementError(f"{path} has measurement-set schema {doc.get('schema_version')}, this latencykit "
                               f"reads {SCHEMA_VERSION}: import it again")
    if doc.get("space") != space.name or doc.get("space_digest") != space.digest:
        raise MeasurementError(f"{path} was made for space {doc.get('space')!r} (digest {doc.get('space_digest')}), "
                               f"not {space.name!r} ({space.digest}): import it again")
    try:
        parsed = {} if parsed is None else parsed
        archs = tuple(parsed[a] if a in parsed else parsed.setdefault(a, space.validate(Arch.from_json(a)))
                      for a in doc["archs"])
        return MeasurementSet(str(doc["device"]), space.name, space.digest, archs,
                              np.asarray(doc["latency_ms"], dtype=float), dict(doc.get("provenance") or {}),
                              str(doc.get("created", "")))
    except (ArchitectureError, KeyError, TypeError, ValueError) as exc:
        raise MeasurementError(f"{path} is a malformed measurement set ({type(exc).__name__}: {exc})") from None


def load_set(device: str, space: SearchSpace) -> MeasurementSet | None:
    """The device's stored set for `space`, or None."""
    path = set_path(device, space.name)
    return read_set(path, space) if path.is_file() else None


def other_sets(device: str, space: SearchSpace) -> list[MeasurementSet]:
    """Every other device's stored set for `space`, by device name."""
    root = home() / "measurements"
    paths = sorted(root.glob(f"*/{space.name}.json")) if root.is_dir() else []
    parsed: dict[str, Arch] = {}
    return [read_set(p, space, parsed) for p in paths if p.parent.name != device]


# ----- importing a CSV ----------------------------------------------------------------------------

def read_csv(file: Path, space: SearchSpace, column: str | None = None) -> tuple[list[Arch], np.ndarray, str]:
    """Rows of (architecture, ms) from a CSV with an `arch` column and an `ms` column (or `column`).
    Each bad row is refused with one line naming its row number. Returns archs, ms and the column used."""
    try:
        with open(file, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise MeasurementError(f"cannot read {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise MeasurementError(f"{file} is not a text CSV file") from None
    if not rows:
        raise MeasurementError(f"{file} is empty; expected a header `arch,ms` and one row per architecture")
    header = [h.strip() for h in rows[0]]
    if "arch" not in header:
        raise MeasurementError(f"{file} has no `arch` column (its header: {', '.join(header)}); "
                               "expected a header `arch,ms`")
    col = column or next((c for c in ("ms", "latency_ms") if c in header), None)
    if col is None or col not in header:
        others = [h for h in header if h not in ("arch", "index")]
        raise MeasurementError(f"{file} has no {'column ' + repr(col) if col else '`ms` column'}; "
                               f"name the latency column with --column (one of: {', '.join(others)})")
    ia, im = header.index("arch"), header.index(col)
    archs: list[Arch] = []
    ms: list[float] = []
    seen: dict[Arch, int] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) <= max(ia, im):
            raise MeasurementError(f"{file}, line {n}: has {len(row)} fields, expected at least {max(ia, im) + 1}")
        try:
            arch = space.validate(Arch.from_json(row[ia]))
        except ArchitectureError as exc:
            raise MeasurementError(f"{file}, line {n}: not an architecture of {space.name}: {exc}") from None
        try:
            value = float(row[im])
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise MeasurementError(f"{file}, line {n}: latency {row[im]!r} in column {col!r} is not a positive "
                                   "number of ms")
        if arch in seen:
            raise MeasurementError(f"{file}, line {n}: repeats the architecture of line {seen[arch]}; "
                                   "keep one measurement per architecture (e.g. their mean)")
        seen[arch] = n
        archs.append(arch)
        ms.append(value)
    if not archs:
        raise MeasurementError(f"{file} has a header but no rows")
    return archs, np.asarray(ms), col


def import_set(file: str | Path, device: str, space: SearchSpace, column: str | None = None,
               out: Path | None = None) -> tuple[MeasurementSet, Path]:
    """Read a CSV of whole-model latencies for `device` and store it as the device's set (atomically)."""
    from latencykit.lut.importers import check_device_name

    check_device_name(device)
    path = Path(file)
    archs, ms, col = read_csv(path, space, column)
    provenance = {"source": "imported", "file": str(path.resolve()),
                  "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "column": col, "count": len(archs)}
    result = MeasurementSet(device, space.name, space.digest, tuple(archs), ms, provenance, now())
    return result, result.write(out)


def measured_set(device: str, space: SearchSpace, archs: list[Arch], latency_ms: np.ndarray,
                 provenance: dict) -> MeasurementSet:
    return MeasurementSet(device, space.name, space.digest, tuple(archs), np.asarray(latency_ms, dtype=float),
                          {"source": "measured", "count": len(archs), **provenance}, now())


# ----- a table for a device known by its measurements ------------------------------------------------

def table_for(device: str, space: SearchSpace, path: Path | None = None) -> LatencyTable:
    """The device's lookup table; for a device with only a measurement set, an empty stand-in table of
    mode `measured` (no layers), dated by the set, so whole-model predictors can serve it."""
    table_file = Path(path) if path else default_path(device, space.name)
    if path is not None or table_file.exists():
        return load_table(device, space, path)
    found = load_set(device, space)
    if found is None:
        return load_table(device, space)  # raises the usual "no table" error
    meta = TableMeta(device=device, space=space.name, space_digest=space.digest, mode="measured",
                     device_info={"name": device, "attached": False, "note": "whole-model measurements only"},
                     provenance={"measurements": set_path(device, space.name).name, **found.provenance},
                     created=found.created)
    return LatencyTable.from_entries(meta, [], [])


__all__ = ["MeasurementError", "MeasurementSet", "TableError", "import_set", "load_set", "measured_set",
           "other_sets", "read_set", "set_path", "table_for"]
