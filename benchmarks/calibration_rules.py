"""Which scale and which ridge rule? Rescoring the readings a robustness run saved.

`benchmarks/robustness.py` measures every calibration subnet of each table again in each later
session and saves every reading (`sessions.json` beside the tables, its folder printed at the end).
This script scores the default predictor's family on those same readings, four ways:

- the scale: a session's subnets put on the table's scale through 5 calibration subnets (the old
  default of `validate`) or through all of them (median of then / now either way);
- the ridge strength of the calibrated fit (latencykit.lut.calibration): the lowest leave-one-out
  error (today's rule) or the one-standard-error rule (the strongest pull toward the common scale
  whose leave-one-out error is within one standard error of the lowest; the rule before).

Run: python benchmarks/calibration_rules.py FOLDER   (FOLDER: printed by robustness.py)
Writes benchmarks/results/calibration_rules.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from latencykit.arch import Arch
from latencykit.lut.calibration import ALPHAS, _solve, loo_squared
from latencykit.lut.predictors import resolve_predictor
from latencykit.lut.table import LatencyTable
from latencykit.lut.validate import Metrics, anchor_picks
from latencykit.space import load_space

RESULTS = Path(__file__).resolve().parent / "results"


def rule_alpha(squared: np.ndarray, rule: str) -> float:
    mean = squared.mean(1)
    best = int(np.argmin(mean))
    limit = mean[best] + (squared[best].std() / np.sqrt(squared.shape[1]) if rule == "one-SE" else 0.0)
    return max(ALPHAS[a] for a in range(len(ALPHAS)) if mean[a] <= limit)


def on_scale(m: dict, anchors: int) -> tuple[np.ndarray, np.ndarray]:
    """Both passes put on the table's scale through `anchors` calibration subnets (as validate picks)."""
    then, now = np.array(m["anchor_then_ms"]), np.array(m["anchor_now_ms"])
    pick = anchor_picks(len(then), anchors)
    saved = np.median(then / now, axis=1)
    wanted = np.median(then[pick] / now[:, pick], axis=1)
    return (np.array(m["first_ms"]) / saved[0] * wanted[0], np.array(m["second_ms"]) / saved[1] * wanted[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path, help="The folder robustness.py printed (tables and sessions.json).")
    args = parser.parse_args()
    sessions = json.loads((args.folder / "sessions.json").read_text())
    lines = ["# Scale and ridge rule of the default predictor, on one robustness run's readings", "",
             f"Command: `python benchmarks/calibration_rules.py <folder of a robustness.py run>` "
             f"({len(sessions)} sessions; see the script's docstring). Readings saved by the robustness run of "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime((args.folder / 'sessions.json').stat().st_mtime))}. "
             "Bias > 0: predicts low.", "",
             "| space | device | session | scale through | noise floor RMSPE % | ridge rule | within ±5% | RMSPE % | "
             "bias % | RMSPE / noise floor |", "|---|---|---|---|---|---|---|---|---|---|"]
    wins = []
    for k, first in enumerate(sessions[0]["sessions"]):
        space = load_space(first["space"])
        table = LatencyTable.read(args.folder / f"{first['device']}-{first['space']}.parquet")
        model = resolve_predictor("auto", space, table)
        X, y = model._design()
        squared = loo_squared(X, y)
        fits = {rule: _solve(X, y, rule_alpha(squared, rule)) for rule in ("lowest", "one-SE")}
        for i, sess in enumerate(sessions):
            d = sess["sessions"][k]
            m, n = d["measurements"], d["n"]
            features = model._features(np.stack([space.encode(Arch.from_dict(a)) for a in m["archs"][:n]]))
            calibration = len(m["anchor_then_ms"])
            rmspe = {}
            for anchors in (5, calibration):
                a, b = on_scale(m, anchors)
                measured, floor = (a[:n] + b[:n]) / 2, Metrics.compare(b[:n], a[:n]).rmspe_pct
                for rule, (coef, intercept) in fits.items():
                    s = Metrics.compare(intercept + features @ coef, measured)
                    rmspe[anchors, rule] = s.rmspe_pct
                    lines.append(f"| {first['space']} | {first['device']} | {i + 1} | {anchors} | {floor:.2f} | {rule} | "
                                 f"{s.within_5_pct:.0f}% | {s.rmspe_pct:.2f} | {s.bias_pct:+.2f} | "
                                 f"{s.rmspe_pct / floor:.2f} |")
            wins.append(rmspe[calibration, "lowest"] <= rmspe[calibration, "one-SE"])
    lines += ["", f"Lowest-error rule at least as accurate (RMSPE, scale through all calibration subnets) in "
              f"{sum(wins)} of {len(wins)} space x device x session cases."]
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "calibration_rules.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
