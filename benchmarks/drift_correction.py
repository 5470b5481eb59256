"""How often to measure the reference block, and how to divide it out, for whole models (issue 11).

The protocol divides each measurement by a drift factor taken from the reference block. The machine's
speed wanders within a round (on these machines a subnet's time follows the reference measured next to
it, correlation about 0.8), so a factor taken from the references beside a model tracks it better than
one taken from the whole round. Here the same subnets are measured twice (two passes, each opening every
file afresh, as `validate` does), with the reference beside every model; each way of correcting is then
scored on the same readings by the test-retest difference of the two passes (RMS of pass 1 / pass 2,
over the subnets, after dividing out the passes' median ratio: the scale `validate` sets through its
anchors):

- `none`: raw times;
- `round median, every 10`: each round divided by the median of its references, one reference every
  10 models (the whole-model protocol before this benchmark);
- `beside, every k`: each measurement divided by the reference interpolated where it ran, references
  every k models (k = 10, 3, 1; `every 1` is the whole-model protocol now).

Both passes are also measured in two shapes of the protocol, in the same process: 15 rounds of bursts
of about 30 ms (several runs each, their median one reading: the whole-model protocol before) and 30
rounds of bursts of about 3 ms (one run of a subnet per reading: the whole-model protocol now). If the
machine's speed wanders on the scale of a burst, more, shorter readings, each with the reference
beside it, average it out better for the same time.

Run: python benchmarks/drift_correction.py [--space autovit-xxs] [--devices host host-litert]
     [--subnets 40] [--processes 3]
Each process appends its rows to benchmarks/results/drift_correction.md (`--fresh` starts the file anew).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bias import machine_line  # noqa: E402

from latencykit.lut.protocol import _statistics  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "drift_correction.md"
WAYS = [("none", 1), ("round median", 10), ("beside", 10), ("beside", 3), ("beside", 1)]


def corrected(rounds: list[dict], keys: list[str], how: str, every: int) -> np.ndarray:
    """Each key's median over rounds, by the protocol's own statistics on the rounds' references rewritten
    `how`: only those taken every `every` models (`beside`), their median for the whole round (`round median`),
    or none at all (`none`: every factor 1). The overall scale differs between ways; `retest_pct` divides it out."""
    rewritten = []
    for r in rounds:
        at, ref = np.array(r["ref_at"]), np.array(r["ref"])
        kept = (at % every == 0) | (at == at.max())
        refs = {"none": ([1.0], [0]), "round median": ([float(np.median(ref[kept]))], [0]),
                "beside": (ref[kept].tolist(), at[kept].tolist())}[how]
        rewritten.append({**r, "ref": refs[0], "ref_at": refs[1]})
    stats = _statistics(rewritten, keys)
    return np.array([stats[k].latency_ms for k in keys])


def retest_pct(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """RMS and largest relative difference of two passes, after their median ratio is divided out."""
    r = a / b
    r = r / np.median(r) - 1
    return float(np.sqrt(np.mean(r ** 2)) * 100), float(np.abs(r).max() * 100)


def one_process(space_name: str, device_name: str, subnets: int, seed: int) -> list[str]:
    from latencykit.devices import get_device
    from latencykit.export import default_cache, export_network
    from latencykit.lut.protocol import Journal, export_reference, measure_models
    from latencykit.lut.validate import WHOLE_MODEL_PROTOCOL, sample_archs
    from latencykit.space import load_space

    space, device, cache = load_space(space_name), get_device(device_name), default_cache()
    files = {str(i): export_network(space.layers(a), cache, device.format)
             for i, a in enumerate(sample_archs(space, subnets, seed=seed))}
    reference = export_reference(cache, device.format)
    shapes = {"15 x 30 ms": replace(WHOLE_MODEL_PROTOCOL, rounds=15, min_runs=3, burst_ms=30.0),
              "30 x 3 ms": replace(WHOLE_MODEL_PROTOCOL, rounds=30, min_runs=1, burst_ms=3.0)}
    passes: dict[str, list] = {k: [] for k in shapes}
    seconds = dict.fromkeys(shapes, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(2):
            for name, protocol in shapes.items():
                t0 = time.perf_counter()
                journal = Journal(Path(tmp) / f"{name}{p}", {"pass": p, "shape": name})
                measure_models(device, files, reference, replace(protocol, ref_every=1, extra_rounds=0, seed=p),
                               journal)
                passes[name].append([r for r in journal.rounds if r["phase"] != "done"])
                seconds[name] += time.perf_counter() - t0
    rows = []
    for name in shapes:
        for how, every in WAYS:
            rms, worst = retest_pct(*(corrected(p, list(files), how, every) for p in passes[name]))
            label = how if how == "none" else f"{how}, every {every}"
            rows.append(f"| {time.strftime('%H:%M', time.gmtime())} | {space_name} | {device_name} | {subnets} | "
                        f"{name} | {label} | {rms:.2f} | {worst:.1f} | {seconds[name]:.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--space", default="autovit-xxs")
    parser.add_argument("--devices", nargs="+", default=["host", "host-litert"])
    parser.add_argument("--subnets", type=int, default=40)
    parser.add_argument("--processes", type=int, default=3, help="Separate processes, one after the other.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fresh", action="store_true", help="Start the results file anew.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.subnets < 3 or args.processes < 1:
        parser.error("--subnets must be at least 3 and --processes at least 1")
    if args.worker:
        rows = [row for d in args.devices for row in one_process(args.space, d, args.subnets, args.seed)]
        with OUT.open("a") as f:
            f.write("\n".join(rows) + "\n")
        return
    if args.fresh or not OUT.exists():
        OUT.write_text("\n".join([
            "# Drift correction of whole-model measurements: which reference, how often", "",
            f"Command: `python benchmarks/drift_correction.py --space {args.space} --devices {' '.join(args.devices)} "
            f"--subnets {args.subnets} --processes {args.processes}` (see the script's docstring). "
            "Each row: one process, the same readings corrected each way; two passes over the subnets in each "
            "protocol shape (rounds x burst length), the reference measured beside every model. Test-retest: RMS "
            "and largest relative difference of the two passes (%), lower is better.",
            machine_line(args.devices[0]), "",
            "| UTC | space | device | subnets | rounds x burst | correction | test-retest RMS % | largest % | "
            "seconds (2 passes) |", "|---|---|---|---|---|---|---|---|---|", ""]))
    for _ in range(args.processes):
        subprocess.run([sys.executable, __file__, "--worker", "--space", args.space, "--devices", *args.devices,
                        "--subnets", str(args.subnets), "--seed", str(args.seed)], check=True)
    print(OUT)


if __name__ == "__main__":
    main()
