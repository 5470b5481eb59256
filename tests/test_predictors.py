"""Predictors on made-up tables (every entry known), then removal-mode tables and learned predictors on real
ONNX Runtime measurements of a small space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latencykit.arch import Arch
from latencykit.devices import get_device
from latencykit.export import ExportCache
from latencykit.lut.predictors import Measured, PredictorError, get_predictor, load_predictor, predictor_path, resolve_predictor
from latencykit.lut.profile import profile
from latencykit.lut.protocol import Protocol
from latencykit.lut.removal import choose_references, profile_removal, removable
from latencykit.lut.validate import Measurements, Metrics, measure_archs, sample_archs
from latencykit.space import load_space

FAST = Protocol(rounds=4, warmup_runs=2, min_runs=2, max_runs=10, burst_ms=1.0, extra_rounds=2)
WHOLE = Protocol(rounds=4, warmup_runs=2, min_runs=3, max_runs=10, burst_ms=3.0, extra_rounds=2)


@pytest.fixture(scope="module")
def tables(tmp_path_factory, tiny):
    folder = tmp_path_factory.mktemp("predictor-tables")
    cache = ExportCache(folder / "exports")
    host = get_device("host")
    iso = profile(tiny, host, folder / "iso" / "tiny.parquet", FAST, cache, calibrate=0)
    rem = profile_removal(tiny, host, folder / "rem" / "tiny.parquet", FAST, WHOLE, cache)
    return iso, rem, cache


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A table and whole-model measurements of a space whose layers are big enough that compute,
    not per-call overhead, sets their latency (as in real spaces)."""
    folder = tmp_path_factory.mktemp("small-tables")
    cache = ExportCache(folder / "exports")
    space = load_space(str(Path(__file__).parent / "data" / "small.json"))
    host = get_device("host")
    table = profile(space, host, folder / "small.parquet", FAST, cache, calibrate=0).table  # fits below choose their own
    train = sample_archs(space, 16, seed=1000)
    test = sample_archs(space, 10, seed=0, exclude=train)
    protocol = Protocol(rounds=3, warmup_runs=2, min_runs=3, max_runs=10, burst_ms=3.0, extra_rounds=2)
    # one session of interleaved rounds for the training and the held-out subnets: their scales agree
    both = measure_archs(space, host, train + test, table, protocol, cache)
    n = len(train)
    held_out = Measurements(test, both.first[n:], both.second[n:], both.raw_ms[n:], both.reference_ms_now)
    return space, table, train, both.measured[:n], test, held_out


# ----- on made-up tables (every entry a known number; no measurement, fast) --------------------------------

def made_up_table(space, skip: frozenset = frozenset(), **meta):
    """A table of `space` whose entries are 0.1 ms + 0.01 ms per row, in the order of its distinct layers."""
    from latencykit.lut.table import LatencyTable, TableMeta

    layers = [l for l in space.distinct_layers() if l not in skip]
    return LatencyTable.from_entries(TableMeta(device="host", space=space.name, space_digest=space.digest, **meta),
                                     layers, [{"latency_ms": 0.1 + i / 100, "runs": 3} for i in range(len(layers))])


def table_sum(space, table, arch) -> float:
    return sum(table.latency(l) for l in space.layers(arch))


def test_measurements_must_match_their_subnets_and_be_positive(tiny) -> None:
    a, b = tiny.smallest(), tiny.largest()
    assert len(Measured((), [])) == 0
    assert Measured([a, b], [1.0, 2.0]).latency_ms.tolist() == [1.0, 2.0]
    with pytest.raises(PredictorError, match="2 subnets but 1 measurements"):
        Measured((a, b), [1.0])
    for bad in ([1.0, 0.0], [1.0, -2.0], [np.inf, 1.0], [np.nan, 1.0]):
        with pytest.raises(PredictorError, match="finite and positive"):
            Measured((a, b), bad)
    again = Measured.from_dict(json.loads(json.dumps(Measured((a, b), [1.5, 2.5]).to_dict())))
    assert again.archs == (a, b) and again.latency_ms.tolist() == [1.5, 2.5]


def test_a_subnet_with_layers_missing_from_the_table_is_named(tiny) -> None:
    from latencykit.errors import TableError

    arch = tiny.largest()
    layers = list(dict.fromkeys(tiny.layers(arch)))
    once = [l for l in layers if tiny.layers(arch).count(l) == 1]
    assert len(once) >= 6
    for missing in (once[:2], once[:5], once[:6], layers[:7]):  # up to five named, then " ..."
        pred = get_predictor("isolated").fit(tiny, made_up_table(tiny, skip=frozenset(missing)))
        assert np.isnan(pred.predict_many([arch])[0])
        with pytest.raises(TableError) as err:
            pred.predict(arch)
        lacking = [l.key for l in tiny.layers(arch) if l in missing]  # in network order, a repeated layer each time
        assert str(err.value) == (f"{len(lacking)} layer(s) of this architecture are missing from the host table: "
                                  + ", ".join(lacking[:5]) + (" ..." if len(lacking) > 5 else ""))
    full = made_up_table(tiny)
    assert get_predictor("isolated").fit(tiny, full).predict(arch) == pytest.approx(table_sum(tiny, full, arch))


def test_the_expected_error_is_the_error_on_the_tables_own_subnets(tiny) -> None:
    plain = made_up_table(tiny)
    archs = [tiny.sample(s) for s in range(4)]
    measured = [1.25 * table_sum(tiny, plain, a) for a in archs]  # 25% above the table sum, each of them
    calibration = {"archs": [a.to_dict() for a in archs], "measured_ms": measured}
    table = made_up_table(tiny, calibration=calibration)
    iso = get_predictor("isolated").fit(tiny, table)
    assert iso.expected_error_pct == pytest.approx(20.0)  # (sum - 1.25 sum) / (1.25 sum)
    assert iso.measurements == 0 and iso.training_archs == [] and iso.label == "isolated"
    assert get_predictor("isolated").fit(tiny, plain).expected_error_pct is None  # nothing measured tells
    # a predictor fit on whole models reports its own held-out error, not this one
    cal = get_predictor("calibrated").fit(tiny, plain, Measured(tuple(archs), measured))
    assert cal.measurements == 4 and cal.training_archs == archs and cal.label == "calibrated(n=4)"
    assert cal.expected_error_pct == cal.state()["loo_rmspe_pct"] and cal.expected_error_pct < 1
    flops = get_predictor("flops").fit(tiny, plain, Measured(tuple(archs), measured))
    assert flops.expected_error_pct is None
    info = iso.describe()
    assert info["predictor"] == "isolated" and info["expected_error_pct"] == pytest.approx(20.0)


def test_removal_sum_adds_the_median_overhead_and_each_reference_its_own(tiny) -> None:
    plain = made_up_table(tiny, mode="removal")
    refs = [tiny.smallest(), tiny.largest(), tiny.sample(3)]
    overheads = [0.5, 2.0, 0.25]
    rows = [{"arch": a.to_dict(), "measured_ms": table_sum(tiny, plain, a) + o, "entries_ms": table_sum(tiny, plain, a)}
            for a, o in zip(refs, overheads)]
    table = made_up_table(tiny, mode="removal", provenance={"references": rows})
    pred = get_predictor("removal").fit(tiny, table)
    assert pred.overhead_ms == 0.5
    assert pred.predict_many(refs).tolist() == pytest.approx([r["measured_ms"] for r in rows], abs=1e-12)
    others = [a for a in (tiny.sample(s) for s in range(10, 20)) if a not in refs][:3]
    both = pred.predict_many([*others, refs[1]])  # references and others in one batch
    assert both.tolist() == pytest.approx([table_sum(tiny, table, a) + 0.5 for a in others] + [rows[1]["measured_ms"]])
    with pytest.raises(PredictorError, match="lists no reference subnets"):
        get_predictor("removal").fit(tiny, made_up_table(tiny, mode="removal"))


def test_layer_features_are_shapes_then_log_sizes() -> None:
    from latencykit.layers import LayerSpec
    from latencykit.lut.predictors import SHAPE_FEATURES, layer_features

    spec = LayerSpec("mbconv", 16, 8, 24, stride=2, kernel=3, expand=4.0)
    got = layer_features(spec)
    assert got[: len(SHAPE_FEATURES)] == [16, 8, 24, 2, 3, 4.0, 0, 0, 0, 0, 0]
    assert got[len(SHAPE_FEATURES):] == pytest.approx([np.log(1 + spec.flops), np.log(1 + spec.params),
                                                       np.log(1 + 16 * 16 * 8), np.log(1 + 8 * 8 * 24)])


def test_layer_forests_learn_each_kind_from_its_positive_entries(tiny) -> None:
    from latencykit.lut.predictors import LayerForests

    layers = tiny.distinct_layers()
    kinds = sorted({l.kind for l in layers})
    lost = kinds[0]
    entries = {l: (0.0 if l.kind == lost else 1.0 + i) for i, l in enumerate(layers)}  # a 0 ms entry teaches nothing
    forests = LayerForests(entries, trees=3)
    assert sorted(forests.models) == kinds[1:]
    pred = forests.predict_layers(layers)
    assert np.isnan(pred[[l.kind == lost for l in layers]]).all()  # a kind with no known entry
    known = [l.kind != lost for l in layers]
    assert np.isfinite(pred[known]).all() and (pred[known] >= 1.0).all()
    one = LayerForests({l: 2.0 for l in layers if l.kind == kinds[1]}, trees=1)
    assert one.predict_layers([l for l in layers if l.kind == kinds[1]]) == pytest.approx(2.0)
    with pytest.raises(PredictorError, match="trees must be at least 1"):
        get_predictor("layer", trees=0)
    assert get_predictor("layer", trees=1).settings() == {"trees": 1}


def test_the_layer_model_learns_from_measured_entries_only(tiny) -> None:
    table = made_up_table(tiny)
    rows = table.rows.copy()
    guessed = rows.index[::2]
    rows.loc[guessed, "source"] = "predicted"
    rows.loc[guessed, "latency_ms"] = 1000.0  # a predicted entry must not teach the model
    from latencykit.lut.table import LatencyTable

    model = get_predictor("layer", trees=5).fit(tiny, LatencyTable(table.meta, rows.reset_index(drop=True)))
    pred = model.predict_layers(tiny.distinct_layers())
    assert np.nanmax(pred) < 2.0 and np.isfinite(pred).sum() > len(pred) // 2  # (a kind left with no entry: NaN)


def test_the_calibrated_predictor_sums_each_kind_apart_and_restores_its_numbers(tiny, tmp_path) -> None:
    table = made_up_table(tiny)
    archs = [tiny.sample(s) for s in range(6)]
    measured = Measured(tuple(archs), [1.1 * table_sum(tiny, table, a) + 0.2 for a in archs])
    cal = get_predictor("calibrated").fit(tiny, table, measured)
    with pytest.raises(PredictorError, match="needs at least 3 whole-model measurements, got 2; measure some with "
                                             "`latencykit fit --predictor calibrated`"):
        get_predictor("calibrated").fit(tiny, table, Measured(archs[:2], measured.latency_ms[:2]))
    with pytest.raises(PredictorError, match="needs at least 4 whole-model measurements, got 0"):
        get_predictor("flops").fit(tiny, table)
    kinds = sorted({l.kind for l in tiny.distinct_layers()})
    assert cal.features() == [*kinds, "mparams"]
    genes = np.stack([tiny.encode(a) for a in archs])
    x = cal._features(genes)
    for kind, column in zip(kinds, x.T):
        assert column.tolist() == pytest.approx([sum(table.latency(l) for l in tiny.layers(a) if l.kind == kind)
                                                 for a in archs])
    assert x[:, -1].tolist() == pytest.approx([tiny.params(a) / 1e6 for a in archs])
    assert cal.coef[-1] >= 0  # ms per million parameters: the weights term never goes negative
    assert cal.predict_many(archs) == pytest.approx(cal.intercept + x @ cal.coef)
    path = cal.save(tmp_path / "tiny.calibrated.predictor.json")
    again = load_predictor(path, tiny, table)
    assert again.state() == cal.state() and again.expected_error_pct == cal.expected_error_pct
    doc = json.loads(path.read_text())
    for state, match in (({"coefficients": [1.0] * (len(cal.features()) - 1)}, "coefficients for"),
                         ({"coefficients": [float("nan")] * len(cal.features())}, "coefficients for"),
                         ({"intercept_ms": float("inf")}, "intercept is not a number")):
        path.write_text(json.dumps({**doc, "state": {**doc["state"], **state}}))
        with pytest.raises(PredictorError, match=match):
            load_predictor(path, tiny, table)
    flops = get_predictor("flops").fit(tiny, table, measured)
    assert flops.predict_many(archs) == pytest.approx(
        flops.intercept + flops.coef[0] * np.array([tiny.flops(a) for a in archs]) / 1e6
        + flops.coef[1] * np.array([tiny.params(a) for a in archs]) / 1e6)


def test_loading_refuses_what_is_not_a_predictor_file(tiny, tmp_path) -> None:
    table = made_up_table(tiny)
    layer = get_predictor("layer", trees=3).fit(tiny, table)
    again = load_predictor(layer.save(tmp_path / "tiny.layer.predictor.json"), tiny, table)
    assert again.settings() == {"trees": 3} and again.predict_genes(tiny.sample_genes(5, 0)).tolist() == \
        layer.predict_genes(tiny.sample_genes(5, 0)).tolist()
    path = tmp_path / "tiny.calibrated.predictor.json"
    with pytest.raises(PredictorError, match="no fitted predictor at"):
        load_predictor(path, tiny, table)
    for doc, match in (([1, 2], "is not a latencykit predictor file"),
                       ({"schema": "other"}, "is not a latencykit predictor file"),
                       ({"schema": "latencykit.predictor", "schema_version": 2, "space": tiny.name,
                         "space_digest": tiny.digest, "device": "host", "table_created": table.meta.created},
                        "malformed predictor file \\(KeyError")):
        path.write_text(json.dumps(doc))
        with pytest.raises(PredictorError, match=match):
            load_predictor(path, tiny, table)
    assert predictor_path(tmp_path / "t.parquet", "flops") == tmp_path / "t.flops.predictor.json"


def test_resolve_picks_the_predictor_a_table_can_answer_with(tiny, tmp_path) -> None:
    from latencykit.lut.predictors import table_predictor_name
    from latencykit.lut.table import LatencyTable, TableMeta

    plain = made_up_table(tiny)
    assert resolve_predictor("auto", tiny, plain).label == "isolated" == table_predictor_name(plain)
    archs = [tiny.sample(s) for s in range(3)]
    cal = {"archs": [a.to_dict() for a in archs], "measured_ms": [table_sum(tiny, plain, a) for a in archs]}
    assert resolve_predictor("auto", tiny, made_up_table(tiny, calibration=cal)).label == "calibrated(n=3)"
    # fewer calibration subnets than a predictor needs: refused, with the command that measures more
    with pytest.raises(PredictorError, match="latencykit fit --predictor flops --device host --space tiny"):
        resolve_predictor("flops", tiny, made_up_table(tiny, calibration=cal))
    refs = [{"arch": tiny.smallest().to_dict(), "measured_ms": 9.0, "entries_ms": 8.0}]
    removal = made_up_table(tiny, mode="removal", provenance={"references": refs})
    assert table_predictor_name(removal) == "removal"
    assert resolve_predictor("auto", tiny, removal).label == "removal"
    assert resolve_predictor("auto", tiny, removal, tmp_path / "tiny.parquet").label == "removal"
    whole = LatencyTable.from_entries(TableMeta(device="host", space=tiny.name, space_digest=tiny.digest,
                                                mode="measured"), [], [])
    with pytest.raises(PredictorError, match="known only by whole-model measurements.*--predictor transfer"):
        resolve_predictor("auto", tiny, whole)
    # a fitted file beside the table answers for its predictor
    path = get_predictor("flops").fit(tiny, plain, Measured(tuple(archs * 2), [1.0, 2.0, 3.0, 1.5, 2.5, 3.5])).save(
        predictor_path(tmp_path / "tiny.parquet", "flops"))
    assert resolve_predictor("flops", tiny, plain, tmp_path / "tiny.parquet").label == "flops(n=6)"
    with pytest.raises(PredictorError, match="needs whole-model measurements and this table has none"):
        resolve_predictor("flops", tiny, plain, tmp_path / "elsewhere.parquet")
    assert path.is_file()


# ----- on real measurements -------------------------------------------------------------------------------

def test_references_cover_every_removable_layer(tiny) -> None:
    refs = choose_references(tiny)
    assert refs[:2] == [tiny.largest(), tiny.smallest()]
    covered = {l for r in refs for l in tiny.layers(r)}
    assert {l for l in tiny.distinct_layers() if removable(l)} <= covered


def test_removal_table_reproduces_its_references(tables, tiny) -> None:
    """On the real runtime: which layers get removal entries, and the removal predictor's overheads.
    That the entries are the real latency drops is checked exactly in test_scripted_tables."""
    _, rem, _ = tables
    table = rem.table
    assert table.meta.mode == "removal"
    methods = dict(zip(table.rows["key"], table.rows["method"]))
    assert {methods[l.key] for l in tiny.distinct_layers() if removable(l)} == {"removal"}
    assert {methods[l.key] for l in tiny.distinct_layers() if not removable(l)} == {"isolated"}
    pred = get_predictor("removal").fit(tiny, table)
    refs = table.meta.provenance["references"]
    # the table reproduces its references; its removal entries carry a good part of each reference's cost
    # (22-98% of 100 references in 20 runs; none if the drops were lost), and entries plus the shared
    # overhead agree with the references' scale. The overhead is negative, since the shape-changing layers'
    # isolated entries each pay a call overhead that a whole model pays once: -0.50..-0.02 of the median
    # reference in 57 builds (-0.93 in CI before the base was read BASE_COPIES times per round)
    for ref in refs:
        arch = Arch.from_dict(ref["arch"])
        assert pred.predict(arch) == pytest.approx(ref["measured_ms"])
        specs = tiny.layers(arch)
        if any(removable(l) for l in specs):
            assert sum(table.latency(l) for l in specs if removable(l)) > 0.1 * ref["measured_ms"]
    assert abs(pred.overhead_ms) < np.median([r["measured_ms"] for r in refs])
    # a subnet that is not a reference gets the median overhead on top of its entries
    other = next(a for a in (tiny.sample(s) for s in range(50)) if a.to_dict() not in [r["arch"] for r in refs])
    assert pred.predict(other) == pytest.approx(sum(table.latency(l) for l in tiny.layers(other)) + pred.overhead_ms)
    with pytest.raises(PredictorError, match="needs a table in mode removal"):
        get_predictor("removal").fit(tiny, tables[0].table)
    with pytest.raises(PredictorError, match="needs a table in mode isolated or imported"):
        get_predictor("isolated").fit(tiny, table)


def test_learned_predictors_beat_the_flops_baseline(small) -> None:
    space, table, train, y_train, test, m_test = small
    errors = {}
    for name in ("flops", "calibrated"):
        model = get_predictor(name).fit(space, table, Measured(tuple(train), y_train))
        assert model.measurements == len(train) and model.label == f"{name}(n={len(train)})"
        errors[name] = Metrics.compare(model.predict_many(test), m_test.measured).rmspe_pct
    errors["layer"] = Metrics.compare(get_predictor("layer").fit(space, table).predict_many(test),
                                      m_test.measured).rmspe_pct
    # shrunk toward the plain table sum (ridge toward 1, one-SE rule), the calibrated predictor no longer
    # beats a FLOPs fit on these 16 small subnets outright (7.4% vs 8.5% RMSPE on a quiet machine); it must
    # stay within 1.5x of it and within its own reported held-out error's reach
    calibrated = get_predictor("calibrated").fit(space, table, Measured(tuple(train), y_train))
    assert errors["calibrated"] < 1.5 * errors["flops"], errors
    assert errors["calibrated"] < 3 * calibrated.expected_error_pct + 2, (errors, calibrated.expected_error_pct)
    assert np.isfinite(errors["layer"])


def test_layer_model_predicts_layers_missing_from_the_table(tables, tiny) -> None:
    iso, _, _ = tables
    model = get_predictor("layer").fit(tiny, iso.table)
    known = tiny.distinct_layers()
    wider = [l.__class__(**{**l.to_dict(), "hw": l.hw * 2}) for l in known if l.kind == "mbconv"][:5]
    assert not any(l in iso.table for l in wider)
    pred = model.predict_layers(wider)
    base = np.array([iso.table.latency(l) for l in known if l.kind == "mbconv"][:5])
    assert np.isfinite(pred).all() and (pred > 0).all()
    assert pred.sum() >= base.sum()  # four times the pixels never costs less


def test_saved_predictor_round_trips_and_refuses_foreign_files(small, tmp_path) -> None:
    space, table, train, y_train, test, _ = small
    model = get_predictor("calibrated").fit(space, table, Measured(tuple(train), y_train))
    path = model.save(predictor_path(tmp_path / "small.parquet", "calibrated"))
    assert path.name == "small.calibrated.predictor.json"
    again = load_predictor(path, space, table)
    assert np.allclose(again.predict_many(test), model.predict_many(test))
    assert again.training_archs == train
    # the table path finds the fitted file; `auto` prefers it to the plain sum
    assert resolve_predictor("auto", space, table, tmp_path / "small.parquet").label == f"calibrated(n={len(train)})"
    good = json.loads(path.read_text())

    def refused(doc: dict, match: str) -> None:
        path.write_text(json.dumps(doc))
        with pytest.raises(PredictorError, match=match):
            load_predictor(path, space, table)

    refused({**good, "space": "autovit-s"}, "fit for space 'autovit-s', not 'small'")
    refused({**good, "device": "pixel4"}, "fit for device 'pixel4'")
    refused({**good, "table_created": "2020-01-01"}, "fit for table created")
    refused({**good, "schema_version": 99}, "schema version 99")
    refused({**good, "state": {**good["state"], "features": ["mbconv"]}}, "features")
    refused({**good, "state": {**good["state"], "coefficients": [1.0]}}, "coefficients")
    refused({**good, "predictor": "nope"}, "nope")
    path.write_bytes(b"junk")
    with pytest.raises(PredictorError, match="not a latencykit predictor"):
        load_predictor(path, space, table)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {Path(__file__).parent}/PWNED",))


def test_a_pickle_renamed_predictor_runs_no_code(small, tmp_path) -> None:
    """A crafted pickle where a shared predictor file should be: refused by the library and by
    `latencykit predict -p calibrated` with one line, exit 2, and its payload never runs."""
    import pickle
    import subprocess
    import sys

    space, table, *_ = small
    marker = Path(__file__).parent / "PWNED"
    marker.unlink(missing_ok=True)
    table_path = table.write(tmp_path / "small.parquet")
    path = predictor_path(table_path, "calibrated")
    path.write_bytes(pickle.dumps({"format": 1, "state": _Boom()}))
    with pytest.raises(PredictorError, match="not a latencykit predictor"):
        load_predictor(path, space, table)
    arch = tmp_path / "arch.json"
    arch.write_text(space.smallest().to_json())
    out = subprocess.run([sys.executable, "-m", "latencykit", "predict", str(arch), "-d", "host", "-s",
                          str(Path(__file__).parent / "data" / "small.json"), "--table", str(table_path),
                          "-p", "calibrated"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "not a latencykit predictor" in out.stderr
    assert not marker.exists()
