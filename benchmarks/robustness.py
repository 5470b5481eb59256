"""Does a table built once stay right in later sessions? Cross-session robustness of the predictors.

A table (with its calibration set, as `profile` builds it by default) is built once per space and
device. Then each later session is a separate process (one of them with a CPU-bound load running
beside it) that measures fresh held-out subnets whole, twice (the test-retest noise floor), puts them
on the table's scale (as `validate` does, see below) and scores:

- `isolated`: the sum of the table's entries;
- the default predictor (`auto`): the `calibrated` predictor, fit on the table's own calibration set.
Each session also searches under five latency budgets with the default margin and measures the
chosen subnets whole: the share that meets its budget measured.
Measured subnets are put on the table's scale as `validate` does: through the table's calibration
subnets (up to validate's ANCHORS) measured again in the same rounds; every reading is saved, so
benchmarks/calibration_rules.py can rescore them with other choices. The `reference-block scale` rows
score the same predictions against the same subnets put on the table's scale through the reference
block instead (the old way).

Run: python benchmarks/robustness.py [--sessions 3] [--subnets 30] [--quick]
`--quick`: autovit-xxs on host only, 8 subnets per session. Writes benchmarks/results/robustness.md
(or robustness_quick.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bias import machine_line, run_sessions  # noqa: E402

from latencykit.lut.validate import ANCHORS, RETEST  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BUDGET_QUANTILES = (0.2, 0.35, 0.5, 0.65, 0.8)
"""Budgets of the latency-bound searches, as quantiles of random subnets' predicted latency."""
CONFIGS = [("autovit-xxs", "host"), ("autovit-xs", "host"), ("autovit-s", "host"), ("autovit-xxs", "host-litert")]


def table_file(folder: Path, space: str, device: str) -> Path:
    return folder / f"{device}-{space}.parquet"


def build(folder: Path, configs: list[tuple[str, str]], calibrate: int) -> list[dict]:
    from latencykit.devices import get_device
    from latencykit.lut.profile import profile
    from latencykit.space import load_space

    out = []
    for space, device in configs:
        t0 = time.perf_counter()
        load = os.getloadavg()[0]
        result = profile(load_space(space), get_device(device), table_file(folder, space, device), calibrate=calibrate)
        out.append({"space": space, "device": device, "seconds": time.perf_counter() - t0, "load": load,
                    "entries": len(result.table), "calibration": calibrate})
    return out


def searched(space, predictor, budgets: list[float], seed: int) -> list[tuple[float, object, float, float]]:
    """For each budget: the subnet a latency-bound search (params as the signal, the default margin)
    chooses, its prediction and the margin used; (budget, arch, predicted ms, margin %)."""
    from latencykit.nas.run import budget_margin_pct, with_margin
    from latencykit.nas.search import Budget, SearchConfig, search

    margin, _ = budget_margin_pct(predictor)
    out = []
    for i, b in enumerate(budgets):
        r = search(space, lambda a: float(space.params(a)), with_margin(Budget(latency_ms=b), margin),
                   predictor.predict_genes, SearchConfig(population=16, generations=4, parents=4,
                                                         coarse_samples=4000, seed=seed * 10 + i))
        out.append((b, r.best.arch, r.best.latency_ms, margin))
    return out


def session(folder: Path, configs: list[tuple[str, str]], subnets: int, seed: int) -> list[dict]:
    """Measure fresh held-out subnets against each table; score the isolated sum and the default
    predictor (`auto`: calibrated on the table's own calibration set); measure the subnets a
    latency-bound search chose under the default margin, for budget adherence."""
    from dataclasses import asdict

    from latencykit.devices import get_device
    from latencykit.lut.predictors import get_predictor, resolve_predictor
    from latencykit.lut.table import LatencyTable
    from latencykit.lut.validate import Metrics, measure_archs, sample_archs
    from latencykit.space import load_space

    out = []
    for space_name, device_name in configs:
        space, device = load_space(space_name), get_device(device_name)
        table = LatencyTable.read(table_file(folder, space_name, device_name)).check(device_name, space)
        calibration = table.calibration_set(space)
        archs = sample_archs(space, subnets, seed=seed, exclude=calibration[0] if calibration else ())
        isolated = get_predictor("isolated").fit(space, table)
        default = resolve_predictor("auto", space, table)
        budgets = list(np.quantile(default.predict_many(sample_archs(space, 200, seed=seed + 1000)), BUDGET_QUANTILES))
        chosen = searched(space, default, budgets, seed)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        m = measure_archs(space, device, archs + [c[1] for c in chosen], table)  # as validate measures
        n = len(archs)
        held = {name: p.predict_many(archs) for name, p in (("isolated", isolated), (default.label, default))}
        measured = m.measured
        scores = {name: Metrics.compare(p, measured[:n]) for name, p in held.items()}
        if m.by_reference is not None and m.scale != "reference block":
            scores.update({f"{name}, reference-block scale": Metrics.compare(p, m.by_reference[:n])
                           for name, p in held.items()})
        adherence = [{"budget_ms": b, "predicted_ms": pred, "margin_pct": margin, "measured_ms": float(ms)}
                     for (b, _, pred, margin), ms in zip(chosen, measured[n:])]
        out.append({"space": space_name, "device": device_name, "load": (load + os.getloadavg()[0]) / 2,
                    "seconds": time.perf_counter() - t0, "n": n, "scale": m.scale,
                    "scores": {k: asdict(v) for k, v in scores.items()},
                    "noise_floor": asdict(Metrics.compare(m.second[:n], m.first[:n])),
                    "third_passes": int(np.sum(~np.isnan(m.third[:n]))) if m.third is not None else 0,
                    "predictor": default.describe(), "adherence": adherence,
                    "predicted": {k: v.tolist() for k, v in held.items()}, "measurements": m.to_dict()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=3, help="Later separate processes; the last has a CPU load.")
    parser.add_argument("--subnets", type=int, default=30, help="Fresh held-out subnets per session and table.")
    parser.add_argument("--calibrate", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="autovit-xxs on host only, 8 subnets per session.")
    parser.add_argument("--tables", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--heldout-seed", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--config", nargs="+", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        configs = [tuple(c.split("@")) for c in args.config]
        data = session(Path(args.tables), configs, args.subnets, args.heldout_seed)
        Path(args.worker).write_text(json.dumps({"pinned": False, "sessions": data}))
        return
    configs = CONFIGS[:1] if args.quick else CONFIGS
    subnets = 8 if args.quick else args.subnets
    folder = Path(tempfile.mkdtemp(prefix="latencykit-robustness-"))
    start = time.perf_counter()
    built = build(folder, configs, args.calibrate)
    common = ["--tables", str(folder), "--subnets", str(subnets), "--config", *[f"{s}@{d}" for s, d in configs]]
    sessions = run_sessions(Path(__file__).resolve(), common, args.sessions, pinned=set(),
                            load={args.sessions - 1})
    (folder / "sessions.json").write_text(json.dumps(sessions))
    print(f"tables and every session's readings: {folder}", file=sys.stderr)
    command = "python benchmarks/robustness.py" + (" --quick" if args.quick else
                                                   f" --sessions {args.sessions} --subnets {subnets}")
    lines = ["# Cross-session robustness of the latency predictors", "",
             f"Command: `{command}` ({time.perf_counter() - start:.0f} s in all)", "", machine_line("host"), "",
             f"Each table is built once by `profile` (with {args.calibrate} calibration subnets measured in the same "
             f"rounds). Then {args.sessions} later sessions, each a separate process, measure {subnets} fresh "
             f"held-out random subnets whole, twice, put on the table's scale through {min(args.calibrate, ANCHORS)} of its calibration "
             "subnets measured again beside them (`reference-block scale`: through the reference block instead); a "
             f"subnet whose two passes differ by more than {RETEST:.0%} is measured a third time and the median of three "
             "counts (`third passes`: how many of the held-out subnets); session "
             f"{args.sessions} runs with a CPU-bound process (`while True: pass`) beside it. Bias = mean(measured / "
             "predicted) - 1 (> 0: predicts low). Noise floor: the second pass against the first. "
             "Load: the 1-minute load average (other processes on this machine included).", "",
             "## Tables", "", "| space | device | entries | calibration subnets | built in s | load |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {b['space']} | {b['device']} | {b['entries']} | {b['calibration']} | {b['seconds']:.0f} | "
              f"{b['load']:.1f} |" for b in built]
    lines += ["", "## Sessions", "", "| space | device | session | load | predictor | within ±5% | within ±10% | "
              "RMSPE % | bias % | noise floor RMSPE % | third passes |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, (space, device) in enumerate(configs):
        for i, sess in enumerate(sessions):
            d = sess["sessions"][k]
            tag = f"{i + 1}{' (CPU load)' if sess['load'] else ''}"
            for name, m in d["scores"].items():
                lines.append(f"| {space} | {device} | {tag} | {d['load']:.1f} | {name} | {m['within_5_pct']:.0f}% | "
                             f"{m['within_10_pct']:.0f}% | {m['rmspe_pct']:.2f} | {m['bias_pct']:+.2f} | "
                             f"{d['noise_floor']['rmspe_pct']:.2f} | {d.get('third_passes', 0)} |")
    lines += ["", "## Budget adherence", "",
              f"In each session, {len(BUDGET_QUANTILES)} latency-bound searches per table (budgets at the "
              f"{', '.join(f'{100 * q:.0f}' for q in BUDGET_QUANTILES)} percentiles of random subnets' predicted "
              "latency, params as the signal) through the default predictor with its "
              "default margin (1.645 x its held-out RMSPE); the chosen subnets are measured whole in the same "
              "rounds as the held-out ones.", "",
              "| space | device | session | budget ms | margin % | predicted ms | measured ms | meets budget |",
              "|---|---|---|---|---|---|---|---|"]
    met = []
    for k, (space, device) in enumerate(configs):
        for i, sess in enumerate(sessions):
            for a in sess["sessions"][k]["adherence"]:
                met.append(a["measured_ms"] <= a["budget_ms"])
                lines.append(f"| {space} | {device} | {i + 1} | {a['budget_ms']:.3f} | {a['margin_pct']:.2f} | "
                             f"{a['predicted_ms']:.3f} | {a['measured_ms']:.3f} | {'yes' if met[-1] else 'no'} |")
    lines += ["", f"{sum(met)} of {len(met)} searched subnets ({100 * np.mean(met):.0f}%) meet their budget measured.",
              "", "## Default predictor per table (the same in every session: it depends on the table only)", "",
              "| space | device | predictor | coefficients | intercept ms | held-out (leave-one-out) RMSPE % |",
              "|---|---|---|---|---|---|"]
    for k, (space, device) in enumerate(configs):
        d = sessions[0]["sessions"][k]["predictor"]
        coefs = ", ".join(f"{g} {c:.3f}" for g, c in zip(d.get("features", []), d.get("coefficients", [])))
        err = d.get("expected_error_pct")
        lines.append(f"| {space} | {device} | {d['label']} | {coefs or '-'} | "
                     f"{d['intercept_ms']:.3f} | {err:.2f} |" if coefs else
                     f"| {space} | {device} | {d['label']} | - | - | {err if err is not None else '-'} |")
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("robustness_quick.md" if args.quick else "robustness.md")).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
