"""What a whole network's latency means on host: one run beside the reference, or back to back.

The tables' whole-network protocol (`measure_models(whole=...)`, used by validation, calibration and
`latencykit measure`) times one run per reading, right after the reference block and a round after the
network's own previous run: every other model measured in between has passed through the cache. A
user's own timing loop, and each layer or kernel in a table, runs back to back (`measure_models`
without `whole`: bursts of runs, the cache left as the network's previous run left it, less the
device's eviction). This measures both on the zoo at several eviction sizes, in `--processes` separate
processes, each pass on its own reference block's scale so drift between passes cancels: readings one
run at a time / back to back - 1.

Run from the repository root, with nothing else running:
    PYTHONPATH=$PWD python benchmarks/whole_protocol.py --processes 3
Writes benchmarks/results/whole_protocol.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bias import one_per_process  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "whole_protocol.md"


def one_process(args) -> dict:
    """Both readings of every zoo model at every eviction size, in this process."""
    import torch

    from latencykit.devices.clock import default_evict_mib
    from latencykit.devices.host import HostOnnxDevice
    from latencykit.export import default_cache
    from latencykit.lut.protocol import Protocol, export_reference, measure_models
    from latencykit.zoo import build, variants

    torch.set_num_threads(1)
    cache = default_cache()
    zoo = variants(tuple(int(r) for r in args.resolutions.split(",")), tuple(float(w) for w in args.widths.split(",")))
    files = {v.name: cache.export(*build(v), "onnx") for v in zoo}
    reference = export_reference(cache, "onnx")
    out = {}
    for e in args.evict_mib.split(","):
        mib = default_evict_mib() if e == "default" else float(e)
        device = HostOnnxDevice(evict_mib=mib)
        single = measure_models(device, files, reference, Protocol(rounds=args.rounds, seed=0), whole=set(files))
        steady = measure_models(device, files, reference, Protocol(rounds=args.rounds, seed=1))
        out[f"{mib:g}"] = {k: [100 * (single[k].ratio / steady[k].ratio - 1), steady[k].latency_ms] for k in files}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="0.5,1.0")
    ap.add_argument("--resolutions", default="128,192")
    ap.add_argument("--evict-mib", default="0,default,32", help="eviction sizes; `default` is the device's own")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--one", metavar="JSON", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("LATENCYKIT_HOME", tempfile.mkdtemp(prefix="latencykit-whole-protocol-"))
    if args.one:
        Path(args.one).write_text(json.dumps(one_process(args)))
        return
    from latencykit.devices.clock import last_level_cache_mib
    from latencykit.devices.host import cpu_name

    start = time.perf_counter()
    passes = one_per_process(__file__, sys.argv[1:], args.processes)
    lines = ["# Whole-network latency: one run beside the reference, or back to back (host)", "",
             "One run per reading right after the reference block (the tables' whole-network protocol) against "
             "bursts of back-to-back runs (a user's own timing loop; how table layers and kernels are timed), "
             "each on its own reference block's scale, in separate processes. Before every timed run the device "
             "writes *eviction* MiB through the cache. Difference = one run / back to back - 1.", "",
             f"Command: `PYTHONPATH=$PWD python benchmarks/whole_protocol.py {' '.join(sys.argv[1:])}`".rstrip() + "  ",
             f"CPU: {cpu_name()}, {os.cpu_count()} cores, last-level cache {last_level_cache_mib()} MiB, 1 runtime "
             f"thread, Python {platform.python_version()}; {len(passes)} processes, "
             f"{time.perf_counter() - start:.0f} s.", "",
             "| process | eviction MiB | models | difference: min | median | max |", "|---|---|---|---|---|---|"]
    for i, p in enumerate(passes, 1):
        for mib, r in p.items():
            d = np.array([v[0] for v in r.values()])
            lines.append(f"| {i} | {mib} | {len(d)} | {d.min():+.0f}% | {np.median(d):+.0f}% | {d.max():+.0f}% |")
    evictions = list(passes[0])
    lines += ["", "Per model: back-to-back ms (first process) and the difference's median over the processes "
              "(lowest..highest).", "",
              "| model | " + " | ".join(f"back to back ms, {m} MiB | one run, {m} MiB" for m in evictions) + " |",
              "|---|" + "---|---|" * len(evictions)]
    for k in passes[0][evictions[0]]:
        cells = []
        for mib in evictions:
            d = [p[mib][k][0] for p in passes]
            cells += [f"{passes[0][mib][k][1]:.2f}", f"{np.median(d):+.0f}% ({min(d):+.0f}..{max(d):+.0f})"]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    main()
