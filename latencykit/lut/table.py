"""Per-device lookup tables: one row per distinct layer, stored as Parquet with metadata.

Every latency states where it came from in the `source` column: measured, predicted or imported.
Entries are stored in milliseconds at the time of profiling; `ratio` is the same figure divided by
the reference block measured in the same rounds, which is what survives drift between sessions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from latencykit.version import __version__
from latencykit.errors import TableError
from latencykit.files import atomic_write
from latencykit.paths import table_path
from latencykit.layers import LayerSpec

if TYPE_CHECKING:  # for an annotation only
    from latencykit.arch import Arch

FORMAT_VERSION = 1
META_KEY = b"latencykit"
SUM_KEY = b"latencykit.sha256"
SOURCES = ("measured", "predicted", "imported")
SPEC_COLUMNS = [f.name for f in fields(LayerSpec)]
STAT_COLUMNS = ["latency_ms", "q1_ms", "q3_ms", "cv", "runs", "raw_ms", "ratio", "source", "method"]
"""`source`: measured, predicted or imported. `method`: how a measured entry was obtained (isolated, removal)."""


@dataclass(frozen=True)
class TableMeta:
    device: str
    space: str
    space_digest: str
    mode: str = "isolated"
    device_info: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    created: str = ""
    latencykit_version: str = __version__
    format_version: int = FORMAT_VERSION


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


default_path = table_path


class LatencyTable:
    """A table's rows (a DataFrame indexed by layer key) and its metadata."""

    def __init__(self, meta: TableMeta, rows: pd.DataFrame) -> None:
        missing = set(SPEC_COLUMNS + ["key", "latency_ms", "source"]) - set(rows.columns)
        if missing:
            raise TableError(f"table rows lack column(s): {', '.join(sorted(missing))}")
        bad = set(rows["source"]) - set(SOURCES)
        if bad:
            raise TableError(f"table has unknown source(s) {sorted(bad)}; expected {SOURCES}")
        self.meta = meta
        self.rows = rows.set_index("key", drop=False)

    @classmethod
    def from_entries(cls, meta: TableMeta, specs: Iterable[LayerSpec], stats: Iterable[dict]) -> "LatencyTable":
        records = [{"key": s.key, **asdict(s), **st} for s, st in zip(specs, stats)]
        df = pd.DataFrame.from_records(records, columns=None if records else ["key", *SPEC_COLUMNS, "latency_ms"])
        for col in STAT_COLUMNS:
            if col not in df:
                df[col] = {"source": "measured", "method": meta.mode}.get(col, float("nan"))
        return cls(meta if meta.created else replace(meta, created=now()), df)

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, spec: LayerSpec) -> bool:
        return spec.key in self.rows.index

    def latency(self, spec: LayerSpec) -> float:
        try:
            return float(self.rows.at[spec.key, "latency_ms"])
        except KeyError:
            raise TableError(f"layer {spec.key} is not in the {self.meta.device}/{self.meta.space} table") from None

    def calibration_set(self, space: "object") -> "tuple[list[Arch], np.ndarray] | None":
        """The whole subnets measured with this table (ms on its scale), or None when it has none
        (a hand-made or imported table, or one profiled with `--calibrate 0`)."""
        from latencykit.arch import Arch

        cal = self.meta.calibration
        if not cal or not cal.get("archs"):
            return None
        archs = [getattr(space, "validate")(Arch.from_dict(a)) for a in cal["archs"]]
        return archs, np.asarray(cal["measured_ms"], dtype=float)

    def specs(self) -> list[LayerSpec]:
        return [LayerSpec(**{c: _py(r[c]) for c in SPEC_COLUMNS}) for r in self.rows.to_dict("records")]

    def check(self, device: str | None = None, space: "object | None" = None) -> "LatencyTable":
        """Refuse a table built for another device or space (or another version of the space)."""
        if device is not None and device != self.meta.device:
            raise TableError(f"this table was built for device {self.meta.device!r}, not {device!r}")
        if space is not None:
            name, digest = getattr(space, "name"), getattr(space, "digest")
            if name != self.meta.space:
                raise TableError(f"this table was built for space {self.meta.space!r}, not {name!r}")
            if digest != self.meta.space_digest:
                raise TableError(f"space {name!r} has changed since this table was built "
                                 f"(digest {self.meta.space_digest} vs {digest}); profile it again")
        return self

    def write(self, path: str | Path) -> Path:
        """Write atomically: a reader sees the old file or the new one, never half of one."""
        path = Path(path)
        table = pa.Table.from_pandas(self.rows.reset_index(drop=True), preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[META_KEY] = json.dumps(asdict(self.meta)).encode()
        meta[SUM_KEY] = _checksum(table, meta).encode()
        table = table.replace_schema_metadata(meta)
        return atomic_write(path, lambda tmp: pq.write_table(table, tmp, write_page_checksum=True))

    @classmethod
    def read(cls, path: str | Path) -> "LatencyTable":
        path = Path(path)
        if not path.exists():
            raise TableError(f"no table at {path}")
        try:
            table = pq.read_table(path, page_checksum_verification=True)
            raw = (table.schema.metadata or {}).get(META_KEY)
            if raw is None:
                raise TableError(f"{path} is a Parquet file but not a latencykit table")
            stored = dict(table.schema.metadata or {})
            if SUM_KEY in stored and stored.pop(SUM_KEY) != _checksum(table, stored).encode():  # older: none
                raise TableError(f"{path} is corrupt (its checksum does not match its content); "
                                 "delete it and profile again")
            meta_dict = json.loads(raw)
            if not isinstance(meta_dict, dict):
                raise TableError(f"{path} is a Parquet file but not a latencykit table")
        except TableError:
            raise
        except Exception as exc:
            raise TableError(f"{path} is corrupt or truncated ({type(exc).__name__}); "
                             "delete it and profile again") from None
        version = meta_dict.get("format_version", 0)
        if not isinstance(version, int):
            raise TableError(f"{path} is corrupt (table format {version!r}); delete it and profile again")
        if version > FORMAT_VERSION:
            raise TableError(f"{path} was written by a newer latencykit (table format "
                             f"{meta_dict['format_version']}); upgrade latencykit")
        known = {f.name for f in fields(TableMeta)}
        try:
            meta = TableMeta(**{k: v for k, v in meta_dict.items() if k in known})
            return cls(meta, table.to_pandas())
        except TableError:
            raise
        except Exception as exc:
            raise TableError(f"{path} is corrupt ({type(exc).__name__}); delete it and profile again") from None

    def summary(self) -> dict:
        counts = self.rows["source"].value_counts().to_dict()
        return {"device": self.meta.device, "space": self.meta.space, "mode": self.meta.mode,
                "entries": len(self), "sources": counts, "created": self.meta.created,
                "reference": self.meta.reference, "total_ms": float(self.rows["latency_ms"].sum())}


def _checksum(table: pa.Table, metadata: dict[bytes, bytes]) -> str:
    """sha256 of the rows' values and all metadata (ours and pandas'): a flipped byte that Parquet itself
    does not catch (in the footer, in pandas' column names) makes the table refused, never silently wrong."""
    h = hashlib.sha256()
    for key in sorted(metadata):
        h.update(len(key).to_bytes(8, "little") + key + len(metadata[key]).to_bytes(8, "little") + metadata[key])
    h.update(json.dumps([table.column_names, [table.column(c).to_pylist() for c in table.column_names]],
                        default=str).encode())
    return h.hexdigest()


def _py(value: object) -> object:
    return value.item() if hasattr(value, "item") else value


def load_table(device: str, space: "object", path: Path | None = None) -> LatencyTable:
    """The table for (device, space), refusing one built for anything else."""
    name = getattr(space, "name")
    path = Path(path) if path else default_path(device, name)
    if not path.exists():
        raise TableError(f"no {device} table for space {name} at {path}; build one with "
                         f"`latencykit profile --device {device} --space {name}`"
                         " (or import published measurements with `latencykit lut import`)")
    return LatencyTable.read(path).check(device=device, space=space)
