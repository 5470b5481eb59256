"""benchmark_model's three output formats, as its versions print them."""

import pytest

from latencykit.devices.benchmark_model import BenchmarkOutputError, parse

CURRENT = """INFO: STARTING!
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/m.tflite]
INFO: Loaded model /data/local/tmp/m.tflite
INFO: Initialized session in 3.013ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=28 first=33441 curr=17421 min=17240 max=33441 avg=18189.1 std=2990

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=58 first=17317 curr=17187 min=17133 max=17504 avg=17216.6 std=61

INFO: Inference timings in us: Init: 3013, First inference: 33441, Warmup (avg): 18189.1, Inference (avg): 17216.6
INFO: Memory footprint delta from the start of the tool (MB): init=2.88 overall=9.94
"""

TF1 = """STARTING!
Num runs: [50]
Graph: [/data/local/tmp/m.tflite]
Initialized session in 20.539ms
Running benchmark for 1 iterations
count=1 curr=28497

Running benchmark for 50 iterations
count=50 first=26101 curr=26995 min=26006 max=29877 avg=26935.4 std=712

Average inference timings in us: Warmup: 28497.7, Init: 20539, no stats: 26935.4
"""

STATS = """Running benchmark for 50 iterations
count=50 first=1204 curr=1100 min=1090 max=1300 avg=1120.5 std=33
============================== Run Order ==============================
Timings (microseconds): count=50 first=1204 curr=1100 min=1090 max=1300 avg=1120.5 std=33
Memory (bytes): count=0
"""


def test_current_format_reads_the_summary_and_the_timed_runs_stats():
    r = parse(CURRENT)
    assert r.format == "inference"
    assert r.avg_us == 17216.6 and r.avg_ms == pytest.approx(17.2166)
    assert (r.count, r.std_us, r.min_us, r.max_us) == (58, 61.0, 17133.0, 17504.0)  # timed run, not warmup
    assert (r.init_us, r.first_us, r.warmup_avg_us) == (3013.0, 33441.0, 18189.1)


def test_tf1_average_format():
    r = parse(TF1)
    assert (r.format, r.avg_us, r.init_us, r.warmup_avg_us) == ("average", 26935.4, 20539.0, 28497.7)


def test_stat_summarizer_timings_format():
    r = parse(STATS)
    assert (r.format, r.avg_us, r.count, r.std_us) == ("timings", 1120.5, 50, 33.0)


def test_large_values_in_exponent_notation():
    text = "INFO: Inference timings in us: Init: 3013, First inference: 1.5e+06, Warmup (avg): 1.2e+06, Inference (avg): 1.23457e+06"
    assert parse(text).avg_ms == pytest.approx(1234.57)


@pytest.mark.parametrize("text", ["", "INFO: STARTING!\nFailed to mmap model /data/local/tmp/x.tflite\n"])
def test_no_timings_is_a_clear_error(text):
    with pytest.raises(BenchmarkOutputError, match="printed no timings"):
        parse(text)
