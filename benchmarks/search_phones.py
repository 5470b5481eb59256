"""The same search on four phones' imported tables: do the chosen subnets differ where the tables do?

Imports nn-Meter's ElasticViT tables for Pixel 1, Pixel 4, Pixel 6 and Xiaomi Mi 11 (if not yet in
LATENCYKIT_HOME), runs `search_devices` once per budget, and reports each phone's choice, the
choice's predicted latency on every phone (the cross matrix), and which choices differ.

The accuracy signal defaults to the parameter count: ViNTK on ElasticViT subnets (5.6-37 M params)
costs 13-37 s per subnet on this shared 2-core machine, too slow for 4 x 1,050 evaluations here.

Usage: LATENCYKIT_HOME=... python benchmarks/search_phones.py [--proxy params]
Writes benchmarks/results/search_phones.md and search_phones_pareto_*.png.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from latencykit.lut.predictors import get_predictor
from latencykit.lut.table import default_path, load_table
from latencykit.nas.search import Budget, SearchConfig
from latencykit.nas.run import arch_changes, search_devices
from latencykit.space import load_space

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PHONES = ("pixel1", "pixel4", "pixel6", "xiaomi11")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", default="params")
    ap.add_argument("--budgets", default="30ms:6M,30ms:-,15ms:-")
    args = ap.parse_args()
    sp = load_space("elasticvit")
    for p in PHONES:
        if not default_path(p, sp.name).exists():
            subprocess.run([sys.executable, "-m", "latencykit", "lut", "import", "nn-meter",
                            str(SHARED / "data" / "nn-meter-luts" / f"{p}_lut_ln_v3.json"), "--device", p,
                            "--space", sp.name, "--json"], check=True, capture_output=True)
    preds = {p: get_predictor("isolated").fit(sp, load_table(p, sp)) for p in PHONES}
    lines = ["# One budget, four phones (elasticvit, imported nn-Meter tables)", "",
             f"Command: `LATENCYKIT_HOME=<home> nice -n 5 python {' '.join(sys.argv)}`", "",
             f"Signal: {args.proxy}. Coarse-to-fine, population 50, 20 generations, 10 parents. "
             "Latencies are predicted from the imported tables (TFLite CPU, 1 thread; no phone attached).", ""]
    for spec in args.budgets.split(","):
        lat, par = spec.split(":")
        budget = Budget(float(lat.removesuffix("ms")), None if par == "-" else float(par.removesuffix("M")) * 1e6)
        out = Path(f"/tmp/latencykit-search-phones/{spec.replace(':', '_')}")
        results = search_devices(sp, list(PHONES), budget, args.proxy, SearchConfig(), out, measure=False)
        shutil.copy(out / "pareto.png", RESULTS / f"search_phones_pareto_{lat}_{par}.png")
        archs = {dr.result.device: dr.result.best.arch for dr in results}
        distinct = len(set(archs.values()))
        lines += [f"## {budget.describe()}", "",
                  f"**{distinct} distinct architectures for {len(PHONES)} phones.** Each row: the phone's choice, "
                  "then that choice's predicted latency (ms) on every phone.", "",
                  "| chosen on | params M | MFLOPs | score | " + " | ".join(PHONES) + " |",
                  "|---|---|---|---|" + "---|" * len(PHONES)]
        for dr in results:
            b = dr.result.best
            cross = [f"{preds[p].predict(b.arch):.1f}" for p in PHONES]
            lines.append(f"| {dr.result.device} | {b.params / 1e6:.2f} | {b.flops / 1e6:.0f} | {b.score:.4g} | "
                         + " | ".join(cross) + " |")
        cols, rows = arch_changes(archs)
        changed = [r for r in rows if r[0].startswith("*")]
        lines += ["", "Choices that differ between phones:", "", "| " + " | ".join(cols) + " |",
                  "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in changed] + [""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "search_phones.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
