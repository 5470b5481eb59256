"""A stand-in for `adb` and the phones behind it, for tests without a phone.

It answers the commands latencykit sends the way adb and Android answer them (output text, exit
codes, error messages), over phones described in $FAKE_ADB_HOME/state.json (written by
tests/fake_adb/__init__.py). Each phone has a small file system under $FAKE_ADB_HOME/SERIAL/.

- `devices [-l]`, `-s SERIAL`, `get-state`, `push LOCAL REMOTE`;
- `shell getprop [NAME]`, `rm [-f] [-r]`, `chmod`, `cat` (with `*` globs, as the phone's sh does),
  `ls`, `taskset MASK CMD...` (mask checked against the phone's core count);
- `shell [taskset MASK] /data/local/tmp/benchmark_model --graph=... --num_threads=...
  --warmup_runs=... --num_runs=...` runs the pushed .tflite with the host LiteRT interpreter
  and prints benchmark_model's output in one of its three formats (state "format"). The
  "inference" format (current builds) also runs for at least --min_secs (default 1 s) after
  --warmup_min_secs (default 0.5 s), as current builds do; the two older formats reject
  flags they did not have ("Unconsumed cmdline flags").
- Disconnects: with FAKE_ADB_DISCONNECT_AFTER=N the phone drops off (once) during benchmark run
  N+1 (partial output, exit 255) and stays gone; FAKE_ADB_RECONNECT_AFTER=K brings it back after
  K further adb calls. FAKE_ADB_DISCONNECT_AT=STAGE:N drops it (once) at call N+1 of a stage instead:
  `push` (the copy fails half way), `run` (as above) or `shell` (any other shell command: getprop,
  chmod, the thermal reads).
- Thermal zones: `thermal_mc` per zone (None: unreadable, as some zones are); each benchmark run
  heats by `heat_per_run_mc`, each read cools by `cool_per_read_mc`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import stat
import sys
import time
from pathlib import Path

HOME = Path(os.environ["FAKE_ADB_HOME"])
STATE = HOME / "state.json"
AMBIENT_MC = 30000


def load() -> dict:
    return json.loads(STATE.read_text())


def save(state: dict) -> None:
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, STATE)


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    sys.stderr.write(text + "\n")


class Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def fail(message: str, code: int = 1) -> None:
    err(message)
    raise Exit(code)


# -- the phone's file system --------------------------------------------------------------------
def root(serial: str) -> Path:
    return HOME / serial / "fs"


def local(serial: str, remote: str) -> Path:
    return root(serial) / remote.lstrip("/")


def expand(serial: str, word: str) -> list[str]:
    """sh glob expansion on the phone: a pattern that matches nothing stays as it is."""
    if "*" not in word:
        return [word]
    parts = word.strip("/").split("/")
    matches = [root(serial)]
    for part in parts:
        nxt = []
        for base in matches:
            if "*" in part:
                nxt += sorted(p for p in base.glob(part) if fnmatch.fnmatch(p.name, part))
            elif (base / part).exists():
                nxt.append(base / part)
        matches = nxt
    found = ["/" + str(m.relative_to(root(serial))) for m in matches]
    return found or [word]


# -- shell commands -----------------------------------------------------------------------------
def sh(state: dict, serial: str, line: str) -> int:
    phone = state["phones"][serial]
    words = [w for word in shlex.split(line) for w in expand(serial, word)]
    if not words:
        return 0
    name, args = words[0], words[1:]
    if name == "getprop":
        props = {"ro.product.model": phone["model"], **phone.get("props", {})}
        if not args:
            for k, v in sorted(props.items()):
                out(f"[{k}]: [{v}]")
        else:
            out(props.get(args[0], ""))
        return 0
    if name == "rm":
        force = any(a.startswith("-") and "f" in a for a in args)
        recursive = any(a.startswith("-") and "r" in a for a in args)
        code = 0
        for path in (a for a in args if not a.startswith("-")):
            p = local(serial, path)
            if p.is_dir() and recursive:
                shutil.rmtree(p)
            elif p.is_dir():
                err(f"rm: {path}: Is a directory")
                code = 1
            elif p.exists():
                p.unlink()
            elif not force:
                err(f"rm: {path}: No such file or directory")
                code = 1
        return code
    if name == "chmod":
        mode, paths = args[0], args[1:]
        for path in paths:
            p = local(serial, path)
            if not p.exists():
                err(f"chmod: {path}: No such file or directory")
                return 1
            p.chmod(int(mode, 8))
        return 0
    if name == "ls":
        code = 0
        for path in args or ["/data/local/tmp"]:
            p = local(serial, path)
            if not p.exists():
                err(f"ls: {path}: No such file or directory")
                code = 1
            elif p.is_dir():
                for child in sorted(p.iterdir()):
                    out(child.name)
            else:
                out(path)
        return code
    if name == "cat":
        return cat(state, serial, args)
    if name == "taskset":
        if len(args) < 2:
            fail("usage: taskset [-ap] [mask] [PID | cmd [args...]]")
        try:
            mask = int(args[0], 16)
        except ValueError:
            fail(f"taskset: bad mask '{args[0]}'")
        if mask == 0 or mask >> phone.get("cpus", 8):
            fail("taskset: sched_setaffinity: Invalid argument")
        return execute(state, serial, args[1], args[2:])
    return execute(state, serial, name, args)


def cat(state: dict, serial: str, paths: list[str]) -> int:
    phone = state["phones"][serial]
    code = 0
    for path in paths:
        p = local(serial, path)
        zone = thermal_zone(path)
        if zone is not None and zone < len(phone.get("thermal_mc", [])):
            value = phone["thermal_mc"][zone]
            if value is None:
                err(f"cat: {path}: Invalid argument")
                code = 1
                continue
            out(str(int(value)))
            cooled = max(AMBIENT_MC, value - phone.get("cool_per_read_mc", 0))
            phone["thermal_mc"][zone] = cooled
        elif p.is_file():
            sys.stdout.write(p.read_text())
        else:
            err(f"cat: {path}: No such file or directory")
            code = 1
    return code


def thermal_zone(path: str) -> int | None:
    parts = path.strip("/").split("/")
    if len(parts) == 5 and parts[:3] == ["sys", "class", "thermal"] and parts[4] == "temp":
        if parts[3].startswith("thermal_zone") and parts[3][12:].isdigit():
            return int(parts[3][12:])
    return None


def execute(state: dict, serial: str, path: str, args: list[str]) -> int:
    if "/" not in path:
        fail(f"/system/bin/sh: {path}: inaccessible or not found", 127)
    p = local(serial, path)
    if not p.is_file():
        fail(f"/system/bin/sh: {path}: inaccessible or not found", 127)
    if not p.stat().st_mode & stat.S_IXUSR:
        fail(f"/system/bin/sh: {path}: can't execute: Permission denied", 126)
    if p.name != "benchmark_model":
        fail(f"/system/bin/sh: {path}: can't execute: Exec format error", 126)
    return benchmark_model(state, serial, args)


# -- benchmark_model ----------------------------------------------------------------------------
FLAGS = {
    "inference": {"graph", "num_threads", "warmup_runs", "num_runs", "min_secs", "max_secs",
                  "warmup_min_secs", "run_delay", "use_xnnpack", "enable_op_profiling", "verbose"},
    "average": {"graph", "num_threads", "warmup_runs", "num_runs", "run_delay", "use_nnapi"},
    "timings": {"graph", "num_threads", "warmup_runs", "num_runs", "run_delay", "use_nnapi"},
}


def benchmark_model(state: dict, serial: str, args: list[str]) -> int:
    fmt = os.environ.get("FAKE_ADB_BM_FORMAT") or state.get("format", "inference")
    flags, unknown = {}, []
    for a in args:
        key, _, value = a.lstrip("-").partition("=")
        if a.startswith("--") and key in FLAGS[fmt]:
            flags[key] = value
        else:
            unknown.append(a)
    info = "INFO: " if fmt == "inference" else ""
    if unknown:
        fail(f"{info}Unconsumed cmdline flags: {' '.join(unknown)}")
    graph = flags.get("graph")
    threads = int(flags.get("num_threads", 1))
    warmup, runs = int(flags.get("warmup_runs", 1)), int(flags.get("num_runs", 50))
    out(f"{info}STARTING!")
    out(f"{info}Log parameter values verbosely: [0]")
    out(f"{info}Num threads: [{threads}]")
    if not graph:
        fail(f"{info}Please specify the name of your TF Lite input file with --graph")
    out(f"{info}Graph: [{graph}]")
    model = local(serial, graph)
    if not model.is_file():
        fail(f"{info}Failed to mmap model {graph}")
    out(f"{info}Loaded model {graph}")
    sys.stdout.flush()

    drop_after = os.environ.get("FAKE_ADB_DISCONNECT_AFTER")
    if drop_after is not None and not state.get("dropped") and state.get("runs_done", 0) >= int(drop_after):
        state["gone"], state["dropped"] = {"serial": serial, "calls": 0}, True
        raise Exit(255)  # the USB link went away mid-run: partial output, no timings

    t0 = time.perf_counter()
    from ai_edge_litert.interpreter import Interpreter

    import numpy as np

    interp = Interpreter(model_path=str(model), num_threads=threads)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
    init_us = (time.perf_counter() - t0) * 1e6
    out(f"{info}The input model file size (MB): {model.stat().st_size / 1e6:g}")
    out(f"{info}Initialized session in {init_us / 1e3:.3f}ms.")

    def timed(n: int, min_secs: float) -> list[float]:
        # A phone under test runs nothing else; this host is shared, so each run is timed by the
        # CPU time of the one interpreter thread (num_threads=1 computes on it), not wall time.
        clock = time.thread_time if threads == 1 else time.perf_counter
        times, start = [], time.perf_counter()
        while len(times) < n or (time.perf_counter() - start) < min_secs:
            t = clock()
            interp.invoke()
            times.append((clock() - t) * 1e6)
        return times

    newer = fmt == "inference"
    warm_secs = float(flags.get("warmup_min_secs", 0.5)) if newer else 0.0
    run_secs = float(flags.get("min_secs", 1.0)) if newer else 0.0
    out(f"{info}Running benchmark for at least {warmup} iterations and at least {warm_secs:g} seconds "
        "but terminate if exceeding 150 seconds.")
    w = timed(max(warmup, 1), warm_secs)
    out(info + stats_line(w))
    out(f"{info}Running benchmark for at least {runs} iterations and at least {run_secs:g} seconds "
        "but terminate if exceeding 150 seconds.")
    r = timed(runs, run_secs)
    out(info + stats_line(r))
    out()
    avg = lambda xs: sum(xs) / len(xs)  # noqa: E731
    if fmt == "inference":
        out(f"INFO: Inference timings in us: Init: {init_us:.0f}, First inference: {w[0]:.0f}, "
            f"Warmup (avg): {avg(w):g}, Inference (avg): {avg(r):g}")
        out("INFO: Note: as the benchmark tool itself affects memory footprint, the following is only "
            "APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at "
            "your discretion.")
        out("INFO: Memory footprint delta from the start of the tool (MB): init=2.1 overall=3.4")
    elif fmt == "average":
        out(f"Average inference timings in us: Warmup: {avg(w):g}, Init: {init_us:.0f}, no stats: {avg(r):g}")
    else:
        out("============================== Run Order ==============================")
        out("Timings (microseconds): " + stats_line(r))
        out("Memory (bytes): count=0")
        out(f"{len(interp.get_tensor_details())} tensors")
    state["runs_done"] = state.get("runs_done", 0) + 1
    phone = state["phones"][serial]
    heat = phone.get("heat_per_run_mc", 0)
    phone["thermal_mc"] = [None if t is None else t + heat for t in phone.get("thermal_mc", [])]
    return 0


def stats_line(us: list[float]) -> str:
    n = len(us)
    mean = sum(us) / n
    std = (sum((x - mean) ** 2 for x in us) / n) ** 0.5
    return (f"count={n} first={us[0]:.0f} curr={us[-1]:.0f} min={min(us):.0f} max={max(us):.0f} "
            f"avg={mean:g} std={std:.0f}")


# -- adb itself ---------------------------------------------------------------------------------
def visible(state: dict) -> dict:
    gone = (state.get("gone") or {}).get("serial")
    return {s: p for s, p in state["phones"].items() if s != gone}


def drop_at(state: dict, serial: str, stage: str) -> None:
    """FAKE_ADB_DISCONNECT_AT=STAGE:N: the phone goes away during call N+1 of STAGE (once)."""
    wanted, _, after = os.environ.get("FAKE_ADB_DISCONNECT_AT", "").partition(":")
    if wanted != stage or state.get("dropped"):
        return
    counts = state.setdefault("stage_calls", {})
    counts[stage] = counts.get(stage, 0) + 1
    if counts[stage] > int(after):
        state["gone"], state["dropped"] = {"serial": serial, "calls": 0}, True
        if stage == "push":
            fail("adb: error: failed to copy: connection reset: no devices/emulators found")
        fail("error: closed", 255)


def main(argv: list[str]) -> int:
    state = load()
    state["calls"] = state.get("calls", 0) + 1
    gone = state.get("gone")
    if gone:
        gone["calls"] += 1
        back = os.environ.get("FAKE_ADB_RECONNECT_AFTER")
        if back is not None and gone["calls"] > int(back):
            state["gone"] = None
            state["reconnected"] = state.get("reconnected", 0) + 1
    try:
        return run(state, argv)
    except Exit as e:
        return e.code
    finally:
        sys.stdout.flush()
        save(state)


def run(state: dict, argv: list[str]) -> int:
    serial = os.environ.get("ANDROID_SERIAL")
    while argv and argv[0] in ("-s", "-d", "-e"):
        if argv[0] == "-s":
            serial, argv = argv[1], argv[2:]
        else:
            argv = argv[1:]
    if not argv:
        fail("adb: usage: no command specified")
    cmd, args = argv[0], argv[1:]
    phones = visible(state)
    if cmd == "version":
        out("Android Debug Bridge version 1.0.41 (fake, latencykit tests)")
        return 0
    if cmd == "devices":
        out("List of devices attached")
        for s, p in phones.items():
            if "-l" in args and p["state"] == "device":
                out(f"{s:<22} device usb:1-{len(s) % 4 + 1} product:{p.get('product', 'phone')} "
                    f"model:{p['model'].replace(' ', '_')} device:{p.get('device', 'phone')} transport_id:1")
            else:
                out(f"{s:<22} {p['state']}" + (" transport_id:1" if "-l" in args else ""))
        out()
        return 0
    if serial is not None:
        if serial not in phones:
            fail(f"adb: device '{serial}' not found")
    elif not phones:
        fail("adb: no devices/emulators found")
    elif len(phones) > 1:
        fail("adb: more than one device/emulator")
    else:
        serial = next(iter(phones))
    phone = phones[serial]
    if phone["state"] != "device":
        fail(f"adb: device {phone['state']}")
    words = " ".join(args).split()
    program = words[2] if words[:1] == ["taskset"] and len(words) > 2 else words[0] if words else ""
    stage = ("push" if cmd == "push" else "run" if cmd == "shell" and program.endswith("/benchmark_model")
             else "shell" if cmd == "shell" else None)
    if stage is not None:
        drop_at(state, serial, stage)
    if cmd == "get-state":
        out("device")
        return 0
    if cmd == "push":
        if len(args) != 2:
            fail("adb: push requires an argument")
        src, dst = Path(args[0]), args[1]
        if not src.is_file():
            fail(f"adb: error: cannot stat '{src}': No such file or directory")
        target = local(serial, dst)
        if target.is_dir():
            target = target / src.name
        if not target.parent.is_dir():
            fail(f"adb: error: failed to copy '{src}' to '{dst}': remote couldn't create file: "
                 "No such file or directory")
        shutil.copy(src, target)  # copies the mode too, as adb's sync protocol sends it
        size = src.stat().st_size
        out(f"{src}: 1 file pushed, 0 skipped. 35.2 MB/s ({size} bytes in 0.001s)")
        return 0
    if cmd == "shell":
        if not args:
            fail("adb: interactive shells are not supported by this fake")
        return sh(state, serial, " ".join(args))
    fail(f"adb: unknown command {cmd}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
