"""Where latencykit keeps its files."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """latencykit's data folder: $LATENCYKIT_HOME, else ~/.latencykit."""
    return Path(os.environ.get("LATENCYKIT_HOME", Path.home() / ".latencykit"))


def table_path(device: str, space: str) -> Path:
    """Default lookup-table file of a (device, space) pair."""
    return home() / "tables" / device / f"{space}.parquet"
