"""Paths a user walks through the command line that other tests do not: stale tables, `fit` and what
loads its output, `arch --which`, `check-supernet`, a broken device plugin, `search --flops`, and
subnets whose layers a table lacks. (Removal profiling with Ctrl-C and resume: test_scripted_tables.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TINY
from latencykit.arch import Arch
from latencykit.cli import main
from latencykit.lut.table import FORMAT_VERSION, LatencyTable, TableMeta, default_path
from latencykit.nas.search import Budget, SearchConfig, search
from latencykit.space import SearchSpace


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`latencykit ARGV` in-process: exit code, stdout, stderr."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(code: int, err: str, message: str) -> bool:
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def synthetic_table(space: SearchSpace, skip: set = frozenset(), **meta) -> LatencyTable:
    """A host table of `space` with made-up entries (0.1 ms + 0.01 ms per row), written where commands look."""
    layers = [l for l in space.distinct_layers() if l not in skip]
    table = LatencyTable.from_entries(TableMeta(device="host", space=space.name, space_digest=space.digest, **meta),
                                      layers, [{"latency_ms": 0.1 + i / 100, "runs": 3} for i in range(len(layers))])
    table.write(default_path("host", space.name))
    return table


def test_stale_tables_are_refused(tiny, tmp_path, capsys) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(tiny.smallest().to_json())
    predict = ["predict", str(arch), "-d", "host", "-s", TINY]
    synthetic_table(tiny)
    assert cli(capsys, *predict)[0] == 0
    changed = synthetic_table(tiny)
    LatencyTable(replace(changed.meta, space_digest="0" * len(tiny.digest)), changed.rows).write(
        default_path("host", "tiny"))
    code, _, err = cli(capsys, *predict)
    assert refused(code, err, "space 'tiny' has changed since this table was built"), err
    synthetic_table(tiny, format_version=FORMAT_VERSION + 1)
    code, _, err = cli(capsys, *predict)
    assert refused(code, err, f"was written by a newer latencykit (table format {FORMAT_VERSION + 1})"), err


def test_fit_saves_a_predictor_that_predict_loads(tiny, tmp_path, capsys) -> None:
    """Measurements exactly linear in MFLOPs and Mparams: `fit --predictor flops` recovers the line, and
    `predict` uses the saved fit for a subnet it was not fit on; a re-profiled table refuses the old fit."""
    synthetic_table(tiny, created="2026-01-01T00:00:00+00:00")
    truth = lambda a: 0.3 + 2.0 * tiny.flops(a) / 1e6 + 5.0 * tiny.params(a) / 1e6  # noqa: E731
    archs = [tiny.sample(s) for s in range(12)]
    archs = list(dict.fromkeys(archs))[:8]
    csv = tmp_path / "set.csv"
    csv.write_text("arch,ms\n" + "".join(f"\"{a.to_json().replace(chr(34), chr(34) * 2)}\",{truth(a)!r}\n"
                                         for a in archs))
    assert cli(capsys, "lut", "import", "measurements", str(csv), "-d", "host", "-s", TINY)[0] == 0
    code, out, err = cli(capsys, "fit", "-p", "flops", "-d", "host", "-s", TINY, "--json")
    assert code == 0, err
    saved = Path(json.loads(out)["path"])
    assert saved.is_file() and saved.parent == default_path("host", "tiny").parent
    other = next(a for a in (tiny.sample(s) for s in range(100, 200)) if a not in archs)
    arch = tmp_path / "other.json"
    arch.write_text(other.to_json())
    predict = ["predict", str(arch), "-p", "flops", "-d", "host", "-s", TINY, "--json"]
    code, out, err = cli(capsys, *predict)
    assert code == 0, err
    assert json.loads(out)["latency_ms"] == pytest.approx(truth(other), rel=1e-6)
    synthetic_table(tiny, created="2026-02-01T00:00:00+00:00")  # profiled again: the fit is stale
    code, _, err = cli(capsys, *predict)
    assert refused(code, err, "refit it with `latencykit fit`"), err


def test_arch_which(tiny, capsys) -> None:
    def which(*args: str) -> Arch:
        code, out, err = cli(capsys, "arch", "-s", TINY, *args)
        assert code == 0, err
        return tiny.validate(Arch.from_json(out))

    params = [tiny.params(tiny.sample(s)) for s in range(200)]
    assert tiny.params(which("--which", "largest")) >= max(params)
    assert tiny.params(which("--which", "smallest")) <= min(params)
    assert which("--seed", "3") == which("--which", "random", "--seed", "3") != which("--seed", "4")


def test_check_supernet_reports_every_checked_arch(capsys) -> None:
    code, out, err = cli(capsys, "check-supernet", "--space", TINY, "--random", "1", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 3
    for row in rows:
        assert row["max_abs_diff"] < 1e-4


def test_a_broken_device_plugin_is_named_and_spares_the_rest(tmp_path) -> None:
    site = tmp_path / "site"
    dist = site / "broken_device-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-device\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[latencykit.devices]\nbroken-cpu = no_such_module:Device\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)])}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "latencykit", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    listed = run("devices", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "host" in {d["device"] for d in json.loads(listed.stdout)}
    used = run("profile", "-d", "broken-cpu", "-s", TINY)
    assert refused(used.returncode, used.stderr, "device 'broken-cpu' failed to load: no_such_module:Device"), used.stderr
    assert "ModuleNotFoundError" in used.stderr


def test_search_with_a_flops_budget(tiny, tmp_path, capsys) -> None:
    """--flops through the CLI, with the parameter count as the score: the choice is the subnet with the
    most parameters under the FLOPs budget, found by brute force over the space."""
    synthetic_table(tiny)
    rows = np.unique(tiny.sample_genes(50_000, 0), axis=0)
    flops = tiny.evaluate(tiny.flops_values, rows)
    params = tiny.evaluate(tiny.params_values, rows)
    limit = float(np.median(flops))
    best = int(np.argmax(np.where(flops <= limit, params, -1)))
    code, out, err = cli(capsys, "search", "-s", TINY, "-d", "host", "--flops", f"{limit / 1e6:.6f}M",
                         "--proxy", "params", "--method", "random", "--coarse-samples", "100000",
                         "--population", "5000", "--no-measure", "--no-cache", "--threads", "1",
                         "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    chosen = json.loads(out)[0]
    chosen_arch = tiny.validate(Arch.from_dict(chosen["best"]["arch"]))
    assert tiny.flops(chosen_arch) <= limit
    assert tiny.params(chosen_arch) == params[best]


def test_subnets_with_layers_missing_from_the_table_are_never_feasible(tiny) -> None:
    """A table without the largest subnet's last transformer layer: every subnet using it predicts NaN,
    and however loose the budget, search never counts one feasible."""
    from latencykit.lut.predictors import get_predictor

    missing = [l for l in tiny.layers(tiny.largest()) if l.kind == "transformer"][-1]
    table = synthetic_table(tiny, skip={missing})
    pred = get_predictor("isolated").fit(tiny, table)
    rows = np.unique(tiny.sample_genes(50_000, 0), axis=0)
    uses = np.array([missing in tiny.layers(tiny.decode(r)) for r in rows])
    lat = pred.predict_genes(rows)
    assert uses.any() and np.isnan(lat[uses]).all() and np.isfinite(lat[~uses]).all()
    params_score = lambda arch: float(tiny.params(arch))  # noqa: E731 - prefers the largest: the missing layer
    for method in ("coarse-to-fine", "evolution", "random"):
        r = search(tiny, params_score, Budget(latency_ms=1e9), pred.predict_genes,
                   SearchConfig(method=method, population=12, generations=3, parents=4, coarse_samples=2000))
        assert r.evaluated and all(np.isfinite(c.latency_ms) for c in r.evaluated), method
        assert all(missing not in tiny.layers(c.arch) for c in r.evaluated), method
        assert np.isfinite(r.best.latency_ms) and missing not in tiny.layers(r.best.arch)


@pytest.mark.parametrize("fmt", [pytest.param("tflite", marks=pytest.mark.slow), "coreml"])  # tflite: about 10 s
def test_export_to_tflite_and_coreml(fmt, tiny, tmp_path, capsys) -> None:
    """`export --format` writes a file of the seeded subnet: the TFLite one computes what torch does,
    the Core ML one has its structure (it runs only on macOS)."""
    from latencykit.export import seeded_network
    from latencykit.exporters import TFLITE_TOLERANCE, check_coreml, check_tflite

    arch = tmp_path / "a.json"
    arch.write_text(tiny.smallest().to_json())
    code, out, err = cli(capsys, "export", str(arch), "-s", TINY, "--format", fmt, "--json")
    assert code == 0, err
    written = Path(json.loads(out)["path"])
    module, inputs = seeded_network(tiny.layers(tiny.smallest()))
    if fmt == "tflite":
        assert written == tmp_path / "a.tflite"
        assert check_tflite(written, module, inputs) <= TFLITE_TOLERANCE
    else:
        assert written == tmp_path / "a.mlpackage"
        info = check_coreml(written, module, inputs)
        assert len(info["inputs"]) == 1 and len(info["outputs"]) == 1


def test_search_with_a_supernet_checkpoint_scores_by_its_accuracy(tmp_path, capsys) -> None:
    """`train` a supernet for one step on a 20-image folder, then `search --checkpoint`: the signal is the
    subnet's validation accuracy with inherited weights, and the reported score is the chosen subnet's."""
    from PIL import Image

    from latencykit.nas.proxies import SupernetAccuracy
    from latencykit.space import load_space
    from test_nas_supernet import TINY as HYBRID

    space_file = tmp_path / "hybrid.json"
    space_file.write_text(json.dumps(HYBRID))
    space = load_space(str(space_file))
    rng = np.random.default_rng(0)
    for c in ("dark", "light"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 120, (8, 8, 3)) + (120 if c == "light" else 0)
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "data" / c / f"{i}.png")
    code, _, err = cli(capsys, "train", "--space", str(space_file), "--data", str(tmp_path / "data"),
                       "--out", str(tmp_path / "run"), "--max-steps", "1", "--batch", "8", "--resolution", "16")
    assert code == 0, err
    synthetic_table(space)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    code, out, err = cli(capsys, "search", "-s", str(space_file), "-d", "host", "--checkpoint", str(checkpoint),
                         "--method", "random", "--population", "3", "--generations", "0", "--coarse-samples", "50",
                         "--no-measure", "--no-cache", "--threads", "1", "--out", str(tmp_path / "out"), "--json")
    assert code == 0, err
    result = json.loads(out)[0]
    assert result["signal"] == "supernet" and result["signal_kind"] == "accuracy"
    assert result["accuracy_evaluations"] == 3
    best = space.validate(Arch.from_dict(result["best"]["arch"]))
    assert result["best"]["score"] == pytest.approx(SupernetAccuracy(space, str(checkpoint)).score(best))
