"""Profiling on the real ONNX Runtime host device: tables, statistics, resume, prediction, validation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from latencykit.devices import get_device
from latencykit.export import ExportCache
from latencykit.lut.calibration import select_calibration
from latencykit.lut.predictors import get_predictor
from latencykit.lut.profile import profile
from latencykit.lut.table import load_table
from latencykit.lut.protocol import REFERENCE, Protocol
from latencykit.lut.table import LatencyTable, default_path
from latencykit.space import load_space
from latencykit.lut.validate import Metrics, evaluate, measure_archs, sample_archs, save

from conftest import TINY

FAST = Protocol(rounds=4, warmup_runs=2, min_runs=2, max_runs=10, burst_ms=1.0, extra_rounds=2)


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory, tiny) -> LatencyTable:
    folder = tmp_path_factory.mktemp("tiny-table")
    result = profile(tiny, get_device("host"), folder / "tiny.parquet", FAST, ExportCache(folder / "exports"),
                     calibrate=4)
    assert result.path.exists() and result.resumed_rounds == 0
    return result.table


def test_one_row_per_distinct_layer_with_statistics(tiny, tiny_table) -> None:
    rows = tiny_table.rows
    assert sorted(rows["key"]) == sorted(l.key for l in tiny.distinct_layers())
    assert (rows["source"] == "measured").all()
    assert (rows["latency_ms"] > 0).all()
    assert (rows["q1_ms"] <= rows["latency_ms"]).all() and (rows["latency_ms"] <= rows["q3_ms"]).all()
    assert (rows["runs"] >= FAST.rounds).all()
    assert np.allclose(rows["ratio"] * tiny_table.meta.reference["ms"], rows["latency_ms"])
    meta = tiny_table.meta
    assert meta.device == "host" and meta.space == "tiny" and meta.mode == "isolated"
    assert meta.device_info["runtime"].startswith("onnxruntime") and meta.device_info["threads"] == 1
    assert meta.protocol["rounds"] == FAST.rounds and meta.reference["key"] == REFERENCE.key
    assert meta.created


def test_table_round_trips_through_parquet(tiny_table, tmp_path) -> None:
    path = tiny_table.write(tmp_path / "tables" / "t.parquet")
    again = LatencyTable.read(path)
    assert again.meta == tiny_table.meta
    assert again.rows["latency_ms"].tolist() == tiny_table.rows["latency_ms"].tolist()
    assert again.specs() == tiny_table.specs()
    assert [p.name for p in path.parent.iterdir()] == ["t.parquet"]  # no temp file left behind


def test_predictor_sums_the_entries_and_scores_batches(tiny, tiny_table) -> None:
    pred = get_predictor("isolated").fit(tiny, tiny_table)
    for seed in range(10):
        arch = tiny.sample(seed)
        by_hand = sum(tiny_table.latency(l) for l in tiny.layers(arch))
        assert pred.predict(arch) == pytest.approx(by_hand, rel=1e-12)
    genes = tiny.sample_genes(1000, 0)
    batch = pred.predict_genes(genes)
    assert batch.shape == (1000,) and np.isfinite(batch).all()
    assert batch[3] == pytest.approx(pred.predict(tiny.decode(genes[3])))


def test_call_overhead_is_measured_with_the_layers(tiny_table) -> None:
    call = tiny_table.meta.provenance["call_overhead"]
    assert 0 < call["ms"] < tiny_table.meta.reference["ms"] and call["runs"] >= FAST.rounds
    assert call["ms"] < tiny_table.rows["latency_ms"].min()


def test_calibration_set_is_measured_in_the_same_rounds(tiny, tiny_table) -> None:
    archs, ms = tiny_table.calibration_set(tiny)
    assert len(archs) == len(set(archs)) == 4 and ms.shape == (4,)
    assert archs == select_calibration(tiny, 4, seed=0)  # in increasing FLOPs
    assert ms[-1] > ms[0] > 0
    cal = tiny_table.meta.calibration
    assert np.allclose(np.array(cal["ratio"]) * tiny_table.meta.reference["ms"], ms)
    assert cal["seed"] == 0 and cal["selection"]
    # the whole subnets and the sum of their entries agree to within context effects, not to within a factor
    table_sums = np.array([sum(tiny_table.latency(l) for l in tiny.layers(a)) for a in archs])
    assert np.all((ms / table_sums > 0.5) & (ms / table_sums < 2))


def test_a_table_without_calibration_says_so(tiny_table, tmp_path) -> None:
    from dataclasses import replace

    bare = LatencyTable(replace(tiny_table.meta, calibration={}), tiny_table.rows.reset_index(drop=True))
    again = LatencyTable.read(bare.write(tmp_path / "bare.parquet"))
    assert again.calibration_set(load_space(TINY)) is None


def test_table_is_refused_for_another_space_or_device(tiny_table) -> None:
    from latencykit.errors import TableError
    from latencykit.space import load_space

    with pytest.raises(TableError, match="built for space 'tiny', not 'autovit-xxs'"):
        tiny_table.check(space=load_space("autovit-xxs"))
    with pytest.raises(TableError, match="built for device 'host', not 'pixel4'"):
        tiny_table.check(device="pixel4")


def test_validation_reports_metrics_noise_floor_and_plot(tiny, tiny_table, tmp_path) -> None:
    archs = sample_archs(tiny, 6, seed=1)
    assert len(set(archs)) == 6
    m = measure_archs(tiny, get_device("host"), archs, tiny_table,
                      protocol=Protocol(rounds=3, warmup_runs=1, min_runs=2, max_runs=4, extra_rounds=0))
    v = evaluate("table", get_predictor("isolated").fit(tiny, tiny_table).predict_many, m, "host", "tiny")
    assert v.metrics.n == 6 and v.noise_floor.n == 6
    assert v.metrics == Metrics.compare(v.predicted, m.measured)  # scored against both passes' mean
    # subnets of this space differ several-fold in cost: the table must rank them, not just exist
    assert v.metrics.kendall_tau > 0.3
    files = save(v, tmp_path)
    assert files["plot"].read_bytes()[:4] == b"\x89PNG"
    data = json.loads(files["json"].read_text())
    assert data["latency"] == "predicted vs measured" and len(data["measurements"]["first_ms"]) == 6


def test_whole_models_are_put_on_the_table_scale_through_its_calibration_subnets(tiny, tiny_table) -> None:
    archs, then = tiny_table.calibration_set(tiny)
    quick = Protocol(rounds=5, warmup_runs=1, min_runs=2, max_runs=4, extra_rounds=0)
    m = measure_archs(tiny, get_device("host"), archs[:2], tiny_table, protocol=quick)
    assert m.scale == "4 calibration subnets" and m.by_reference is not None
    # the calibration subnets measured again come out near their values in the table's session, and
    # through the reference block near that (sub-millisecond models on a shared CPU: a 1.25x spread
    # between sessions happens, and once a 2.07x one at 3 rounds; a wrong scale is off by far more)
    assert np.all(np.abs(np.log(m.measured / then[:2])) < np.log(2.5)), (m.measured, then[:2])
    assert np.all(np.abs(np.log(m.by_reference / m.measured)) < np.log(2.5)), (m.by_reference, m.measured)


def test_interrupted_profile_resumes(home: Path) -> None:
    """kill -9 in the middle of profiling: no table appears, and the next run resumes the rounds."""
    cmd = [sys.executable, "-m", "latencykit", "profile", "--device", "host", "--space", TINY,
           "--rounds", "12", "--calibrate", "4", "--json"]  # resumes inside the layers' and the subnets' rounds
    table = default_path("host", "tiny")
    journal = table.with_name(table.name + ".journal")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 4):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not table.exists()
    rounds_before = len(journal.read_text().splitlines()) - 1
    assert rounds_before >= 3
    with open(journal, "a") as f:
        f.write('{"phase": "base", "raw": {"torn')  # a write cut short by the kill
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout)
    assert summary["resumed_rounds"] >= rounds_before
    assert not journal.exists()
    t = load_table("host", load_space(TINY))
    assert (t.rows["runs"] >= 12).all()


def test_metrics_equal_hand_computed_values() -> None:
    """Predictions 8% high, 2% low, exact and 20% low against measured 1, 2, 4, 5 ms."""
    measured = np.array([1.0, 2.0, 4.0, 5.0])
    predicted = np.array([1.08, 1.96, 4.0, 4.0])
    m = Metrics.compare(predicted, measured)
    assert m.n == 4
    assert m.rmse_ms == pytest.approx(np.sqrt((0.08**2 + 0.04**2 + 0 + 1.0) / 4))
    assert m.mape_pct == pytest.approx((8 + 2 + 0 + 20) / 4)
    assert m.rmspe_pct == pytest.approx(np.sqrt((64 + 4 + 0 + 400) / 4))
    assert m.bias_pct == pytest.approx((np.mean([1 / 1.08, 2 / 1.96, 1.0, 5 / 4]) - 1) * 100)
    assert m.bias_pct > 0  # on the whole it predicts low
    assert m.within_5_pct == 50.0 and m.within_10_pct == 75.0
    # orders: (1.08, 1.96, 4.0, 4.0) vs (1, 2, 4, 5): 5 concordant pairs, 1 tied in the prediction
    assert m.kendall_tau == pytest.approx(5 / np.sqrt(5 * 6))


def test_the_error_bands_include_their_edges_and_nothing_wider() -> None:
    """±5% and ±10% are closed bands: errors of exactly 5% and 10% (either sign) count, 6% and 11% do not."""
    measured = np.full(8, 100.0)
    predicted = np.array([105.0, 95.0, 106.0, 94.0, 110.0, 90.0, 111.0, 89.0])
    m = Metrics.compare(predicted, measured)
    assert m.within_5_pct == 25.0 and m.within_10_pct == 75.0


def test_sample_archs_draws_every_remaining_architecture_and_no_more(tiny) -> None:
    """All of a small space's architectures but the excluded ones can be drawn, distinct; one more is
    refused with a message that says why."""
    from latencykit.errors import LatencykitError

    size = tiny.size()
    excluded = sample_archs(tiny, 5, seed=1)
    rest = sample_archs(tiny, size - 5, seed=2, exclude=excluded)
    assert len(set(rest)) == size - 5 and not set(rest) & set(excluded)
    with pytest.raises(LatencykitError, match=f"has {size} architectures \\(5 of them excluded\\); cannot draw {size - 4}"):
        sample_archs(tiny, size - 4, seed=2, exclude=excluded)
    with pytest.raises(LatencykitError, match=f"has {size} architectures; cannot draw {size + 1}"):
        sample_archs(tiny, size + 1)
