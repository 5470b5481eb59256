"""Predict an architecture's latency from a table: the sum of its layers' entries, vectorised."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from latencykit.arch import Arch
from latencykit.errors import TableError
from latencykit.lut.table import LatencyTable
from latencykit.space import SearchSpace


class TablePredictor:
    """Sum of the table's entries. Each slot's latency is looked up once per gene combination, so
    scoring a batch of architectures is one integer matmul and one gather.

    A removal-mode table adds its base overhead: each reference subnet's own (so the table reproduces
    its references exactly), the references' median for every other subnet.
    """

    name = "table"
    measurements = 0

    def __init__(self, table: LatencyTable, space: SearchSpace) -> None:
        table.check(space=space)
        self.table, self.space = table, space
        ms = table.rows["latency_ms"].to_dict()
        self.values = space.slot_values(lambda l: ms.get(l.key, np.nan))
        refs = table.meta.provenance.get("references", [])
        self._hash = np.random.default_rng(12345).integers(1, 2**62, size=len(space.genes))
        self._ref_hashes = np.array([int(space.encode(Arch.from_dict(r["arch"])) @ self._hash) for r in refs],
                                    dtype=np.int64)
        self._ref_overheads = np.array([r["overhead_ms"] for r in refs], dtype=float)

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        """Latency in ms for each gene row (NaN where a layer is missing from the table)."""
        genes = np.atleast_2d(genes)
        out = self.space.evaluate(self.values, genes) + self.table.meta.overhead_ms
        if len(self._ref_hashes):
            h = genes @ self._hash
            hit = np.flatnonzero(np.isin(h, self._ref_hashes))
            for i in hit:
                out[i] += self._ref_overheads[self._ref_hashes == h[i]][0] - self.table.meta.overhead_ms
        return out

    def predict_many(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.predict_genes(np.stack([self.space.encode(a) for a in archs]))

    def predict(self, arch: Arch) -> float:
        value = float(self.predict_many([arch])[0])
        if np.isnan(value):
            missing = [l.key for l in self.space.layers(arch) if l not in self.table]
            raise TableError(f"{len(missing)} layer(s) of this architecture are missing from the "
                             f"{self.table.meta.device} table: {', '.join(missing[:5])}"
                             + (" ..." if len(missing) > 5 else ""))
        return value
