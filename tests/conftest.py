from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latencykit.space import SearchSpace, load_space

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TINY = str(ROOT / "tests" / "data" / "tiny.json")

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """Tests run torch on one thread, and a test that changes it (`train --threads`) leaves no trace."""
    yield
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own LATENCYKIT_HOME (tables); the export cache is shared by the session."""
    exports = tmp_path_factory.getbasetemp() / "exports"
    exports.mkdir(exist_ok=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / "exports").symlink_to(exports, target_is_directory=True)
    monkeypatch.setenv("LATENCYKIT_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny() -> SearchSpace:
    return load_space(TINY)
