"""Property-based tests (Hypothesis) for everything that parses data from outside: each input either
works or fails with a LatencykitError, never another exception and never a silently wrong result.

Bounded in the default run (profile "default" in conftest); `HYPOTHESIS_PROFILE=slow` or `-m slow`
runs them with many more examples.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from conftest import TINY
from latencykit.arch import Arch
from latencykit.blocks import build
from latencykit.devices.benchmark_model import BenchmarkOutputError, parse
from latencykit.errors import LatencykitError, TableError
from latencykit.lut.importers import read_nnmeter
from latencykit.lut.protocol import Journal
from latencykit.lut.table import LatencyTable, TableMeta
from latencykit.space import SPACES, load_space

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
MICRO = str(Path(__file__).resolve().parent / "fake_adb" / "micro.json")
SMALL = str(Path(__file__).resolve().parent / "data" / "small.json")


# -- architectures ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*SPACES.names(), TINY, SMALL, MICRO])
@given(seed=SEEDS)
def test_architecture_json_round_trips_in_every_space(name: str, seed: int) -> None:
    space = load_space(name)
    arch = space.sample(seed)
    back = Arch.from_json(arch.to_json())
    assert back == arch and hash(back) == hash(arch)
    assert space.validate(back) == arch
    assert space.layers(back) == space.layers(arch)


@given(seed=SEEDS)
def test_params_and_flops_of_random_subnets_equal_torch_counts(seed: int) -> None:
    space = load_space(TINY)
    arch = space.sample(seed)
    net = build(space.layers(arch)).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.randn(1, 3, arch.resolution, arch.resolution))
    assert sum(p.numel() for p in net.parameters()) == space.params(arch)
    assert counter.get_total_flops() == 2 * space.flops(arch)  # torch counts a multiply-accumulate as 2


@given(text=st.text(max_size=300))
def test_architecture_text_parses_or_is_refused(text: str) -> None:
    space = load_space(TINY)
    try:
        space.validate(Arch.from_json(text))
    except LatencykitError:
        pass


# -- nn-Meter tables ---------------------------------------------------------------------------------

VALID = {"firstconv_224_3_16_2_3": 0.91, "conv_112_16_16_1_1_hard_swish_3_nose": 1.73,
         "transattn_14_96_hard_swish_2_ln": 2.05, "transffn_14_96_4_hard_swish_ln": 1.1,
         "mbpool_7_192_1984_6_hard_swish": 0.44}
BAD_VALUES = st.one_of(st.just(float("nan")), st.just(float("inf")), st.just(-1.0), st.just(0),
                       st.floats(max_value=0), st.text(max_size=5), st.none(), st.booleans(),
                       st.lists(st.floats(), max_size=2), st.integers(min_value=10**308, max_value=10**400))


@st.composite
def mutated_nnmeter(draw) -> str:
    data = dict(VALID)
    for key in draw(st.lists(st.sampled_from(sorted(VALID)), max_size=len(VALID), unique=True)):
        action = draw(st.sampled_from(["drop", "bad value", "rename", "keep"]))
        if action == "drop":
            del data[key]
        elif action == "bad value":
            data[key] = draw(BAD_VALUES)
        elif action == "rename":
            data[key + draw(st.text(min_size=1, max_size=3))] = data.pop(key)
    text = json.dumps(data) if draw(st.booleans()) else json.dumps(list(data.items()))
    cut = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=len(text))))
    return text if cut is None else text[:cut]


@given(text=mutated_nnmeter())
def test_nnmeter_importer_takes_a_mutated_file_or_refuses_it(text: str, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("nnmeter") / "lut.json"
    path.write_text(text)
    try:
        entries = read_nnmeter(path)
    except TableError as exc:
        assert "\n" not in str(exc)
        return
    assert entries and all(math.isfinite(ms) and ms > 0 for ms in entries.values())
    for key, ms in entries.items():  # nothing made up: every entry is the file's own
        assert VALID.get(key) == ms


@given(raw=st.binary(max_size=200))
def test_nnmeter_importer_takes_any_bytes_or_refuses_them(raw: bytes, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("nnmeter") / "lut.json"
    path.write_bytes(raw)
    try:
        read_nnmeter(path)
    except TableError:
        pass


# -- Parquet tables with flipped bytes ----------------------------------------------------------------

@pytest.fixture(scope="module")
def table_bytes(tmp_path_factory) -> tuple[bytes, LatencyTable]:
    space = load_space(MICRO)
    layers = space.distinct_layers()
    meta = TableMeta(device="host", space=space.name, space_digest=space.digest, reference={"ms": 0.5})
    table = LatencyTable.from_entries(meta, layers, [{"latency_ms": 0.25 * (i + 1), "runs": 5, "cv": 0.01}
                                                     for i in range(len(layers))])
    path = table.write(tmp_path_factory.mktemp("table") / "micro.parquet")
    return path.read_bytes(), LatencyTable.read(path)


@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
                      min_size=1, max_size=3))
def test_a_table_with_flipped_bytes_is_refused_or_unchanged(flips, table_bytes, tmp_path_factory) -> None:
    good, original = table_bytes
    data = bytearray(good)
    for position, mask in flips:
        data[position % len(data)] ^= mask
    assume(bytes(data) != good)
    path = tmp_path_factory.mktemp("flipped") / "micro.parquet"
    path.write_bytes(bytes(data))
    try:
        table = LatencyTable.read(path)
    except TableError as exc:
        assert "\n" not in str(exc)
        return
    # read without complaint: then it must be the same table (a flip in bytes nobody reads)
    assert table.meta == original.meta
    assert table.rows.equals(original.rows)


@given(cut=st.integers(min_value=0))
def test_a_truncated_table_is_refused(cut, table_bytes, tmp_path_factory) -> None:
    good, _ = table_bytes
    path = tmp_path_factory.mktemp("cut") / "micro.parquet"
    path.write_bytes(good[:cut % len(good)])
    with pytest.raises(TableError):
        LatencyTable.read(path)


# -- torn journal lines ---------------------------------------------------------------------------------

ROUNDS = st.lists(st.fixed_dictionaries({
    "phase": st.sampled_from(["base", "extra"]),
    "raw": st.dictionaries(st.sampled_from(["a", "b", "c"]), st.floats(min_value=0.001, max_value=1e3), min_size=1),
    "ref": st.lists(st.floats(min_value=0.001, max_value=1e3), min_size=1, max_size=3)}).map(
        lambda r: {**r, "ref_at": sorted(min(i, len(r["raw"])) for i in range(len(r["ref"])))}), max_size=6)


@given(rounds=ROUNDS, cut=st.integers(min_value=0), tail=st.binary(max_size=20))
def test_a_torn_journal_resumes_from_its_whole_rounds(rounds, cut, tail, tmp_path_factory) -> None:
    path = tmp_path_factory.mktemp("journal") / "t.journal"
    header = {"device": "host", "space": "tiny"}
    journal = Journal(path, header)
    for r in rounds:
        journal.append(r)
    data = path.read_bytes()
    path.write_bytes(data[:cut % (len(data) + 1)] + (b"\n" + tail if tail else b""))  # torn, then a garbage line
    again = Journal(path, header)
    assert again.rounds == rounds[:len(again.rounds)]  # a prefix of what was written, nothing altered
    if cut % (len(data) + 1) == len(data) and not tail:
        assert again.rounds == rounds


# -- benchmark_model output ------------------------------------------------------------------------------

GOOD_OUTPUTS = [
    "INFO: count=50 first=1204 curr=1100 min=1090 max=1300 avg=1120.5 std=33\n\n"
    "INFO: Inference timings in us: Init: 31000, First inference: 1900, Warmup (avg): 1300, Inference (avg): 1120.5\n",
    "Average inference timings in us: Warmup: 1300, Init: 31000, no stats: 1120.5\n",
    "Timings (microseconds): count=50 first=1204 curr=1100 min=1090 max=1300 avg=1120.5 std=33\n",
]
NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                    st.sampled_from(["-0", "1e999", "-1e999", "nan", "", "1.2.3", "0"]))


@st.composite
def fuzzed_output(draw) -> str:
    text = draw(st.sampled_from(GOOD_OUTPUTS))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        for figure in ("1120.5", "1204", "50"):
            if figure in text and draw(st.booleans()):
                text = text.replace(figure, draw(NUMBERS), 1)
    if draw(st.booleans()):
        text = text[:draw(st.integers(min_value=0, max_value=len(text)))]
    return text + draw(st.text(max_size=20))


@given(output=st.one_of(fuzzed_output(), st.text(max_size=200)))
def test_benchmark_model_output_parses_to_a_real_time_or_is_refused(output: str) -> None:
    try:
        result = parse(output)
    except BenchmarkOutputError as exc:
        assert "\n" not in str(exc)
        return
    assert math.isfinite(result.avg_us) and result.avg_us > 0
    assert result.avg_ms == result.avg_us / 1e3


@pytest.mark.parametrize("stride", [53, pytest.param(1, marks=pytest.mark.slow)])
def test_every_single_bit_flip_is_refused_or_harmless(stride, table_bytes, tmp_path) -> None:
    """Exhaustive where Hypothesis samples: it found no case in 500 examples that this scan found
    (a flip in pandas' metadata renaming a column), which the table checksum now covers."""
    good, original = table_bytes
    path = tmp_path / "micro.parquet"
    for position in range(0, len(good), stride):
        for mask in (0x01, 0x80):
            data = bytearray(good)
            data[position] ^= mask
            path.write_bytes(bytes(data))
            try:
                table = LatencyTable.read(path)
            except TableError:
                continue
            assert table.meta == original.meta and table.rows.equals(original.rows), position
