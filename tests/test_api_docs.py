"""The Python examples of docs/api.md run as written (on the tiny space) and do what they say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_api_page_runs_as_written(home: Path) -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", page, flags=re.S))
    assert "lk.profile(" in code and "lk.search(" in code and "lk.export_subnet(" in code
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={"LATENCYKIT_HOME": str(home), "PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[3].endswith(" isolated") and lines[4].startswith("calibrated(n=6)")
    assert lines[5] == "calibrated(n=8)" and lines[6] == "True"  # the table's own calibration set answers
    assert lines[-2:] == ["True", "True"]


def test_the_package_exports_the_whole_api() -> None:
    import latencykit
    from latencykit import api

    assert set(latencykit._API) == set(api.__all__)
    assert all(getattr(latencykit, name) is getattr(api, name) for name in api.__all__)
