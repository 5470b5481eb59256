"""Architectures as values: frozen, hashable, comparable, and round-tripping through JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from latencykit.errors import ArchitectureError

PER_LAYER_FIELDS = ("expand", "kernel", "heads", "mlp_ratio", "v_scale", "windows")
"""Choices a stage may make per layer; a stage kind says which of them it searches."""


@dataclass(frozen=True)
class StageArch:
    """One stage's choices: its width, its depth and one value per layer for each per-layer field."""

    width: int
    depth: int
    expand: tuple[float, ...] = ()
    kernel: tuple[int, ...] = ()
    heads: tuple[int, ...] = ()
    mlp_ratio: tuple[float, ...] = ()
    v_scale: tuple[int, ...] = ()
    windows: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("expand", "mlp_ratio"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("kernel", "heads", "v_scale", "windows"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))


def parse_cell(text: str) -> tuple[str, ...]:
    """A NAS-Bench-201 style cell string, `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (node j's incoming edges
    `op~i` from each earlier node i, nodes separated by `+`), as its ops in edge order."""
    text = text.strip()
    nodes = text.split("+")
    ops: list[str] = []
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|") and len(node) > 2):
            raise ArchitectureError(f"not a cell string: {text!r} (node {j} must look like |op~0|...|)")
        edges = node[1:-1].split("|")
        if len(edges) != j:
            raise ArchitectureError(f"not a cell string: {text!r} (node {j} has {len(edges)} incoming edges, "
                                    f"expected {j})")
        for i, edge in enumerate(edges):
            op, sep, source = edge.partition("~")
            if not op or sep != "~" or source != str(i):
                raise ArchitectureError(f"not a cell string: {text!r} (edge {edge!r} of node {j} should be "
                                        f"'op~{i}')")
            ops.append(op)
    return tuple(ops)


def cell_string(ops: tuple[str, ...]) -> str:
    """The cell string of ops in edge order (the inverse of `parse_cell`)."""
    nodes, start, j = [], 0, 1
    while start < len(ops):
        nodes.append("|" + "|".join(f"{op}~{i}" for i, op in enumerate(ops[start:start + j])) + "|")
        start, j = start + j, j + 1
    return "+".join(nodes)


@dataclass(frozen=True)
class Arch:
    """A subnet of a search space: input resolution, stem width, the present stages in order, and the
    head's hidden width where the space chooses it (0: the space's only one).

    A cell space's architecture is its `cell` (one op per edge, in the cell string's order); its
    resolution and stem are the space's fixed ones (0 until `space.validate` fills them in)."""

    resolution: int
    stem: int
    stages: tuple[StageArch, ...]
    head: int = 0
    cell: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "cell", tuple(str(op) for op in self.cell))

    @classmethod
    def from_cell(cls, text: str) -> "Arch":
        """A cell space's architecture from its cell string."""
        return cls(0, 0, (), cell=parse_cell(text))

    @property
    def cell_string(self) -> str:
        return cell_string(self.cell)

    def to_text(self) -> str:
        """What an arch file holds: the cell string for a cell space, else the JSON."""
        return self.cell_string if self.cell else self.to_json()

    def to_dict(self) -> dict:
        out = {
            "resolution": self.resolution,
            "stem": self.stem,
            "stages": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()
                        if v != ()} for s in self.stages],
        }
        if self.head:
            out["head"] = self.head
        if self.cell:
            out["cell"] = self.cell_string
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Arch":
        try:
            known = {f.name for f in fields(StageArch)}
            stages = []
            for i, s in enumerate(data.get("stages", ()) if "cell" in data else data["stages"]):
                extra = set(s) - known
                if extra:
                    raise ArchitectureError(f"stages[{i}] has unknown field(s): {', '.join(sorted(extra))}")
                stages.append(StageArch(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()}))
            cell = data.get("cell", ())
            cell = parse_cell(cell) if isinstance(cell, str) else tuple(cell)
            return cls(int(data.get("resolution", 0) if cell else data["resolution"]),
                       int(data.get("stem", 0) if cell else data["stem"]), tuple(stages), int(data.get("head", 0)),
                       cell)
        except ArchitectureError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchitectureError(f"not an architecture: {type(exc).__name__}: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Arch":
        """An architecture from its JSON, or from a cell string (a cell space's)."""
        if text.strip().startswith("|"):
            return cls.from_cell(text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchitectureError(f"architecture is not valid JSON: {exc}") from None
        if isinstance(data, dict) and "arch" in data:
            data = data["arch"]
        if not isinstance(data, dict):
            raise ArchitectureError("architecture JSON must be an object")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "Arch":
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ArchitectureError(f"cannot read architecture file {path}: {exc.strerror}") from None
        return cls.from_json(text)
