from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from latencykit.space import SearchSpace, load_space

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TINY = str(ROOT / "tests" / "data" / "tiny.json")

torch.set_num_threads(1)

# Hypothesis: bounded examples in the default run; many more with HYPOTHESIS_PROFILE=slow or a -m that
# selects slow tests (`pytest -m slow` runs the property tests at length with the other slow tests).
_quiet = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile("default", max_examples=30, deadline=None, suppress_health_check=_quiet)
settings.register_profile("slow", max_examples=500, deadline=None, suppress_health_check=_quiet)


def pytest_configure(config: pytest.Config) -> None:
    wants_slow = re.search(r"(?<!not )\bslow\b", config.getoption("markexpr") or "")
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("slow" if wants_slow else "default"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `-m slow`, property tests count as slow too, so they run there at length."""
    if re.search(r"(?<!not )\bslow\b", config.getoption("markexpr") or ""):
        for item in items:
            if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
                item.add_marker(pytest.mark.slow)


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
