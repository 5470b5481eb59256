"""ElasticViT's eight published models against the paper, through nn-Meter's imported phone tables.

For each model: latencykit's FLOPs beside the paper's, the predicted latency on all four phones, the
paper's measured latency on its phone and the ratio. Then coverage (share of the space's layers and of
random subnets fully in each table) and the table predictor's speed per phone.

Run from the repository root:
    PYTHONPATH=$PWD python benchmarks/elasticvit_paper.py
Writes benchmarks/results/elasticvit_paper.md. Tables are imported into a temporary LATENCYKIT_HOME.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LUTS = SHARED / "data" / "nn-meter-luts"
MODELS = SHARED / "data" / "elasticvit-models" / "models.json"
OUT = ROOT / "benchmarks" / "results" / "elasticvit_paper.md"
PHONES = ("pixel1", "pixel4", "pixel6", "xiaomi11")
COVERAGE_SAMPLE = 100_000
SPEED_BATCH, SPEED_REPEATS = 100_000, 5


def main() -> None:
    os.environ["LATENCYKIT_HOME"] = tempfile.mkdtemp(prefix="latencykit-bench-")
    from latencykit.elasticvit import arch_from_tuple
    from latencykit.lut.importers import write_import
    from latencykit.lut.predictors import get_predictor
    from latencykit.lut.table import LatencyTable
    from latencykit.space import load_space

    space = load_space("elasticvit")
    models = json.loads(MODELS.read_text())["models"]
    imports = {p: write_import("nn-meter", LUTS / f"{p}_lut_ln_v3.json", p, space) for p in PHONES}
    predictors = {p: get_predictor("isolated").fit(space, LatencyTable.read(r.path)) for p, r in imports.items()}

    rows, ratios = [], []
    for name, m in models.items():
        arch = space.validate(arch_from_tuple(m["tuple"]))
        ours = space.flops(arch) / 1e6
        pred = {p: predictors[p].predict(arch) for p in PHONES}
        ratio = pred[m["phone"]] / m["ms"]
        ratios.append(ratio)
        rows.append(f"| {name} | {m['tuple'][0]} | {ours:.1f} | {m['mflops']} | {100 * (ours / m['mflops'] - 1):+.1f}% | "
                    + " | ".join(f"{pred[p]:.2f}" for p in PHONES)
                    + f" | {m['phone']} | {m['ms']} | {ratio:.4f} ({100 * (ratio - 1):+.2f}%) |")

    genes = space.sample_genes(COVERAGE_SAMPLE, np.random.default_rng(0))
    cover_rows = []
    for p, r in imports.items():
        values = predictors[p].predict_genes(genes)
        c = r.coverage
        cover_rows.append(f"| {p} | {c.covered}/{c.layers} ({c.share:.1%}) | {np.isfinite(values).mean():.2%} | "
                          f"{c.file_entries} | {c.unused_entries} |")

    speed_genes = space.sample_genes(SPEED_BATCH, np.random.default_rng(1))
    speed_rows = []
    for p, pr in predictors.items():
        pr.predict_genes(speed_genes[:1000])
        times = []
        for _ in range(SPEED_REPEATS):
            t = time.perf_counter()
            pr.predict_genes(speed_genes)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        pr.predict_genes(space.sample_genes(SPEED_BATCH, np.random.default_rng(2)))
        with_sampling = time.perf_counter() - t
        speed_rows.append(f"| {p} | {SPEED_BATCH / np.median(times):,.0f} | {SPEED_BATCH / min(times):,.0f} | "
                          f"{SPEED_BATCH / with_sampling:,.0f} |")

    summary = space.summary()
    paper = summary["paper"]
    per_stage = len(space.resolution) * len(space.stem.widths)
    for st in space.stages:  # one value per stage for each per-layer field (the paper's counting)
        choices = int(np.prod([len(getattr(st, f)) for f in st.layer_fields]))
        per_stage *= (1 if st.tie_width else len(st.widths)) * len(st.depths) * choices
    text = f"""# ElasticViT's published models against the paper (nn-Meter phone tables)

Command: `PYTHONPATH=$PWD python benchmarks/elasticvit_paper.py` (from the repository root).
Machine: {platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs (shared; timings vary).

Latencies are **predicted**: the sum of nn-Meter's published per-block latencies, measured on the
phones with TFLite (CPU, 1 thread) and **imported** with `latencykit lut import nn-meter`. The
paper's latencies are **measured** end to end on the model's phone (Table 2).
FLOPs are latencykit's multiply-accumulates (see the space notes, `latencykit/spaces/elasticvit.json`).

## The eight models

| model | res | our MFLOPs | paper MFLOPs | FLOPs diff | {" | ".join(f"{p} ms" for p in PHONES)} | paper phone | paper ms | predicted / paper |
| --- | --- | --- | --- | --- | {" | ".join("---" for _ in PHONES)} | --- | --- | --- |
{chr(10).join(rows)}

Ratio of prediction to the paper's measurement on its phone: {min(ratios):.4f} to {max(ratios):.4f}
(the reference sum of the published entries is stated to land within 0 to 3.4% of the paper).

FLOPs: ElasticViT's own counter also counts softmax, counts the 3x3 depthwise V conv as 1 MAC per
element (we count 9), leaves out stride-1 shortcut convs and squeeze-excite, and rounds odd maps up
(4x4 last map at 224, where nn-Meter's keys, and so our space, round down to 3x3). That puts us above
the paper at 128/192/256 and below it at 160/224.

## The space beside the paper

| | ours | paper |
| --- | --- | --- |
| MFLOPs range (smallest, largest subnet) | {summary['flops_min'] / 1e6:.1f} - {summary['flops_max'] / 1e6:.1f} | {paper['flops_range_M'][0]} - {paper['flops_range_M'][1]} |
| subnets | {float(summary['architectures']):.3g} (per-layer choices); {per_stage:.3g} if chosen per stage | {paper['architectures']:.3g} (per-stage choices, stem and first-stage widths counted apart: 2x) |
| params (M) | {summary['params_min'] / 1e6:.2f} - {summary['params_max'] / 1e6:.2f} | - |
| distinct layers | {summary['distinct_layers']} | - |

## Coverage

| phone | space layers in the file | of {COVERAGE_SAMPLE:,} random subnets fully covered | file entries | entries outside the space |
| --- | --- | --- | --- | --- |
{chr(10).join(cover_rows)}

## Predictor speed (table predictor, batches of {SPEED_BATCH:,} gene rows)

| phone | archs/s (median of {SPEED_REPEATS}) | archs/s (best) | archs/s incl. sampling |
| --- | --- | --- | --- |
{chr(10).join(speed_rows)}
"""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
