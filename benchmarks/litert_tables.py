"""Profile and validate autovit spaces on `host-litert` (LiteRT + XNNPACK), as on `host`.

Writes benchmarks/results/litert_tables.md: per space, the isolated table's accuracy on random
whole subnets (within +-5% / +-10%, RMSPE, bias, Kendall tau) against the test-retest floor.

    PYTHONPATH=$PWD python benchmarks/litert_tables.py --spaces autovit-xxs --samples 20

`--home` reuses a LATENCYKIT_HOME (and its export cache); by default a fresh temporary one is used.
Whole-network LiteRT conversion is slow (25-50 s per subnet on this machine), which bounds --samples.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spaces", nargs="+", default=["autovit-xxs", "autovit-xs", "autovit-s"])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--device", default="host-litert")
    ap.add_argument("--home", default=None)
    ap.add_argument("--out", default=str(RESULTS / "litert_tables.md"))
    args = ap.parse_args()
    os.environ["LATENCYKIT_HOME"] = args.home or tempfile.mkdtemp(prefix="latencykit-bench-")

    from latencykit.devices import get_device
    from latencykit.lut.predictors import get_predictor
    from latencykit.lut.profile import profile
    from latencykit.lut.validate import evaluate, measure_archs, sample_archs, save
    from latencykit.space import load_space

    device = get_device(args.device, threads=1)
    rows = []
    for name in args.spaces:
        space = load_space(name)
        t0 = time.perf_counter()
        result = profile(space, device)
        profile_s = time.perf_counter() - t0
        predictor = get_predictor("isolated").fit(space, result.table)
        t0 = time.perf_counter()
        m = measure_archs(space, device, sample_archs(space, args.samples, seed=1), result.table)
        validate_s = time.perf_counter() - t0
        v = evaluate("table", predictor.predict_many, m, device.name, name)
        folder = RESULTS / "litert_tables"
        files = save(v, folder)
        files["json"].replace(folder / f"{name}.json")
        files["plot"].replace(folder / f"{name}.png")
        rows.append((name, len(result.table), profile_s, validate_s, v))
        print(name, v.summary()["metrics"], file=sys.stderr, flush=True)

    info = device.describe()
    lines = [
        f"# Isolated lookup tables on `{args.device}` (LiteRT, XNNPACK)", "",
        f"Command: `PYTHONPATH=$PWD python benchmarks/litert_tables.py {shlex.join(sys.argv[1:])}`", "",
        f"Machine: {info['cpu']}, {os.cpu_count()} cores shared with other jobs, {info['runtime']}, "
        f"{info['threads']} thread, clock: {info['clock']}, Python {platform.python_version()}. "
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        "Profiling: every distinct layer exported to TFLite (litert-torch, each checked against torch) and "
        "measured in 15 shuffled interleaved rounds with the reference block (profile wall s includes "
        f"exports not already cached). Validation: {args.samples} random subnets (seed 1) exported whole and "
        "measured twice (test-retest) with the same protocol, against the sum of their isolated entries. "
        "Bias > 0 means the table predicts low.", "",
        "| space | entries | profile wall s | within ±5% | within ±10% | RMSPE % | bias % | Kendall tau | "
        "noise floor RMSPE % | validate wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entries, ps, vs, v in rows:
        mt, nf = v.metrics, v.noise_floor
        lines.append(f"| {name} | {entries} | {ps:.0f} | {mt.within_5_pct:.0f}% | {mt.within_10_pct:.0f}% | "
                     f"{mt.rmspe_pct:.2f} | {mt.bias_pct:+.2f} | {mt.kendall_tau:.3f} | {nf.rmspe_pct:.2f} | {vs:.0f} |")
    lines += ["", *[f"![{n}](litert_tables/{n}.png)" for n, *_ in rows]]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
