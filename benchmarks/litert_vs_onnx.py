"""How ONNX Runtime and LiteRT rank the same layers on the same CPU (why tables are per device).

Every distinct layer of a space is exported to ONNX and TFLite (content-cached), then timed on
`host` (ONNX Runtime) and `host-litert` (LiteRT + XNNPACK) in interleaved, shuffled rounds so
drift hits both alike. Reports the rank agreement and the layers whose rank moves most, and
writes a Markdown results file with the command that produced it.

    PYTHONPATH=$PWD python benchmarks/litert_vs_onnx.py --space autovit-xxs
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr

from latencykit.blocks import build_layer, layer_inputs
from latencykit.devices import get_device
from latencykit.export import default_cache

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", action="append", help="search space (repeatable); default autovit-xxs")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--limit", type=int, default=0, help="first N layers only (0: all)")
    ap.add_argument("--out", default=str(RESULTS / "litert_vs_onnx.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from latencykit.space import load_space

    spaces = args.space or ["autovit-xxs"]
    specs = []
    for name in spaces:
        for spec in load_space(name).distinct_layers():
            if spec not in specs:
                specs.append(spec)
    if args.limit:
        specs = specs[: args.limit]
    cache = default_cache()
    t0 = time.time()
    files = {}
    for i, spec in enumerate(specs):
        torch.manual_seed(0)
        module, inputs = build_layer(spec), layer_inputs(spec)
        files[spec] = {fmt: cache.export(module, inputs, fmt) for fmt in ("onnx", "tflite")}
        print(f"exported {i + 1}/{len(specs)} {spec.key}", file=sys.stderr, flush=True)
    export_s = time.time() - t0
    devices = {"onnx": get_device("host", threads=1), "tflite": get_device("host-litert", threads=1)}
    handles = {(s, f): devices[f].open(files[s][f]) for s in specs for f in devices}
    rng = np.random.default_rng(0)
    times = {key: [] for key in handles}
    for r in range(args.rounds):
        for j in rng.permutation(len(specs)):
            for fmt in rng.permutation(list(devices)):
                key = (specs[j], fmt)
                times[key].append(devices[fmt].measure(handles[key], args.runs))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
    ort = np.array([np.median(times[(s, "onnx")]) for s in specs])
    lit = np.array([np.median(times[(s, "tflite")]) for s in specs])
    rho, tau = spearmanr(ort, lit).statistic, kendalltau(ort, lit).statistic
    rank_o, rank_l = ort.argsort().argsort(), lit.argsort().argsort()
    pairs = [(i, j) for i in range(len(specs)) for j in range(i + 1, len(specs))]
    flipped = sum((ort[i] - ort[j]) * (lit[i] - lit[j]) < 0 for i, j in pairs) / max(1, len(pairs))
    ratio = lit / ort
    kinds = sorted({s.kind for s in specs})
    moved = np.argsort(-np.abs(rank_o - rank_l))[:12]
    info = devices["tflite"].describe()
    lines = [
        "# ONNX Runtime vs LiteRT on the same CPU: same layers, different ranking",
        "",
        f"Command: `PYTHONPATH=$PWD python benchmarks/{Path(__file__).name} {shlex.join(sys.argv[1:])}`",
        "",
        f"- CPU: {info['cpu']}, 1 thread, machine shared with other jobs (timings drift; both runtimes",
        "  are timed in the same shuffled rounds, so drift hits them alike)",
        f"- runtimes: {devices['onnx'].describe()['runtime']} (CPU provider) vs {info['runtime']} (XNNPACK); "
        f"clocks: {devices['onnx'].describe()['clock']} / {info['clock']}",
        f"- layers: {len(specs)} distinct layers of {', '.join(spaces)}; {args.rounds} rounds x "
        f"{args.runs} runs, median of round medians; exports took {export_s:.0f} s (cached files reused)",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| Spearman rank correlation | {rho:.3f} |",
        f"| Kendall tau | {tau:.3f} |",
        f"| layer pairs ordered differently | {flipped:.1%} |",
        f"| LiteRT / ORT latency, median (min-max) | {np.median(ratio):.2f} ({ratio.min():.2f}-{ratio.max():.2f}) |",
        "",
        "LiteRT / ORT latency ratio by layer kind (median, range):",
        "",
        "| kind | layers | median ratio | range |",
        "| --- | --- | --- | --- |",
    ]
    for kind in kinds:
        r = ratio[[s.kind == kind for s in specs]]
        lines.append(f"| {kind} | {len(r)} | {np.median(r):.2f} | {r.min():.2f}-{r.max():.2f} |")
    lines += ["", "Layers whose rank moves most (rank 0 = fastest):", "",
              "| layer | ORT ms | ORT rank | LiteRT ms | LiteRT rank |", "| --- | --- | --- | --- | --- |"]
    for i in moved:
        lines.append(f"| `{specs[i].key}` | {ort[i]:.3f} | {rank_o[i]} | {lit[i]:.3f} | {rank_l[i]} |")
    lines += ["", "A table measured with one runtime is not a table for the other: per-device tables are "
              "the point. All latencies above are measured on this machine."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    print(main())
