"""Kendall tau of each training-free proxy against the accuracy of trained subnets.

Until a trained supernet is on main, the ground truth here is short training: each sampled subnet
of the space is trained from scratch for a few epochs on scikit-learn's digits (upsampled to the
proxy resolution; seeded split, init and batch order) and its validation accuracy is measured. With
a checkpoint (--checkpoint) the ground truth is the supernet's accuracy with inherited weights.

Usage: python benchmarks/search_proxies.py [--space tests/data/tiny.json] [--subnets 24] [--epochs 4]
Writes benchmarks/results/search_proxies.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau
from sklearn.datasets import load_digits

from latencykit.blocks import build
from latencykit.lut.validate import sample_archs
from latencykit.nas.proxies import get_signal
from latencykit.nas.supernet import smallest_resolution
from latencykit.space import load_space

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def digits(resolution: int, seed: int = 0):
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    y = torch.tensor(d.target)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def train_accuracy(space, arch, data, epochs: int, seed: int = 0) -> float:
    (xt, yt), (xv, yv) = data
    torch.manual_seed(seed)
    net = build(space.layers(arch)).train()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        perm = torch.as_tensor(rng.permutation(len(yt)))
        for b in range(0, len(perm) - 63, 64):
            idx = perm[b:b + 64]
            loss = F.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return float((net(xv).argmax(1) == yv).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default=str(ROOT / "tests" / "data" / "tiny.json"))
    ap.add_argument("--subnets", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--checkpoint", default=None, help="Supernet checkpoint: its accuracy is the ground truth.")
    args = ap.parse_args()
    sp = load_space(args.space)
    res = smallest_resolution(sp)
    archs = sample_archs(sp, args.subnets, args.seed)
    data = digits(res)
    t0 = time.perf_counter()
    if args.checkpoint:
        truth = get_signal("supernet", sp, checkpoint=args.checkpoint)
        acc = np.array([truth.score(a) for a in archs])
        how = (f"the accuracy of {args.subnets} random subnets (seed {args.seed}) with weights inherited from "
               f"the supernet {args.checkpoint} and recalibrated batch norm, on its validation split")
    else:
        acc = np.array([train_accuracy(sp, a, data, args.epochs) for a in archs])
        how = (f"{args.subnets} random subnets (seed {args.seed}) each trained from scratch for "
               f"{args.epochs} epochs on scikit-learn digits at {res}x{res} (80/20 seeded split). This is "
               "short training, not a trained supernet (see search_proxies_supernet.md for that)")
    train_s = time.perf_counter() - t0
    rows = []
    for name in ("vintk", "ntk", "ntk-cond", "params"):
        signal = get_signal(name, sp)
        t0 = time.perf_counter()
        scores = np.array([signal.score(a) for a in archs])
        per = (time.perf_counter() - t0) / len(archs)
        tau = kendalltau(scores, acc)
        rows.append(f"| {name} | {tau.statistic:+.3f} | {tau.pvalue:.3f} | {per:.3f} |")
    lines = [f"# Training-free proxies against trained accuracy ({sp.name})", "",
             f"Command: `nice -n 5 python {' '.join(sys.argv)}`", "",
             f"Ground truth: {how}; accuracy {acc.min():.3f}-{acc.max():.3f} (mean {acc.mean():.3f}), "
             f"{train_s:.0f} s to obtain.", "",
             "| proxy | Kendall tau vs accuracy | p-value | s per subnet |", "|---|---|---|---|", *rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("search_proxies_supernet.md" if args.checkpoint else "search_proxies.md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
