"""Coarse-to-fine against plain evolution and random search at equal accuracy evaluations.

Each seed runs coarse-to-fine first; evolution (random feasible seeds, mutation 0.1 per choice) and
random search then get exactly as many accuracy evaluations. The signal is a training-free proxy
(ViNTK by default) or a supernet's accuracy once one is trained (--proxy supernet --checkpoint PATH).
Scores are cached on disk by architecture, so a rerun resumes and the methods share evaluations.

Usage: LATENCYKIT_HOME=... python benchmarks/search_methods.py [--space autovit-xxs] [--seeds 3]
Writes benchmarks/results/search_methods.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from latencykit.arch import Arch
from latencykit.lut.predictors import get_predictor
from latencykit.lut.table import load_table
from latencykit.nas.proxies import get_signal
from latencykit.nas.search import METHODS, Budget, SearchConfig, search
from latencykit.space import load_space

RESULTS = Path(__file__).resolve().parent / "results"


class DiskCache:
    """arch JSON -> score, saved atomically every few new entries (so an interrupted run resumes)."""

    def __init__(self, path: Path, score) -> None:
        self.path, self.score_fn = path, score
        self.data = json.loads(path.read_text()) if path.exists() else {}
        self.new = 0

    def __call__(self, arch: Arch) -> float:
        key = arch.to_json()
        if key not in self.data:
            self.data[key] = self.score_fn(arch)
            self.new += 1
            if self.new % 25 == 0:
                self.save()
        return self.data[key]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="autovit-xxs")
    ap.add_argument("--device", default="host")
    ap.add_argument("--proxy", default="vintk")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--parents", type=int, default=4)
    ap.add_argument("--quantile", type=float, default=0.5)
    ap.add_argument("--skeleton-pool", type=float, default=0.0)
    ap.add_argument("--cache", default="/tmp/latencykit-search-methods")
    args = ap.parse_args()
    sp = load_space(args.space)
    pred = get_predictor("isolated").fit(sp, load_table(args.device, sp))
    genes = sp.sample_genes(50_000, 0)
    budget = Budget(latency_ms=float(np.quantile(pred.predict_genes(genes), args.quantile)),
                    params=float(np.quantile(sp.evaluate(sp.params_values, genes), 0.7)))
    signal = get_signal(args.proxy, sp, **({"checkpoint": args.checkpoint} if args.checkpoint else {}))
    score = DiskCache(Path(args.cache) / f"{sp.name}-{args.proxy}.json", signal.score)
    best: dict[str, list[float]] = {m: [] for m in METHODS}
    evals: list[int] = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        base = dict(population=args.population, generations=args.generations, parents=args.parents, seed=seed)
        r = search(sp, score, budget, pred.predict_genes, SearchConfig(skeleton_pool=args.skeleton_pool, **base),
                   args.device, args.proxy)
        n = r.accuracy_evaluations
        evals.append(n)
        best["coarse-to-fine"].append(r.best.score)
        for method in ("evolution", "random"):
            rb = search(sp, score, budget, pred.predict_genes, SearchConfig(method=method, evaluations=n, **base),
                        args.device, args.proxy)
            assert rb.accuracy_evaluations == n, (method, rb.accuracy_evaluations, n)
            best[method].append(rb.best.score)
        score.save()
    lines = [f"# Coarse-to-fine vs evolution vs random at equal accuracy evaluations ({sp.name}, {args.device})", "",
             f"Command: `LATENCYKIT_HOME=<home with a host table> nice -n 5 python {' '.join(sys.argv)}`", "",
             f"Signal: {args.proxy} ({signal.kind}; higher is better). Budget: {budget.describe()} "
             f"(median predicted latency, 70th percentile params of random subnets). "
             f"Population {args.population}, {args.generations} generations, {args.parents} parents; "
             f"skeletons {'drawn from the top ' + str(args.skeleton_pool) + ' by budget use' if args.skeleton_pool else 'the top by budget use'}; "
             f"accuracy evaluations per search and seed: {evals}. {args.seeds} seeds; "
             f"{len(score.data)} distinct subnets scored; {time.perf_counter() - t0:.0f} s.", "",
             "| method | mean best score | std | min | max | per seed |", "|---|---|---|---|---|---|"]
    for m in METHODS:
        v = np.array(best[m])
        lines.append(f"| {m} | {v.mean():.4f} | {v.std(ddof=1) if len(v) > 1 else 0:.4f} | {v.min():.4f} | "
                     f"{v.max():.4f} | {', '.join(f'{x:.4f}' for x in v)} |")
    RESULTS.mkdir(exist_ok=True)
    suffix = f"_pool{args.skeleton_pool:g}" if args.skeleton_pool else ""
    (RESULTS / f"search_methods_{args.proxy}{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
