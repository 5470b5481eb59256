"""Predictors learned with scikit-learn, behind one interface with the table predictor.

- `flops`: a linear model of whole-model latency on FLOPs and params (the baseline).
- `layer`: nn-Meter style, one random forest per layer kind on shape features and FLOPs, fit on the
  table's measured entries. It predicts layers the table lacks (another resolution or width).
- `calibrated`: the table's entries summed per layer group, with one fitted coefficient per group and
  an intercept, fit on a few whole-model measurements. It keeps the table's vectorised speed.

Every predictor scores gene rows (`predict_genes`), so search can use any of them. A fitted predictor
is saved beside its table with the library versions; loading under other versions fails clearly
rather than unpickling a model scikit-learn may silently misread.
"""

from __future__ import annotations

import pickle
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import sklearn
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression

from latencykit import __version__
from latencykit.arch import Arch
from latencykit.errors import LatencykitError
from latencykit.layers import LayerSpec
from latencykit.lut.predict import TablePredictor
from latencykit.lut.table import LatencyTable
from latencykit.registry import Registry
from latencykit.space import SearchSpace

SAVE_FORMAT = 1


class PredictorError(LatencykitError):
    """A predictor that cannot be fit, saved or loaded."""


class Predictor:
    """Fit on whole-model measurements (or on the table alone), predict gene rows or architectures."""

    name = ""

    def __init__(self, space: SearchSpace, table: LatencyTable) -> None:
        self.space, self.table = space, table
        self.measurements = 0
        self.training_archs: list[Arch] = []

    def fit(self, archs: Sequence[Arch], measured_ms: np.ndarray) -> "Predictor":
        self.measurements = len(archs)
        self.training_archs = list(archs)
        return self

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_many(self, archs: Sequence[Arch]) -> np.ndarray:
        return self.predict_genes(np.stack([self.space.encode(a) for a in archs]))

    def predict(self, arch: Arch) -> float:
        return float(self.predict_many([arch])[0])

    # -- persistence ------------------------------------------------------------------------------
    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def save(self, path: Path) -> Path:
        blob = {"format": SAVE_FORMAT, "latencykit": __version__, "sklearn": sklearn.__version__,
                "numpy": np.__version__, "predictor": self.name, "device": self.table.meta.device,
                "space": self.space.name, "space_digest": self.space.digest, "table_created": self.table.meta.created,
                "measurements": self.measurements, "training_archs": [a.to_dict() for a in self.training_archs],
                "state": self.state()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(pickle.dumps(blob))
        tmp.replace(path)
        return path


def predictor_path(table_path: Path, name: str) -> Path:
    return table_path.with_name(f"{table_path.stem}.{name}.predictor")


def load_predictor(path: Path, space: SearchSpace, table: LatencyTable) -> Predictor:
    """A saved predictor, refusing one saved under other library versions or for another table."""
    if not path.exists():
        raise PredictorError(f"no fitted predictor at {path}; fit one with `latencykit fit`")
    try:
        blob = pickle.loads(path.read_bytes())
        versions = {k: blob[k] for k in ("format", "latencykit", "sklearn", "predictor")}
    except Exception as exc:
        raise PredictorError(f"{path} is not a latencykit predictor ({type(exc).__name__}); fit it again") from None
    for lib, ours in (("sklearn", sklearn.__version__), ("latencykit", __version__)):
        if versions[lib] != ours:
            raise PredictorError(f"{path} was saved with {lib} {versions[lib]}, this is {ours}: refit it with "
                                 f"`latencykit fit --predictor {versions['predictor']}`")
    if blob["space_digest"] != space.digest or blob["table_created"] != table.meta.created:
        raise PredictorError(f"{path} was fit for another table or space version; refit it")
    predictor = PREDICTORS.get(blob["predictor"])(space, table)
    predictor.measurements = blob["measurements"]
    predictor.training_archs = [Arch.from_dict(a) for a in blob["training_archs"]]
    predictor.load_state(blob["state"])
    return predictor


PREDICTORS: Registry[Callable[[SearchSpace, LatencyTable], Predictor]] = Registry("predictor", "latencykit.predictors")


@PREDICTORS.register("table")
class SumPredictor(Predictor):
    """The table's entries summed (isolated or removal mode): needs no whole-model measurement."""

    name = "table"

    def __init__(self, space: SearchSpace, table: LatencyTable) -> None:
        super().__init__(space, table)
        self._table = TablePredictor(table, space)

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        return self._table.predict_genes(genes)


class LinearOnFeatures(Predictor):
    """A linear model of whole-model latency on per-architecture features computed from genes."""

    positive = False

    def _features(self, genes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def min_measurements(self) -> int:
        return self._features(np.zeros((1, len(self.space.genes)), dtype=np.int64)).shape[1] + 2

    def fit(self, archs: Sequence[Arch], measured_ms: np.ndarray) -> "LinearOnFeatures":
        if len(archs) < self.min_measurements:
            raise PredictorError(f"the {self.name} predictor needs at least {self.min_measurements} "
                                 f"whole-model measurements, got {len(archs)}")
        super().fit(archs, measured_ms)
        genes = np.stack([self.space.encode(a) for a in archs])
        self.model = LinearRegression(positive=self.positive).fit(self._features(genes), measured_ms)
        return self

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        return self.model.predict(self._features(genes))

    def state(self) -> dict:
        return {"model": self.model}

    def load_state(self, state: dict) -> None:
        self.model = state["model"]


@PREDICTORS.register("flops")
class FlopsLinear(LinearOnFeatures):
    """latency = a * FLOPs + b * params + c, fit on whole models: what a FLOPs proxy can do at best."""

    name = "flops"

    def _features(self, genes: np.ndarray) -> np.ndarray:
        genes = np.atleast_2d(genes)
        return np.column_stack([self.space.evaluate(self.space.flops_values, genes) / 1e6,
                                self.space.evaluate(self.space.params_values, genes) / 1e6])


SHAPE_FEATURES = ("hw", "cin", "cout", "stride", "kernel", "expand", "heads", "head_dim", "mlp_ratio", "v_scale", "patch")


def layer_features(spec: LayerSpec) -> list[float]:
    """Shape parameters, then log FLOPs, log params and log activation sizes (what memory-bound layers pay for)."""
    shape = [float(getattr(spec, f)) for f in SHAPE_FEATURES]
    return shape + [np.log1p(spec.flops), np.log1p(spec.params), np.log1p(spec.hw**2 * spec.cin),
                    np.log1p(spec.out_hw**2 * spec.cout)]


@PREDICTORS.register("layer")
class LayerModel(Predictor):
    """One random forest per layer kind, on shape features and FLOPs, predicting log latency.

    Fit on the table's measured entries only; whole-model measurements are not needed. Use it to fill
    layers missing from a table (`predict_layers`).
    """

    name = "layer"

    def __init__(self, space: SearchSpace, table: LatencyTable) -> None:
        super().__init__(space, table)
        self.models: dict[str, RandomForestRegressor] = {}
        self._fit_layers()

    def _fit_layers(self) -> None:
        rows = self.table.rows
        by_kind: dict[str, list[tuple[LayerSpec, float]]] = {}
        for spec, ms, source in zip(self.table.specs(), rows["latency_ms"], rows["source"]):
            if source != "predicted" and ms > 0:
                by_kind.setdefault(spec.kind, []).append((spec, float(ms)))
        for kind, items in by_kind.items():
            x = np.array([layer_features(s) for s, _ in items])
            y = np.log([v for _, v in items])
            self.models[kind] = RandomForestRegressor(n_estimators=200, min_samples_leaf=1, random_state=0).fit(x, y)

    @cached_property
    def values(self) -> np.ndarray:
        """Per-slot sums for search, computed on first use (filling a table's missing layers needs none):
        one batched prediction per distinct layer, not one per slot combination."""
        layers = self.space.distinct_layers()
        ms = dict(zip(layers, self.predict_layers(layers)))
        return self.space.slot_values(ms.__getitem__)

    def predict_layers(self, specs: Sequence[LayerSpec]) -> np.ndarray:
        """Predicted latency (ms) of each layer; NaN for a kind the table has no measurement of."""
        out = np.full(len(specs), np.nan)
        for kind, model in self.models.items():
            idx = [i for i, s in enumerate(specs) if s.kind == kind]
            if idx:
                out[idx] = np.exp(model.predict(np.array([layer_features(specs[i]) for i in idx])))
        return out

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        return self.space.evaluate(self.values, genes) + self.table.meta.overhead_ms


@PREDICTORS.register("calibrated")
class CalibratedTable(LinearOnFeatures):
    """measured = intercept + sum over layer groups of coefficient x (table entries of that group).

    Isolated entries misjudge some kinds in context (per-call overhead inflates small high-resolution
    layers; fused attention and fold parts run cheaper or dearer inside a network). One non-negative
    coefficient per group, fit on a few whole models, corrects that and stays a vectorised sum.
    """

    name = "calibrated"
    positive = True

    def __init__(self, space: SearchSpace, table: LatencyTable) -> None:
        super().__init__(space, table)
        ms = table.rows["latency_ms"].to_dict()
        self.groups = sorted({l.kind for l in space.distinct_layers()})
        self.group_values = {g: space.slot_values(lambda l, g=g: ms.get(l.key, np.nan) if l.kind == g else 0.0)
                             for g in self.groups}

    def _features(self, genes: np.ndarray) -> np.ndarray:
        genes = np.atleast_2d(genes)
        return np.column_stack([self.space.evaluate(self.group_values[g], genes) for g in self.groups])

    @property
    def coefficients(self) -> dict[str, float]:
        return {**dict(zip(self.groups, map(float, self.model.coef_))), "intercept_ms": float(self.model.intercept_)}
