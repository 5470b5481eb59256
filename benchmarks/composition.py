"""Why a whole network costs more than the sum of its isolated layers on `host` (issue 11, root cause).

In one process, in interleaved rounds, for random subnets of each space:
1. each subnet whole, and each of its layers alone, timed by `host` with every eviction size asked
   for: before every timed run the device writes that many MiB through the cache (0: none, the layer
   run back to back with its weights left in cache by its previous run; inside a network the other
   layers push them out between two runs of it). Whole subnets are timed with the same eviction, as
   `profile` and `validate` time them;
   Each layer is timed both as its file stands (`keep`: ONNX Runtime converts its input into the
   blocked NCHWc layout and its output back, copies a network makes once, not at every layer) and as
   `profile` times it (`cut`: `HostOnnxDevice.open_layer`, those copies cut; latencykit.devices.nchwc);
2. ONNX Runtime's profiler on two of the subnets: kernel time per operator type, whole network
   against its layers alone (same kernels, so any gap is the state the kernels run in).

Run: python benchmarks/composition.py [--spaces autovit-xxs autovit-xs autovit-s] [--subnets 16] [--rounds 11]
     [--evict-mib 0 2] [--boundaries keep cut]   (default eviction sizes: 0 and this machine's default)
Writes benchmarks/results/composition.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bias import machine_line  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LAYER_RUNS, WHOLE_RUNS = 7, 3
"""Runs per timing in a round: a median over the runs, then over the rounds."""


def op_times(path: Path, runs: int = 30) -> Counter:
    from latencykit.devices.host import HostOnnxDevice

    out: Counter = Counter()
    for t in HostOnnxDevice().profile_ops(path, runs):
        out[t.op] += t.ms
    return out


def study(space_name: str, subnets: int, rounds: int, sizes: list[float], boundaries: list[str]) -> dict:
    from latencykit.devices.host import HostOnnxDevice
    from latencykit.export import default_cache, export_layer, export_network
    from latencykit.lut.validate import sample_archs
    from latencykit.space import load_space

    space, cache = load_space(space_name), default_cache()
    archs = sample_archs(space, subnets, seed=11)
    devices = {mib: HostOnnxDevice(evict_mib=mib) for mib in sizes}
    opener = devices[sizes[0]]
    layer_files = {spec: export_layer(spec, cache, "onnx") for a in archs for spec in space.layers(a)}
    whole_files = [export_network(space.layers(a), cache, "onnx") for a in archs]
    open_as = {"keep": opener.open, "cut": opener.open_layer}
    alone = {(b, spec): open_as[b](f) for b in boundaries for spec, f in layer_files.items()}
    whole = [opener.open(f) for f in whole_files]
    layer_ms = {mib: {k: [] for k in alone} for mib in sizes}
    whole_ms = {mib: [[] for _ in archs] for mib in sizes}
    for _ in range(rounds):
        for k, h in alone.items():
            for mib, device in devices.items():
                layer_ms[mib][k].append(device.measure(h, LAYER_RUNS))
        for i, h in enumerate(whole):
            for mib, device in devices.items():
                whole_ms[mib][i].append(device.measure(h, WHOLE_RUNS))
    rows = [{"mib": mib, "boundary": b, "whole_ms": [float(np.median(w)) for w in whole_ms[mib]],
             "sum_ms": [sum(float(np.median(layer_ms[mib][b, s])) for s in space.layers(a)) for a in archs]}
            for mib in sizes for b in boundaries]
    ops = []
    for i in range(min(2, len(archs))):
        parts: Counter = Counter()
        for spec in space.layers(archs[i]):
            parts += op_times(layer_files[spec])
        ops.append({"whole": op_times(whole_files[i]), "parts": parts})
    weights_mb = float(np.median([space.params(a) * 4 for a in archs])) / 2**20
    return {"space": space_name, "weights_mb": weights_mb, "rows": rows, "ops": ops, "load": os.getloadavg()[0]}


def report(results: list[dict], command: str, seconds: float) -> str:
    lines = ["# Whole network against the sum of its layers alone (host, ONNX Runtime)", "",
             f"Command: `{command}` ({seconds:.0f} s)", "", machine_line("host"), "",
             "Gap = whole / sum - 1 (> 0: the sum of isolated layers predicts low). Layer boundary: `keep` times each "
             "layer file as it stands, `cut` without the NCHWc layout copies at its input and output (as `profile` "
             "times it). Eviction: before every timed "
             "run (layer or whole subnet) `host` writes that many MiB through the cache, one store per 64-byte line "
             f"(`HostOnnxDevice(evict_mib=...)`; 0: layers run back to back, as `profile` measured them before). "
             f"Medians of {LAYER_RUNS} runs per layer and {WHOLE_RUNS} per subnet in each round, then over the "
             "rounds. All in one process, interleaved rounds, so ratios hold though absolute times drift; the gaps' "
             "spread includes the whole subnets' own measurement noise.", ""]
    for r in results:
        lines += [f"## {r['space']} ({len(r['rows'][0]['whole_ms'])} random subnets, median weights "
                  f"{r['weights_mb']:.1f} MB, load {r['load']:.1f})", "",
                  "| eviction MiB | layer boundary | gap mean | gap sd | gap min | gap max | sum within ±5% | within ±10% |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in r["rows"]:
            gap = (np.array(row["whole_ms"]) / np.array(row["sum_ms"]) - 1) * 100
            err = np.abs(np.array(row["sum_ms"]) / np.array(row["whole_ms"]) - 1)
            lines.append(f"| {row['mib']:g} | {row['boundary']} | {gap.mean():+.1f}% | {gap.std():.1f} | {gap.min():+.1f}% | "
                         f"{gap.max():+.1f}% | {np.mean(err <= 0.05) * 100:.0f}% | {np.mean(err <= 0.10) * 100:.0f}% |")
        lines.append("")
        for j, o in enumerate(r["ops"]):
            lines += [f"Kernel time by operator type, subnet {j} (ONNX Runtime profiler, no eviction, 30 runs, "
                      "medians summed):", "",
                      "| operator | whole network ms | layers alone ms | whole / alone |", "|---|---|---|---|"]
            for op in sorted(o["whole"], key=lambda k: -o["whole"][k]):
                alone = o["parts"].get(op, 0.0)
                ratio = f"{o['whole'][op] / alone:.2f}" if alone > 0 else "-"
                lines.append(f"| {op} | {o['whole'][op]:.3f} | {alone:.3f} | {ratio} |")
            lines.append(f"| all | {sum(o['whole'].values()):.3f} | {sum(o['parts'].values()):.3f} | "
                         f"{sum(o['whole'].values()) / sum(o['parts'].values()):.2f} |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spaces", nargs="+", default=["autovit-xxs", "autovit-xs", "autovit-s"])
    ap.add_argument("--subnets", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--evict-mib", type=float, nargs="+", help="Default: 0 and this machine's default size.")
    ap.add_argument("--boundaries", nargs="+", choices=["keep", "cut"], default=["keep", "cut"])
    args = ap.parse_args()
    from latencykit.devices.clock import default_evict_mib

    sizes = args.evict_mib or [0.0, default_evict_mib()]
    start = time.perf_counter()
    results = [study(s, args.subnets, args.rounds, sizes, args.boundaries) for s in args.spaces]
    command = (f"python benchmarks/composition.py --spaces {' '.join(args.spaces)} --subnets {args.subnets} "
               f"--rounds {args.rounds} --evict-mib {' '.join(f'{m:g}' for m in sizes)} "
               f"--boundaries {' '.join(args.boundaries)}")
    text = report(results, command, time.perf_counter() - start)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "composition.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
