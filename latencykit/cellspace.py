"""Cell search spaces (NAS-Bench-201): one cell of `nodes` nodes, each edge one op, repeated in stages.

An architecture is its cell (`Arch.cell`, one op per edge in the cell string's order), so the genes
are the edges. The network is stem, `stages` x (`cells_per_stage` cells), a residual reduction block
between stages (doubling the width, halving the map), and a head. Each edge of each cell is one layer
(its op at that cell's resolution and width) and one slot of the generic slot machinery, so tables,
sums, params and FLOPs work as for the stage spaces; `blocks.build` assembles the cells from the
layer list, six edge layers per cell (4 nodes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from latencykit.arch import Arch
from latencykit.errors import ArchitectureError, LatencykitError
from latencykit.layers import LayerSpec
from latencykit.space import Gene, HeadSpec, SearchSpace, Slot, StemSpec

ACT = "relu"


@dataclass(frozen=True)
class CellSpace(SearchSpace):
    ops: tuple[str, ...] = ()
    op_layers: tuple[tuple[str, int], ...] = ()
    """Per op: (layer kind, kernel)."""
    channels: int = 16
    cells_per_stage: int = 5
    levels: int = 3
    nodes: int = 4
    classes: int = 10

    @classmethod
    def from_dict(cls, data: dict, origin: str = "<dict>") -> "CellSpace":
        try:
            ops = {str(k): dict(v) for k, v in data["ops"].items()}
            space = cls(
                name=data["name"], resolution=(int(data["resolution"]),),
                stem=StemSpec(widths=(int(data["channels"]),), kernel=3, stride=1), stages=(),
                head=HeadSpec(kind="nb201_head", classes=int(data["classes"])), act=ACT,
                description=data.get("description", ""), notes=tuple(data.get("notes", ())),
                paper=data.get("paper", {}),
                digest=hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16],
                ops=tuple(ops), op_layers=tuple((v["kind"], int(v.get("kernel", 0))) for v in ops.values()),
                channels=int(data["channels"]), cells_per_stage=int(data["cells_per_stage"]),
                levels=int(data["stages"]), nodes=int(data["nodes"]), classes=int(data["classes"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LatencykitError(f"space file {origin} is malformed: {type(exc).__name__}: {exc}") from None
        if space.nodes < 2 or len(space.ops) < 2 or space.resolution[0] % 2 ** (space.levels - 1):
            raise LatencykitError(f"space file {origin}: a cell space needs 2+ nodes, 2+ ops and a resolution "
                                  f"divisible by {2 ** (space.levels - 1)}")
        for i, (kind, _) in enumerate(space.op_layers):
            space._op_layer(i, 8, 8)  # an unknown layer kind fails here, naming itself
        return space

    # -- genes: one per edge ---------------------------------------------------------------------
    @cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(from node, to node) per edge, in the cell string's order."""
        return tuple((i, j) for j in range(1, self.nodes) for i in range(j))

    @cached_property
    def genes(self) -> tuple[Gene, ...]:
        return tuple(Gene(f"node{j}<-{i}", self.ops) for i, j in self.edges)

    def encode(self, arch: Arch) -> np.ndarray:
        arch = self.validate(arch)
        return np.array([self.ops.index(op) for op in arch.cell], dtype=np.int64)

    def decode(self, genes) -> Arch:
        return Arch(self.resolution[0], self.channels, (), cell=tuple(self.ops[int(g)] for g in genes))

    def canonical(self, genes: np.ndarray) -> np.ndarray:
        """Every gene row is its own architecture (cells with unreachable outputs included)."""
        return np.array(genes, dtype=np.int64, copy=True)

    def size(self) -> int:
        return len(self.ops) ** len(self.edges)

    def all_genes(self) -> np.ndarray:
        """Every architecture of the space as gene rows (the first edge's op varies slowest)."""
        grids = np.meshgrid(*[np.arange(len(self.ops))] * len(self.edges), indexing="ij")
        return np.stack([g.ravel() for g in grids], axis=1).astype(np.int64)

    def largest(self) -> Arch:
        """The cell whose every edge is its costliest op (by FLOPs)."""
        flops = [self._op_layer(i, self.resolution[0], self.channels).flops for i in range(len(self.ops))]
        return self.decode([int(np.argmax(flops))] * len(self.edges))

    def validate(self, arch: Arch) -> Arch:
        """Raise ArchitectureError naming the offending edge; return the arch with the space's fixed
        resolution and stem filled in (a cell string gives neither)."""
        if not isinstance(arch, Arch):
            raise ArchitectureError(f"{self.name}: expected an Arch, got {type(arch).__name__}")
        if arch.stages or arch.head or arch.resolution not in (0, self.resolution[0]) \
                or arch.stem not in (0, self.channels):
            raise ArchitectureError(f"{self.name}: a cell space's architecture is a cell string, e.g. "
                                    f"{self.decode([len(self.ops) - 1] * len(self.edges)).cell_string}")
        if len(arch.cell) != len(self.edges):
            raise ArchitectureError(f"{self.name}: the cell has {len(arch.cell)} edges; this space's cell has "
                                    f"{self.nodes} nodes, so {len(self.edges)} edges")
        for (i, j), op in zip(self.edges, arch.cell):
            if op not in self.ops:
                raise ArchitectureError(f"{self.name}: edge {op}~{i} into node {j}: {op!r} is not one of "
                                        f"{', '.join(self.ops)}")
        return replace(arch, resolution=self.resolution[0], stem=self.channels)

    # -- layers and slots ----------------------------------------------------------------------------
    def _op_layer(self, op: int, hw: int, channels: int) -> LayerSpec:
        kind, kernel = self.op_layers[op]
        return LayerSpec(kind, hw, channels, channels, kernel=kernel, act=ACT)

    @cached_property
    def slots(self) -> tuple[Slot, ...]:
        hw, c = self.resolution[0], self.channels
        slots = [self._slot("stem", [], lambda v: [LayerSpec("nb201_stem", hw, 3, c, kernel=3, act=ACT)])]
        for level in range(self.levels):
            if level:
                slots.append(self._slot(f"reduce{level}", [], lambda v, hw=hw, c=c: [
                    LayerSpec("nb201_reduce", hw, c, 2 * c, stride=2, kernel=3, act=ACT)]))
                hw, c = hw // 2, 2 * c
            for cell in range(self.cells_per_stage):
                for e, gene in enumerate(self.genes):
                    slots.append(self._slot(f"stage{level}.cell{cell}.{gene.name}", [gene.name], lambda v, g=gene,
                                            hw=hw, c=c: [self._op_layer(self.ops.index(v[g.name]), hw, c)]))
        slots.append(self._slot("head", [], lambda v: [LayerSpec("nb201_head", hw, c, self.classes, act=ACT)]))
        return tuple(slots)

    # -- what transfer predictors read ---------------------------------------------------------------
    def live_edges(self, genes: np.ndarray) -> np.ndarray:
        """(n, edges) booleans: the edge is not `none` and lies on a path from the cell input to its output."""
        g = np.atleast_2d(genes)
        on = g != self.ops.index("none") if "none" in self.ops else np.ones_like(g, dtype=bool)
        reach = np.zeros((len(g), self.nodes), dtype=bool)
        reach[:, 0] = True
        for e, (i, j) in enumerate(self.edges):
            reach[:, j] |= reach[:, i] & on[:, e]
        leads = np.zeros((len(g), self.nodes), dtype=bool)
        leads[:, -1] = True
        for e, (i, j) in reversed(list(enumerate(self.edges))):
            leads[:, i] |= leads[:, j] & on[:, e]
        return np.stack([on[:, e] & reach[:, i] & leads[:, j] for e, (i, j) in enumerate(self.edges)], axis=1)

    def cell_features(self, genes: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Per-op counts that whole-network latency is near-linear in: live edges per op (on a path from
        input to output; a runtime prunes the others), all edges per op, whether the output is
        reachable, and the node additions among live edges."""
        g = np.atleast_2d(genes)
        live = self.live_edges(g)
        ops = [i for i, op in enumerate(self.ops) if op != "none"]
        names = [f"live_{self.ops[i]}" for i in ops] + [f"all_{self.ops[i]}" for i in ops] + ["reachable", "adds"]
        into = np.array([[j == to for _, to in self.edges] for j in range(self.nodes)])
        adds = np.maximum(live.astype(int) @ into[1:].T.astype(int) - 1, 0).sum(axis=1)
        cols = ([((g == i) & live).sum(axis=1) for i in ops] + [(g == i).sum(axis=1) for i in ops]
                + [live.any(axis=1), adds])
        return names, np.column_stack(cols).astype(float)
