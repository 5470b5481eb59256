"""Latency predictors behind one contract, scikit-learn style.

A predictor's settings go to `__init__`; `fit(space, table, measured=None)` learns from a lookup
table and, for those that need them, whole subnets measured on the device; `predict_genes` scores
gene rows (what search calls, vectorised), `predict_many` / `predict` score architectures. Every
command finds a predictor through `get_predictor(name)`, or through `resolve_predictor`, which also
fits or loads it for a table.

- `isolated`: the table's entries summed (isolated or imported tables). No measurement needed.
- `removal`: a removal-mode table's entries plus its base overhead; each reference subnet gets its
  own overhead back (exact lookup by gene row), so the table reproduces its references.
- `layer`: nn-Meter style, one random forest per layer kind on shape features, fit on the table's
  entries; it also predicts layers the table lacks.
- `flops`: whole-model latency linear in FLOPs and params (the baseline a FLOPs proxy can reach).
- `calibrated`: the table's entries summed per layer kind, each sum scaled by a coefficient kept
  near one common scale (ridge), fit on whole subnets measured with the table.

Fitted predictors are saved as JSON (settings, fitted numbers, the subnets they saw): loading one
runs no code, and refuses a file for another space, device, table or schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Sequence

import numpy as np

from latencykit.arch import Arch
from latencykit.errors import LatencykitError, TableError
from latencykit.files import atomic_write_text
from latencykit.layers import LayerSpec
from latencykit.lut.table import LatencyTable
from latencykit.registry import Registry
from latencykit.space import SearchSpace

SCHEMA = "latencykit.predictor"
SCHEMA_VERSION = 2


class PredictorError(LatencykitError):
    """A predictor that cannot be fit, saved or loaded."""


@dataclass(frozen=True)
class Measured:
    """Whole subnets measured on a device, in ms on their table's reference scale."""

    archs: tuple[Arch, ...]
    latency_ms: np.ndarray

    def __post_init__(self) -> None:
        ms = np.asarray(self.latency_ms, dtype=float)
        if len(self.archs) != len(ms):
            raise PredictorError(f"{len(self.archs)} subnets but {len(ms)} measurements")
        if len(ms) and not (np.isfinite(ms).all() and (ms > 0).all()):
            raise PredictorError("whole-model measurements must be finite and positive")
        object.__setattr__(self, "archs", tuple(self.archs))
        object.__setattr__(self, "latency_ms", ms)

    def __len__(self) -> int:
        return len(self.archs)

    def to_dict(self) -> dict:
        return {"archs": [a.to_dict() for a in self.archs], "latency_ms": self.latency_ms.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Measured":
        return cls(tuple(Arch.from_dict(a) for a in data["archs"]), np.asarray(data["latency_ms"], dtype=float))


class Predictor:
    """The contract: `fit(space, table, measured) -> self`, then `predict_genes` / `predict_many` / `predict`.

    Subclasses set `name`, `requires_measurements`, and implement `_fit` and `predict_genes`; those
    with fitted numbers also implement `state` / `_restore` (JSON-able), which `save` / `load_predictor`
    use. Settings are keyword arguments of `__init__`, returned by `settings()`.
    """

    name: ClassVar[str] = ""
    requires_measurements: ClassVar[bool] = False
    modes: ClassVar[tuple[str, ...]] = ("isolated", "imported", "removal")
    """Table modes the predictor accepts."""

    space: SearchSpace
    table: LatencyTable
    measured: Measured | None = None

    min_measurements: ClassVar[int] = 0

    def settings(self) -> dict:
        return {}

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, space: SearchSpace, table: LatencyTable, measured: Measured | None = None) -> "Predictor":
        """Learn from `table` (checked against `space`) and, where needed, whole-model measurements."""
        table.check(space=space)
        if table.meta.mode not in self.modes:
            raise PredictorError(f"the {self.name} predictor needs a table in mode {' or '.join(self.modes)}; "
                                 f"this {table.meta.device} table is {table.meta.mode}")
        if self.requires_measurements and (measured is None or len(measured) < self.min_measurements):
            raise PredictorError(f"the {self.name} predictor needs at least {self.min_measurements} whole-model "
                                 f"measurements, got {0 if measured is None else len(measured)}; "
                                 f"measure some with `latencykit fit --predictor {self.name}`")
        self.space, self.table, self.measured = space, table, measured
        self._fit()
        return self

    def restore(self, space: SearchSpace, table: LatencyTable, measured: Measured | None, state: dict) -> "Predictor":
        """A saved predictor back from its fitted numbers, without refitting (see `load_predictor`)."""
        table.check(space=space)
        self.space, self.table, self.measured = space, table, measured
        self._restore(state)
        return self

    def _fit(self) -> None:
        pass

    # -- predicting ------------------------------------------------------------------------------
    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        """Latency in ms for each gene row (NaN where a layer is missing from the table)."""
        raise NotImplementedError

    def predict_many(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.predict_genes(np.stack([self.space.encode(a) for a in archs]))

    def predict(self, arch: Arch) -> float:
        """One architecture's latency in ms; refuses one whose layers the table lacks."""
        value = float(self.predict_many([arch])[0])
        if np.isnan(value):
            missing = [l.key for l in self.space.layers(arch) if l not in self.table]
            raise TableError(f"{len(missing)} layer(s) of this architecture are missing from the "
                             f"{self.table.meta.device} table: {', '.join(missing[:5])}"
                             + (" ..." if len(missing) > 5 else ""))
        return value

    # -- describing ------------------------------------------------------------------------------
    @property
    def measurements(self) -> int:
        return len(self.measured) if self.measured is not None else 0

    @property
    def training_archs(self) -> list[Arch]:
        return list(self.measured.archs) if self.measured is not None else []

    @property
    def label(self) -> str:
        """What answered, as printed beside every prediction: `isolated`, `calibrated(n=20)`."""
        return f"{self.name}(n={self.measurements})" if self.requires_measurements else self.name

    @property
    def expected_error_pct(self) -> float | None:
        """The RMSPE (%) to expect on subnets the predictor never saw: its leave-one-out error when it was
        fit on whole models, else its error on the whole subnets measured with the table (which it did
        not see); None when nothing measured tells."""
        if self.measured is not None:
            return None
        found = _calibration_set(self.table, self.space)
        if found is None:
            return None
        err = (self.predict_many(list(found.archs)) - found.latency_ms) / found.latency_ms
        return float(np.sqrt(np.mean(err**2)) * 100) if np.isfinite(err).all() else None

    def describe(self) -> dict:
        """The predictor's name, label, expected error and fitted numbers, for `show` and `--json`."""
        return {"predictor": self.name, "label": self.label, "measurements": self.measurements,
                "expected_error_pct": self.expected_error_pct, "settings": self.settings(), **self.state()}

    # -- persistence (JSON only) -------------------------------------------------------------------
    def state(self) -> dict:
        """Fitted numbers, JSON-able; empty for predictors that refit from the table alone."""
        return {}

    def _restore(self, state: dict) -> None:
        self._fit()

    def save(self, path: Path) -> Path:
        doc = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "predictor": self.name,
               "settings": self.settings(), "device": self.table.meta.device, "space": self.space.name,
               "space_digest": self.space.digest, "table_created": self.table.meta.created,
               "measured": self.measured.to_dict() if self.measured is not None else None,
               "state": self.state()}
        return atomic_write_text(Path(path), json.dumps(doc, indent=1) + "\n")


PREDICTORS: Registry[Callable[..., Predictor]] = Registry("predictor", "latencykit.predictors")


def get_predictor(name: str, **settings) -> Predictor:
    """An unfitted predictor by name (built-in or from the `latencykit.predictors` entry point)."""
    return PREDICTORS.get(name)(**settings)


def predictor_path(table_path: Path, name: str) -> Path:
    """Where `fit` saves a fitted predictor: beside its table."""
    return Path(table_path).with_name(f"{Path(table_path).stem}.{name}.predictor.json")


def load_predictor(path: Path, space: SearchSpace, table: LatencyTable) -> Predictor:
    """A saved predictor, checked against the space, device and table it must serve. Plain JSON:
    nothing in the file is executed."""
    path = Path(path)
    if not path.is_file():
        raise PredictorError(f"no fitted predictor at {path}; fit one with `latencykit fit`")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError) as exc:
        raise PredictorError(f"{path} is not a latencykit predictor (not JSON: {type(exc).__name__}); "
                             "fit it again with `latencykit fit`") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise PredictorError(f"{path} is not a latencykit predictor file")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise PredictorError(f"{path} has predictor schema version {doc.get('schema_version')}, this latencykit "
                             f"reads {SCHEMA_VERSION}: refit it with `latencykit fit`")
    for key, ours in (("space", space.name), ("space_digest", space.digest), ("device", table.meta.device),
                      ("table_created", table.meta.created)):
        if doc.get(key) != ours:
            raise PredictorError(f"{path} was fit for {key.replace('_', ' ')} {doc.get(key)!r}, not {ours!r}: "
                                 "refit it with `latencykit fit`")
    try:
        predictor = get_predictor(str(doc["predictor"]), **dict(doc.get("settings") or {}))
        measured = Measured.from_dict(doc["measured"]) if doc.get("measured") else None
        predictor.restore(space, table, measured, dict(doc.get("state") or {}))
    except LatencykitError as exc:
        raise PredictorError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise PredictorError(f"{path} is a malformed predictor file ({type(exc).__name__}: {exc}); "
                             "fit it again with `latencykit fit`") from None
    return predictor


# ----- table sums ---------------------------------------------------------------------------------

def entries_ms(table: LatencyTable) -> dict[str, float]:
    return table.rows["latency_ms"].to_dict()


@PREDICTORS.register("isolated")
class IsolatedSum(Predictor):
    """The sum of the table's entries: each slot's latency is looked up once per gene combination, so
    scoring a batch is one integer gather and a sum."""

    name = "isolated"
    modes = ("isolated", "imported")

    def _fit(self) -> None:
        ms = entries_ms(self.table)
        self.values = self.space.slot_values(lambda l: ms.get(l.key, np.nan))

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        return self.space.evaluate(self.values, np.atleast_2d(genes))


def row_keys(genes: np.ndarray) -> np.ndarray:
    """Each gene row as one opaque value, so rows compare exactly (no hashing, no overflow)."""
    genes = np.ascontiguousarray(np.atleast_2d(genes), dtype=np.int64)
    return genes.view(np.dtype((np.void, genes.itemsize * genes.shape[1]))).ravel()


@PREDICTORS.register("removal")
class RemovalSum(IsolatedSum):
    """A removal-mode table: entries summed plus a base overhead, the references' median for any
    subnet and each reference's own for that reference."""

    name = "removal"
    modes = ("removal",)

    def _fit(self) -> None:
        super()._fit()
        refs = self.table.meta.provenance.get("references", [])
        if not refs:
            raise PredictorError("this removal table lists no reference subnets; profile it again")
        genes = np.stack([self.space.encode(Arch.from_dict(r["arch"])) for r in refs])
        self.ref_keys = row_keys(genes)
        self.ref_overheads = np.array([r["measured_ms"] - r["entries_ms"] for r in refs], dtype=float)
        self.overhead_ms = float(np.median(self.ref_overheads))

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        genes = np.atleast_2d(genes)
        out = super().predict_genes(genes) + self.overhead_ms
        keys = row_keys(genes)
        hit = np.flatnonzero(np.isin(keys, self.ref_keys))
        if len(hit):
            lookup = dict(zip(self.ref_keys.tolist(), self.ref_overheads))
            out[hit] += np.array([lookup[k] for k in keys[hit].tolist()]) - self.overhead_ms
        return out


# ----- per-layer model ---------------------------------------------------------------------------

SHAPE_FEATURES = ("hw", "cin", "cout", "stride", "kernel", "expand", "heads", "head_dim", "mlp_ratio", "v_scale", "patch")


def layer_features(spec: LayerSpec) -> list[float]:
    """Shape parameters, then log FLOPs, log params and log activation sizes (what memory-bound layers pay for)."""
    shape = [float(getattr(spec, f)) for f in SHAPE_FEATURES]
    return shape + [np.log1p(spec.flops), np.log1p(spec.params), np.log1p(spec.hw**2 * spec.cin),
                    np.log1p(spec.out_hw**2 * spec.cout)]


class LayerForests:
    """One random forest per layer kind on shape features, predicting log latency from known entries."""

    def __init__(self, entries: Mapping[LayerSpec, float], trees: int = 200) -> None:
        from sklearn.ensemble import RandomForestRegressor

        by_kind: dict[str, list[tuple[LayerSpec, float]]] = {}
        for spec, ms in entries.items():
            if ms > 0:
                by_kind.setdefault(spec.kind, []).append((spec, float(ms)))
        self.models = {kind: RandomForestRegressor(n_estimators=trees, random_state=0).fit(
            np.array([layer_features(s) for s, _ in items]), np.log([v for _, v in items]))
            for kind, items in by_kind.items()}

    def predict_layers(self, specs: Sequence[LayerSpec]) -> np.ndarray:
        """Predicted latency (ms) of each layer; NaN for a kind with no known entry."""
        out = np.full(len(specs), np.nan)
        for kind, model in self.models.items():
            idx = [i for i, s in enumerate(specs) if s.kind == kind]
            if idx:
                out[idx] = np.exp(model.predict(np.array([layer_features(specs[i]) for i in idx])))
        return out


@PREDICTORS.register("layer")
class LayerModel(Predictor):
    """Per-kind random forests fit on the table's measured or imported entries (not its predicted
    ones); predicts every layer of the space, including those the table lacks."""

    name = "layer"

    def __init__(self, trees: int = 200) -> None:
        if trees < 1:
            raise PredictorError("trees must be at least 1")
        self.trees = trees

    def settings(self) -> dict:
        return {"trees": self.trees}

    def _fit(self) -> None:
        rows = self.table.rows
        known = {spec: float(ms) for spec, ms, source in zip(self.table.specs(), rows["latency_ms"], rows["source"])
                 if source != "predicted"}
        self.forests = LayerForests(known, self.trees)
        layers = self.space.distinct_layers()
        ms = dict(zip(layers, self.forests.predict_layers(layers)))
        self.values = self.space.slot_values(ms.__getitem__)

    def predict_layers(self, specs: Sequence[LayerSpec]) -> np.ndarray:
        return self.forests.predict_layers(specs)

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        return self.space.evaluate(self.values, np.atleast_2d(genes))


# ----- calibrated on whole models -----------------------------------------------------------------

class LinearOnFeatures(Predictor):
    """Whole-model latency linear in per-architecture features computed from gene rows."""

    requires_measurements = True

    def features(self) -> list[str]:
        raise NotImplementedError

    def _features(self, genes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _design(self) -> tuple[np.ndarray, np.ndarray]:
        genes = np.stack([self.space.encode(a) for a in self.measured.archs])
        x = self._features(genes)
        if not np.isfinite(x).all():
            raise PredictorError("some measured subnets have layers missing from the table")
        return x, self.measured.latency_ms

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        return self.intercept + self._features(np.atleast_2d(genes)) @ self.coef

    def state(self) -> dict:
        return {"features": self.features(), "coefficients": [float(c) for c in self.coef],
                "intercept_ms": float(self.intercept)}

    def _restore(self, state: dict) -> None:
        self._prepare()
        if list(state["features"]) != self.features():
            raise PredictorError(f"its features {state['features']} are not this space's {self.features()}")
        coef = np.asarray(state["coefficients"], dtype=float)
        if coef.shape != (len(self.features()),) or not np.isfinite(coef).all():
            raise PredictorError(f"it has {coef.size} coefficients for {len(self.features())} features")
        self.coef, self.intercept = coef, float(state["intercept_ms"])
        if not np.isfinite(self.intercept):
            raise PredictorError("its intercept is not a number")

    def _prepare(self) -> None:
        pass


@PREDICTORS.register("flops")
class FlopsLinear(LinearOnFeatures):
    """latency = a * MFLOPs + b * Mparams + c, fit on whole models: what a FLOPs proxy can do at best."""

    name = "flops"
    min_measurements = 4

    def features(self) -> list[str]:
        return ["mflops", "mparams"]

    def _features(self, genes: np.ndarray) -> np.ndarray:
        return np.column_stack([self.space.evaluate(self.space.flops_values, genes) / 1e6,
                                self.space.evaluate(self.space.params_values, genes) / 1e6])

    def _fit(self) -> None:
        from sklearn.linear_model import LinearRegression

        model = LinearRegression().fit(*self._design())
        self.coef, self.intercept = model.coef_, float(model.intercept_)


@PREDICTORS.register("calibrated")
class CalibratedSum(LinearOnFeatures):
    """measured = intercept + sum over layer kinds of coefficient x (that kind's table entries)
    + ms per million parameters x million parameters.

    Isolated entries misjudge layers in context (cache state, fused parts): a whole network runs a
    few % slower than its layers alone, more on a busy CPU, and more the more weights it has. Each
    kind's coefficient is pulled toward one common scale (ridge on coefficient - scale, strength
    chosen by leave-one-out), so with few or collinear measurements it is the table sum times one
    factor plus an intercept and a weights term (latencykit.lut.calibration), and its numbers stay
    physical and printable.
    """

    name = "calibrated"
    modes = ("isolated", "imported")
    min_measurements = 3

    def features(self) -> list[str]:
        return [*self.groups, "mparams"]

    def _prepare(self) -> None:
        ms = entries_ms(self.table)
        self.groups = sorted({l.kind for l in self.space.distinct_layers()})
        self.group_values = {g: self.space.slot_values(lambda l, g=g: ms.get(l.key, np.nan) if l.kind == g else 0.0)
                             for g in self.groups}

    def _features(self, genes: np.ndarray) -> np.ndarray:
        return np.column_stack([self.space.evaluate(self.group_values[g], genes) for g in self.groups]
                               + [self.space.evaluate(self.space.params_values, genes) / 1e6])

    def _fit(self) -> None:
        from latencykit.lut.calibration import fit_group_coefficients

        self._prepare()
        x, y = self._design()
        fit = fit_group_coefficients(x, y, free=1)
        self.coef, self.intercept = fit.coefficients, fit.intercept_ms
        self.fit_info = {"alpha": fit.alpha, "loo_rmspe_pct": fit.loo_rmspe_pct, "n": fit.n}

    def state(self) -> dict:
        return {**super().state(), **getattr(self, "fit_info", {})}

    def _restore(self, state: dict) -> None:
        super()._restore(state)
        self.fit_info = {k: state[k] for k in ("alpha", "loo_rmspe_pct", "n") if k in state}

    @property
    def expected_error_pct(self) -> float | None:
        return self.fit_info.get("loo_rmspe_pct")


def _transfer(**settings) -> Predictor:
    """Few-shot transfer from other devices' measurement sets (latencykit.lut.transfer)."""
    from latencykit.registry import load_object

    return load_object("latencykit.lut.transfer:TransferPredictor")(**settings)


PREDICTORS.add("transfer", _transfer)


# ----- which predictor answers --------------------------------------------------------------------

def table_predictor_name(table: LatencyTable) -> str:
    """The predictor a table needs no measurement for: its own sum."""
    return "removal" if table.meta.mode == "removal" else "isolated"


def resolve_predictor(name: str, space: SearchSpace, table: LatencyTable, table_path: Path | None = None,
                      **settings) -> Predictor:
    """The predictor `name` ready for `table`: `auto` picks the best available one.

    Predictors that need no whole-model measurement are fit on the table. Those that do are fit on
    the calibration set stored with the table, or loaded from the file `latencykit fit` saved beside
    it. `auto` is `calibrated` where either exists, else the table's own sum (`isolated` or `removal`).
    """
    if name == "auto":
        candidates = (["calibrated"] if table.meta.mode in ("isolated", "imported") else []) + ["transfer"]
        for candidate in candidates:
            if (candidate == "calibrated" and _calibration_set(table, space) is not None) or (
                    table_path is not None and predictor_path(table_path, candidate).is_file()):
                return resolve_predictor(candidate, space, table, table_path)
        if table.meta.mode == "measured":
            raise PredictorError(f"{table.meta.device} is known only by whole-model measurements; fit a predictor "
                                 f"on them: `latencykit fit --predictor transfer --device {table.meta.device} "
                                 f"--space {space.name}`")
        return get_predictor(table_predictor_name(table)).fit(space, table)
    predictor = get_predictor(name, **settings)
    if not predictor.requires_measurements:
        return predictor.fit(space, table)
    if table_path is not None and predictor_path(table_path, name).is_file():
        return load_predictor(predictor_path(table_path, name), space, table)
    measured = _calibration_set(table, space)
    if measured is not None and len(measured) >= predictor.min_measurements:
        return predictor.fit(space, table, measured)
    raise PredictorError(f"the {name} predictor needs whole-model measurements and this table has none: "
                         f"run `latencykit fit --predictor {name} --device {table.meta.device} --space {space.name}`")


def _calibration_set(table: LatencyTable, space: SearchSpace) -> Measured | None:
    get = getattr(table, "calibration_set", None)
    found = get(space) if get is not None else None
    if not found:
        return None
    archs, ms = found
    return Measured(tuple(archs), np.asarray(ms, dtype=float))
