"""Where the test-retest noise of whole-model measurements comes from, and how many rounds it takes (issue 11).

A validation compares predictions with whole subnets measured now; its noise floor is the second pass
against the first. Each subnet here is opened several times (separate runtime sessions of the same file,
as two passes open it) and all of them are measured in the same interleaved rounds of the whole-model
protocol, as many as the largest round count asks; the figures for a smaller count use the first rounds
only, so every count is scored on the same readings. Reported per round count: the spread of one reading across rounds
(after the drift correction), the relative difference between two sessions' medians (what a noise floor
measures), and what the round spread alone predicts for that difference (sqrt(2) x the standard error of
a median, 1.25 sd / sqrt(rounds)). If the two agree, the noise is per round and more rounds remove it; a
larger measured difference would be a per-session offset that only more sessions remove.

Run: python benchmarks/whole_model_noise.py [--space autovit-xxs] [--devices host host-litert]
     [--subnets 8] [--sessions 4] [--rounds 7 15 30]
Writes benchmarks/results/whole_model_noise.md.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bias import machine_line  # noqa: E402

from latencykit.devices import get_device  # noqa: E402
from latencykit.export import ExportCache, default_cache, export_network  # noqa: E402
from latencykit.lut.protocol import Journal, _statistics, export_reference, measure_models  # noqa: E402
from latencykit.lut.validate import WHOLE_MODEL_PROTOCOL, sample_archs  # noqa: E402
from latencykit.space import load_space  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def study(space_name: str, device_name: str, subnets: int, sessions: int, counts: list[int],
          cache: ExportCache, folder: Path) -> list[dict]:
    space, device = load_space(space_name), get_device(device_name)
    archs = sample_archs(space, subnets, seed=123)
    files = {f"{i}#{j}": export_network(space.layers(a), cache, device.format)
             for i, a in enumerate(archs) for j in range(sessions)}
    journal = Journal(folder / f"{device_name}.journal", {"study": device_name})
    start = time.perf_counter()
    measure_models(device, files, export_reference(cache, device.format),
                   replace(WHOLE_MODEL_PROTOCOL, rounds=max(counts), extra_rounds=0), journal)
    seconds = time.perf_counter() - start
    rounds = [r for r in journal.rounds if r["phase"] == "base"]
    return [score(_statistics(rounds[:n], list(files)), space_name, device_name, subnets, sessions, n,
                  seconds * n / max(counts)) for n in counts]


def score(stats: dict, space_name: str, device_name: str, subnets: int, sessions: int, rounds: int,
          seconds: float) -> dict:
    medians = np.array([[stats[f"{i}#{j}"].latency_ms for j in range(sessions)] for i in range(subnets)])
    spread = np.array([[(stats[f"{i}#{j}"].q3_ms - stats[f"{i}#{j}"].q1_ms) / 1.349 / stats[f"{i}#{j}"].latency_ms
                        for j in range(sessions)] for i in range(subnets)])
    pairs = [medians[:, a] / medians[:, b] - 1 for a, b in itertools.combinations(range(sessions), 2)]
    return {"space": space_name, "device": device_name, "rounds": rounds, "ms": float(np.median(medians)),
            "round_sd": float(np.mean(spread) * 100),
            "retest": float(np.sqrt(np.mean(np.square(pairs))) * 100),
            "predicted": float(np.sqrt(2) * 1.25 * np.sqrt(np.mean(spread**2)) / np.sqrt(rounds) * 100),
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--space", default="autovit-xxs")
    parser.add_argument("--devices", nargs="+", default=["host", "host-litert"])
    parser.add_argument("--subnets", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--rounds", type=int, nargs="+", default=[7, 15, 30])
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for d in args.devices
                for row in study(args.space, d, args.subnets, args.sessions, args.rounds, default_cache(), Path(tmp))]
    command = "python benchmarks/whole_model_noise.py " + " ".join(sys.argv[1:])
    lines = ["# Whole-model test-retest noise: per round or per session?", "",
             f"Command: `{command.strip()}` ({time.perf_counter() - start:.0f} s in all)", "",
             machine_line(args.devices[0]), "",
             f"{args.subnets} random subnets, each opened {args.sessions} times (separate sessions of one file), "
             "all measured in the same interleaved rounds of the whole-model protocol (validate.py: "
             "WHOLE_MODEL_PROTOCOL) at each round count. Round sd: one reading's spread across rounds after the "
             "drift correction (IQR / 1.349, relative). Session retest: RMS relative difference between two "
             "sessions' medians, over every pair. Predicted by the rounds: sqrt(2) x 1.25 x round sd / "
             "sqrt(rounds).", "",
             "| space | device | median ms | rounds | round sd % | session retest % | predicted by the rounds % | "
             "seconds (share of the run) |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['space']} | {r['device']} | {r['ms']:.1f} | {r['rounds']} | {r['round_sd']:.2f} | "
              f"{r['retest']:.2f} | {r['predicted']:.2f} | {r['seconds']:.0f} |" for r in rows]
    (RESULTS / "whole_model_noise.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
