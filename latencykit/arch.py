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


@dataclass(frozen=True)
class Arch:
    """A subnet of a search space: input resolution, stem width, the present stages in order, and the
    head's hidden width where the space chooses it (0: the space's only one)."""

    resolution: int
    stem: int
    stages: tuple[StageArch, ...]
    head: int = 0

    def to_dict(self) -> dict:
        out = {
            "resolution": self.resolution,
            "stem": self.stem,
            "stages": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(s).items()
                        if v != ()} for s in self.stages],
        }
        if self.head:
            out["head"] = self.head
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Arch":
        try:
            known = {f.name for f in fields(StageArch)}
            stages = []
            for i, s in enumerate(data["stages"]):
                extra = set(s) - known
                if extra:
                    raise ArchitectureError(f"stages[{i}] has unknown field(s): {', '.join(sorted(extra))}")
                stages.append(StageArch(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()}))
            return cls(int(data["resolution"]), int(data["stem"]), tuple(stages), int(data.get("head", 0)))
        except ArchitectureError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchitectureError(f"not an architecture: {type(exc).__name__}: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Arch":
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
