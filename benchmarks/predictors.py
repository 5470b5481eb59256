"""Compare latency predictors on `host`: isolated and removal tables, layer model, FLOPs baseline,
calibrated tables. Writes benchmarks/results/predictors.md and one scatter plot per space.

Run: python benchmarks/predictors.py [--spaces autovit-xxs ...] [--train 60] [--test 50]
Every predictor is scored on the same held-out subnets (never used for fitting), measured twice.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spaces", nargs="+", default=["autovit-xxs", "autovit-xs", "autovit-s"])
    parser.add_argument("--train", type=int, default=60)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--removal", nargs="*", default=["autovit-xxs"], help="Spaces to also profile in removal mode.")
    args = parser.parse_args()
    os.environ["LATENCYKIT_HOME"] = tempfile.mkdtemp(prefix="latencykit-bench-")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latencykit.devices import get_device
    from latencykit.lut.predictors import Measured, get_predictor
    from latencykit.lut.profile import profile
    from latencykit.lut.removal import profile_removal
    from latencykit.lut.table import default_path
    from latencykit.lut.validate import Measurements, Metrics, measure_archs, sample_archs
    from latencykit.space import load_space

    device = get_device("host")
    lines = ["# Latency predictors on `host` (ONNX Runtime CPU, 1 thread)", "",
             f"Command: `python benchmarks/predictors.py --spaces {' '.join(args.spaces)} --train {args.train} "
             f"--test {args.test} --removal {' '.join(args.removal)}`", "",
             f"Machine: {device.describe()['cpu']}, {os.cpu_count()} cores, {device.describe()['runtime']}, "
             f"Python {platform.python_version()}. Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             f"Each space: {args.test} held-out random subnets measured whole, twice; predictors fit on up to "
             f"{args.train} other subnets. `measurements` counts whole-subnet measurements beyond the table. "
             "Noise floor: the second measurement pass against the first. Bias > 0: predicts low.", ""]
    for spec in args.spaces:
        space = load_space(spec)
        name = space.name
        iso = profile(space, device, default_path("host", name))
        rem = profile_removal(space, device, default_path("host-removal", name)) if spec in args.removal or name in args.removal else None
        train = sample_archs(space, args.train, seed=1000)
        test = sample_archs(space, args.test, seed=0, exclude=train)
        t0 = time.perf_counter()
        # one session of interleaved rounds for training and held-out subnets: their scales agree exactly
        both = measure_archs(space, device, train + test, iso.table)
        measure_s = time.perf_counter() - t0
        n = len(train)
        m_train = Measurements(train, both.first[:n], both.second[:n], both.raw_ms[:n], both.reference_ms_now)
        m_test = Measurements(test, both.first[n:], both.second[n:], both.raw_ms[n:], both.reference_ms_now)
        to_rem = rem.table.meta.reference["ms"] / iso.table.meta.reference["ms"] if rem else 1.0
        measured = m_test.measured
        floor = Metrics.compare(m_test.second, m_test.first)
        candidates = []
        runs = [("isolated table", "isolated", iso.table, 0, iso.seconds),
                ("layer model (isolated table)", "layer", iso.table, 0, iso.seconds),
                ("FLOPs + params linear", "flops", iso.table, args.train, 0.0),
                ("calibrated isolated, 20 subnets", "calibrated", iso.table, 20, iso.seconds),
                (f"calibrated isolated, {args.train} subnets", "calibrated", iso.table, args.train, iso.seconds)]
        if rem:
            runs[1:1] = [("removal table", "removal", rem.table, 0, rem.seconds)]
        for label, pname, table, n_train, wall in runs:
            scale = to_rem if rem and table is rem.table else 1.0
            fit_on = Measured(tuple(train[:n_train]), m_train.measured[:n_train] * scale) if n_train else None
            model = get_predictor(pname).fit(space, table, fit_on)
            pred = model.predict_many(test) / scale
            candidates.append((label, model, Metrics.compare(pred, measured), n_train, wall, pred))
        removal_note = (f"removal mode used {len(rem.table.meta.provenance['references'])} reference subnets and "
                        f"{rem.table.meta.provenance['removed_layers']} removals" if rem else "removal mode not run here")
        lines += [f"## {name}", "",
                  f"Table entries: {len(iso.table)}; {removal_note}. Whole-subnet measurement of "
                  f"{args.train + args.test} subnets (one interleaved session) took {measure_s:.0f} s.", "",
                  "| predictor | within ±5% | within ±10% | RMSE ms | MAPE % | RMSPE % | bias % | mean measured/predicted |"
                  " Kendall tau | measurements | profiling wall s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, model, mt, n, wall, pred in candidates:
            lines.append(f"| {label} | {mt.within_5_pct:.0f}% | {mt.within_10_pct:.0f}% | {mt.rmse_ms:.3f} | "
                         f"{mt.mape_pct:.2f} | {mt.rmspe_pct:.2f} | {mt.bias_pct:+.2f} | {np.mean(measured / pred):.4f} | "
                         f"{mt.kendall_tau:.3f} | {n} | {wall:.0f} |")
        lines.append(f"| *test-retest noise floor* | {floor.within_5_pct:.0f}% | {floor.within_10_pct:.0f}% | "
                     f"{floor.rmse_ms:.3f} | {floor.mape_pct:.2f} | {floor.rmspe_pct:.2f} | {floor.bias_pct:+.2f} | | "
                     f"{floor.kendall_tau:.3f} | | |")
        by_label = {c[0]: c[1] for c in candidates}
        iso_cal = by_label[f"calibrated isolated, {args.train} subnets"]
        rem_cal = by_label.get(f"calibrated removal, {args.train} subnets")
        genes = np.stack([space.encode(a) for a in test])
        iso_feat = iso_cal._features(genes)
        rem_feat = rem_cal._features(genes) / to_rem if rem_cal else None
        ci = iso_cal.coefficients
        cr = rem_cal.coefficients if rem_cal else {}
        lines += ["", "Per layer group: the calibrated coefficient (measured in context / table entry; 1 = the "
                  "entries are right) for each table, and the group's share of the isolated prediction.", "",
                  "| group | share of isolated sum | isolated coefficient | removal coefficient | removal/isolated entries |",
                  "|---|---|---|---|---|"]
        for col, g in enumerate(iso_cal.groups):
            share = iso_feat[:, col].sum() / iso_feat.sum()
            ratio = f"{rem_feat[:, col].sum() / iso_feat[:, col].sum():.3f}" if rem_cal else "-"
            lines.append(f"| {g} | {share * 100:.1f}% | {ci[g]:.3f} | {cr.get(g, float('nan')):.3f} | {ratio} |")
        lines += ["", f"Intercept of the calibrated isolated table: {ci['intercept_ms']:.3f} ms"
                  + (f"; removal: {cr['intercept_ms'] / to_rem:.3f} ms; removal table base overhead "
                     f"{float(np.median([r['overhead_ms'] for r in rem.table.meta.provenance['references']])) / to_rem:.3f} ms." if rem else "."), ""]
        fig, ax = plt.subplots(figsize=(5.5, 5.5))
        lo, hi = measured.min() * 0.9, measured.max() * 1.1
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        for label, _, mt, _, _, pred in candidates:
            if label.startswith(("isolated", "removal", "calibrated isolated, 6", f"calibrated isolated, {args.train}",
                                 "FLOPs")):
                ax.scatter(measured, pred, s=10, label=f"{label} (RMSPE {mt.rmspe_pct:.1f}%)")
        ax.set_xlabel("measured latency (ms)")
        ax.set_ylabel("predicted latency (ms)")
        ax.set_title(f"{name} on host: {args.test} held-out subnets", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / f"predictors_{name}.png", dpi=110)
        plt.close(fig)
        lines += [f"![{name}](predictors_{name}.png)", ""]
        print("\n".join(lines), file=sys.stderr)
    (RESULTS / "predictors.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
