"""Few-shot transfer on 13 real devices: leave-one-device-out on NAS-Bench-201's measured latencies.

For each target device, the other 12 devices' full columns are the references (each gets its
count model fit on all its 15,625 architectures); of the target only k measurements are drawn.
latencykit's `transfer` fit (latencykit.lut.transfer.fit_transfer, the code `fit --predictor transfer`
runs) then predicts all 15,625. Beside it: the FLOPs-linear baseline on the same k, the device's
ceiling (gradient boosting on the one-hot cell encoding, log ms, 5,000 architectures of the device,
scored on the other 10,625), and the rank cap of integer-ms columns (rho of the column against itself
with ties broken at random). Writes benchmarks/results/transfer.md.

    PYTHONPATH=$PWD python benchmarks/transfer.py [--draws 20] [--ks 5,10,20,50]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr

from latencykit.arch import parse_cell
from latencykit.files import atomic_write_text
from latencykit.lut.transfer import Reference, count_features, design_matrix, fit_transfer
from latencykit.space import load_space

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "nasbench201-latency" / "latency_ms.csv"
OUT = ROOT / "benchmarks" / "results" / "transfer.md"
PHONES = ("pixel3", "samsung_a50", "samsung_s7", "essential_ph_1")
HELP = "HELP (NeurIPS 2021, its README Table 3), 10 samples, *other devices*: Pixel 2 0.802, Raspberry Pi 4 0.890, " \
       "Xeon Gold 6226 0.989, Titan RTX 0.987, FPGA 0.985, ASIC 0.940; its FLOPs baseline on Pixel 2 0.765"


def scores(pred: np.ndarray, y: np.ndarray) -> dict:
    big = y > 0.5
    err = np.abs(pred[big] / y[big] - 1)
    # a constant prediction (a fit clipped to the floor everywhere) ranks nothing: scored 0, not NaN
    return {"rho": np.nan_to_num(spearmanr(pred, y).statistic), "tau": np.nan_to_num(kendalltau(pred, y).statistic),
            "w5": float(np.mean(err <= 0.05) * 100), "w10": float(np.mean(err <= 0.10) * 100)}


def ceiling(features: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """Gradient boosting on `features` (log ms) trained on 5,000 architectures, scored on the rest."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    perm = np.random.default_rng(seed).permutation(len(y))
    tr, te = perm[:5000], perm[5000:]
    model = HistGradientBoostingRegressor(max_iter=300, random_state=0).fit(features[tr], np.log(y[tr]))
    return scores(np.exp(model.predict(features[te])), y[te])


def rank_cap(y: np.ndarray, draws: int = 5) -> float:
    """Spearman rho of a column against itself with its ties broken at random (1.0 without ties)."""
    rng = np.random.default_rng(0)
    caps = []
    for _ in range(draws):
        strict = np.empty(len(y))
        strict[np.lexsort((rng.random(len(y)), y))] = np.arange(len(y))
        caps.append(spearmanr(y, strict).statistic)
    return float(np.mean(caps))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--ks", default="5,10,20,50")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    start = time.perf_counter()
    space = load_space("nasbench201")
    data = pd.read_csv(DATA)
    devices = [c for c in data.columns if c not in ("index", "arch")]
    genes = np.array([[space.ops.index(op) for op in parse_cell(a)] for a in data["arch"]])
    names, counts = count_features(space, genes)
    design = design_matrix(counts, space.evaluate(space.flops_values, genes) / 1e6)
    onehot = np.eye(len(space.ops))[genes].reshape(len(genes), -1)
    ys = {d: data[d].to_numpy(float) for d in devices}
    fitted_refs = {d: Reference.fit(d, counts, ys[d]) for d in devices}
    rows, chosen = [], {}
    for target in devices:
        y = ys[target]
        refs = [fitted_refs[d] for d in devices if d != target]
        ceil = ceiling(onehot, y)
        others = np.log(np.column_stack([ys[d] for d in devices if d != target]))
        near_zero = y < 0.1 * np.median(y)
        row = {"device": target, "ceiling": ceil, "cap": rank_cap(y), "from_others": ceiling(others, y),
               "near_zero": int(near_zero.sum()),
               "near_zero_unreachable": int((near_zero & (counts[:, names.index("reachable")] == 0)).sum())}
        for k in ks:
            ours, base = [], []
            for draw in range(args.draws):
                idx = np.random.default_rng(1000 * k + draw).choice(len(y), k, replace=False)
                fit = fit_transfer(design[idx], y[idx], refs, len(names))
                ours.append(scores(fit.predict(design), y))
                chosen.setdefault((target, k), []).append(fit.model)
                base.append(scores(np.maximum(design @ _flops_coef(design[idx], y[idx], design.shape[1]), 1e-3), y))
            row[k] = {m: float(np.mean([s[m] for s in ours])) for m in ours[0]}
            row[f"flops{k}"] = {m: float(np.mean([s[m] for s in base])) for m in base[0]}
        rows.append(row)
        print(target, f"{time.perf_counter() - start:.0f}s", {k: round(row[k]["rho"], 3) for k in ks},
              "ceiling", round(ceil["rho"], 3), file=sys.stderr)
    write(rows, chosen, ks, args, time.perf_counter() - start)


def _flops_coef(x: np.ndarray, y: np.ndarray, d: int) -> np.ndarray:
    from latencykit.lut.transfer import _wls

    a = _wls(x[:, [0, d - 2]], y)
    coef = np.zeros(d)
    coef[0], coef[d - 2] = a
    return coef


def write(rows: list, chosen: dict, ks: list, args, seconds: float) -> None:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = ["# Few-shot transfer to 13 real devices (NAS-Bench-201, leave-one-device-out)", "",
             f"Command: `PYTHONPATH=$PWD python benchmarks/transfer.py --draws {args.draws} --ks {args.ks}` "
             f"({seconds:.0f} s on {cpu}, {os.cpu_count()} cores visible, shared).", "",
             "Data: `../shared/data/nasbench201-latency/latency_ms.csv` (HELP's republication of HW-NAS-Bench and "
             "BRP-NAS measurements), all 15,625 architectures per device. For each target, the other 12 devices' "
             "columns are the references; of the target only k architectures are drawn (20 draws per k), and "
             "`fit_transfer` (what `latencykit fit --predictor transfer` runs) predicts all 15,625. Scores are on "
             "all 15,625 (including the k); within ±5/±10% on architectures over 0.5 ms.", "",
             "*ceiling*: gradient boosting (sklearn HistGradientBoosting, one-hot cell, log ms) on 5,000 architectures "
             "of the device, scored on the other 10,625. *cap*: Spearman rho of the column against itself with ties "
             "broken at random (integer-ms phone columns). *flops*: latency = a + b x MFLOPs on the same k. A draw whose "
             "predictions are constant (every prediction clipped to the 1e-3 ms floor) scores rho = tau = 0.", "",
             f"{HELP}. Those are different devices; they are placed beside ours, not compared on the same data.", ""]
    for k in ks:
        lines += [f"## k = {k}", "",
                  "| device | rho | tau | ±5% | ±10% | flops rho | flops ±10% | ceiling rho | ceiling ±10% | cap | "
                  "rho ≥ ceiling−0.02 | ±10% ≥ 0.9×ceiling | beats flops | models chosen |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            o, f, c = r[k], r[f"flops{k}"], r["ceiling"]
            models = pd.Series(chosen[(r["device"], k)]).value_counts().to_dict()
            lines.append(f"| {r['device']} | {o['rho']:.3f} | {o['tau']:.3f} | {o['w5']:.0f}% | {o['w10']:.0f}% | "
                         f"{f['rho']:.3f} | {f['w10']:.0f}% | {c['rho']:.3f} | {c['w10']:.0f}% | {r['cap']:.3f} | "
                         f"{'yes' if o['rho'] >= c['rho'] - 0.02 else 'no'} | "
                         f"{'yes' if o['w10'] >= 0.9 * c['w10'] else 'no'} | "
                         f"{'yes' if o['rho'] > f['rho'] and o['w10'] >= f['w10'] else 'no'} | "
                         + ", ".join(f"{m} {n}" for m, n in models.items()) + " |")
        lines.append("")
    lines += ["## What the other devices can tell", "",
              "*from the other 12*: the same gradient boosting, its inputs the other 12 devices' measured latencies "
              "(log ms) instead of the cell, trained on 5,000 architectures of the device and scored on the rest: "
              "an upper bound on what any transfer from these references can rank, with thousands of target "
              "measurements instead of k. *near zero*: measurements under 10% of the device's median; *unreachable*: "
              "of those, cells whose output no path from the input reaches (the network computes a constant).", "",
              "| device | ceiling rho (cell) | from the other 12 rho | near zero | unreachable |", "|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['ceiling']['rho']:.3f} | {r['from_others']['rho']:.3f} | {r['near_zero']} | "
              f"{r['near_zero_unreachable']} |" for r in rows]
    lines.append("")
    if 10 in ks:
        phones = [r for r in rows if r["device"] in PHONES]
        lines += ["## Done-when lines", "",
                  f"- k=10, rho within 0.02 of the ceiling: {sum(r[10]['rho'] >= r['ceiling']['rho'] - 0.02 for r in rows)}"
                  f"/{len(rows)} devices (misses: "
                  + (", ".join(r["device"] for r in rows if r[10]["rho"] < r["ceiling"]["rho"] - 0.02) or "none") + ")",
                  "- k=10, phones above HELP's 0.802 / 0.890: "
                  + ", ".join(f"{r['device']} {r[10]['rho']:.3f}" for r in phones)]
        if 20 in ks:
            lines.append(f"- k=20, ±10% share ≥ 90% of the ceiling's: "
                         f"{sum(r[20]['w10'] >= 0.9 * r['ceiling']['w10'] for r in rows)}/{len(rows)} (misses: "
                         + (", ".join(r["device"] for r in rows if r[20]["w10"] < 0.9 * r["ceiling"]["w10"]) or "none")
                         + ")")
        lines.append(f"- FLOPs-linear loses (rho) at k=10 on {sum(r[10]['rho'] > r['flops10']['rho'] for r in rows)}"
                     f"/{len(rows)} devices")
        lines.append("")
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
