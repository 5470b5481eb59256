"""Where does the isolated table's bias come from? Evidence, measured in interleaved rounds.

Each session is a separate process that measures, in the same shuffled rounds with the reference
block: every distinct layer of a space alone, an almost empty model (the runtime's per-call
overhead), the calibration subnets `profile` would choose and held-out random subnets, all whole.
Then, per space:

- in one session: the isolated sum against the whole subnet, before (raw entries) and after the
  per-call correction (sum of entries less the call overhead, plus it once), and calibrated on the
  calibration subnets (latencykit.lut.calibration);
- across sessions: session 1's table scoring the subnets measured in each later session, put on the
  table's scale through the reference block (what `validate` does) or taken in their own ms;
- one session pins the measuring thread to one core (thread-migration candidate).

Run: python benchmarks/bias.py [--spaces autovit-xxs autovit-xs autovit-s] [--subnets 20] [--sessions 3]
Writes benchmarks/results/bias.md and each session's measurements to benchmarks/results/bias/
(`--rescore benchmarks/results/bias/session*.json` scores saved sessions again without measuring).
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
SAVED = RESULTS / "bias"
"""Each session's measurements, for `--rescore`."""


def measure_session(space_name: str, device_name: str, subnets: int, rounds: int, calibrate: int,
                    heldout_seed: int) -> dict:
    """One session's raw material: every layer, the call model, calibration and held-out subnets."""
    from latencykit.devices import get_device
    from latencykit.export import default_cache
    from latencykit.lut.calibration import select_calibration
    from latencykit.lut.profile import export_all
    from latencykit.lut.protocol import CALL_KEY, REF_KEY, Protocol, export_call, export_reference, measure_models
    from latencykit.export import export_network
    from latencykit.lut.validate import sample_archs
    from latencykit.space import load_space

    space, device, cache = load_space(space_name), get_device(device_name), default_cache()
    calibration = select_calibration(space, calibrate, seed=0)
    heldout = sample_archs(space, subnets, seed=heldout_seed, exclude=calibration)
    models = dict(export_all(space.distinct_layers(), cache, device.format))
    models[CALL_KEY] = export_call(cache, device.format)
    models.update({f"cal{i}": export_network(space.layers(a), cache, device.format) for i, a in enumerate(calibration)})
    models.update({f"test{i}": export_network(space.layers(a), cache, device.format) for i, a in enumerate(heldout)})
    t0 = time.perf_counter()
    load = os.getloadavg()[0]
    stats = measure_models(device, models, export_reference(cache, device.format), Protocol(rounds=rounds))
    layer_keys = [l.key for l in space.distinct_layers()]
    return {"space": space.name, "device": device.name, "seconds": time.perf_counter() - t0,
            "load": (load + os.getloadavg()[0]) / 2,
            "preemption": {"layers": preemption(device, [models[k] for k in layer_keys[::4]]),
                           "subnets": preemption(device, [models[f"test{i}"] for i in range(min(5, len(heldout)))])},
            "reference_ms": stats[REF_KEY].latency_ms, "call_ms": stats[CALL_KEY].latency_ms,
            "ms": {k: s.latency_ms for k, s in stats.items()}, "ratio": {k: s.ratio for k, s in stats.items()},
            "calibration": [a.to_dict() for a in calibration], "heldout": [a.to_dict() for a in heldout]}


def preemption(device, files: list[Path], runs: int = 20) -> dict:
    """How often single runs are preempted (involuntary context switches of the measuring thread), and
    the median run time of the runs that were against those that were not (relative to each model's)."""
    import resource

    switches, slower = [], []
    for f in files:
        h = device.open(f)
        t, n = np.empty(runs), np.empty(runs)
        for i in range(runs):
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
            t[i] = device.measure(h, 1)
            n[i] = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw - before
        device.close(h)
        switches.append(n.mean())
        if 0 < (n > 0).sum() < runs:
            slower.append(np.median(t[n > 0]) / np.median(t[n == 0]) - 1)
    return {"switches_per_run": float(np.mean(switches)),
            "preempted_slower_pct": float(np.mean(slower) * 100) if slower else float("nan")}


def group_sums(space, archs, entry_ms: dict[str, float], call_ms: float) -> tuple[list[str], np.ndarray]:
    """Per layer kind, the sum of each subnet's entries less the call overhead (columns sorted by kind)."""
    groups = sorted({l.kind for l in space.distinct_layers()})
    X = np.zeros((len(archs), len(groups)))
    for i, arch in enumerate(archs):
        for layer in space.layers(arch):
            X[i, groups.index(layer.kind)] += entry_ms[layer.key] - call_ms
    return groups, X


SCALES = {"subnets": "5 calibration subnets", "reference": "reference block", "own": "own ms"}


def score(session: dict, table: dict | None = None, scale: str = "reference") -> dict:
    """Metrics of the isolated sum (raw, call-corrected) and the calibrated sum on held-out subnets.

    `table` (default: the session itself) provides entries and calibration; the held-out subnets are
    the session's, put on the table's scale through 5 of the calibration subnets (measured in both
    sessions), through the reference block, or taken in the session's own ms (see SCALES)."""
    from latencykit.arch import Arch
    from latencykit.lut.calibration import fit_group_coefficients
    from latencykit.lut.validate import Metrics
    from latencykit.space import load_space

    table = table or session
    space = load_space(session["space"])
    heldout = [Arch.from_dict(a) for a in session["heldout"]]
    calib = [Arch.from_dict(a) for a in table["calibration"]]
    keys = [f"test{i}" for i in range(len(heldout))]
    if scale == "reference":
        measured = np.array([session["ratio"][k] for k in keys]) * table["reference_ms"]
    else:
        measured = np.array([session["ms"][k] for k in keys])
    if scale == "subnets":
        assert session["calibration"] == table["calibration"]
        picks = np.unique(np.linspace(0, len(calib) - 1, min(5, len(calib))).round().astype(int))
        measured *= np.median([table["ms"][f"cal{j}"] / session["ms"][f"cal{j}"] for j in picks])
    call = table["call_ms"]
    _, X = group_sums(space, heldout, table["ms"], call)
    raw = X.sum(1) + call * np.array([len(space.layers(a)) for a in heldout])
    out = {"isolated sum (as stored)": Metrics.compare(raw, measured),
           "isolated, less call overhead per extra layer": Metrics.compare(X.sum(1) + call, measured)}
    if calib:
        _, Xc = group_sums(space, calib, table["ms"], call)
        yc = np.array([table["ms"][f"cal{i}"] for i in range(len(calib))])
        fit = fit_group_coefficients(Xc, yc - call)
        out[f"calibrated (n={len(calib)})"] = Metrics.compare(fit.predict(X) + call, measured)
    return out


def worker(args: argparse.Namespace) -> None:
    if args.pin:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    data = [measure_session(s, args.device, args.subnets, args.rounds, args.calibrate, args.heldout_seed)
            for s in args.spaces]
    Path(args.worker).write_text(json.dumps({"pinned": args.pin, "sessions": data}))


def run_sessions(script: Path, common: list[str], sessions: int, pinned: set[int],
                 load: set[int] = frozenset()) -> list[dict]:
    """Run each session in its own process (a CPU-bound load beside the ones in `load`)."""
    out = []
    for s in range(sessions):
        path = Path(tempfile.mkdtemp(prefix="latencykit-session-")) / "session.json"
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if s in load else None
        try:
            subprocess.run([sys.executable, str(script), "--worker", str(path), *common,
                            "--heldout-seed", str(100 + s), *(["--pin"] if s in pinned else [])], check=True)
        finally:
            if hog:
                hog.kill()
                hog.wait()
        out.append({**json.loads(path.read_text()), "load": s in load})
    return out


def one_per_process(script: str, argv: list[str], processes: int) -> list[dict]:
    """Run `script ARGV --one JSON` in `processes` separate processes, one after another (a process's own
    drift, allocation and code layout are part of what a reading varies with); the JSON each one wrote."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(processes):
            path = Path(tmp) / f"{i}.json"
            subprocess.run([sys.executable, script, *argv, "--one", str(path)], check=True, env=os.environ.copy())
            out.append(json.loads(path.read_text()))
    return out


def machine_line(device_name: str) -> str:
    from latencykit.devices import get_device
    from latencykit.devices.host import cpu_name

    info = get_device(device_name).describe()
    return (f"Machine: {cpu_name()}, {os.cpu_count()} cores, {info['runtime']}, 1 thread, clock: {info['clock']}, "
            f"Python {platform.python_version()}. Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")


ROW = "| {label} | {m.within_5_pct:.0f}% | {m.within_10_pct:.0f}% | {m.rmspe_pct:.2f} | {m.bias_pct:+.2f} |"
HEAD = ["| predictor | within ±5% | within ±10% | RMSPE % | bias % |", "|---|---|---|---|---|"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spaces", nargs="+", default=["autovit-xxs", "autovit-xs", "autovit-s"])
    parser.add_argument("--device", default="host")
    parser.add_argument("--subnets", type=int, default=20, help="Held-out subnets per session.")
    parser.add_argument("--calibrate", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--sessions", type=int, default=3, help="Separate processes; the last one pinned.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rescore", nargs="+", help="Session JSON files saved by the workers of an earlier run.")
    parser.add_argument("--pin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--heldout-seed", type=int, default=100, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    common = ["--spaces", *args.spaces, "--device", args.device, "--subnets", str(args.subnets),
              "--calibrate", str(args.calibrate), "--rounds", str(args.rounds)]
    start = time.perf_counter()
    if args.rescore:  # the saved sessions of an earlier run, scored again
        sessions = [json.loads(Path(f).read_text()) for f in args.rescore]
        took = "sessions measured in an earlier run, re-scored from their saved data with `--rescore`"
    else:
        sessions = run_sessions(Path(__file__).resolve(), common, args.sessions, {args.sessions - 1})
        took = f"{time.perf_counter() - start:.0f} s"
        SAVED.mkdir(parents=True, exist_ok=True)
        for i, sess in enumerate(sessions):
            (SAVED / f"session{i + 1}.json").write_text(json.dumps(sess))
    lines = [f"# Bias of the isolated table on `{args.device}`: where it comes from", "",
             f"Command: `python benchmarks/bias.py {' '.join(common)} --sessions {args.sessions}` ({took})",
             "", machine_line(args.device), "",
             "Each session is a separate process measuring, in the same interleaved rounds with the reference "
             f"block ({args.rounds} rounds): every distinct layer, an almost empty model (one add on one number: "
             f"the per-call overhead), {args.calibrate} calibration subnets and {args.subnets} held-out random "
             "subnets, whole. Bias = mean(measured / predicted) - 1 (> 0: the table predicts low). "
             f"Session {args.sessions} pins the measuring thread to one core.", ""]
    lines += ["## Per-call overhead and preemption", "",
              "Preemption: single runs of every 4th layer and of 5 held-out subnets, 20 each, after the rounds; "
              "switches = involuntary context switches of the measuring thread per run; `slower` = median of the "
              "preempted runs over the median of the others, where a model had both.", "",
              "| space | session | load avg | call overhead ms | reference ms | layers per subnet |"
              " call overhead x layers / mean subnet | switches/run: layers | subnets | preempted layer runs slower |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    from latencykit.arch import Arch
    from latencykit.space import load_space

    for i, sess in enumerate(sessions):
        for d in sess["sessions"]:
            space = load_space(d["space"])
            sess.setdefault("load", False)
            n = np.mean([len(space.layers(Arch.from_dict(a))) for a in d["heldout"]])
            whole = np.mean([d["ms"][f"test{j}"] for j in range(len(d["heldout"]))])
            pre = d["preemption"]
            lines.append(f"| {d['space']} | {i + 1}{' (pinned)' if sess['pinned'] else ''} | {d['load']:.1f} | "
                         f"{d['call_ms']:.4f} | {d['reference_ms']:.3f} | {n:.1f} | "
                         f"{d['call_ms'] * (n - 1) / whole * 100:.2f}% | {pre['layers']['switches_per_run']:.2f} | "
                         f"{pre['subnets']['switches_per_run']:.2f} | {pre['layers']['preempted_slower_pct']:+.1f}% |")
    lines += ["", "## In one session: table, calibration and held-out subnets from the same rounds", ""]
    for k, space_name in enumerate(args.spaces):
        lines += [f"### {space_name}", "", "| session | " + HEAD[0][2:], "|---|" + HEAD[1][1:]]
        for i, sess in enumerate(sessions):
            for label, m in score(sess["sessions"][k]).items():
                lines.append(f"| {i + 1}{' (pinned)' if sess['pinned'] else ''} " + ROW.format(label=label, m=m))
        lines.append("")
    lines += ["## Across sessions: session 1's table scoring later sessions' subnets", "",
              "Scale: how the later session's subnets are put on the table's scale. `5 calibration subnets`: "
              "5 of the calibration subnets (spread over the set), measured in both sessions, median of then / "
              "now (what `validate` does now); `reference block`: through the reference block (what it did "
              "before); `own ms`: the later session's drift-corrected ms, unscaled.", ""]
    for k, space_name in enumerate(args.spaces):
        lines += [f"### {space_name}", "", "| session | scale | " + HEAD[0][2:], "|---|---|" + HEAD[1][1:]]
        table = sessions[0]["sessions"][k]
        for i, sess in enumerate(sessions[1:], start=2):
            for scale, name in SCALES.items():
                for label, m in score(sess["sessions"][k], table, scale).items():
                    lines.append(f"| {i}{' (pinned)' if sess['pinned'] else ''} | {name} "
                                 + ROW.format(label=label, m=m))
        lines.append("")
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bias.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
