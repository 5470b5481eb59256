"""Why a whole network costs more than the sum of its isolated layers on `host` (issue 11, root cause).

In one process, in interleaved rounds, for random subnets of each space:
1. the whole network, and the sum of its layers measured alone as `profile` measures them (warm: the
   same layer run back to back, its weights and input left in cache by the previous run);
2. the same sum with the cache state a layer meets inside a network: before every timed run, a buffer
   as large as the subnet's weights is written (evicting the layer's weights, as the rest of the
   network does between two runs of it) and the layer's input read again (inside a network it was
   just written by the layer before);
3. ONNX Runtime's profiler on two of the subnets: kernel time per operator type, whole network
   against its layers alone (same kernels, so any gap is the state the kernels run in).

Run: python benchmarks/composition.py [--spaces autovit-xxs autovit-s] [--subnets 8] [--rounds 5]
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


class Session:
    """One ONNX Runtime session, inputs bound once; `run(evict)` times one run in thread CPU time."""

    def __init__(self, path: Path, evict_buffer: np.ndarray) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        self.inputs = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in self.session.get_inputs()}
        outputs = self.session.run(None, self.inputs)
        self.binding = self.session.io_binding()
        for name, value in self.inputs.items():
            self.binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
        for meta, value in zip(self.session.get_outputs(), outputs):
            self.binding.bind_ortvalue_output(meta.name, ort.OrtValue.ortvalue_from_numpy(np.empty_like(value)))
        self.evict_buffer = evict_buffer

    def median_ms(self, runs: int, evict: bool) -> float:
        times = []
        for _ in range(runs):
            if evict:
                self.evict_buffer[::8] += 1.0  # one write per 64-byte cache line
                for value in self.inputs.values():
                    value.sum()
            t = time.thread_time_ns()
            self.session.run_with_iobinding(self.binding)
            times.append((time.thread_time_ns() - t) / 1e6)
        return float(np.median(times))


def op_times(path: Path, runs: int = 30) -> Counter:
    from latencykit.devices.host import HostOnnxDevice

    out: Counter = Counter()
    for t in HostOnnxDevice().profile_ops(path, runs):
        out[t.op] += t.ms
    return out


def study(space_name: str, subnets: int, rounds: int) -> dict:
    from latencykit.export import default_cache, export_layer, export_network
    from latencykit.lut.validate import sample_archs
    from latencykit.space import load_space

    space, cache = load_space(space_name), default_cache()
    archs = sample_archs(space, subnets, seed=11)
    footprint = float(np.median([space.params(a) * 4 for a in archs]))
    buffer = np.zeros(int(footprint) // 8)
    layers = {spec: None for a in archs for spec in space.layers(a)}
    layer_files = {spec: export_layer(spec, cache, "onnx") for spec in layers}
    whole_files = [export_network(space.layers(a), cache, "onnx") for a in archs]
    alone = {spec: Session(f, buffer) for spec, f in layer_files.items()}
    whole = [Session(f, buffer) for f in whole_files]
    warm = {s: [] for s in alone}
    evicted = {s: [] for s in alone}
    measured = [[] for _ in archs]
    for _ in range(rounds):
        for spec, h in alone.items():
            warm[spec].append(h.median_ms(9, False))
            evicted[spec].append(h.median_ms(9, True))
        for i, h in enumerate(whole):
            measured[i].append(h.median_ms(3, False))
    rows = []
    for i, a in enumerate(archs):
        w = float(np.median(measured[i]))
        sw = sum(float(np.median(warm[s])) for s in space.layers(a))
        se = sum(float(np.median(evicted[s])) for s in space.layers(a))
        rows.append({"whole_ms": w, "sum_warm_ms": sw, "sum_evicted_ms": se})
    ops = []
    for i in range(min(2, len(archs))):
        parts: Counter = Counter()
        for spec in space.layers(archs[i]):
            parts += op_times(layer_files[spec])
        ops.append({"whole": op_times(whole_files[i]), "parts": parts})
    return {"space": space_name, "footprint_mb": footprint / 2**20, "rows": rows, "ops": ops,
            "load": os.getloadavg()[0]}


def report(results: list[dict], command: str, seconds: float) -> str:
    lines = ["# Whole network against the sum of its layers alone (host, ONNX Runtime)", "",
             f"Command: `{command}` ({seconds:.0f} s)", "", machine_line("host"), "",
             "Gap = whole / sum - 1 (> 0: the sum of isolated layers predicts low). `warm`: layers measured as "
             "`profile` measures them. `weights evicted`: before each timed run of a layer, a buffer as large as "
             "the median subnet's weights is written and the layer's input read again, the cache state the layer "
             "meets inside a network. All in one process, interleaved rounds, so ratios hold though absolute "
             "times drift.", ""]
    for r in results:
        gaps = {k: np.array([row["whole_ms"] / row[k] - 1 for row in r["rows"]]) * 100
                for k in ("sum_warm_ms", "sum_evicted_ms")}
        lines += [f"## {r['space']} ({len(r['rows'])} random subnets, evicting {r['footprint_mb']:.1f} MB, "
                  f"load {r['load']:.1f})", "", "| subnet | whole ms | sum warm ms | gap | sum, weights evicted ms | gap |",
                  "|---|---|---|---|---|---|"]
        for i, row in enumerate(r["rows"]):
            lines.append(f"| {i} | {row['whole_ms']:.2f} | {row['sum_warm_ms']:.2f} | "
                         f"{gaps['sum_warm_ms'][i]:+.1f}% | {row['sum_evicted_ms']:.2f} | {gaps['sum_evicted_ms'][i]:+.1f}% |")
        lines += ["", f"Gap, warm: mean {gaps['sum_warm_ms'].mean():+.1f}%, sd {gaps['sum_warm_ms'].std():.1f}; "
                  f"weights evicted: mean {gaps['sum_evicted_ms'].mean():+.1f}%, sd {gaps['sum_evicted_ms'].std():.1f}.", ""]
        for j, o in enumerate(r["ops"]):
            lines += [f"Kernel time by operator type, subnet {j} (ONNX Runtime profiler, 30 runs, medians summed):", "",
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
    ap.add_argument("--spaces", nargs="+", default=["autovit-xxs", "autovit-s"])
    ap.add_argument("--subnets", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    start = time.perf_counter()
    results = [study(s, args.subnets, args.rounds) for s in args.spaces]
    command = (f"python benchmarks/composition.py --spaces {' '.join(args.spaces)} --subnets {args.subnets} "
               f"--rounds {args.rounds}")
    text = report(results, command, time.perf_counter() - start)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "composition.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
