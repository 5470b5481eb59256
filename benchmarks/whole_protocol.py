"""What a whole network's latency means on host: one run beside the reference, or back to back.

The tables' whole-network protocol (`measure_models(whole=...)`, used by validation, calibration and
`latencykit measure`) times one run per reading, right after the reference block and a round after the
network's own previous run: every other model measured in between has passed through the cache. A
user's own timing loop, and each layer or kernel in a table, runs back to back (`measure_models`
without `whole`: bursts of runs, the cache left as the network's previous run left it, less the
device's eviction). This measures both on the zoo in one process at several eviction sizes, each on its
own reference block's scale, so drift between the passes cancels: readings one run at a time / back
to back - 1.

Run from the repository root, with nothing else running:
    PYTHONPATH=$PWD python benchmarks/whole_protocol.py
Writes benchmarks/results/whole_protocol.md.
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

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "whole_protocol.md"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="0.5,1.0")
    ap.add_argument("--resolutions", default="128,192")
    ap.add_argument("--evict-mib", default="0,default,32", help="eviction sizes; `default` is the device's own")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    os.environ.setdefault("LATENCYKIT_HOME", tempfile.mkdtemp(prefix="latencykit-whole-protocol-"))
    import torch

    from latencykit.devices.clock import default_evict_mib, last_level_cache_mib
    from latencykit.devices.host import HostOnnxDevice, cpu_name
    from latencykit.export import default_cache
    from latencykit.lut.protocol import Protocol, export_reference, measure_models
    from latencykit.zoo import build, variants

    torch.set_num_threads(1)
    start = time.perf_counter()
    cache = default_cache()
    zoo = variants(tuple(int(r) for r in args.resolutions.split(",")), tuple(float(w) for w in args.widths.split(",")))
    files = {v.name: cache.export(*build(v), "onnx") for v in zoo}
    reference = export_reference(cache, "onnx")
    evictions = [default_evict_mib() if e == "default" else float(e) for e in args.evict_mib.split(",")]
    results = {}
    for mib in evictions:
        device = HostOnnxDevice(evict_mib=mib)
        single = measure_models(device, files, reference, Protocol(rounds=args.rounds, seed=0), whole=set(files))
        steady = measure_models(device, files, reference, Protocol(rounds=args.rounds, seed=1))
        results[mib] = {k: (single[k].ratio, steady[k].ratio, steady[k].latency_ms) for k in files}
    lines = ["# Whole-network latency: one run beside the reference, or back to back (host)", "",
             "One run per reading right after the reference block (the tables' whole-network protocol) against "
             "bursts of back-to-back runs (a user's own timing loop; how table layers and kernels are timed), "
             "each on its own reference block's scale, one process. Before every timed run the device writes "
             "*eviction* MiB through the cache. Difference = one run / back to back - 1.", "",
             f"Command: `PYTHONPATH=$PWD python benchmarks/whole_protocol.py {' '.join(sys.argv[1:])}`".rstrip() + "  ",
             f"CPU: {cpu_name()}, {os.cpu_count()} cores, last-level cache {last_level_cache_mib()} MiB, 1 runtime "
             f"thread, Python {platform.python_version()}; {time.perf_counter() - start:.0f} s.", "",
             "| eviction MiB | models | difference: min | median | max |", "|---|---|---|---|---|"]
    for mib, r in results.items():
        d = np.array([100 * (s / b - 1) for s, b, _ in r.values()])
        lines.append(f"| {mib:g} | {len(d)} | {d.min():+.0f}% | {np.median(d):+.0f}% | {d.max():+.0f}% |")
    lines += ["", "| model | " + " | ".join(f"back to back ms, {m:g} MiB | one run, {m:g} MiB" for m in evictions) + " |",
              "|---|" + "---|---|" * len(evictions)]
    for k in files:
        cells = []
        for mib in evictions:
            s, b, ms = results[mib][k]
            cells += [f"{ms:.2f}", f"{100 * (s / b - 1):+.0f}%"]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    main()
