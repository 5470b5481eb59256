"""Imports flow one way (space -> layers/blocks -> export -> devices -> lut -> nas -> api -> cli), and
importing latencykit reads no user file and, for the core modules, needs no torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(root), "PATH": ""})


def test_imports_flow_one_way() -> None:
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def test_a_reverse_import_breaks_the_contract(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "latencykit", copy / "latencykit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy)
    space = copy / "latencykit" / "space.py"
    space.write_text(space.read_text() + "\n\ndef _late():\n    from latencykit.lut import table  # reverse\n")
    out = lint(copy)
    assert out.returncode != 0
    assert "latencykit.space is not allowed to import latencykit.lut" in out.stdout


def test_importing_reads_no_user_file_and_core_needs_no_torch(home: Path) -> None:
    (home / "phones.json").write_text("{ not json")  # a broken user catalogue must not break imports
    code = ("import sys, latencykit.arch, latencykit.layers, latencykit.space;"
            "assert 'torch' not in sys.modules, 'core modules imported torch';"
            "import latencykit.export, latencykit.devices, latencykit.api, latencykit.cli;"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"LATENCYKIT_HOME": str(home), "PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    # the broken file is reported when devices are first looked up, as one clear error
    code = "from latencykit.devices import get_device; get_device('pixel4')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"LATENCYKIT_HOME": str(home), "PYTHONPATH": str(ROOT), "PATH": ""})
    assert "cannot read device catalogue" in out.stderr
