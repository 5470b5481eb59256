"""Which noise floor bounds a table built in another session? Rescoring the readings robustness runs saved.

`benchmarks/robustness.py` compares the default predictor's error on held-out subnets with that
session's test-retest floor: the second pass against the first, both in the session. A table is
built in an earlier session, though, and the machine's state changes between sessions (cache
contention, a CPU-bound neighbour, frequency), and not by one factor for every network. This script
puts three figures beside the predictor's error, all from readings those runs saved:

- `within`: the held-out subnets' second pass against their first (the floor robustness.md reports);
- `across`: the table's calibration subnets as measured in the session (mean of its two passes, on
  the table's scale) against their readings when the table was built: the error a perfect copy of
  the build session's own measurements would make on that session;
- `best fit`: the default predictor's form (latencykit.lut.calibration) fitted on the session's own
  held-out subnets, its leave-one-out RMSPE: what this form could do had it been calibrated in that
  very session.

Run: python benchmarks/noise_floors.py FOLDER [FOLDER ...]   (each FOLDER printed by a robustness.py run)
Writes benchmarks/results/noise_floors.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from latencykit.lut.calibration import fit_group_coefficients
from latencykit.lut.predictors import resolve_predictor
from latencykit.lut.table import LatencyTable
from latencykit.lut.validate import Measurements, Metrics
from latencykit.space import load_space

RESULTS = Path(__file__).resolve().parent / "results"
BOUND = 1.2
"""Issue 11's bound: the default predictor's RMSPE at most 1.2 x the session's noise floor."""


def session_figures(model, space, d: dict) -> dict:
    """The predictor's error and the three floors of one session (see the module docstring)."""
    m, n = Measurements.from_dict(d["measurements"]), d["n"]  # held-out subnets first, then searched ones
    then, now = m.anchor_then_ms, m.anchor_now_ms  # (k,), (2 passes, k)
    on_table = now * np.median(then / now, axis=1, keepdims=True)  # each pass on the table's scale, as validate
    archs, measured = m.archs[:n], m.measured[:n]
    features = model._features(np.stack([space.encode(a) for a in archs]))
    return {"predictor": Metrics.compare(model.predict_many(archs), measured).rmspe_pct,
            "within": Metrics.compare(m.second[:n], m.first[:n]).rmspe_pct,
            "across": Metrics.compare(then, on_table.mean(0)).rmspe_pct,
            "best_fit": fit_group_coefficients(features, measured, free=1).loo_rmspe_pct}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", type=Path, nargs="+", help="Folders robustness.py printed (tables and sessions.json).")
    args = parser.parse_args()
    args.folders.sort(key=lambda f: (f / "sessions.json").stat().st_mtime)  # runs numbered in time order
    runs = [time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime((f / "sessions.json").stat().st_mtime))
            for f in args.folders]
    lines = ["# Noise floors for a table built in another session", "",
             f"Command: `python benchmarks/noise_floors.py <folders of {len(runs)} robustness.py runs>` (see the "
             f"script's docstring). Readings saved by the robustness runs of {', '.join(runs)} (3 later sessions "
             "each; the last with a CPU-bound process beside it). All figures RMSPE %. `within`: held-out subnets, "
             "second pass against first, in the session. `across`: the table's calibration subnets measured in the "
             "session against their readings when the table was built. `best fit`: the default predictor's form "
             "fitted on the session's own held-out subnets, leave-one-out.", "",
             "| run | space | device | session | default predictor | within | across | best fit | "
             "predictor / within | predictor / across |", "|---|---|---|---|---|---|---|---|---|---|"]
    cases = []
    for r, folder in enumerate(args.folders, 1):
        sessions = json.loads((folder / "sessions.json").read_text())
        for k, first in enumerate(sessions[0]["sessions"]):
            space = load_space(first["space"])
            model = resolve_predictor("auto", space, LatencyTable.read(folder / f"{first['device']}-{first['space']}.parquet"))
            for i, sess in enumerate(sessions):
                f = session_figures(model, space, sess["sessions"][k])
                cases.append(f)
                lines.append(f"| {r} | {first['space']} | {first['device']} | {i + 1} | {f['predictor']:.2f} | "
                             f"{f['within']:.2f} | {f['across']:.2f} | {f['best_fit']:.2f} | "
                             f"{f['predictor'] / f['within']:.2f} | {f['predictor'] / f['across']:.2f} |")
    n = len(cases)
    count = {key: sum(c["predictor"] <= BOUND * c[key] for c in cases) for key in ("within", "across")}
    below_best = sum(c["predictor"] <= c["best_fit"] for c in cases)
    lines += ["", "## Summary", "",
              f"- default predictor within {BOUND}x of `within`: {count['within']} of {n} cases; within {BOUND}x "
              f"of `across`: {count['across']} of {n}.",
              f"- default predictor at or below `best fit` (its own form calibrated in the session itself): "
              f"{below_best} of {n}.",
              f"- mean RMSPE: predictor {np.mean([c['predictor'] for c in cases]):.2f}, within "
              f"{np.mean([c['within'] for c in cases]):.2f}, across {np.mean([c['across'] for c in cases]):.2f}, "
              f"best fit {np.mean([c['best_fit'] for c in cases]):.2f}."]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "noise_floors.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
