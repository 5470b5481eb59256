"""The drift-corrected measurement protocol against a scripted device whose costs and speed are known."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

from latencykit.lut.protocol import REF_KEY, Journal, Protocol, measure_models

from scripted_device import ScriptedDevice

REF = Path("/models/reference.onnx")  # never opened: the scripted device maps paths to costs
COSTS = {"a": 1.0, "b": 2.0, "c": 5.0}
MODELS = {k: Path(f"/models/{k}.onnx") for k in COSTS}
REF_MS = 4.0
# two reference measurements per round (first and last), as every round has fewer than ref_every models
PROTOCOL = Protocol(rounds=7, warmup_runs=1, min_runs=2, max_runs=50, burst_ms=8.0, ref_every=20,
                    cv_threshold=0.05, extra_rounds=3)


def device(**script) -> ScriptedDevice:
    return ScriptedDevice({**{MODELS[k]: ms for k, ms in COSTS.items()}, REF: REF_MS}, REF, **script)


@pytest.mark.parametrize("drift_from, scale", [(5, 1.0), (3, 1.4), (2, 1.4)])
def test_drift_factor_is_divided_out(drift_from: int, scale: float, tmp_path: Path) -> None:
    """The device runs 40% slower from round `drift_from` on; every corrected round then equals the
    others exactly, on the scale of the reference block's median (1.4x when most rounds drifted)."""
    dev = device(drift=lambda r: 1.4 if r >= drift_from else 1.0)
    journal = Journal(tmp_path / "j", {"test": 1})
    stats = measure_models(dev, MODELS, REF, PROTOCOL, journal)
    for k, ms in COSTS.items():
        s = stats[k]
        assert s.latency_ms == pytest.approx(ms * scale, rel=1e-12)
        assert s.q1_ms == pytest.approx(ms * scale, rel=1e-12) and s.q3_ms == pytest.approx(ms * scale, rel=1e-12)
        assert s.cv == pytest.approx(0.0, abs=1e-12)
        assert s.ratio == pytest.approx(ms / REF_MS, rel=1e-12)
        assert s.runs == PROTOCOL.rounds
        # the raw figures kept in the journal carry the drift
        raw = [r["raw"][k] for r in journal.rounds if r.get("phase") == "base"]
        assert raw == pytest.approx([ms * (1.4 if i >= drift_from else 1.0) for i in range(PROTOCOL.rounds)])
    assert stats[REF_KEY].latency_ms == pytest.approx(REF_MS * scale)
    # the reference's own figures are raw: two per round, drifted, spread as computed by hand
    ref = sorted(REF_MS * (1.4 if r >= drift_from else 1.0) for r in range(PROTOCOL.rounds) for _ in range(2))
    mean = sum(ref) / len(ref)
    assert stats[REF_KEY].cv == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in ref) / len(ref)) / mean)
    for q, got in ((0.25, stats[REF_KEY].q1_ms), (0.75, stats[REF_KEY].q3_ms)):
        pos = q * (len(ref) - 1)
        assert got == pytest.approx(ref[int(pos)] + (ref[int(pos) + 1] - ref[int(pos)]) * (pos - int(pos)))
    # no entry varies once corrected, so none gets extra rounds
    assert dev.timed == {**{m: PROTOCOL.rounds for m in MODELS.values()}, REF: 2 * PROTOCOL.rounds}


def test_speed_wandering_within_rounds_is_divided_out_by_the_references_beside_each_model() -> None:
    """The device's speed wanders smoothly from measurement to measurement (+-30%, a period of about 30
    measurements, so every round sees slow and fast stretches). With the reference measured beside
    every model, each measurement is divided by the reference's speed where it ran: every model's
    median lands within 1% of its cost although its raw figures spread by more than 10%."""
    wander = lambda i: 1.0 + 0.3 * math.sin(i / 5.0)  # noqa: E731
    stats = measure_models(device(wander=wander), MODELS, REF, replace(PROTOCOL, ref_every=1, extra_rounds=0))
    for k, ms in COSTS.items():
        assert stats[k].latency_ms == pytest.approx(ms * stats[REF_KEY].latency_ms / REF_MS, rel=0.01)
        assert stats[k].cv < 0.02
    assert stats[REF_KEY].q3_ms / stats[REF_KEY].q1_ms > 1.1  # the reference's own figures are raw: they wander


def test_only_the_noisy_entry_gets_extra_rounds() -> None:
    """`b` varies by +-15% from run to run (CV about 0.13, above 0.05): it alone is measured again.
    Its median and quartiles are those of its 10 figures, interpolated linearly."""
    factors = [1.0, 1.15, 0.85, 1.3, 0.9, 1.2, 0.8, 1.1, 0.95, 1.25]
    dev = device(noise={MODELS["b"]: factors})
    stats = measure_models(dev, MODELS, REF, PROTOCOL)
    rounds, extra = PROTOCOL.rounds, PROTOCOL.extra_rounds
    assert dev.timed == {MODELS["a"]: rounds, MODELS["b"]: rounds + extra, MODELS["c"]: rounds,
                         REF: 2 * (rounds + extra)}
    b = [2.0 * factors[i % len(factors)] for i in range(rounds + extra)]
    assert stats["b"].runs == rounds + extra
    assert stats["b"].latency_ms == pytest.approx(sorted(b)[len(b) // 2 - 1] / 2 + sorted(b)[len(b) // 2] / 2)
    assert sorted(b)[len(b) // 2 - 1] != sorted(b)[len(b) // 2]  # so a median off by a little would show

    def quantile(q: float) -> float:  # linear interpolation between the order statistics
        pos = q * (len(b) - 1)
        lo, frac = int(pos), pos - int(pos)
        return sorted(b)[lo] * (1 - frac) + sorted(b)[min(lo + 1, len(b) - 1)] * frac

    assert stats["b"].q1_ms == pytest.approx(quantile(0.25)) and stats["b"].q3_ms == pytest.approx(quantile(0.75))
    assert stats["b"].q1_ms < stats["b"].latency_ms < stats["b"].q3_ms
    mean = sum(b) / len(b)
    assert stats["b"].cv == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in b) / len(b)) / mean)
    assert stats["a"].runs == stats["c"].runs == rounds and stats["a"].latency_ms == pytest.approx(1.0)


def test_slow_warmup_sets_the_burst_but_not_the_figures() -> None:
    """The first run after loading is 4x slower: the burst size is chosen from it (about burst_ms of
    runs), and it never enters the statistics."""
    protocol = replace(PROTOCOL, burst_ms=40.0)
    dev = device(warmup_factor=4.0)
    stats = measure_models(dev, MODELS, REF, protocol)
    for k, ms in COSTS.items():
        assert stats[k].latency_ms == pytest.approx(ms) and stats[k].cv == pytest.approx(0.0, abs=1e-12)
    # 40 ms of runs at the warm-up's 4, 8, 20 and 16 ms
    assert [dev.runs[m] for m in [*MODELS.values(), REF]] == [{10}, {5}, {2}, {3}]


def test_interrupted_measurement_resumes_from_its_journal(tmp_path: Path) -> None:
    """Stopped in round 3, the journal keeps rounds 0-2; a later session (the device now 1.5x slower
    throughout) measures only the 4 missing rounds, and drift correction joins both sessions."""
    path = tmp_path / "j"
    first = device(stop_in_round=3)
    with pytest.raises(KeyboardInterrupt):
        measure_models(first, MODELS, REF, PROTOCOL, Journal(path, {"test": 1}))
    journal = Journal(path, {"test": 1})
    assert [r["phase"] for r in journal.rounds] == ["base"] * 3
    later = device(drift=lambda r: 1.5)
    stats = measure_models(later, MODELS, REF, PROTOCOL, journal)
    assert later.timed == {**{m: 4 for m in MODELS.values()}, REF: 8}
    raw = [r["raw"]["c"] for r in journal.rounds if r.get("phase") == "base"]
    assert raw == pytest.approx([5.0] * 3 + [7.5] * 4)
    for k, ms in COSTS.items():
        assert stats[k].runs == 7 and stats[k].cv == pytest.approx(0.0, abs=1e-12)
        assert stats[k].latency_ms == pytest.approx(ms * 1.5)  # 8 of the 14 reference figures are from the later session
    # finished: another call reads the answer from the journal and measures nothing
    again = device()
    assert measure_models(again, MODELS, REF, PROTOCOL, Journal(path, {"test": 1})) == stats
    assert not again.timed and not again.opened
    # a journal written under other settings is not resumed
    fresh = device()
    measure_models(fresh, MODELS, REF, PROTOCOL, Journal(path, {"test": 2}))
    assert fresh.timed[MODELS["a"]] == PROTOCOL.rounds


def test_progress_counts_every_measurement_once() -> None:
    """The progress callback ends at done == total: every base round of every model, then the extra
    rounds of the noisy one, announced before they run."""
    calls: list[tuple[int, int]] = []
    measure_models(device(noise={MODELS["b"]: [1.0, 1.3, 0.7]}), MODELS, REF, PROTOCOL,
                   progress=lambda done, total: calls.append((done, total)))
    base = PROTOCOL.rounds * len(MODELS)
    assert [d for d, _ in calls] == list(range(1, base + PROTOCOL.extra_rounds + 1))
    assert {t for d, t in calls if d <= base} == {base}
    assert calls[-1] == (base + PROTOCOL.extra_rounds, base + PROTOCOL.extra_rounds)


@pytest.mark.parametrize("bad", [
    {"phase": "base", "raw": {"a": -1.0}, "ref": [4.0], "ref_at": [0]},           # a negative time
    {"phase": "base", "raw": {"a": float("nan")}, "ref": [4.0], "ref_at": [0]},   # not finite
    {"phase": "base", "raw": {"a": True}, "ref": [4.0], "ref_at": [0]},           # not a number
    {"phase": "base", "raw": {"a": 1.0}, "ref": [], "ref_at": []},                # no reference measurement
    {"phase": "base", "raw": {"a": 1.0}, "ref": [-4.0], "ref_at": [0]},           # a negative reference
    {"phase": "base", "raw": [1.0], "ref": [4.0], "ref_at": [0]},                 # raw is not a mapping
    {"phase": "warmup", "raw": {"a": 1.0}, "ref": [4.0], "ref_at": [0]},          # an unknown phase
    {"phase": "base", "raw": {"a": 1.0}, "ref": [4.0]},                           # where the reference ran: unknown
    {"phase": "base", "raw": {"a": 1.0}, "ref": [4.0, 4.0], "ref_at": [0]},       # ... for one of them
    {"phase": "base", "raw": {"a": 1.0}, "ref": [4.0, 4.0], "ref_at": [0, 2]},    # ... after more models than ran
    {"phase": "base", "raw": {"a": 1.0}, "ref": [4.0, 4.0], "ref_at": [1, 0]},    # ... out of order
    {"phase": "done", "extra": 1},                                # an end mark with more in it
])
def test_a_damaged_journal_round_and_everything_after_it_are_dropped(bad: dict, tmp_path: Path) -> None:
    """A journal is data from disk: a round that is not finite, non-negative times with a reference is
    dropped on load with every line after it, and only the rounds before it are resumed."""
    import json

    good = {"phase": "base", "raw": {"a": 1.0, "b": 0.0}, "ref": [4.0, 4.0], "ref_at": [0, 2]}
    path = tmp_path / "j"
    path.write_text("".join(json.dumps(x) + "\n" for x in [{"test": 1}, good, bad, good]))
    assert Journal(path, {"test": 1}).rounds == [good]
    path.write_text("".join(json.dumps(x) + "\n" for x in [{"test": 1}, bad, good]))  # the first round damaged
    assert Journal(path, {"test": 1}).rounds == []
    journal = Journal(path, {"test": 1})
    journal.remove()
    journal.remove()  # removing a journal that is gone is fine
    assert not path.exists()


def test_burst_sizes_for_fast_and_free_models() -> None:
    """A 0.5 ms model gets burst_ms / 0.5 runs; a model that costs nothing measurable (0 ms) gets
    min_runs, not a division by zero; the reference block's own ratio is exactly 1."""
    costs = {MODELS["a"]: 0.5, MODELS["b"]: 0.0, REF: REF_MS}
    dev = ScriptedDevice(costs, REF)
    stats = measure_models(dev, {k: MODELS[k] for k in ("a", "b")}, REF, PROTOCOL)
    assert dev.runs[MODELS["a"]] == {16} and dev.runs[MODELS["b"]] == {PROTOCOL.min_runs} and dev.runs[REF] == {2}
    assert stats["a"].latency_ms == pytest.approx(0.5) and stats["b"].latency_ms == 0.0 and stats["b"].cv == 0.0
    assert stats[REF_KEY].ratio == 1.0 and stats[REF_KEY].latency_ms == REF_MS


def test_one_round_has_no_spread() -> None:
    """With a single round there is no coefficient of variation to report (NaN, not 0), so nothing
    is taken for a steady entry."""
    stats = measure_models(device(), MODELS, REF, replace(PROTOCOL, rounds=1, extra_rounds=0))
    assert all(math.isnan(stats[k].cv) for k in COSTS) and stats["a"].runs == 1
    two = measure_models(device(), MODELS, REF, replace(PROTOCOL, rounds=2, extra_rounds=0))
    assert all(two[k].cv == 0.0 for k in COSTS) and two["a"].runs == 2


def test_a_run_stopped_after_its_extra_rounds_measures_nothing_more(tmp_path: Path) -> None:
    """Every base and extra round is in the journal but the end mark is not (stopped just before it):
    the next call measures nothing and gives the same figures."""
    path = tmp_path / "j"
    noisy = {MODELS["b"]: [1.0, 1.3, 0.7]}
    full = measure_models(device(noise=noisy), MODELS, REF, PROTOCOL, Journal(path, {"test": 1}))
    lines = path.read_text().splitlines()
    assert lines[-1] == '{"phase": "done"}'
    path.write_text("\n".join(lines[:-1]) + "\n")
    again = device(noise=noisy)
    assert measure_models(again, MODELS, REF, PROTOCOL, Journal(path, {"test": 1})) == full
    assert not again.timed


def test_progress_total_grows_by_every_noisy_entry_extra_round() -> None:
    """Two noisy entries: the total grows by extra_rounds x 2 when their extra rounds are announced."""
    calls: list[tuple[int, int]] = []
    noise = {MODELS["b"]: [1.0, 1.3, 0.7], MODELS["c"]: [1.0, 0.7, 1.3]}
    measure_models(device(noise=noise), MODELS, REF, PROTOCOL, progress=lambda d, t: calls.append((d, t)))
    end = PROTOCOL.rounds * len(MODELS) + 2 * PROTOCOL.extra_rounds
    assert calls[-1] == (end, end) and len(calls) == end


def test_a_run_stopped_in_its_extra_rounds_finishes_only_those(tmp_path: Path) -> None:
    """Stopped in the second extra round: the next call measures the noisy entry in the 2 extra rounds
    left (the base rounds and the first extra one are in the journal), and its progress ends at its total."""
    path = tmp_path / "j"
    noisy = {MODELS["b"]: [1.0, 1.3, 0.7]}
    with pytest.raises(KeyboardInterrupt):
        measure_models(device(noise=noisy, stop_in_round=PROTOCOL.rounds + 1), MODELS, REF, PROTOCOL,
                       Journal(path, {"test": 1}))
    journal = Journal(path, {"test": 1})
    assert [r["phase"] for r in journal.rounds] == ["base"] * PROTOCOL.rounds + ["extra"]
    later = device(noise=noisy)
    calls: list[tuple[int, int]] = []
    stats = measure_models(later, MODELS, REF, PROTOCOL, journal, progress=lambda d, t: calls.append((d, t)))
    assert later.timed == {MODELS["b"]: PROTOCOL.extra_rounds - 1, REF: 2 * (PROTOCOL.extra_rounds - 1)}
    assert calls[-1] == (PROTOCOL.extra_rounds - 1, PROTOCOL.extra_rounds - 1)
    assert stats["b"].runs == PROTOCOL.rounds + PROTOCOL.extra_rounds


def test_a_noisy_sub_millisecond_entry_gets_extra_rounds() -> None:
    """Fast layers are the noisiest: a 0.4 ms entry varying by +-30% is measured again like any other."""
    costs = {MODELS["a"]: 0.4, MODELS["b"]: 2.0, REF: REF_MS}
    dev = ScriptedDevice(costs, REF, noise={MODELS["a"]: [1.0, 1.3, 0.7]})
    stats = measure_models(dev, {k: MODELS[k] for k in ("a", "b")}, REF, PROTOCOL)
    assert dev.timed[MODELS["a"]] == PROTOCOL.rounds + PROTOCOL.extra_rounds and dev.timed[MODELS["b"]] == PROTOCOL.rounds
    assert stats["a"].cv > PROTOCOL.cv_threshold


def test_whole_networks_are_read_one_run_at_a_time_between_references_for_whole_factor_times_the_rounds(tmp_path: Path) -> None:
    """Whole networks (`whole`) are read as validation reads them: one run per reading, the reference
    measured right before and after it, and `whole_factor - 1` more sets of rounds of them alone. Twelve models
    between two references per round while the speed wanders (+-30%, period about 12 measurements):
    the whole network lands within 1% of its cost (the flanking references miss only the wander's
    curvature, so where its readings fall on the sine moves it by a few tenths of a %), the models read
    as layers by up to several %."""
    costs = {f"m{i}": 1.0 + i for i in range(12)}
    models = {k: Path(f"/models/{k}.onnx") for k in costs}
    dev = ScriptedDevice({**{models[k]: ms for k, ms in costs.items()}, REF: REF_MS}, REF,
                         wander=lambda i: 1.0 + 0.3 * math.sin(i / 2.0))
    journal = Journal(tmp_path / "j", {"test": 1})
    protocol = replace(PROTOCOL, extra_rounds=0)
    stats = measure_models(dev, models, REF, protocol, journal, whole=["m11"])
    scale = stats[REF_KEY].latency_ms / REF_MS

    def error(k: str) -> float:
        return abs(stats[k].latency_ms / (costs[k] * scale) - 1)

    assert error("m11") < 0.01
    assert max(error(k) for k in costs if k != "m11") > 0.02
    assert dev.runs[models["m11"]] == {1} and dev.timed[models["m11"]] == protocol.whole_factor * protocol.rounds
    assert all(dev.timed[models[k]] == protocol.rounds for k in costs if k != "m11")
    whole_rounds = (protocol.whole_factor - 1) * protocol.rounds
    assert [r["phase"] for r in journal.rounds] == ["base"] * protocol.rounds + ["whole"] * whole_rounds + ["done"]
    for r in journal.rounds[:-1]:  # a reference right before and right after every reading of m11
        at = list(r["raw"]).index("m11")
        assert at in r["ref_at"] and at + 1 in r["ref_at"] and len(set(r["ref_at"])) == len(r["ref_at"])
    # a run stopped in the `whole` rounds resumes there
    lines = (tmp_path / "j").read_text().splitlines()
    (tmp_path / "k").write_text("\n".join(lines[:1 + protocol.rounds + 2]) + "\n")
    later = ScriptedDevice({**{models[k]: ms for k, ms in costs.items()}, REF: REF_MS}, REF)
    measure_models(later, models, REF, protocol, Journal(tmp_path / "k", {"test": 1}), whole=["m11"])
    assert later.timed[models["m11"]] == whole_rounds - 2 and later.timed[models["m0"]] == 0
