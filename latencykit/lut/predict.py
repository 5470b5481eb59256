"""Predict an architecture's latency from a table: the sum of its layers' entries, vectorised."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from latencykit.arch import Arch
from latencykit.errors import TableError
from latencykit.lut.table import LatencyTable
from latencykit.space import SearchSpace


class TablePredictor:
    """Isolated sum: each slot's latency is looked up once per gene combination, so scoring a batch
    of architectures is one integer matmul and one gather (hundreds of thousands per second)."""

    name = "table"

    def __init__(self, table: LatencyTable, space: SearchSpace) -> None:
        table.check(space=space)
        self.table, self.space = table, space
        ms = table.rows["latency_ms"].to_dict()
        self.values = space.slot_values(lambda l: ms.get(l.key, np.nan))

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        """Latency in ms for each gene row (NaN where a layer is missing from the table)."""
        return self.space.evaluate(self.values, genes)

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
