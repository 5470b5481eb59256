"""The per-phone summary over imported tables: same subnets on every phone, ranks, plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from latencykit.cli import app
from latencykit.errors import TableError
from latencykit.lut.importers import write_import
from latencykit.lut.phones import discordant_share, phone_summary
from latencykit.space import load_space

from conftest import SHARED

LUTS = SHARED / "data" / "nn-meter-luts"
PHONES = ("pixel1", "pixel4", "pixel6", "xiaomi11")


def test_discordant_share() -> None:
    assert discordant_share(np.array([1.0, 2, 3]), np.array([10.0, 20, 30])) == 0.0
    assert discordant_share(np.array([1.0, 2, 3]), np.array([30.0, 20, 10])) == 1.0
    assert discordant_share(np.array([1.0, 2, 3]), np.array([10.0, 30, 20])) == pytest.approx(1 / 3)


def test_no_tables_is_a_clear_error() -> None:
    with pytest.raises(TableError, match="no device has a table for space 'elasticvit'"):
        phone_summary(load_space("elasticvit"))


def test_phones_summary_and_plot(tmp_path: Path) -> None:
    space = load_space("elasticvit")
    for phone in PHONES:
        write_import("nn-meter", LUTS / f"{phone}_lut_ln_v3.json", phone, space)
    plot = tmp_path / "phones.png"
    result = CliRunner().invoke(app, ["lut", "phones", "--space", "elasticvit", "--sample", "300", "--random", "5",
                                      "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["devices"] == list(PHONES)
    assert all(v == ["imported"] for v in data["sources"].values())
    subnets = data["subnets"]
    assert [s["name"] for s in subnets][0] == "smallest" and subnets[-1]["name"] == "largest"
    assert [s["flops_rank"] for s in subnets] == list(range(1, len(subnets) + 1))
    lo, hi = data["band_mflops"]
    for s in subnets:
        assert set(s["latency_ms"]) == set(PHONES)
        if s["name"].startswith("random"):
            assert lo <= s["mflops"] <= hi
    # each phone's ranks against an independent argsort of its listed latencies (1 = fastest), and the
    # FLOPs ranks against an argsort of FLOPs; a phone is listed as differing exactly where they disagree
    for p in PHONES:
        order = np.argsort([s["latency_ms"][p] for s in subnets], kind="stable")
        assert [subnets[i]["rank"][p] for i in order] == list(range(1, len(subnets) + 1)), p
    by_flops = np.argsort([s["mflops"] for s in subnets], kind="stable")
    assert [subnets[i]["flops_rank"] for i in by_flops] == list(range(1, len(subnets) + 1))
    for s in subnets:
        assert set(s["rank_differs"]) == {p for p in PHONES if s["rank"][p] != s["flops_rank"]}
    assert any(s["rank_differs"] for s in subnets)  # phones do reorder subnets of similar FLOPs
    # Pixel 6 is the fastest phone and Pixel 1 the slowest for every listed subnet
    assert all(s["latency_ms"]["pixel6"] < s["latency_ms"]["pixel4"] < s["latency_ms"]["pixel1"] for s in subnets)
    assert set(data["discordant_between_devices"]) == {"pixel1/pixel4", "pixel1/pixel6", "pixel1/xiaomi11",
                                                        "pixel4/pixel6", "pixel4/xiaomi11", "pixel6/xiaomi11"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and data["plot"] == str(plot)
