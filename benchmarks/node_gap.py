"""How far ONNX Runtime's own per-node times explain a network measured whole (host): would a composition
fitted per kernel from in-network node times beat the kernel predictor's composition?

For the zoo (latencykit.zoo) and random networks (latencykit.random_nets: seeds 0-29, which a default kernel
profile's composition also measured, and 5000-5029, which it never saw), in one process: ONNX Runtime's profiler
gives each optimized node's median time over back-to-back runs (`HostOnnxDevice.profile_ops`); each node is
mapped to the kernel of the original graph it runs (`kernels_of`: blocked convolutions are named after their
original output, `<output>_nchwc`; fused GELUs after their node; what is left by order and kind); the networks
are then measured whole with the tables' protocol. The *gap* is whole less the sum of node times: what a
per-node composition would have to predict on top of perfect in-network kernel times. It is fitted on the
first 30 random networks (least squares on an intercept, node count and weights) and scored on the others and
on the zoo, beside the kernel predictor as it stands. Each process repeats all of it; needs a host kernel
profile in LATENCYKIT_HOME (`latencykit profile --kernels --device host`).

Run from the repository root, with nothing else running:
    PYTHONPATH=$PWD python benchmarks/node_gap.py --processes 2
Writes benchmarks/results/node_gap.md, or --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bias import one_per_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "node_gap.md"
FIT, HELD = range(30), range(5000, 5030)
MODELS = {"intercept": (0,), "intercept + nodes": (0, 1), "intercept + weights": (0, 2),
          "intercept + nodes + weights": (0, 1, 2)}


def op_kinds() -> dict[str, tuple[str, ...]]:
    """The kernel kinds each op of ONNX Runtime's optimized graph may run: the detection rules' op table (a Conv
    may be any convolution, a MatMul a linear layer or an attention product, a Mul or Div part of an activation)
    and the ops ONNX Runtime's optimizer makes of them."""
    from latencykit.lut.kernels import rules

    kinds = {op: (kind,) for op, kind in rules()["ops"].items()}
    kinds.update(Conv=("conv", "dwconv", "gconv"), MatMul=("matmul", "linear"), Mul=("mul", "act"),
                 Div=("mul", "act"), Erf=("act",), Gelu=("act",), QuickGelu=("act",), Sum=("add",),
                 ReorderInput=("reorder",), ReorderOutput=("reorder",))
    return {**kinds, "FusedConv": kinds["Conv"], "FusedMatMul": kinds["MatMul"]}


def node_kernels(path: Path, kernels, options) -> dict[str, int | None]:
    """Optimized node name -> index of the kernel it runs (None: no kernel, e.g. a reshape)."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path)).graph
    producer = {o: n.name for n in graph.node for o in n.output}
    index = {name: i for i, k in enumerate(kernels) for name in k.nodes}
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        nodes = list(onnx.load(options.optimized_model_filepath).graph.node)
    out: dict[str, int | None] = {}
    for n in nodes:
        original = None
        if n.op_type.startswith("Reorder"):
            pass
        elif n.name.endswith("_nchwc") and n.name[:-6] in producer:
            original = producer[n.name[:-6]]
        elif "/QuickGeluFusion" in n.name:
            original = n.name.split("/QuickGeluFusion")[0]
        elif n.name in index:
            original = n.name
        else:
            original = next((producer[o] for o in n.output if o in producer), None)
        out[n.name] = index.get(original)
    claimed = {(k, n.op_type) for n in nodes if (k := out[n.name]) is not None}
    op_kind, last = op_kinds(), -1
    for n in nodes:  # the rest: the next kernel of a compatible kind not yet claimed by a node of this op
        if out[n.name] is not None:
            last = max(last, out[n.name])
            continue
        kinds = op_kind.get(n.op_type, ())
        for i in [*range(last + 1, len(kernels)), *range(last + 1)]:
            if (i, n.op_type) not in claimed and kernels[i].kind in kinds:
                out[n.name], last = i, max(last, i)
                claimed.add((i, n.op_type))
                break
    return out


def one_process(args) -> dict:
    import torch

    from latencykit.devices import get_device
    from latencykit.export import default_cache
    from latencykit.kernels import weights
    from latencykit.lut.kernels import MIB, kernels_of, load_kernel_predictor
    from latencykit.lut.protocol import Protocol, export_reference, measure_models
    from latencykit.random_nets import random_network
    from latencykit.zoo import build, variants

    torch.set_num_threads(1)
    device, cache = get_device("host"), default_cache()
    predictor = load_kernel_predictor("host")
    models = {v.name: build(v) for v in variants((128, 192), (0.5, 1.0))}
    models.update({f"random-{s}": random_network(s) for s in [*FIT, *HELD]})
    files = {k: cache.export(*m, "onnx") for k, m in models.items()}
    out = {}
    for name, path in files.items():
        found = kernels_of(path, device)
        if found.unknown:
            continue
        mapped = node_kernels(path, found.kernels, device._options())
        ops = device.profile_ops(path, args.runs)
        total = sum(o.ms for o in ops)
        out[name] = {"nodes_ms": total, "nodes": len(ops),
                     "mapped_share": sum(o.ms for o in ops if mapped.get(o.node) is not None) / max(total, 1e-9),
                     "weights_mib": sum(weights(k.kind, k.features) for k in found.kernels) * MIB,
                     "predicted": predictor.predict(list(found.kernels), found.free_nodes)}
    stats = measure_models(device, {k: files[k] for k in out}, export_reference(cache, "onnx"),
                           Protocol(rounds=args.rounds, seed=0), whole=set(out))
    for k in out:
        out[k]["whole"] = stats[k].latency_ms
    return out


def score(errors: list[float]) -> str:
    a = np.abs(errors)
    return f"{np.mean(a <= 5) * 100:.0f}% / {np.mean(a <= 10) * 100:.0f}% (median {np.median(errors):+.1f}%)"


def report(p: dict) -> tuple[list[str], dict]:
    groups = {"random, fitted (30)": [f"random-{s}" for s in FIT], "random, held out (30)":
              [f"random-{s}" for s in HELD], "zoo (44)": [k for k in p if not k.startswith("random-")]}
    groups = {g: [k for k in ks if k in p] for g, ks in groups.items()}

    def x(k: str) -> np.ndarray:
        return np.array([1.0, p[k]["nodes"], p[k]["weights_mib"]])

    gap = {k: p[k]["whole"] - p[k]["nodes_ms"] for k in p}
    fit = groups["random, fitted (30)"]
    lines = ["| | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups),
             "| kernel predictor (composed), as it stands | "
             + " | ".join(score([100 * (p[k]["predicted"] / p[k]["whole"] - 1) for k in ks]) for ks in groups.values())
             + " |",
             "| sum of node times alone | "
             + " | ".join(score([-100 * gap[k] / p[k]["whole"] for k in ks]) for ks in groups.values()) + " |"]
    for label, cols in MODELS.items():
        c = np.linalg.lstsq(np.array([x(k)[list(cols)] for k in fit]), np.array([gap[k] for k in fit]), rcond=None)[0]
        lines.append(f"| sum of node times + gap fitted on {label} | " + " | ".join(
            score([100 * ((p[k]["nodes_ms"] + x(k)[list(cols)] @ c) / p[k]["whole"] - 1) for k in ks])
            for ks in groups.values()) + " |")
    return lines, gap


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30, help="profiled inferences per network")
    ap.add_argument("--rounds", type=int, default=9, help="whole-network protocol rounds")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--one", metavar="JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        Path(args.one).write_text(json.dumps(one_process(args)))
        return
    from latencykit.devices.clock import last_level_cache_mib
    from latencykit.devices.host import cpu_name

    start = time.perf_counter()
    passes = one_per_process(__file__, sys.argv[1:], args.processes)
    command = " ".join(["PYTHONPATH=$PWD python benchmarks/node_gap.py", *sys.argv[1:]])
    lines = ["# Node times inside a network against the network measured whole (host)", "",
             "Each model is profiled with ONNX Runtime's profiler (median per optimized node over back-to-back runs) "
             "and measured whole with the tables' protocol in the same process; *gap* = whole - sum of node times. "
             "Cells: share of models within ±5% / ±10% of whole, and the median error.", "",
             f"Command: `{command}` (LATENCYKIT_HOME with a host kernel profile)  ",
             f"CPU: {cpu_name()}, {os.cpu_count()} cores, last-level cache {last_level_cache_mib()} MiB, 1 runtime "
             f"thread, Python {platform.python_version()}; {len(passes)} processes, "
             f"{time.perf_counter() - start:.0f} s.", ""]
    gaps = []
    for i, p in enumerate(passes, 1):
        table, gap = report(p)
        share = np.median([v["mapped_share"] for v in p.values()]) * 100
        lines += [f"## Process {i}", "", f"Node time mapped to a kernel: median {share:.1f}% per network.", "",
                  *table, ""]
        gaps.append(gap)
    lines += ["## The zoo's gap", "", "| model | whole ms (process 1) | sum of nodes ms | gap ms per process | "
              "weights MiB | nodes |", "|---|---|---|---|---|---|"]
    for k, v in passes[0].items():
        if not k.startswith("random-"):
            lines.append(f"| {k} | {v['whole']:.2f} | {v['nodes_ms']:.2f} | "
                         + " / ".join(f"{g[k]:.2f}" for g in gaps if k in g)
                         + f" | {v['weights_mib']:.1f} | {v['nodes']} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
