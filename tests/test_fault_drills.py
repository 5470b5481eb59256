"""Fault drills: kill -9 at random times, a full disk during the table write, a phone that drops off at
each stage, two profiles on one table. Each ends in a complete table or one clear line, never a
damaged table. The long kill loop is `slow`; the default run does a short version of it."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY
from latencykit.cli import main
from latencykit.lut.protocol import Journal
from latencykit.lut.table import LatencyTable, TableMeta, default_path, load_table
from latencykit.space import load_space
from tests.fake_adb import FakePhones, fake_benchmark_model

MICRO = str(Path(__file__).resolve().parent / "fake_adb" / "micro.json")
PIXEL4 = "9B131FFAZ00XY2"


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latencykit", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=600, **kw)


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def assert_complete(table: LatencyTable, keys: set[str], rounds: int) -> None:
    assert set(table.rows["key"]) == keys
    assert (table.rows["latency_ms"] > 0).all() and table.rows["latency_ms"].notna().all()
    assert (table.rows["runs"] >= rounds).all()


# -- kill -9 -----------------------------------------------------------------------------------------

def kill_loop(kills: int, rounds: int, seed: int) -> None:
    """`kills` random-time kill -9s of `profile`, each run resuming the last; then one to the end."""
    rng = random.Random(seed)
    space = load_space(TINY)
    keys = {layer.key for layer in space.distinct_layers()}
    cmd = [sys.executable, "-m", "latencykit", "profile", "--device", "host", "--space", TINY,
           "--rounds", str(rounds), "--calibrate", "4", "--json"]
    table = default_path("host", space.name)
    journal = table.with_name(table.name + ".journal")
    for _ in range(kills):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Python and torch take about 2-3 s to start: kill anywhere from start-up to the table write.
        time.sleep(rng.uniform(1.0, 6.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if table.exists():  # whatever a kill leaves, a table present is always whole
            assert_complete(load_table("host", space), keys, rounds)
        if journal.exists():
            Journal(journal, {})  # reads without error; a torn last line is dropped
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not journal.exists()
    table = load_table("host", space)
    assert_complete(table, keys, rounds)
    archs, ms = table.calibration_set(space)  # the whole subnets measured beside the layers came through too
    assert len(archs) == 4 and (ms > 0).all()


def test_kill_9_twice_then_resume_ends_in_a_complete_table(home: Path) -> None:
    kill_loop(kills=2, rounds=8, seed=1)


@pytest.mark.slow
def test_kill_9_twenty_times_then_resume_ends_in_a_complete_table(home: Path) -> None:
    kill_loop(kills=20, rounds=15, seed=2)


# -- a full disk ------------------------------------------------------------------------------------

def test_disk_full_during_the_table_write_keeps_the_old_table(home: Path, monkeypatch, capsys) -> None:
    space = load_space(TINY)
    layers = space.distinct_layers()
    path = default_path("host", space.name)
    old = LatencyTable.from_entries(TableMeta(device="host", space=space.name, space_digest=space.digest),
                                    layers, [{"latency_ms": 1.0, "runs": 1} for _ in layers]).write(path)
    old_bytes = path.read_bytes()

    import pyarrow.parquet as pq

    real_write = pq.write_table

    def full_disk(table, where, **kw):  # the first bytes go out, then the disk is full
        Path(where).write_bytes(b"PAR1" + b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        main(["profile", "--device", "host", "--space", TINY, "--rounds", "2", "--json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: cannot write") and "No space left on device" in err[0]
    assert "the previous file is unchanged" in err[0]
    assert path.read_bytes() == old_bytes  # the old table, whole
    assert sorted(p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")) == []  # no leftovers
    journal = path.with_name(path.name + ".journal")
    assert journal.exists()  # the measurements are kept: space freed, the same command finishes at once

    monkeypatch.setattr(pq, "write_table", real_write)
    with pytest.raises(SystemExit) as exit_info:
        main(["profile", "--device", "host", "--space", TINY, "--rounds", "2", "--json"])
    assert exit_info.value.code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed_rounds"] >= 2
    assert_complete(load_table("host", space), {layer.key for layer in layers}, 2)


# -- a phone that drops off -------------------------------------------------------------------------

@pytest.mark.parametrize(("stage", "after", "kept"), [
    ("push", 3, 0),  # the binary and two models pushed, then the copy of the third fails
    # About 45 s each on a shared 2-core machine (every fake benchmark run starts a Python process);
    # tests/test_devices_cli.py drops the phone after round 1 in the default run. No calibration
    # subnets here: 4 layers and the call-overhead model, beside the reference block.
    pytest.param("run", 9, 0, marks=pytest.mark.slow),  # the warm-up runs (6) and part of round 1
    pytest.param("run", 13, 1, marks=pytest.mark.slow),  # after round 1: reference, 5 models, reference
    pytest.param("shell", 17, 1, marks=pytest.mark.slow),  # a thermal read in round 2
])
def test_a_phone_dropping_at_each_stage_fails_cleanly_and_the_next_run_resumes(
        stage, after, kept, home, tmp_path, monkeypatch) -> None:
    phones = FakePhones(tmp_path / "adb").add(PIXEL4, "Pixel 4", thermal_mc=[41000, None]).activate(monkeypatch)
    (home / "config.json").write_text(json.dumps({"android": {
        "benchmark_model": str(fake_benchmark_model(tmp_path)), "extra_args": ["--min_secs=0", "--warmup_min_secs=0"],
        "retries": 2, "backoff_s": 0.01}}))
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_AT", f"{stage}:{after}")
    line = one_line_error(cli("profile", "--device", "pixel4", "--space", MICRO, "--rounds", "2", "--calibrate", "0"))
    assert f"phone {PIXEL4} disconnected and did not come back after 2 retries" in line
    assert "what was measured is kept" in line
    table = default_path("pixel4", "micro")
    assert not table.exists()
    journal = table.with_name(table.name + ".journal")
    rounds = len(journal.read_text().splitlines()) - 1
    assert rounds == kept

    monkeypatch.setenv("FAKE_ADB_RECONNECT_AFTER", "0")  # plugged back in
    res = cli("profile", "--device", "pixel4", "--space", MICRO, "--rounds", "2", "--calibrate", "0", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["resumed_rounds"] == kept
    rows = pd.read_parquet(table)
    assert len(rows) == 4 and (rows["latency_ms"] > 0).all() and (rows["runs"] >= 2).all()
    assert phones.files(PIXEL4) == []


# -- two writers -----------------------------------------------------------------------------------

def test_two_profiles_on_one_table_one_refuses_and_the_table_is_whole(home: Path) -> None:
    cmd = [sys.executable, "-m", "latencykit", "profile", "--device", "host", "--space", TINY, "--rounds", "3",
           "--calibrate", "4", "--json"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    table = default_path("host", "tiny")
    pid_file = table.with_name(table.name + ".lock.pid")
    deadline = time.time() + 120
    while not pid_file.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGSTOP)  # the first holds the lock for as long as the second tries
    try:
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    line = one_line_error(second)
    assert f"process {first.pid} is already writing {table}" in line
    space = load_space(TINY)
    assert_complete(load_table("host", space), {layer.key for layer in space.distinct_layers()}, 3)
    assert not pid_file.exists()
