"""Search judged by a ground truth: a trained supernet's inherited accuracy (BN recalibrated) as the oracle.

1. Trains one supernet on scikit-learn's digits (`train_supernet`, sandwich rule) unless its
   checkpoint is already there.
2. Oracle: the validation accuracy of a subnet with the supernet's weights after batch-norm
   recalibration on 4 training batches (as `latencykit search --checkpoint`), with ties (360
   validation images: steps of 0.28%) broken by the validation cross-entropy (score = accuracy -
   1e-4 x loss, smaller than one accuracy step).
3. Methods at equal oracle evaluations: every search spends 200 evaluations with the oracle as its
   signal, and its result at 50 / 100 / 200 is the best among its first 50 / 100 / 200. With a
   population of 25 every generation is whole at those counts, so this is exactly what a search
   stopped there would return (checked on seed 0 of the first budget).
4. Proxies: Kendall tau and top-10% overlap of each training-free proxy with the oracle on random
   subnets.

Usage: LATENCYKIT_HOME=<home with a host table of the space> python benchmarks/search_truth.py
       [--space tests/data/small.json] [--seeds 10] [--subnets 120] [--quantiles 0.25 0.6]
Writes benchmarks/results/search_truth.md (or --out). Spaces judged so far: tests/data/small.json (hybrid;
search_truth.md) and benchmarks/spaces/cnn.json (convolutions only; search_truth_cnn.md, and with populations
scaled to the budget, search_truth_cnn_scaled.md; the hybrid space so, search_truth_scaled.md).
--val-fraction 0.5 (899 held-out digits) gives a finer oracle: search_truth_val50.md (both spaces).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau, wilcoxon

from latencykit.devices.host import cpu_name
from latencykit.lut.predictors import get_predictor
from latencykit.lut.table import load_table
from latencykit.lut.validate import sample_archs
from latencykit.nas.data import load_dataset
from latencykit.nas.evaluate import recalibrate_bn
from latencykit.nas.proxies import get_signal
from latencykit.nas.scores import ScoreCache, Scorer
from latencykit.nas.search import Budget, SearchConfig, search
from latencykit.nas.train import TrainConfig, supernet_from_checkpoint, train_supernet
from latencykit.space import load_space

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
EVALS = (50, 100, 200)
PROXIES = ("vintk", "ntk", "ntk-cond", "params", "flops")


class Uncached(Exception):
    """An oracle score that --cached-only does not compute."""


class Oracle:
    """Inherited accuracy with recalibrated BN; the data are resized once, every score is memoised."""

    name, kind = "oracle", "accuracy"

    def __init__(self, checkpoint: Path) -> None:
        self.net, state = supernet_from_checkpoint(checkpoint)
        self.net.eval()
        config = state["config"]
        train, val = load_dataset(config.get("data")).split(config.get("val_fraction", 0.2), config.get("seed", 0))
        self.side = state.get("train_resolution") or config.get("resolution")
        self.calib = [x for x, _ in islice(train.batches(64, self.side, seed=12345), config.get("calib_batches", 4))]
        xs, ys = zip(*val.batches(512, self.side))
        self.xv, self.yv = torch.cat(xs), torch.cat(ys)
        self.weights = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()[:32]
        self.memo: dict = {}
        self.seconds = 0.0

    def cache_key(self) -> tuple[str, str]:  # scores persist in the score cache: a rerun is free
        return json.dumps({"oracle": "acc-1e-4*loss", "side": self.side, "calib": len(self.calib)}), self.weights

    cached_only = False  # --cached-only: a report from the score cache alone; a miss ends that method's seeds

    @torch.no_grad()
    def score(self, arch) -> float:
        if self.cached_only:
            raise Uncached(arch)
        t0 = time.perf_counter()
        net = recalibrate_bn(self.net.extract(arch), self.calib)
        out = net(self.xv)
        acc = float((out.argmax(1) == self.yv).float().mean())
        self.seconds += time.perf_counter() - t0
        return acc - 1e-4 * float(F.cross_entropy(out, self.yv))


def supernet(space: str, folder: Path, epochs: int, val_fraction: float) -> Path:
    checkpoint = folder / "checkpoint.pt"
    summary = folder / "summary.json"
    if not summary.exists():
        print(f"training the {space} supernet ({epochs} epochs) into {folder}", flush=True)
        train_supernet(TrainConfig(space=space, out=str(folder), epochs=epochs, batch=64, threads=1,
                                   val_fraction=val_fraction))
    return checkpoint


def top_overlap(a: np.ndarray, b: np.ndarray, share: float = 0.1) -> float:
    k = max(1, int(round(len(a) * share)))
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k


def paired(x: np.ndarray, y: np.ndarray) -> str:
    """Mean difference and the two-sided Wilcoxon signed-rank p-value (ties split, exact where it can)."""
    d = x - y
    if np.allclose(d, 0):
        return f"{d.mean() * 100:+.2f} (p = 1)"
    return f"{d.mean() * 100:+.2f} (p = {wilcoxon(x, y, zero_method='zsplit').pvalue:.3g})"


def methods(variants: list[str]) -> dict[str, dict]:
    """Name -> SearchConfig fields of each compared search (`scaled`: population by budget, `scaled_population`)."""
    out = {}
    for v in variants:
        if v.startswith("coarse-to-fine"):  # coarse-to-fine[:RANK[:mutation=P][:pool=SHARE][:scaled]]
            parts = v.split(":")
            rank = parts[1] if len(parts) > 1 else "fullness"
            fields = {"method": "coarse-to-fine", "skeleton_rank": rank}
            for extra in parts[2:]:
                if extra == "scaled":
                    fields["scaled"] = True
                    continue
                key, value = extra.split("=")
                fields.update({"p_depth": float(value), "p_layer": float(value)} if key == "mutation"
                              else {"skeleton_pool": float(value)})
            out[f"coarse-to-fine ({', '.join([rank, *parts[2:]])})"] = fields
        elif v == "evolution:scaled":
            out["evolution (scaled)"] = {"method": "evolution", "scaled": True}
        else:
            out[v] = {"method": v}
    return out


def scaled_population(evaluations: int) -> tuple[int, int]:
    """Population and parents for a search of `evaluations`: 1.75 x sqrt (12, 18 and 25 at 50, 100 and 200), so a
    small budget still runs generations (at 50, a population of 25 is one random draw and one generation)."""
    population = max(4, round(1.75 * evaluations ** 0.5))
    return population, max(2, round(0.4 * population))


def proxy_section(args, sp, oracle: Scorer, lines: list[str]) -> None:
    """Kendall tau and top-10% overlap of every proxy against the oracle on random subnets."""
    archs = sample_archs(sp, args.subnets, args.seed)
    truth = np.array(oracle.many(archs))
    lines += [f"### Proxies against the oracle ({len(archs)} random subnets, seed {args.seed})", "",
              f"Oracle accuracy of these subnets: {truth.min() * 100:.1f}-{truth.max() * 100:.1f}%, "
              f"median {np.median(truth) * 100:.1f}%.", "",
              "| proxy | Kendall tau | p | top-10% overlap | seconds per subnet |", "|---|---|---|---|---|"]
    for name in PROXIES:
        t1 = time.perf_counter()
        if name == "flops":
            values = np.array([float(sp.flops(a)) for a in archs])
        else:
            signal = get_signal(name, sp)
            values = np.array([signal.score(a) for a in archs])
        per = (time.perf_counter() - t1) / len(archs)
        tau = kendalltau(values, truth)
        lines.append(f"| {name} | {tau.statistic:.3f} | {tau.pvalue:.2g} | {top_overlap(values, truth):.2f} | "
                     f"{per:.3f} |")
        print(f"{name}: tau {tau.statistic:.3f}", flush=True)
    lines.append("")


def run_space(args, space_name: str, lines: list[str]) -> None:
    sp = load_space(space_name)
    folder = Path(args.runs) / sp.name
    t0 = time.perf_counter()
    oracle_signal = Oracle(supernet(space_name, folder, args.epochs, args.val_fraction))
    oracle = Scorer(sp, oracle_signal, ScoreCache(Path(args.runs) / "oracle_scores.sqlite"))
    pred = get_predictor("isolated").fit(sp, load_table("host", sp))
    genes = sp.sample_genes(20_000, 0)
    lat = pred.predict_genes(genes)
    compared = methods(args.methods)
    lines += [f"## {sp.name} ({sp.size():.3g} architectures)", "",
              f"Supernet: {folder / 'checkpoint.pt'} ({args.epochs} epochs, digits, sandwich); oracle at "
              f"{oracle_signal.side}x{oracle_signal.side}. Latency: host table, isolated predictor. Search: population 25, 10 "
              f"parents, {args.seeds} seeds, {max(EVALS)} oracle evaluations per search"
              + ("; *scaled*: one search per budget, population and parents "
                 + ", ".join(f"{scaled_population(n)[0]} and {scaled_population(n)[1]} at {n}" for n in EVALS)
                 if any(f.get("scaled") for f in compared.values()) else "") + ".", ""]

    if args.subnets:
        proxy_section(args, sp, oracle, lines)
    for q in args.quantiles:
        budget = Budget(latency_ms=float(np.quantile(lat, q)))
        best = {m: np.zeros((args.seeds, len(EVALS))) for m in compared}
        done = {m: args.seeds for m in compared}
        for m, all_fields in compared.items():
            fields = {k: v for k, v in all_fields.items() if k != "scaled"}
            for seed in range(args.seeds):
                # (population, parents, evaluations) of each search and the counts read from it: scaled, one search
                # per count; else one search of the largest count, read at each prefix
                runs = ([(*scaled_population(n), n, (n,)) for n in EVALS] if all_fields.get("scaled")
                        else [(25, 10, max(EVALS), EVALS)])
                try:
                    for population, parents, evaluations, counts in runs:
                        cfg = SearchConfig(population=population, parents=parents, evaluations=evaluations, seed=seed,
                                           **fields)
                        r = search(sp, oracle, budget, pred.predict_genes, cfg, "host", "oracle", "accuracy")
                        scores = np.array([c.score for c in r.evaluated])
                        for n in counts:
                            best[m][seed][EVALS.index(n)] = scores[:n].max() if len(scores) else np.nan
                except Uncached:
                    done[m] = seed
                    break
                print(f"  {m} seed {seed}: {best[m][seed]}", flush=True)
                if seed == 0 and q == args.quantiles[0] and len(runs) == 1:  # stopping at 50 gives the prefix
                    short = search(sp, oracle, budget, pred.predict_genes,
                                   SearchConfig(population=25, parents=10, evaluations=EVALS[0], seed=0, **fields))
                    assert [c.arch for c in short.evaluated] == [c.arch for c in r.evaluated[:EVALS[0]]], m
            print(f"{sp.name} q{q} {m}: {best[m].mean(0)}  oracle scored {oracle.computed}, cached {oracle.hits}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        seeds = min(done.values())
        best = {m: v[:seeds] for m, v in best.items()}
        lines += [f"### latency <= {budget.latency_ms:.3f} ms ({q:.0%} quantile of random subnets)", "",
                  f"Seeds 0-{seeds - 1} ({seeds} paired seeds" + (f"; seeds completed per method before the run was "
                  f"stopped: {done}" if seeds < args.seeds else "") + ").", "",
                  "Best oracle accuracy found (%), mean ± std over seeds [min, max]:", "",
                  "| method | " + " | ".join(f"{n} evaluations" for n in EVALS) + " |",
                  "|---|" + "---|" * len(EVALS)]
        for m in compared:
            cells = [f"{best[m][:, j].mean() * 100:.2f} ± {best[m][:, j].std(ddof=1) * 100:.2f} "
                     f"[{best[m][:, j].min() * 100:.2f}, {best[m][:, j].max() * 100:.2f}]" for j in range(len(EVALS))]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["", "Paired by seed: mean difference in points (Wilcoxon signed-rank two-sided p):", "",
                  "| pair | " + " | ".join(f"{n}" for n in EVALS) + " |", "|---|" + "---|" * len(EVALS)]
        names = list(compared)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                lines.append(f"| {a} - {b} | " + " | ".join(paired(best[a][:, j], best[b][:, j])
                                                          for j in range(len(EVALS))) + " |")
        lines.append("")

    lines += [f"Oracle: {oracle.computed} subnets scored in this run ({oracle_signal.seconds:.0f} s), "
                  f"{oracle.hits} from the oracle's score cache; "
                  f"space total {time.perf_counter() - t0:.0f} s wall.", ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", action="append", default=None, help="Space name or file (repeatable).")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--quantiles", type=float, nargs="+", default=[0.25, 0.6])
    ap.add_argument("--subnets", type=int, default=120)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--val-fraction", type=float, default=0.2, choices=[0.2, 0.3, 0.4, 0.5], metavar="{0.2..0.5}",
                    help="Digits held out for the oracle (0.2: 360 images; 0.5: 899, finer steps, less to train on).")
    ap.add_argument("--methods", nargs="+", default=["coarse-to-fine:fullness", "evolution", "random"],
                    help="coarse-to-fine:RANK[:scaled] (fullness, params, flops), evolution, evolution:scaled, random.")
    ap.add_argument("--cached-only", action="store_true", help="Report from the oracle's score cache only.")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "search_truth"))
    ap.add_argument("--out", default=str(RESULTS / "search_truth.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    Oracle.cached_only = args.cached_only
    t0 = time.perf_counter()
    lines = ["# Search against a ground truth (supernet oracle)", "",
             f"Command: `nice -n 5 env PYTHONPATH=$PWD LATENCYKIT_HOME=<home> python {' '.join(sys.argv)}`", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} cores shared with other jobs, torch {torch.__version__}, "
             f"1 torch thread.", ""]
    for space in args.space or [str(ROOT / "tests" / "data" / "small.json")]:
        run_space(args, space, lines)
    lines.append(f"Total wall time {time.perf_counter() - t0:.0f} s.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
