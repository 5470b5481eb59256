"""Does a table built once stay right in later sessions? Cross-session robustness of the predictors.

A table (with its calibration set, as `profile` builds it by default) is built once per space and
device. Then each later session is a separate process (one of them with a CPU-bound load running
beside it) that measures fresh held-out subnets whole, twice (the test-retest noise floor), puts them
on the table's scale through the reference block (as `validate` does) and scores:

- `isolated`: the sum of the table's entries (plus its per-call overhead once);
- `calibrated`: the same sums per layer group, calibrated on the table's calibration set
  (latencykit.lut.calibration.fit_group_coefficients);
Measured subnets are put on the table's scale as `validate` does: through 5 of the table's calibration
subnets measured again in the same rounds. The `reference-block scale` rows score the same predictions
against the same subnets put on the table's scale through the reference block instead (the old way).

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

RESULTS = Path(__file__).resolve().parent / "results"
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


def group_sums(space, table, archs) -> np.ndarray:
    """Per layer kind (sorted), the sum of each subnet's table entries."""
    groups = sorted({l.kind for l in space.distinct_layers()})
    X = np.zeros((len(archs), len(groups)))
    for i, arch in enumerate(archs):
        for layer in space.layers(arch):
            X[i, groups.index(layer.kind)] += table.latency(layer)
    return X


def session(folder: Path, configs: list[tuple[str, str]], subnets: int, seed: int) -> list[dict]:
    """Measure fresh held-out subnets against each table; score isolated and calibrated sums."""
    from dataclasses import asdict

    from latencykit.devices import get_device
    from latencykit.lut.calibration import fit_group_coefficients
    from latencykit.lut.table import LatencyTable
    from latencykit.lut.validate import Metrics, measure_archs, sample_archs
    from latencykit.space import load_space

    out = []
    for space_name, device_name in configs:
        space, device = load_space(space_name), get_device(device_name)
        table = LatencyTable.read(table_file(folder, space_name, device_name)).check(device_name, space)
        calibration = table.calibration_set(space)
        archs = sample_archs(space, subnets, seed=seed, exclude=calibration[0] if calibration else ())
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        m = measure_archs(space, device, archs, table)
        X = group_sums(space, table, archs)
        predictions = {"isolated": X.sum(1)}
        fit = None
        if calibration:
            fit = fit_group_coefficients(group_sums(space, table, calibration[0]), calibration[1])
            predictions[f"calibrated(n={fit.n})"] = fit.predict(X)
        scores = {name: Metrics.compare(p, m.measured) for name, p in predictions.items()}
        if m.by_reference is not None and m.scale != "reference block":
            scores.update({f"{name}, reference-block scale": Metrics.compare(p, m.by_reference)
                           for name, p in predictions.items()})
        out.append({"space": space_name, "device": device_name, "load": (load + os.getloadavg()[0]) / 2,
                    "seconds": time.perf_counter() - t0, "n": len(archs), "scale": m.scale,
                    "scores": {k: asdict(v) for k, v in scores.items()},
                    "noise_floor": asdict(Metrics.compare(m.second, m.first)),
                    "fit": fit.to_dict() if fit else None,
                    "groups": sorted({l.kind for l in space.distinct_layers()})})
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
    command = "python benchmarks/robustness.py" + (" --quick" if args.quick else
                                                   f" --sessions {args.sessions} --subnets {subnets}")
    lines = ["# Cross-session robustness of the latency predictors", "",
             f"Command: `{command}` ({time.perf_counter() - start:.0f} s in all)", "", machine_line("host"), "",
             f"Each table is built once by `profile` (with {args.calibrate} calibration subnets measured in the same "
             f"rounds). Then {args.sessions} later sessions, each a separate process, measure {subnets} fresh "
             "held-out random subnets whole, twice, put on the table's scale through 5 of its calibration subnets "
             "measured again beside them (`reference-block scale`: through the reference block instead); session "
             f"{args.sessions} runs with a CPU-bound process (`while True: pass`) beside it. Bias = mean(measured / "
             "predicted) - 1 (> 0: predicts low). Noise floor: the second pass against the first. "
             "Load: the 1-minute load average (other processes on this machine included).", "",
             "## Tables", "", "| space | device | entries | calibration subnets | built in s | load |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {b['space']} | {b['device']} | {b['entries']} | {b['calibration']} | {b['seconds']:.0f} | "
              f"{b['load']:.1f} |" for b in built]
    lines += ["", "## Sessions", "", "| space | device | session | load | predictor | within ±5% | within ±10% | "
              "RMSPE % | bias % | noise floor RMSPE % |", "|---|---|---|---|---|---|---|---|---|---|"]
    for k, (space, device) in enumerate(configs):
        for i, sess in enumerate(sessions):
            d = sess["sessions"][k]
            tag = f"{i + 1}{' (CPU load)' if sess['load'] else ''}"
            for name, m in d["scores"].items():
                lines.append(f"| {space} | {device} | {tag} | {d['load']:.1f} | {name} | {m['within_5_pct']:.0f}% | "
                             f"{m['within_10_pct']:.0f}% | {m['rmspe_pct']:.2f} | {m['bias_pct']:+.2f} | "
                             f"{d['noise_floor']['rmspe_pct']:.2f} |")
    fits = [(configs[k], sessions[0]["sessions"][k]) for k in range(len(configs))]
    lines += ["", "## Calibration fits (the same in every session: they depend on the table only)", "",
              "| space | device | coefficients | intercept ms | ridge alpha | LOO RMSPE % |",
              "|---|---|---|---|---|---|"]
    for (space, device), d in fits:
        if fit := d["fit"]:
            coefs = ", ".join(f"{g} {c:.3f}" for g, c in zip(d["groups"], fit["coefficients"]))
            lines.append(f"| {space} | {device} | {coefs} | "
                         f"{fit['intercept_ms']:.3f} | {fit['alpha']:.3g} | {fit['loo_rmspe_pct']:.2f} |")
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("robustness_quick.md" if args.quick else "robustness.md")).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
