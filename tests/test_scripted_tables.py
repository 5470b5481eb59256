"""Isolated and removal tables and validation, built on the scripted device from real exports: every
figure they hold is a known number, so each is checked exactly.

A layer alone costs `LAYER(spec)`; a whole network costs `BASE` plus `CONTEXT` times its layers'
isolated costs (layers run cheaper in context). So removing a layer from any network drops its
latency by `CONTEXT * LAYER(spec)`, which is what a removal entry must hold.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from latencykit.arch import Arch
from latencykit.export import ExportCache, export_layer, export_network
from latencykit.layers import LayerSpec
from latencykit.lut.calibration import select_calibration
from latencykit.lut.predictors import get_predictor
from latencykit.lut.profile import profile
from latencykit.lut.protocol import Protocol, export_call, export_reference
from latencykit.lut.removal import choose_references, profile_removal, removable
from latencykit.lut.table import load_table
from latencykit.lut.validate import ANCHORS, Measurements, evaluate, measure_archs, sample_archs, save
from latencykit.space import SearchSpace, load_space

from scripted_device import ScriptedDevice

MINI = str(Path(__file__).parent / "data" / "mini.json")
REF_MS, CALL_MS, BASE, CONTEXT = 3.0, 0.02, 0.5, 0.8
QUICK = Protocol(rounds=5, warmup_runs=1, min_runs=2, max_runs=10, burst_ms=5.0, ref_every=8, extra_rounds=2)
CALIBRATE = 4


def layer_ms(spec: LayerSpec) -> float:
    return 0.05 + spec.flops / 1e5


def network_ms(specs: Sequence[LayerSpec]) -> float:
    return BASE + CONTEXT * sum(layer_ms(s) for s in specs)


@pytest.fixture(scope="module")
def mini() -> SearchSpace:
    return load_space(MINI)


@pytest.fixture(scope="module")
def costs(mini, tmp_path_factory) -> tuple[ExportCache, dict[Path, float], Path]:
    """The cost of every file profiling and removal open: layers, reference, call, calibration subnets,
    and each reference subnet whole and with each removable layer taken out."""
    cache = ExportCache(tmp_path_factory.getbasetemp() / "exports")
    out = {export_layer(l, cache, "onnx"): layer_ms(l) for l in mini.distinct_layers()}
    ref = export_reference(cache, "onnx")
    out[ref] = REF_MS
    out[export_call(cache, "onnx")] = CALL_MS
    networks = [mini.layers(a) for a in select_calibration(mini, CALIBRATE, 0)]
    for arch in choose_references(mini, 0):
        specs = mini.layers(arch)
        networks += [specs] + [specs[:p] + specs[p + 1:] for p, s in enumerate(specs) if removable(s)]
    out.update({export_network(specs, cache, "onnx"): network_ms(specs) for specs in networks})
    return cache, out, ref


def device(costs, **script) -> ScriptedDevice:
    _, paths, ref = costs
    return ScriptedDevice(dict(paths), ref, **script)


@pytest.fixture(scope="module")
def isolated(mini, costs, tmp_path_factory):
    """An isolated table, with the device 30% slower in round 4 (of 5)."""
    return profile(mini, device(costs, drift=lambda r: 1.3 if r == 4 else 1.0),
                   tmp_path_factory.mktemp("iso") / "mini.parquet", QUICK, costs[0], calibrate=CALIBRATE).table


def test_isolated_entries_and_sums_equal_the_known_costs(mini, isolated) -> None:
    for spec in mini.distinct_layers():
        assert isolated.latency(spec) == pytest.approx(layer_ms(spec), rel=1e-12)
    assert isolated.meta.reference["ms"] == pytest.approx(REF_MS)
    assert isolated.meta.provenance["call_overhead"]["ms"] == pytest.approx(CALL_MS)
    archs, ms = isolated.calibration_set(mini)
    assert ms == pytest.approx([network_ms(mini.layers(a)) for a in archs], rel=1e-12)
    pred = get_predictor("isolated").fit(mini, isolated)
    for seed in range(5):
        arch = mini.sample(seed)
        assert pred.predict(arch) == pytest.approx(sum(layer_ms(s) for s in mini.layers(arch)), rel=1e-12)


def test_profile_opens_table_entries_as_lone_layers_and_nothing_else(mini, costs, tmp_path) -> None:
    """Entries go through `Device.open_layer` (host cuts a lone layer's layout copies there); the
    reference, the call overhead and the calibration subnets are opened as they stand. The
    calibration subnets are read as validation reads whole subnets: one run at a time, `whole_factor`
    times the rounds."""
    dev = device(costs)
    table = profile(mini, dev, tmp_path / "mini.parquet", QUICK, costs[0], calibrate=CALIBRATE).table
    layers = {export_layer(l, costs[0], "onnx").resolve() for l in mini.distinct_layers()}
    assert set(dev.opened_as_layer) == layers
    assert all(dev.opened_as_layer[p] == dev.opened[p] for p in layers)
    subnets = {export_network(mini.layers(a), costs[0], "onnx").resolve() for a in table.calibration_set(mini)[0]}
    assert len(subnets) == CALIBRATE and not subnets & set(dev.opened_as_layer)
    assert all(dev.runs[p] == {1} and dev.timed[p] >= QUICK.whole_factor * QUICK.rounds for p in subnets)
    assert all(dev.timed[p] < 2 * QUICK.rounds for p in layers)
    assert table.meta.calibration["readings"].startswith("1 run per reading")


def test_removal_entries_equal_the_known_drops(mini, costs, tmp_path) -> None:
    removal = Protocol(rounds=3, warmup_runs=1, min_runs=2, max_runs=10, burst_ms=5.0, ref_every=10, extra_rounds=2)
    table = profile_removal(mini, device(costs), tmp_path / "mini.parquet", QUICK, removal, costs[0]).table
    assert table.meta.mode == "removal"
    for spec in mini.distinct_layers():
        if removable(spec):
            assert table.latency(spec) == pytest.approx(CONTEXT * layer_ms(spec), rel=1e-9), spec
        else:
            assert table.latency(spec) == pytest.approx(layer_ms(spec), rel=1e-12), spec
    refs = table.meta.provenance["references"]
    assert len(refs) == len(choose_references(mini, 0))
    overheads = []
    for row in refs:
        specs = mini.layers(Arch.from_dict(row["arch"]))
        assert row["measured_ms"] == pytest.approx(network_ms(specs), rel=1e-9)
        # what the entries miss: BASE, less the context saving of the layers kept at their isolated cost
        overheads.append(BASE - (1 - CONTEXT) * sum(layer_ms(s) for s in specs if not removable(s)))
    pred = get_predictor("removal").fit(mini, table)
    ref_archs = [Arch.from_dict(row["arch"]) for row in refs]
    for arch in ref_archs:
        assert pred.predict(arch) == pytest.approx(network_ms(mini.layers(arch)), rel=1e-9)
    other = next(a for a in (mini.sample(s) for s in range(50)) if a not in ref_archs)
    entries = sum(CONTEXT * layer_ms(s) if removable(s) else layer_ms(s) for s in mini.layers(other))
    assert pred.predict(other) == pytest.approx(entries + sorted(overheads)[len(overheads) // 2], rel=1e-9)


def _kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """tau-b by counting pairs."""
    conc = disc = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            tx += 1
        elif dy == 0:
            ty += 1
        elif (dx > 0) == (dy > 0):
            conc += 1
        else:
            disc += 1
    return (conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty))


def test_validation_metrics_equal_hand_computed_values(mini, costs, isolated, tmp_path) -> None:
    """Whole subnets cost BASE + 0.8 x their entries, so the table's sums run high by a known amount.
    The device runs 25% slower than when the table was profiled (another session), and drifts 30% more
    in round 2: measured through the table's calibration subnets, whole models come out on its scale."""
    cache = costs[0]
    archs = sample_archs(mini, 6, seed=3)
    dev = device(costs, drift=lambda r: 1.25 * (1.3 if r % QUICK.rounds == 2 else 1.0))
    dev.costs.update({export_network(mini.layers(a), cache, "onnx"): network_ms(mini.layers(a)) for a in archs})
    calls: list[tuple[int, int]] = []
    m = measure_archs(mini, dev, archs, isolated, QUICK, cache, progress=lambda d, t: calls.append((d, t)))
    # the progress bar: one step per measurement over both passes, the total known from the start
    per_pass = QUICK.rounds * (len(archs) + min(ANCHORS, CALIBRATE))
    assert calls == [(d, 2 * per_pass) for d in range(1, 2 * per_pass + 1)]
    measured = [network_ms(mini.layers(a)) for a in archs]
    assert m.measured == pytest.approx(measured, rel=1e-12)
    assert m.first == pytest.approx(m.second, rel=1e-12)
    assert m.scale == f"{CALIBRATE} calibration subnets" and m.reference_ms_now == pytest.approx(1.25 * REF_MS)
    # through the reference block instead (kept for comparison): the same, as the device slowed uniformly
    assert m.by_reference == pytest.approx(measured, rel=1e-12)
    v = evaluate("isolated", get_predictor("isolated").fit(mini, isolated).predict_many, m, "scripted", "mini")
    predicted = [sum(layer_ms(s) for s in mini.layers(a)) for a in archs]
    pairs = list(zip(predicted, measured))
    assert v.predicted == pytest.approx(predicted, rel=1e-12)
    assert v.metrics.n == 6
    assert v.metrics.rmse_ms == pytest.approx(math.sqrt(sum((p - t) ** 2 for p, t in pairs) / 6))
    assert v.metrics.mape_pct == pytest.approx(100 * sum(abs(p / t - 1) for p, t in pairs) / 6)
    assert v.metrics.rmspe_pct == pytest.approx(100 * math.sqrt(sum((p / t - 1) ** 2 for p, t in pairs) / 6))
    assert v.metrics.bias_pct == pytest.approx(100 * (sum(t / p for p, t in pairs) / 6 - 1))
    assert all(p > t for p, t in pairs) and v.metrics.bias_pct < 0  # every prediction is high: bias < 0
    assert v.metrics.within_10_pct == pytest.approx(100 * sum(abs(p / t - 1) <= 0.10 for p, t in pairs) / 6)
    assert v.metrics.kendall_tau == pytest.approx(_kendall_tau(predicted, measured))
    assert v.noise_floor.rmse_ms == pytest.approx(0.0, abs=1e-9) and v.noise_floor.within_5_pct == 100.0
    check_scatter_figure(v, predicted, measured)
    out = tmp_path / "runs" / "validation"
    for _ in range(2):  # into a new nested folder, then again into the same one: the files are replaced
        files = save(v, out)
    assert json.loads(files["json"].read_text())["predicted_ms"] == pytest.approx(predicted, rel=1e-12)
    assert files["plot"].read_bytes()[:4] == b"\x89PNG" and sorted(f.name for f in out.iterdir()) == [
        "validation-isolated.json", "validation-isolated.png"]


def check_scatter_figure(v, predicted: list[float], measured: list[float]) -> None:
    """The plot shows what its labels say: every subnet at (measured, predicted), the y = x line,
    a band from 0.9x to 1.1x, both axes over all points with 10% to spare, the figures in the title."""
    import matplotlib.pyplot as plt

    from latencykit.lut.validate import scatter_figure

    fig = scatter_figure(v)
    try:
        ax = fig.axes[0]
        points = ax.collections[-1].get_offsets()
        assert np.allclose(points, np.column_stack([measured, predicted]))
        lo, hi = min(predicted + measured) * 0.9, max(predicted + measured) * 1.1
        assert ax.get_xlim() == pytest.approx((lo, hi)) and ax.get_ylim() == pytest.approx((lo, hi))
        line = ax.lines[0].get_xydata()
        assert np.allclose(line[:, 0], line[:, 1]) and line[0, 0] == pytest.approx(lo) and line[-1, 0] == pytest.approx(hi)
        band = ax.collections[0].get_paths()[0].vertices
        xs = np.linspace(lo, hi, 50)
        for x in (lo, (lo + hi) / 2, hi):  # the band's edges at three places: 0.9x and 1.1x
            at = band[np.isclose(band[:, 0], xs[np.argmin(np.abs(xs - x))])][:, 1]
            assert at.min() == pytest.approx(0.9 * xs[np.argmin(np.abs(xs - x))])
            assert at.max() == pytest.approx(1.1 * xs[np.argmin(np.abs(xs - x))])
        title = ax.get_title()
        assert f"{v.metrics.within_10_pct:.0f}% within ±10%" in title and f"RMSPE {v.metrics.rmspe_pct:.1f}%" in title
        assert v.predictor in ax.get_ylabel() and f"{v.metrics.n} subnets" in [t.get_text() for t in ax.get_legend().get_texts()]
    finally:
        plt.close(fig)


def test_removal_profile_through_the_cli_stops_on_ctrl_c_and_resumes(mini, costs, monkeypatch, capsys) -> None:
    """`profile --mode removal` interrupted in the second reference subnet's rounds exits 130; run again,
    it measures only that reference's missing rounds (the isolated pass and the first reference are
    finished in their journals) and writes the same exact table."""
    from latencykit.cli import main
    from latencykit.devices import DEVICES
    from latencykit.lut.removal import BASE_COPIES, REMOVAL_PROTOCOL
    from latencykit.lut.table import default_path

    rounds = 3
    # rounds 0-2: isolated; 3-11: the first reference subnet; 12-20: the second
    devices = [device(costs, stop_in_round=rounds + REMOVAL_PROTOCOL.rounds + 2), device(costs)]
    monkeypatch.setitem(DEVICES._items, "scripted", lambda: devices.pop(0))
    argv = ["profile", "--mode", "removal", "-d", "scripted", "-s", MINI, "--rounds", str(rounds), "--json"]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 130 and "interrupted" in capsys.readouterr().err
    table = default_path("scripted", "mini")
    assert not table.exists() and table.with_name(table.name + ".ref1.journal").exists()
    resumed = devices[0]
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["entries"] == len(mini.distinct_layers())
    cache = costs[0]
    second = mini.layers(choose_references(mini, 0)[1])
    base = export_network(second, cache, "onnx")
    removed = [export_network(second[:p] + second[p + 1:], cache, "onnx") for p, s in enumerate(second) if removable(s)]
    assert resumed.timed[base.resolve()] == BASE_COPIES * (REMOVAL_PROTOCOL.rounds - 2)  # read that often per round
    assert {resumed.timed[f.resolve()] for f in removed} == {REMOVAL_PROTOCOL.rounds - 2}
    assert not any(resumed.opened[export_layer(l, cache, "onnx").resolve()] for l in mini.distinct_layers())
    written = load_table("scripted", mini)
    assert written.meta.mode == "removal" and not list(table.parent.glob("*.journal"))
    for spec in mini.distinct_layers():
        want = CONTEXT * layer_ms(spec) if removable(spec) else layer_ms(spec)
        assert written.latency(spec) == pytest.approx(want, rel=1e-9)


def test_measuring_without_a_table_gives_drift_corrected_ms_now(mini, costs, tmp_path, monkeypatch) -> None:
    """No table: whole models come out in ms on the reference block's scale now (the device 25% slower
    than at profiling, one round drifted 30% more), measured twice; the exports go to the cache given."""
    monkeypatch.setenv("LATENCYKIT_HOME", str(tmp_path / "elsewhere"))
    cache = costs[0]
    archs = sample_archs(mini, 3, seed=4)
    dev = device(costs, drift=lambda r: 1.25 * (1.3 if r % QUICK.rounds == 2 else 1.0))
    dev.costs.update({export_network(mini.layers(a), cache, "onnx"): network_ms(mini.layers(a)) for a in archs})
    m = measure_archs(mini, dev, archs, None, QUICK, cache)
    now = [1.25 * network_ms(mini.layers(a)) for a in archs]
    assert m.scale == "reference block" and m.measured == pytest.approx(now, rel=1e-12)
    assert m.first == pytest.approx(m.second, rel=1e-12) and m.by_reference == pytest.approx(now, rel=1e-12)
    assert not (tmp_path / "elsewhere").exists()  # nothing written to the default cache


def test_a_table_with_no_reference_and_no_calibration_is_refused_before_measuring(mini, costs, isolated) -> None:
    """An imported table has neither a reference block nor calibration subnets: subnets measured now
    cannot be put on its scale, so nothing is measured and the error says why."""
    from dataclasses import replace

    from latencykit.errors import TableError
    from latencykit.lut.table import LatencyTable

    bare = LatencyTable(replace(isolated.meta, reference={}, calibration={}), isolated.rows.reset_index(drop=True))
    dev = device(costs)
    with pytest.raises(TableError, match="has no reference block, so subnets measured now cannot be put on its scale"):
        measure_archs(mini, dev, sample_archs(mini, 2, seed=5), bare, QUICK, costs[0])
    assert not dev.timed


def test_passes_that_disagree_get_a_third_and_the_median_of_three_counts(mini, costs, isolated) -> None:
    """A subnet whose second pass is hit (+20%) is measured a third time and the median of three is
    its latency; one whose passes are 3% apart keeps the mean of two and is not measured again."""
    cache = costs[0]
    archs = sample_archs(mini, 3, seed=4)
    files = [export_network(mini.layers(a), cache, "onnx") for a in archs]
    r = QUICK.rounds
    dev = device(costs, noise={files[0]: [1.0] * r + [1.2] * r + [1.0] * r, files[1]: [1.0] * r + [1.03] * r})
    dev.costs.update({f: network_ms(mini.layers(a)) for f, a in zip(files, archs)})
    m = measure_archs(mini, dev, archs, isolated, QUICK, cache)
    truth = [network_ms(mini.layers(a)) for a in archs]
    assert m.first[0] == pytest.approx(truth[0]) and m.second[0] == pytest.approx(1.2 * truth[0])
    assert m.third[0] == pytest.approx(truth[0]) and m.measured[0] == pytest.approx(truth[0])
    assert np.isnan(m.third[1]) and m.measured[1] == pytest.approx(1.015 * truth[1])
    assert np.isnan(m.third[2]) and m.measured[2] == pytest.approx(truth[2])
    assert [dev.timed[f.resolve()] for f in files] == [3 * r, 2 * r, 2 * r]
    assert m.to_dict()["third_ms"][1] is None


def test_raw_readings_and_the_reference_now_average_both_passes_and_the_anchors_are_kept(mini, costs, isolated) -> None:
    """The device runs 50% slower in the second pass: on the table's scale both passes agree, the raw
    ms and the reference block now are the mean of the two passes, and the saved record keeps the
    anchors' latencies then (the table's) and now (each pass, raw)."""
    cache = costs[0]
    archs = sample_archs(mini, 3, seed=6)
    r = QUICK.rounds
    dev = device(costs, drift=lambda k: 1.0 if k < r else 1.5)
    dev.costs.update({export_network(mini.layers(a), cache, "onnx"): network_ms(mini.layers(a)) for a in archs})
    m = measure_archs(mini, dev, archs, isolated, QUICK, cache)
    truth = np.array([network_ms(mini.layers(a)) for a in archs])
    assert m.first == pytest.approx(truth, rel=1e-12) and m.second == pytest.approx(truth, rel=1e-12)
    assert m.third is None
    assert m.raw_ms == pytest.approx(1.25 * truth, rel=1e-12)
    assert m.reference_ms_now == pytest.approx(1.25 * REF_MS, rel=1e-12)
    calibration_archs, then = isolated.calibration_set(mini)
    anchors = np.array([network_ms(mini.layers(a)) for a in calibration_archs])
    saved = m.to_dict()
    assert saved["anchor_then_ms"] == pytest.approx(then.tolist()) and then == pytest.approx(anchors, rel=1e-9)
    assert np.array(saved["anchor_now_ms"]) == pytest.approx(np.stack([anchors, 1.5 * anchors]), rel=1e-12)
    assert saved["raw_ms"] == pytest.approx((1.25 * truth).tolist()) and "third_ms" not in saved
    back = Measurements.from_dict(json.loads(json.dumps(saved)))  # as benchmarks read their saved readings
    assert back.archs == archs and back.to_dict() == saved and back.measured == pytest.approx(m.measured, rel=1e-12)
    # without a table: on the reference block's scale, no anchors in the record
    bare = measure_archs(mini, device(costs), archs[:1], None, QUICK, cache).to_dict()
    assert "anchor_then_ms" not in bare and "anchor_now_ms" not in bare
    assert Measurements.from_dict(bare).anchor_now_ms is None
