"""How far a kernel sample moves when it is measured again: the noise floor under the kernel predictor.

`profile --kernels` measures each sampled kernel configuration once (its rounds interleaved with the
reference block, latencykit.lut.protocol). The per-type regressors cannot fit the samples closer than
the samples repeat. This script draws `--per-type` configurations of every kernel type (the profile's
own sampler, seeded, so every process draws the same ones), and in each of `--processes` processes
measures all of them twice, exactly as a profile stage does (`measure_kernels`). A sample's value is its
latency on the reference block's scale, as a profile stores it (the regressors fit its logarithm).

- *within*: the second pass against the first, in the same process;
- *across*: each process's mean of its two passes against the first process's.

On `host`, `--evict-mib 0` measures without the cache eviction before every timed run (the device's
default writes a quarter of the last-level cache, at most 8 MiB; latencykit.devices.clock).

Run from the repository root, with nothing else running:
    PYTHONPATH=$PWD python benchmarks/kernel_noise.py --device host --processes 3
Writes benchmarks/results/kernel_noise_DEVICE.md (with --evict-mib, kernel_noise_DEVICE_evictMIB.md; the
.json beside it), or --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def measure_pass(device_name: str, per_type: int, seed: int, evict_mib: float | None, out: Path) -> None:
    """One process: every drawn configuration measured twice; latencies on the reference's scale, to `out`."""
    from latencykit.devices import get_device
    from latencykit.export import default_cache
    from latencykit.kernels import FEATURES
    from latencykit.lut.kernels import _configs, blocks_layout, measure_kernels
    from latencykit.lut.protocol import Protocol

    device = get_device(device_name)
    if evict_mib is not None:
        from latencykit.devices.host import HostOnnxDevice

        if not isinstance(device, HostOnnxDevice):
            sys.exit("--evict-mib applies to ONNX Runtime devices (host) only")
        device = HostOnnxDevice(threads=device.threads, name=device.name, evict_mib=evict_mib)
    cache = default_cache()
    kinds = [k for k in FEATURES if k != "reorder" or blocks_layout(device, cache)]
    rng, seen = np.random.default_rng(seed), set()
    configs = [(k, f) for k in kinds for f in _configs(k, per_type, rng, seen)]
    passes = []
    for i in range(2):
        ms, ref = measure_kernels(device, configs, cache, Protocol(rounds=5, extra_rounds=2, seed=seed + 1 + i))
        passes.append([m / ref for m in ms])
    out.write_text(json.dumps({"kinds": [k for k, _ in configs], "configs": [f for _, f in configs],
                               "passes": passes, "reference_ms": ref, "load": os.getloadavg()[0]}))


def within(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Share within ±5% and ±10%, and the median absolute difference in %, of b against a."""
    d = np.abs(b / a - 1) * 100
    return float((d <= 5).mean() * 100), float((d <= 10).mean() * 100), float(np.median(d))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="host")
    ap.add_argument("--per-type", type=int, default=20, help="configurations drawn per kernel type")
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--evict-mib", type=float, default=None, help="host only: MiB written before each timed run")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--pass", dest="one", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        measure_pass(args.device, args.per_type, args.seed, args.evict_mib, args.one)
        return
    if args.per_type < 2 or args.processes < 1:
        sys.exit("--per-type must be at least 2 and --processes at least 1")
    from latencykit.devices.host import cpu_name

    start = time.time()
    runs = []
    with tempfile.TemporaryDirectory(prefix="latencykit-kernel-noise-") as tmp:
        env = {**os.environ, "LATENCYKIT_HOME": os.environ.get("LATENCYKIT_HOME", str(Path(tmp) / "home"))}
        for p in range(args.processes):
            out = Path(tmp) / f"pass{p}.json"
            cmd = [sys.executable, __file__, "--pass", str(out), "--device", args.device,
                   "--per-type", str(args.per_type), "--seed", str(args.seed)]
            if args.evict_mib is not None:
                cmd += ["--evict-mib", str(args.evict_mib)]
            subprocess.run(cmd, check=True, env=env)
            runs.append(json.loads(out.read_text()))
            print(f"process {p + 1}/{args.processes} done, {time.time() - start:.0f} s", flush=True)
    kinds = runs[0]["kinds"]
    rows = []
    for kind in dict.fromkeys(kinds):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        first = [np.array(r["passes"][0])[idx] for r in runs]
        second = [np.array(r["passes"][1])[idx] for r in runs]
        mean = [(a + b) / 2 for a, b in zip(first, second)]
        rows.append({"kind": kind, "n": len(idx), "median_ref": float(np.median(mean[0])),
                     "within": [within(a, b) for a, b in zip(first, second)],
                     "across": [within(mean[0], m) for m in mean[1:]]})
    allw = [within(np.array(r["passes"][0]), np.array(r["passes"][1])) for r in runs]
    report = {"command": "PYTHONPATH=$PWD python benchmarks/kernel_noise.py " + " ".join(sys.argv[1:]),
              "cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
              "device": args.device, "evict_mib": args.evict_mib, "seconds": round(time.time() - start),
              "reference_ms": [r["reference_ms"] for r in runs], "load": [r["load"] for r in runs],
              "all_within": allw, "rows": rows, "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(start))}
    suffix = "" if args.evict_mib is None else f"_evict{args.evict_mib:g}"
    write(report, args.out or RESULTS / f"kernel_noise_{args.device}{suffix}.md")


def write(report: dict, out: Path) -> None:
    from latencykit.files import atomic_write_text

    reps = " / ".join
    lines = ["# Kernel samples measured again (noise floor under the kernel predictor)", "",
             "Each process draws the same kernel configurations (the profile's sampler) and measures them twice as "
             "a profile stage does; a sample's value is its latency on the reference block's scale, as a profile "
             "stores it. *Within*: second pass against the first in one process (one figure per "
             "process); *across*: a process's mean of its two passes against the first process's.", "",
             f"Command: `{report['command']}`  ",
             f"CPU: {report['cpu']}, {report['cores']} cores, 1 runtime thread, Python {report['python']}; "
             f"device {report['device']}"
             + (f", eviction {report['evict_mib']:g} MiB" if report["evict_mib"] is not None else ", default eviction")
             + f"; started {report['utc']} UTC, {report['seconds']} s; reference block "
             f"{reps(f'{r:.3f}' for r in report['reference_ms'])} ms; 1-minute load "
             f"{reps(f'{x:.1f}' for x in report['load'])}.", "",
             "All samples, within one process: "
             + reps(f"{w5:.0f}%" for w5, _, _ in report["all_within"]) + " within ±5%, "
             + reps(f"{w10:.0f}%" for _, w10, _ in report["all_within"]) + " within ±10%, median difference "
             + reps(f"{m:.1f}%" for _, _, m in report["all_within"]) + ".", "",
             "| kernel type | samples | median latency (x reference) | within: ±5% | ±10% | median % "
             "| across: ±10% | median % |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        w, a = r["within"], r["across"]
        lines.append(f"| {r['kind']} | {r['n']} | {r['median_ref']:.3f} | {reps(f'{x[0]:.0f}' for x in w)} | "
                     f"{reps(f'{x[1]:.0f}' for x in w)} | {reps(f'{x[2]:.1f}' for x in w)} | "
                     f"{reps(f'{x[1]:.0f}' for x in a) or '-'} | {reps(f'{x[2]:.1f}' for x in a) or '-'} |")
    atomic_write_text(out, "\n".join(lines) + "\n")
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
