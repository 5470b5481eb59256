"""How in-process devices time a run: untimed work before each run, and cache eviction."""

import time

import numpy as np
import pytest
import torch

from latencykit.devices import get_device
from latencykit.devices.clock import Evictor, default_evict_mib, last_level_cache_mib, median_ms
from latencykit.export import export_onnx


def test_before_runs_once_before_every_run_and_is_not_timed():
    calls = []

    def burn() -> None:  # 20 ms of CPU time, which the cpu clock would count if it were timed
        calls.append(("before", time.thread_time()))
        t = time.thread_time()
        while time.thread_time() - t < 0.02:
            pass

    ms = median_ms(lambda: calls.append(("run", 0.0)), 5, "cpu", burn)
    assert [kind for kind, _ in calls] == ["before", "run"] * 5
    assert ms < 5.0


def test_evictor_stores_into_every_cache_line_of_its_buffer():
    evict = Evictor(0.5)
    assert evict.buffer.nbytes == 2**19
    evict()
    evict()
    lines = evict.buffer.reshape(-1, 8)  # 8 float64 per 64-byte line
    assert (lines[:, 0] == 2.0).all() and (lines[:, 1:] == 0.0).all()


@pytest.mark.parametrize("mib", [-1.0, float("nan")])
def test_a_negative_or_nan_eviction_is_refused(mib):
    with pytest.raises(ValueError, match="eviction"):
        get_device("host", evict_mib=mib)


def test_host_records_its_eviction_and_a_layer_pays_for_weights_pushed_out_of_cache(tmp_path):
    """A weight twice the eviction's size stays in the last level cache run back to back; the default eviction
    pushes part of it out.

    With an 8 MiB L3 the default writes 2 MiB and a 4 MiB weight slows 1.3-1.4x; with a 32 MiB L3 it writes
    8 MiB and a 16 MiB weight slows 1.4x (a weight of the eviction's size, 1.12x; half of it, 1.03x: too close).
    """
    side = int((2 * default_evict_mib() * 2**20 / 4) ** 0.5)
    path = tmp_path / "linear.onnx"
    export_onnx(torch.nn.Linear(side, side), (torch.zeros(1, side),), path)
    warm, evicting = get_device("host", evict_mib=0), get_device("host")
    assert warm.describe()["evict_mib"] == 0.0 and evicting.describe()["evict_mib"] == default_evict_mib() > 0
    handle = warm.open(path)
    pairs = [(warm.measure(handle, 20), evicting.measure(handle, 20)) for _ in range(9)]
    ratio = np.median([b for _, b in pairs]) / np.median([a for a, _ in pairs])
    assert ratio > 1.1, pairs


def test_the_default_eviction_is_a_quarter_of_the_last_level_cache_at_most_8_mib(tmp_path):
    def cache(index: str, level: int, kind: str, size: str) -> None:
        d = tmp_path / index
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")

    cache("index0", 1, "Data", "32K")
    cache("index1", 1, "Instruction", "64K")
    cache("index2", 2, "Unified", "512K")
    assert last_level_cache_mib(tmp_path) == 0.5
    cache("index3", 3, "Unified", "8192K")
    assert last_level_cache_mib(tmp_path) == 8.0
    assert last_level_cache_mib(tmp_path / "absent") is None
    (tmp_path / "index3" / "size").write_text("garbage\n")
    assert last_level_cache_mib(tmp_path) is None
    llc = last_level_cache_mib()
    assert default_evict_mib() == (8.0 if llc is None else min(8.0, llc / 4))
