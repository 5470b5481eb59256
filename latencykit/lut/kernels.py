"""Kernel-level latency prediction for any ONNX graph.

`detect` cuts a graph into kernels (latencykit.kernels) by the rules in `kernel_rules.json` (data,
not code: which ops are free, which fuse into the kernel before them, which chains form one kernel).
The runtime's own layout changes (ONNX Runtime's reorders around its blocked convolutions on x86) are
read from the graph it runs (`Device.layout_changes`) and predicted as `reorder` kernels.
`profile_kernels` measures sampled configurations of every kernel type on a device with the tables'
protocol, in two stages (on one reference scale): half the samples at random, then the other half
where the first fit is least sure (largest spread across its trees). `KernelPredictor` fits one
regressor per kernel type (a log-linear ridge base on FLOPs, memory and alignment, and randomized trees
on its residuals); `Composition` turns each kernel's time alone into its time inside a network, fitted on
random networks (latencykit.random_nets) measured whole in the same profile; a model's latency is the sum.
It is stored as its measurements (JSON: the samples, and the networks' kernels and latencies) and refitted
deterministically on load: nothing executable is ever read from a file.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from latencykit.devices import Device, require
from latencykit.devices.nchwc import Reorder, reorder_graph
from latencykit.errors import LatencykitError
from latencykit.export import ExportCache, default_cache, export_kernel
from latencykit.files import atomic_write_text
from latencykit.kernels import (ACTS, FEATURES, SHARE, alignment, alignments, build_kernel, flops, memory, node_chain,
                                sample_config, weights)
from latencykit.lut.models import ModelError, check_file
from latencykit.lut.protocol import REF_KEY, Progress, Protocol, export_reference, measure_models
from latencykit.paths import home
from latencykit.random_nets import random_network

FORMAT = "latencykit-kernel-predictor"
VERSION = 1
CHAIN = 8
"""Nodes of the chain whose latency, against one node's, gives the runtime's cost per node (node_ms);
one node's latency less that is its fixed cost per inference (overhead_ms), counted once per model."""
NETWORKS = {"onnx": 160}
"""Random networks a kernel profile measures whole by default to fit `Composition`, by device format: 160 ONNX
files export and measure in about 2 minutes on 2 cores; a TFLite (or Core ML) network is a conversion of seconds
here, so those devices take NETWORKS_CONVERTED (a host-litert profile asked for 160 had converted about 120
after 15 minutes)."""
NETWORKS_CONVERTED = 40


def default_networks(device: Device) -> int:
    """How many random networks `profile_kernels` measures on `device` unless told."""
    return NETWORKS.get(device.format, NETWORKS_CONVERTED)


class KernelError(LatencykitError):
    """A kernel predictor that is missing, damaged, or lacks a kernel type a model needs."""


@lru_cache(maxsize=1)
def rules() -> dict:
    return json.loads((Path(__file__).with_name("kernel_rules.json")).read_text())


@dataclass(frozen=True)
class Kernel:
    kind: str
    config: tuple[tuple[str, int], ...]
    nodes: tuple[str, ...]
    ops: tuple[str, ...]

    @property
    def features(self) -> dict:
        return dict(self.config)

    def label(self) -> str:
        return f"{self.kind}(" + ", ".join(f"{k}={v}" for k, v in self.config) + ")"


@dataclass(frozen=True)
class Detection:
    kernels: tuple[Kernel, ...]
    unknown: dict[str, int] = field(default_factory=dict)  # op type -> nodes no rule covers
    free_nodes: int = 0  # nodes that move no data (Reshape, ...) but still run: each costs a dispatch


def _prod(dims) -> int:
    return int(np.prod(dims)) if len(dims) else 1


def detect(path: Path, fmt: str = "onnx") -> Detection:
    """The kernels of an ONNX graph, in execution order, and the op types no rule covers, for a runtime
    that runs `fmt` files (fusions differ between runtimes)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    check_file(Path(path))
    model = shape_inference.infer_shapes(onnx.load(str(path)), data_prop=True)
    g = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[vi.name] = dims
    static = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    for init in g.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)
    missing = [o for n in g.node for o in n.output if o and o not in shapes]
    if missing:
        shapes.update(_run_shapes(model, missing))
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    r = rules()
    free, ops_map, acts = set(r["free"]), r["ops"], r["acts"]
    extra = r.get("fuse_by_format", {}).get(fmt, {})
    fuse = {k: [*r["fuse"].get(k, []), *extra.get(k, [])] for k in {*r["fuse"], *extra}}
    siblings = set(r.get("siblings_by_format", {}).get(fmt, []))
    done: set[int] = set()
    kernels, unknown, free_nodes = [], {}, 0

    def only_consumer(node):
        outs = consumers.get(node.output[0], [])
        return outs[0] if len(outs) == 1 and node.output[0] not in {o.name for o in g.output} else None

    def attr(node, name, default):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    for n in g.node:
        if id(n) in done:
            continue
        inputs = [i for i in n.input if i]
        if n.op_type in ("Constant", "Shape") or (inputs and all(i in static for i in inputs)):
            static.update(n.output)  # folded before running: shapes are static here
            continue
        if n.op_type in free:
            free_nodes += 1
            continue
        chain = [n]
        kind, cfg = None, {}
        for p in r["patterns"]:
            seq, cur = [n], n
            for op in p["ops"][1:] if n.op_type == p["ops"][0] else [None]:
                cur = only_consumer(cur) if cur is not None else None
                if cur is None or cur.op_type != op:
                    seq = []
                    break
                seq.append(cur)
            if seq and p.get("shares_input") and not any(n.input[0] in c.input for c in seq[1:]):
                seq = []  # x * sigmoid(x) is SiLU; y * sigmoid(x) is a gate (squeeze-excite)
            if seq and n.op_type == p["ops"][0]:
                chain, kind = seq, p["kernel"]
                cfg = {"elements": _prod(shapes.get(seq[-1].output[0], [])), "kind": ACTS.index(p["kind"])}
                break
        if kind is None:
            kind = ops_map.get(n.op_type)
            if kind is None:
                unknown[n.op_type] = unknown.get(n.op_type, 0) + 1
                continue
            x = shapes.get(n.input[0], [])
            out = shapes.get(n.output[0], [])
            if kind == "conv":
                w = shapes[n.input[1]]
                groups, stride = attr(n, "group", 1), attr(n, "strides", [1, 1])[0]
                kind = "conv" if groups == 1 else ("dwconv" if groups == x[1] == w[0] else "gconv")
                cfg = {"hw": x[2], "cin": x[1], "cout": w[0], "k": w[2], "stride": stride, "relu": 0, "c": x[1],
                       "groups": groups}
            elif kind == "linear":
                if n.op_type == "Gemm":
                    w = shapes[n.input[1]]
                    cfg = {"m": x[0], "k": x[1], "n": w[0] if attr(n, "transB", 0) else w[1], "relu": 0}
                elif n.input[1] in static:
                    cfg = {"m": _prod(x[:-1]), "k": x[-1], "n": shapes[n.input[1]][-1], "relu": 0}
                else:
                    y = shapes.get(n.input[1], [])
                    kind, cfg = "matmul", {"b": _prod(x[:-2]), "m": x[-2], "k": x[-1], "n": y[-1]}
            elif kind == "pool":
                cfg = {"hw": x[2], "c": x[1], "k": attr(n, "kernel_shape", [1])[0],
                       "stride": attr(n, "strides", [1])[0], "max": int(n.op_type == "MaxPool")}
            elif kind == "gpool":
                cfg = {"hw": x[2] if len(x) == 4 else int(math.sqrt(_prod(x[2:]))), "c": x[1]}
            elif kind in ("add", "mul"):
                dyn = [shapes.get(i, []) for i in inputs if i not in static]
                cfg = {"elements": _prod(out), "broadcast": int(len(dyn) < 2 or dyn[0] != dyn[1])}
            elif kind == "act":
                cfg = {"elements": _prod(out), "kind": ACTS.index(acts[n.op_type])}
            elif kind in ("softmax", "layernorm"):
                cfg = {"rows": _prod(x[:-1]), "cols": x[-1]}
            elif kind == "transpose":
                perm = attr(n, "perm", list(range(len(x)))[::-1])
                kept = next((i for i in range(len(x) - 1, -1, -1) if perm[i] != i), -1)  # trailing axes in place
                cfg = {"elements": _prod(x), "run": _prod(x[kept + 1:])}
            elif kind == "concat":
                cfg = {"elements": _prod(out), "inputs": max(2, sum(i not in static for i in inputs))}
            elif kind == "slice":
                cfg = {"elements": sum(_prod(shapes.get(o, [])) for o in n.output)}
            cur = n
            while (nxt := only_consumer(cur)) is not None:
                bias = nxt.op_type == "Add" and any(i in static for i in nxt.input)
                residual = nxt.op_type == "Add" and not bias
                scale = nxt.op_type in ("Mul", "Div") and any(i in static for i in nxt.input)
                rule = "Sum" if residual else "Scale" if scale else nxt.op_type
                if rule not in fuse.get(kind, ()):
                    break
                if nxt.op_type in ("Relu", "Clip"):
                    cfg["relu"] = 1
                chain.append(nxt)
                cur = nxt
        if n.op_type in siblings:  # the other readers of its input of the same op run in this one kernel
            more = [c for c in consumers.get(n.input[0], [])
                    if c is not n and c.op_type == n.op_type and id(c) not in done]
            chain += more
            cfg["elements"] = cfg.get("elements", 0) + sum(_prod(shapes.get(o, [])) for c in more for o in c.output)
        for c in chain:
            done.add(id(c))
        names = FEATURES[kind]
        kernels.append(Kernel(kind, tuple((k, int(cfg[k])) for k in names), tuple(c.name for c in chain),
                              tuple(c.op_type for c in chain)))
    return Detection(tuple(kernels), unknown, free_nodes)


def _run_shapes(model, names: list[str]) -> dict[str, list[int]]:
    """Shapes static inference could not give (computed from `x.shape` at run time): one inference of a
    copy of the graph exposing those values, with graph optimizations off so every value exists."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
                 for i in sess.get_inputs()}
        values = sess.run(names, feeds)
    except Exception as exc:
        raise ModelError(f"cannot infer the shapes of the graph: {type(exc).__name__}: {exc}") from None
    return {n: list(np.shape(v)) for n, v in zip(names, values)}


BASE_FEATURES = 3
"""The last columns of a row (log FLOPs, log memory, how far the channels are from whole blocks of 16):
what the log-linear base sees, each with a coefficient of at least 0 (latency never falls as they grow).
Before them, for the trees, how far the input channels, output channels and channels per group each are
from whole blocks (each shortfall is its own code path: latencykit.kernels.alignments)."""


def _base_columns(kind: str) -> int:
    """How many of a row's last columns the log-linear base sees: BASE_FEATURES, and for an activation which
    function it is (one column each: its cost per value, GELU's erf several times ReLU's). Pooled through the
    trees alone, 15 GELU samples of 120 came out at 0.3-0.55x their time alone at 37k-442k values (ConvNeXt's,
    ViT's) on host."""
    return BASE_FEATURES + (len(ACTS) if kind == "act" else 0)


def _row(kind: str, f: dict) -> list[float]:
    function = [float(i == f["kind"]) for i in range(len(ACTS))] if kind == "act" else []
    return [*(math.log1p(f[k]) for k in FEATURES[kind]), *(math.log2(16 / a) for a in alignments(kind, f)),
            math.log1p(flops(kind, f)), math.log1p(memory(kind, f)), math.log2(16 / alignment(kind, f)), *function]


GROUPS = ("conv", "dwconv", "linear", "other")
_GROUP = {"conv": "conv", "gconv": "conv", "dwconv": "dwconv", "linear": "linear", "matmul": "linear"}
MIB = 4 / 2**20  # MiB per float32 value


def _composition_row(kind: str, f: dict, alone_ms: float) -> np.ndarray:
    """A kernel's columns in the composition fit: its predicted time alone and a 1 in its group's columns,
    then the MiB of weights and of activations (read and written) it moves."""
    row = np.zeros(2 * len(GROUPS) + 2)
    g = GROUPS.index(_GROUP.get(kind, "other"))
    row[g], row[len(GROUPS) + g] = alone_ms, 1.0
    w = weights(kind, f)
    row[-2:] = w * MIB, (memory(kind, f) - w) * MIB
    return row


@dataclass(frozen=True)
class Composition:
    """A kernel's time inside a network from its time alone: `scale` x alone + `fixed_ms` (per group: conv,
    dwconv, linear and matmul, other), plus ms per MiB of weights and of activations.

    Measured here (host, ONNX Runtime, 2 cores): the zoo's kernels alone summed up to 44% below their network
    whole (mobilenet-v2 w0.5, 128 px) and up to 23% above (convnext w1, 192 px); ONNX Runtime's profiler
    showed small kernels 3-5 us slower inside a network and a classifier's 5 MiB of weights 3x (docs/models.md).
    Fitted by non-negative least squares on relative error over random networks, each scale pulled toward
    1 (a ridge of weight 1), so a group the networks barely exercise stays as measured alone."""

    scale: tuple[float, ...] = (1.0,) * len(GROUPS)
    fixed_ms: tuple[float, ...] = (0.0,) * len(GROUPS)
    weight_ms_per_mib: float = 0.0
    activation_ms_per_mib: float = 0.0
    networks: int = 0

    @property
    def coefficients(self) -> np.ndarray:
        return np.array([*self.scale, *self.fixed_ms, self.weight_ms_per_mib, self.activation_ms_per_mib])

    @classmethod
    def fit(cls, rows: list[np.ndarray], fixed_ms: np.ndarray, ms: np.ndarray) -> "Composition":
        """`rows`: each network's summed `_composition_row`s; `fixed_ms`: its per-inference and free-node
        costs; `ms`: its latency measured whole."""
        from scipy.optimize import nnls

        if not len(ms):
            return cls()
        a = np.array(rows) / ms[:, None]
        prior = np.zeros((len(GROUPS), a.shape[1]))
        prior[:, :len(GROUPS)] = np.eye(len(GROUPS))
        c, _ = nnls(np.vstack([a, prior]), np.concatenate([(ms - fixed_ms) / ms, np.ones(len(GROUPS))]))
        n = len(GROUPS)
        return cls(tuple(c[:n].tolist()), tuple(c[n:2 * n].tolist()), float(c[-2]), float(c[-1]), len(ms))

    def apply(self, kernels: list["Kernel"], alone_ms: np.ndarray) -> np.ndarray:
        c = self.coefficients
        return np.array([_composition_row(k.kind, k.features, t) @ c for k, t in zip(kernels, alone_ms)])

    def to_dict(self) -> dict:
        return {**{f"scale_{g}": s for g, s in zip(GROUPS, self.scale)},
                **{f"fixed_us_{g}": f * 1e3 for g, f in zip(GROUPS, self.fixed_ms)},
                "weight_ms_per_mib": self.weight_ms_per_mib, "activation_ms_per_mib": self.activation_ms_per_mib,
                "networks": self.networks}


HELD_OUT_FOLDS = 10


def _held_out_errors(rows: np.ndarray, fixed_ms: np.ndarray, ms: np.ndarray) -> np.ndarray:
    """Each network's relative error (%) predicted by a composition fitted on the other folds (network i in
    fold i mod HELD_OUT_FOLDS). The kernel regressors never see the networks, so this is the whole predictor
    on networks it was not fitted on; empty with too few networks to hold any out."""
    if len(ms) < 2 * HELD_OUT_FOLDS:
        return np.empty(0)
    fold = np.arange(len(ms)) % HELD_OUT_FOLDS
    out = np.empty(len(ms))
    for f in range(HELD_OUT_FOLDS):
        test = fold == f
        c = Composition.fit(list(rows[~test]), fixed_ms[~test], ms[~test]).coefficients
        out[test] = 100 * ((rows[test] @ c + fixed_ms[test]) / ms[test] - 1)
    return out


@dataclass(frozen=True)
class Network:
    """A random network measured whole in a kernel profile: its kernels (kind, configuration) and latency."""

    seed: int
    kernels: tuple[tuple[str, tuple[tuple[str, int], ...]], ...]
    free_nodes: int
    ms: float

    def to_dict(self) -> dict:
        return {"seed": self.seed, "kernels": [{"kernel": k, "config": dict(c)} for k, c in self.kernels],
                "free_nodes": self.free_nodes, "ms": self.ms}


class KernelPredictor:
    """One regressor per kernel type on log features; a model's latency is the sum of its kernels'
    predictions (each less the runtime's fixed cost per inference, then composed as inside a network), a
    dispatch for each free node, and the fixed cost once."""

    def __init__(self, device: str, samples: dict[str, list[tuple[dict, float]]], overhead_ms: float,
                 node_ms: float = 0.0, info: dict | None = None, networks: tuple[Network, ...] = ()) -> None:
        self.device, self.samples, self.overhead_ms, self.info = device, samples, overhead_ms, info or {}
        self.node_ms, self.networks = node_ms, tuple(networks)
        self.models = {k: self._fit(k, v) for k, v in samples.items() if v}
        self.composition, self.held_out_errors = self._compose()

    def _compose(self) -> tuple[Composition, np.ndarray]:
        """The composition fitted on the profile's random networks (those whose kernel types all have samples),
        and each network's error (%) from a composition fitted without its fold (`held_out_errors`)."""
        nets = [n for n in self.networks if n.kernels and all(kind in self.models for kind, _ in n.kernels)]
        kernels = [Kernel(kind, config, (), ()) for n in nets for kind, config in n.kernels]
        alone = self.predict_kernels(kernels, composed=False) if kernels else np.empty(0)  # one call: trees are slow
        each = np.array([_composition_row(k.kind, k.features, t) for k, t in zip(kernels, alone)])
        ends = np.cumsum([len(n.kernels) for n in nets])
        rows = [each[end - len(n.kernels):end].sum(axis=0) for n, end in zip(nets, ends)]
        fixed = np.array([self.overhead_ms + n.free_nodes * self.node_ms for n in nets])
        ms = np.array([n.ms for n in nets])
        return Composition.fit(rows, fixed, ms), _held_out_errors(np.array(rows), fixed, ms)

    def held_out(self) -> dict | None:
        """How close the predictor comes to random networks it was not fitted on: the share within ±5% and
        ±10%, and the median error, over its profile's networks (None with fewer than HELD_OUT_FOLDS x 2).
        Real models score lower (the zoo, docs/models.md): read it as a best case."""
        e = self.held_out_errors
        if not len(e):
            return None
        return {"networks": len(e), "within_5_pct": float(np.mean(np.abs(e) <= 5) * 100),
                "within_10_pct": float(np.mean(np.abs(e) <= 10) * 100), "median_error_pct": float(np.median(e))}

    @staticmethod
    def _fit(kind: str, rows: list[tuple[dict, float]]):
        """A log-linear base (ridge) on FLOPs, memory and alignment, and extremely randomized trees on its
        residuals over every feature: smooth between samples, flexible where a runtime switches algorithm, and
        sane beyond the samples. The base was on every configuration value and nearly unpenalized, and it
        extrapolated their collinear logs (a one-row layer norm, below every sample's rows, came out at
        2.6 ms; with two samples of a type, a zoo multiply at seconds): it now has non-negative slopes, and
        enough penalty (alpha 1 against log features spread over several units) to stay flat where the
        samples barely differ. Extremely randomized trees (100, 70% of the features per split) in place of a
        random forest (100): 5-fold error on the samples within 10% for 53% of convolutions instead of 42%,
        and the random networks' fit 73-78% -> 78-81% within 10% on three profiles here."""
        from sklearn.ensemble import ExtraTreesRegressor
        from sklearn.linear_model import Ridge

        x = np.array([_row(kind, f) for f, _ in rows])
        y = np.log(np.array([max(ms, 1e-6) for _, ms in rows]))
        columns = _base_columns(kind)
        base = Ridge(alpha=1.0, positive=True).fit(x[:, -columns:], y)
        trees = ExtraTreesRegressor(n_estimators=100, max_features=0.7, random_state=0, n_jobs=1)
        return base, trees.fit(x, y - base.predict(x[:, -columns:]))

    def _log_ms(self, kind: str, x: np.ndarray) -> np.ndarray:
        base, trees = self.models[kind]
        return base.predict(x[:, -_base_columns(kind):]) + trees.predict(x)

    def spread(self, kind: str, configs: list[dict]) -> np.ndarray:
        """How unsure the fit is at each configuration: the spread of its trees' log predictions."""
        x = np.array([_row(kind, f) for f in configs])
        per_tree = np.stack([t.predict(x) for t in self.models[kind][1].estimators_])
        return per_tree.std(axis=0)

    def predict_kernels(self, kernels: list[Kernel], composed: bool = True) -> np.ndarray:
        """Each kernel's own time in ms inside a network (`composed=False`: alone, less the fixed cost)."""
        missing = sorted({k.kind for k in kernels} - set(self.models))
        if missing:
            raise KernelError(f"the {self.device} kernel predictor has no samples of kernel type(s) "
                              f"{', '.join(missing)}: run `latencykit profile --kernels --device {self.device}` again")
        out = np.empty(len(kernels))
        for kind in {k.kind for k in kernels}:
            idx = [i for i, k in enumerate(kernels) if k.kind == kind]
            x = np.array([_row(kind, kernels[i].features) for i in idx])
            out[idx] = np.maximum(np.exp(self._log_ms(kind, x)) - self.overhead_ms, 0.0)
        if composed and self.composition.networks:
            out = np.maximum(self.composition.apply(kernels, out), 0.0)
        return out

    def predict(self, kernels: list[Kernel], free_nodes: int = 0) -> float:
        return float(self.predict_kernels(kernels).sum() + free_nodes * self.node_ms + self.overhead_ms)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "device": self.device, "overhead_ms": self.overhead_ms,
                "node_ms": self.node_ms, "info": self.info,
                "samples": {k: [{"config": f, "ms": ms} for f, ms in v] for k, v in self.samples.items()},
                "networks": [n.to_dict() for n in self.networks]}

    def save(self, path: Path | None = None) -> Path:
        return atomic_write_text(path or kernel_path(self.device), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> "KernelPredictor":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KernelError(f"cannot read kernel predictor {path}: {exc}") from None
        try:
            if data.get("format") != FORMAT or data.get("version") != VERSION:
                raise ValueError(f"not a {FORMAT} file of version {VERSION}")
            samples = {}
            for kind, rows in data["samples"].items():
                if kind not in FEATURES:
                    raise ValueError(f"unknown kernel type {kind!r}")
                configs = [_legacy(kind, r["config"]) for r in rows]
                samples[kind] = [({k: int(c[k]) for k in FEATURES[kind]}, _ms(r["ms"])) for c, r in zip(configs, rows)]
            networks = tuple(Network(int(n["seed"]), tuple(_kernel_entry(k) for k in n["kernels"]),
                                     int(n["free_nodes"]), _ms(n["ms"])) for n in data.get("networks", []))
            return cls(str(data["device"]), samples, _ms(data["overhead_ms"]), _ms(data["node_ms"]),
                       dict(data.get("info", {})), networks)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KernelError(f"kernel predictor {path} is damaged: {exc}") from None


def _kernel_entry(entry: dict) -> tuple[str, tuple[tuple[str, int], ...]]:
    kind = entry["kernel"]
    if kind not in FEATURES:
        raise ValueError(f"unknown kernel type {kind!r}")
    return kind, tuple((k, int(entry["config"][k])) for k in FEATURES[kind])


def _legacy(kind: str, config: dict) -> dict:
    """A sample's configuration as this version names it: earlier transposes swapped their last two axes
    (`inner` x `inner` tiles), which moves every value alone: a contiguous `run` of 1."""
    if kind == "transpose" and "run" not in config and "inner" in config:
        return {**config, "run": 1}
    return config


def _ms(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < math.inf):
        raise ValueError(f"latency {value!r} is not a finite non-negative number")
    return float(value)


def kernel_path(device: str) -> Path:
    return home() / "kernels" / f"{device}.json"


def load_kernel_predictor(device: str, path: Path | None = None) -> KernelPredictor:
    path = path or kernel_path(device)
    if not Path(path).exists():
        raise KernelError(f"{device} has no kernel predictor: run `latencykit profile --kernels --device {device}` "
                          "first, or measure the model whole with `latencykit measure MODEL --device "
                          f"{device}`")
    return KernelPredictor.load(path)


def _configs(kind: str, n: int, rng: np.random.Generator, seen: set) -> list[dict]:
    out = []
    for _ in range(n * 20):
        if len(out) == n:
            break
        f = sample_config(kind, rng)
        key = (kind, tuple(sorted(f.items())))
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


CALL_CHAINS = [("chain", {"nodes": 1}), ("chain", {"nodes": CHAIN})]
"""Measured beside kernels (`measure_kernels`) for the runtime's costs of a call and of a node (`call_costs`)."""


def call_costs(one_ms: float, chain_ms: float) -> tuple[float, float]:
    """The runtime's fixed cost per inference and its cost per extra node, from CALL_CHAINS' latencies."""
    node_ms = max((chain_ms - one_ms) / (CHAIN - 1), 0.0)
    return max(one_ms - node_ms, 0.0), node_ms


def _second_half(progress: Progress | None, n: int) -> Progress | None:
    """`progress` over 2n steps, the measurement as its second half (the n exports were the first)."""
    return (lambda done, total: progress(n + done * n // max(total, 1), 2 * n)) if progress else None


def measure_kernels(device: Device, configs: list[tuple[str, dict]], cache: ExportCache, protocol: Protocol,
                    progress: Progress | None = None) -> tuple[list[float], float]:
    """Each configuration's latency measured alone, and the reference block's median in the same rounds (the
    scale the latencies are on); a ("chain", {"nodes": n}) entry is `node_chain(n)`."""
    files = {}
    for i, (kind, f) in enumerate(configs):
        if kind == "reorder":
            files[str(i)] = _reorder_file(Reorder(**f), cache)
        else:
            files[str(i)] = (cache.export(*node_chain(f["nodes"]), device.format) if kind == "chain"
                             else export_kernel(kind, f, cache, device.format))
        if progress:
            progress(i + 1, 2 * len(configs))
    # kernels are opened as table layers are (without the layout changes at a lone kernel's boundary: a
    # network's own layout changes are counted as reorder kernels); a reorder sample is nothing else
    layers = {str(i) for i, (kind, _) in enumerate(configs) if kind != "reorder"}
    stats = measure_models(device, files, export_reference(cache, device.format), protocol,
                           progress=_second_half(progress, len(configs)), layers=layers)
    return [stats[str(i)].latency_ms for i in range(len(configs))], stats[REF_KEY].latency_ms


def kernels_of(path: Path, device: Device) -> Detection:
    """The kernels `device` runs for an ONNX graph: those `detect` finds, then the layout changes its runtime
    adds (as `reorder` kernels). A channels-last reorder has a Transpose of its map folded in: one such
    transpose (every value moved alone) is no kernel of its own."""
    found = detect(path, device.format)
    kernels, reorders = list(found.kernels), []
    for r in device.layout_changes(path):
        ops = ("ReorderOutput" if r.out else "ReorderInput",)
        if r.last:
            folded = next((i for i, k in enumerate(kernels) if k.kind == "transpose"
                           and k.features == {"elements": r.c * r.hw * r.hw, "run": 1}), None)
            if folded is not None:
                kernels.pop(folded)
                ops = (*ops, "Transpose") if r.out else ("Transpose", *ops)
        reorders.append(Kernel("reorder", (("c", r.c), ("hw", r.hw), ("out", r.out)), (), ops))
    return Detection(tuple(kernels + reorders), found.unknown, found.free_nodes)


def measure_networks(device: Device, seeds: list[int], cache: ExportCache, protocol: Protocol,
                     progress: Progress | None = None) -> tuple[list[Network], float, float]:
    """Random networks measured whole as tables measure whole networks, with their kernels (found in their
    ONNX graphs); the reference block's median and the runtime's fixed cost per inference (CALL_CHAINS)
    in the same rounds."""
    nets, files = {}, {}
    for i, seed in enumerate(seeds):
        module, inputs = random_network(seed)
        nets[str(seed)] = kernels_of(cache.export(module, inputs, "onnx"), device)
        files[str(seed)] = cache.export(module, inputs, device.format)
        if progress:
            progress(i + 1, 2 * len(seeds))
    chains = {f"chain-{f['nodes']}": cache.export(*node_chain(f["nodes"]), device.format) for _, f in CALL_CHAINS}
    stats = measure_models(device, {**files, **chains}, export_reference(cache, device.format), protocol,
                           whole=set(files), layers=set(chains), progress=_second_half(progress, len(seeds)))
    overhead, _ = call_costs(*(stats[k].latency_ms for k in chains))
    return ([Network(int(k), tuple((x.kind, x.config) for x in d.kernels), d.free_nodes, stats[k].latency_ms)
             for k, d in nets.items() if not d.unknown], stats[REF_KEY].latency_ms, overhead)


def _reorder_file(r: Reorder, cache: ExportCache) -> Path:
    """A lone layout change as an ONNX file, in the export cache (its blocked shape is this machine's)."""
    import onnxruntime

    return cache.produce("onnx", f"reorder-{r.c}-{r.hw}-{r.out}-ort{onnxruntime.__version__}",
                         lambda path: reorder_graph(r, path))


def blocks_layout(device: Device, cache: ExportCache) -> bool:
    """Whether the device's runtime adds layout changes around a convolution (then reorders are sampled)."""
    return bool(device.layout_changes(cache.export(*build_kernel("conv", {"hw": 8, "cin": 16, "cout": 16, "k": 3,
                                                                          "stride": 1, "relu": 0}), device.format)))


def _rescaled(ms: float, overhead_ms: float, reference_ms: float, to_overhead_ms: float,
              to_reference_ms: float) -> float:
    """A latency measured in a later stage of a profile, on the first stage's scale: its own time on the reference
    block's scale, and the first stage's fixed cost per inference. The fixed cost drifts apart from the reference
    (6-13 us across four profiles here, the reference 0.88-1.04 ms): scaled with the reference, a later stage's
    small kernels moved by a third."""
    return max(ms - overhead_ms, 0.0) * to_reference_ms / reference_ms + to_overhead_ms


def profile_kernels(device: Device, samples: int = 40, rounds: int = 5, seed: int = 0,
                    kinds: tuple[str, ...] = tuple(FEATURES), path: Path | None = None,
                    cache: ExportCache | None = None, progress: Progress | None = None,
                    networks: int | None = None) -> tuple[KernelPredictor, Path]:
    """Sample and measure `samples` configurations of every kernel type (times its SHARE) on `device` (half at
    random, half where the first fit is least sure), measure `networks` random networks whole (for the
    composition; `default_networks` unless given), fit the predictor, and save it (JSON: the measurements).
    Reorders are sampled only where the device's runtime changes layout around a convolution."""
    require(device)
    networks = default_networks(device) if networks is None else networks
    cache = cache or default_cache()
    protocol = Protocol(rounds=rounds, extra_rounds=2, seed=seed)
    rng = np.random.default_rng(seed)
    seen: set = set()
    start = time.perf_counter()
    if "reorder" in kinds and not blocks_layout(device, cache):
        kinds = tuple(k for k in kinds if k != "reorder")
    wanted = {k: samples * SHARE.get(k, 1) for k in kinds}
    first = [(k, f) for k in kinds for f in _configs(k, max(2, wanted[k] // 2), rng, seen)]
    measured, reference_ms = measure_kernels(device, [*CALL_CHAINS, *first], cache, protocol, progress)
    overhead, node_ms = call_costs(*measured[:2])
    got = dict(zip(range(len(first)), measured[2:]))
    by_kind: dict[str, list] = {k: [] for k in kinds}
    for i, (k, f) in enumerate(first):
        by_kind[k].append((f, got[i]))
    model = KernelPredictor(device.name, by_kind, overhead, node_ms)
    second = []
    for k in kinds:
        pool = _configs(k, 10 * wanted[k], rng, seen)
        need = wanted[k] - len(by_kind[k])
        if need > 0 and pool:
            order = np.argsort(-model.spread(k, pool))
            second += [(k, pool[i]) for i in order[:need]]
    if second:  # on the first half's scale: the machine may have drifted since, the reference with it
        again, reference_again = measure_kernels(device, [*CALL_CHAINS, *second], cache, protocol, progress)
        overhead_again, _ = call_costs(*again[:2])
        for (k, f), ms in zip(second, again[2:]):
            by_kind[k].append((f, _rescaled(ms, overhead_again, reference_again, overhead, reference_ms)))
    nets: list[Network] = []
    if networks:
        measured_nets, reference_nets, overhead_nets = measure_networks(
            device, [seed * 100_000 + i for i in range(networks)], cache, protocol, progress)
        nets = [replace(n, ms=_rescaled(n.ms, overhead_nets, reference_nets, overhead, reference_ms))
                for n in measured_nets]
    info = {"device_info": device.describe(), "protocol": protocol.to_dict(), "samples_per_type": samples,
            "reference_ms": reference_ms, "networks": len(nets),
            "seed": seed, "seconds": round(time.perf_counter() - start, 1),
            "sampling": "half random, half where the first fit's trees disagree most"}
    model = KernelPredictor(device.name, by_kind, overhead, node_ms, info, tuple(nets))
    return model, model.save(path)


@dataclass(frozen=True)
class ModelPrediction:
    model: str
    device: str
    latency_ms: float
    overhead_ms: float  # the runtime's fixed cost per inference
    free_nodes_ms: float  # dispatching the nodes that move no data (Reshape, ...)
    kernels: list[dict]
    scale: float = 1.0  # 1: on the profile's scale; else the reference block measured now over its time then
    held_out: dict | None = None  # KernelPredictor.held_out: its error on random networks it was not fitted on

    def to_dict(self) -> dict:
        return asdict(self)


def reference_now(device: Device, rounds: int = 15, cache: ExportCache | None = None) -> float:
    """The reference block's median latency on `device` now, in ms (0.1 s on host at 15 rounds)."""
    require(device)
    reference = export_reference(cache or default_cache(), device.format)
    return measure_models(device, {}, reference, Protocol(rounds=rounds))[REF_KEY].latency_ms


def predict_model(path: Path, device: str, predictor_path: Path | None = None,
                  predictor: KernelPredictor | None = None, rescale: bool = False) -> ModelPrediction:
    """An ONNX model's latency on `device`: the sum of its kernels' predictions, with the breakdown.
    `predictor` (already loaded, to predict many models without refitting) wins over `predictor_path`.

    `rescale` measures the reference block on the device now and scales the prediction by its time now
    over its time when the kernels were profiled: a machine runs 10-20% faster or slower from one hour
    to the next (other tenants, heat), every kernel with it, and the reference block follows
    (docs/models.md, Accuracy: predictions 9% low to 17% high at the median after such a drift,
    70-86% within ±10% on the reference's scale)."""
    from latencykit.devices import get_device

    dev = get_device(device)
    found = kernels_of(Path(path), dev)
    if found.unknown:
        ops = ", ".join(f"{op} ({n} node{'s' if n > 1 else ''})" for op, n in sorted(found.unknown.items()))
        raise ModelError(f"{Path(path).name} has operators no kernel rule covers: {ops}; measure it whole "
                         f"instead: latencykit measure {path} --device {device}")
    model = predictor or load_kernel_predictor(device, predictor_path)
    if model.device != device:
        raise KernelError(f"that kernel predictor was profiled on {model.device}, not {device}: run "
                          f"`latencykit profile --kernels --device {device}`")
    scale = 1.0
    if rescale:
        then = model.info.get("reference_ms")
        if not then:
            raise KernelError(f"that {device} kernel predictor does not record its reference block's time, so it "
                              f"cannot be rescaled: run `latencykit profile --kernels --device {device}` again")
        scale = reference_now(dev) / then
    ms = model.predict_kernels(list(found.kernels)) * scale
    rows = [{"kernel": k.kind, "config": k.features, "ops": "+".join(k.ops), "ms": float(t)}
            for k, t in zip(found.kernels, ms)]
    free, overhead = found.free_nodes * model.node_ms * scale, model.overhead_ms * scale
    return ModelPrediction(str(path), device, float(ms.sum() + free + overhead), overhead, free, rows, scale,
                           model.held_out())
