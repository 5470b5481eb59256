"""The command line end to end, and every kind of bad input: one line, exit code 2, nothing damaged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY
from latencykit.lut.table import default_path
from latencykit.space import load_space


def cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "latencykit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One table profiled through the CLI; tests get their own copy of it."""
    home = tmp_path_factory.mktemp("cli-home")
    env = {**os.environ, "LATENCYKIT_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "latencykit", "profile", "--device", "host", "--space", TINY,
                          "--rounds", "2", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["entries"] == len(load_space(TINY).distinct_layers())
    assert Path(summary["path"]) == home / "tables" / "host" / "tiny.parquet"
    return Path(summary["path"])


@pytest.fixture
def table(home: Path, built: Path) -> Path:
    path = default_path("host", "tiny")
    path.parent.mkdir(parents=True)
    shutil.copy(built, path)
    return path


def test_profile_show_predict_json(table: Path, tmp_path: Path) -> None:
    shown = json.loads(cli("show", "--device", "host", "--space", TINY, "--json").stdout)
    assert shown["entries"] == len(shown["entries_ms"]) and shown["sources"] == {"measured": shown["entries"]}
    arch = tmp_path / "arch.json"
    arch.write_text(load_space(TINY).largest().to_json())
    pred = json.loads(cli("predict", str(arch), "--device", "host", "--space", TINY, "--json").stdout)
    assert pred["latency"] == "predicted" and pred["latency_ms"] > 0
    assert pred["params"] == load_space(TINY).params(load_space(TINY).largest())
    listed = json.loads(cli("devices", "--json").stdout)
    host = next(d for d in listed if d["device"] == "host")
    assert host["available"] and host["tables"] == ["tiny"]


def test_spaces_and_devices_list(home: Path) -> None:
    spaces = json.loads(cli("spaces", "--json").stdout)
    assert {"autovit-xxs", "autovit-xs", "autovit-s"} <= {s["space"] for s in spaces}
    assert "search spaces" in cli("spaces").stdout


def test_unknown_device_and_space(home: Path) -> None:
    assert_one_line_error(cli("profile", "--device", "toaster", "--space", TINY), "unknown device 'toaster'", "host")
    assert_one_line_error(cli("profile", "--device", "host", "--space", "huge"), "unknown space 'huge'", "autovit-xxs")


def test_architecture_outside_its_space(table: Path, tmp_path: Path) -> None:
    bad = load_space(TINY).largest().to_dict()
    bad["stages"][2]["heads"] = [1, 3]
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(bad))
    assert_one_line_error(cli("predict", str(arch), "--device", "host", "--space", TINY), "transformer1.heads[1] = 3")


def test_table_from_another_device_or_space(table: Path, tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(load_space("autovit-xxs").smallest().to_json())
    before = table.read_bytes()
    assert_one_line_error(cli("predict", str(arch), "--device", "host", "--space", "autovit-xxs", "--table", str(table)),
                          "built for space 'tiny', not 'autovit-xxs'")
    assert_one_line_error(cli("show", "--device", "pixel4", "--space", TINY, "--table", str(table)),
                          "built for device 'host', not 'pixel4'")
    assert table.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_corrupt_or_truncated_table(table: Path, damage: str) -> None:
    data = table.read_bytes()
    if damage == "truncate":
        table.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        table.write_bytes(b"not a parquet file at all")
    else:
        import pandas as pd
        pd.DataFrame({"a": [1]}).to_parquet(table)
    damaged = table.read_bytes()
    result = cli("show", "--device", "host", "--space", TINY)
    assert_one_line_error(result, str(table))
    assert table.read_bytes() == damaged  # reading never rewrites the file


UNAVAILABLE = """
import sys
from latencykit.devices import DEVICES, HostOnnxDevice
from latencykit.devices.base import Availability
class Gone(HostOnnxDevice):
    def check(self):
        return Availability(False, "its phone was unplugged")
DEVICES.add("gone", lambda: Gone(name="gone"))
sys.argv = ["latencykit", *sys.argv[1:]]
from latencykit.cli import main
main()
"""


def test_unavailable_device(home: Path) -> None:
    result = cli("profile", "--device", "gone", "--space", TINY, code=UNAVAILABLE)
    assert_one_line_error(result, "device gone is not available: its phone was unplugged")
    assert not default_path("gone", "tiny").exists()
    listed = json.loads(cli("devices", "--json", code=UNAVAILABLE).stdout)
    assert {"device": "gone", "available": False, "reason": "its phone was unplugged"}.items() <= \
        next(d for d in listed if d["device"] == "gone").items()
