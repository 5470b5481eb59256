"""Which scale, which ridge rule, which terms? Rescoring the readings robustness runs saved.

`benchmarks/robustness.py` measures every calibration subnet of each table again in each later
session and saves every reading (`sessions.json` beside the tables, its folder printed at the end).
This script scores the default predictor's family on those same readings, changing one choice at a
time from today's default (all calibration subnets as the scale, lowest leave-one-out ridge, weights
term):

- the scale: a session's subnets put on the table's scale through 5 calibration subnets (the old
  default of `validate`) or through all of them (median of then / now either way);
- the ridge strength of the calibrated fit (latencykit.lut.calibration): the lowest leave-one-out
  error (today's rule) or the one-standard-error rule (the strongest pull toward the common scale
  whose leave-one-out error is within one standard error of the lowest; the rule before);
- the weights term (ms per million parameters) of the calibrated fit: with it (today) or without.

Run: python benchmarks/calibration_rules.py FOLDER [FOLDER ...]   (each FOLDER printed by a robustness.py run)
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
from latencykit.lut.validate import Measurements, Metrics, anchor_picks
from latencykit.space import load_space

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = ("all", "lowest", "with")
QUESTIONS = {"scale": ("5", "all"), "ridge rule": ("one-SE", "lowest"), "weights term": ("without", "with")}


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


def measured(m: dict, a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Validate's own rule (Measurements.measured) on passes `a`, `b` rescaled; a third pass follows the first's scale."""
    third = m.get("third_ms")
    t = (np.array([np.nan if v is None else v for v in third[:n]], dtype=float) * (a[:n] / np.array(m["first_ms"][:n]))
         if third else None)
    return Measurements([], a[:n], b[:n], a[:n], 0.0, third=t).measured


def variants() -> list[tuple[str, str, str]]:
    out = [DEFAULT]
    for i, (other, _) in enumerate(QUESTIONS.values()):
        out.append(tuple(other if j == i else d for j, d in enumerate(DEFAULT)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", type=Path, nargs="+", help="Folders robustness.py printed (tables and sessions.json).")
    args = parser.parse_args()
    runs = [time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime((f / "sessions.json").stat().st_mtime)) for f in args.folders]
    lines = ["# Scale, ridge rule and weights term of the default predictor, on robustness runs' readings", "",
             f"Command: `python benchmarks/calibration_rules.py <folders of {len(runs)} robustness.py runs>` (see the "
             f"script's docstring). Readings saved by the robustness runs of {', '.join(runs)} (3 later sessions "
             "each). Default: scale through all calibration subnets, lowest leave-one-out ridge, weights term; each "
             "other row changes one of them. Bias > 0: predicts low.", "",
             "| run | space | device | session | noise floor RMSPE % | scale | ridge | weights | within ±5% | RMSPE % | "
             "bias % | RMSPE / noise floor |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rmspe: dict = {}
    for r, folder in enumerate(args.folders, 1):
        sessions = json.loads((folder / "sessions.json").read_text())
        for k, first in enumerate(sessions[0]["sessions"]):
            space = load_space(first["space"])
            table = LatencyTable.read(folder / f"{first['device']}-{first['space']}.parquet")
            model = resolve_predictor("auto", space, table)
            X, y = model._design()  # per-group table sums, then million parameters
            fits = {}
            for weights in ("with", "without"):
                x, free = (X, 1) if weights == "with" else (X[:, :-1], 0)
                squared = loo_squared(x, y, free=free)
                for rule in ("lowest", "one-SE"):
                    fits[rule, weights] = _solve(x, y, rule_alpha(squared, rule), free)
            for i, sess in enumerate(sessions):
                d = sess["sessions"][k]
                m, n = d["measurements"], d["n"]
                features = model._features(np.stack([space.encode(Arch.from_dict(a)) for a in m["archs"][:n]]))
                for scale, rule, weights in variants():
                    a, b = on_scale(m, 5 if scale == "5" else len(m["anchor_then_ms"]))
                    floor = Metrics.compare(b[:n], a[:n]).rmspe_pct
                    coef, intercept = fits[rule, weights]
                    s = Metrics.compare(intercept + features[:, :len(coef)] @ coef, measured(m, a, b, n))
                    rmspe[r, k, i, scale, rule, weights] = s.rmspe_pct
                    lines.append(f"| {r} | {first['space']} | {first['device']} | {i + 1} | {floor:.2f} | {scale} | "
                                 f"{rule} | {weights} | {s.within_5_pct:.0f}% | {s.rmspe_pct:.2f} | {s.bias_pct:+.2f} | "
                                 f"{s.rmspe_pct / floor:.2f} |")
    cases = sorted({key[:3] for key in rmspe})
    lines += ["", "## Summary", "", "| choice | today | instead | today's RMSPE lower or equal | mean RMSPE today | "
              "mean RMSPE instead |", "|---|---|---|---|---|---|"]
    for q, (other, today) in QUESTIONS.items():
        j = list(QUESTIONS).index(q)
        alt = tuple(other if t == j else d for t, d in enumerate(DEFAULT))
        base = [rmspe[c + DEFAULT] for c in cases]
        changed = [rmspe[c + alt] for c in cases]
        wins = sum(x <= y for x, y in zip(base, changed))
        lines.append(f"| {q} | {today} | {other} | {wins} of {len(cases)} | {np.mean(base):.2f} | {np.mean(changed):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "calibration_rules.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
