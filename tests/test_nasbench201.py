"""NAS-Bench-201: cell strings, the space against torch, measurement sets and few-shot transfer."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from conftest import SHARED
from test_cli import assert_one_line_error, cli
from latencykit.arch import Arch, cell_string, parse_cell
from latencykit.blocks import build
from latencykit.errors import ArchitectureError
from latencykit.space import load_space

DATA = SHARED / "data" / "nasbench201-latency" / "latency_ms.csv"
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
DEAD = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"  # node 3 reads only node 0... via skip
UNREACHABLE = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|none~0|none~1|none~2|"
needs_data = pytest.mark.skipif(not DATA.is_file(), reason="shared NAS-Bench-201 latency data not present")


@pytest.fixture(scope="module")
def nb():
    return load_space("nasbench201")


def test_cell_strings_round_trip_and_bad_ones_name_the_problem(nb) -> None:
    arch = nb.validate(Arch.from_json(CELL))
    assert arch.cell_string == CELL and cell_string(parse_cell(CELL)) == CELL
    assert Arch.from_json(arch.to_json()) == arch and nb.decode(nb.encode(arch)) == arch
    for bad, words in [("|conv~0|+|none~0|", "node 2 has 1"), ("|none~1|", "'op~0'"), ("|nope~0|+|none~0|none~1|+"
                       "|none~0|none~1|none~2|", "not one of")]:
        with pytest.raises(ArchitectureError, match=words):
            nb.validate(Arch.from_json(bad))


def test_space_matches_the_paper_and_torch(nb) -> None:
    assert nb.size() == 15625 == len({tuple(g) for g in nb.all_genes()})
    assert round(nb.params(nb.smallest()) / 1e6, 3) == 0.073 and round(nb.params(nb.largest()) / 1e6, 3) == 1.532
    assert round(nb.flops(nb.smallest()) / 1e6, 1) == 7.8 and round(nb.flops(nb.largest()) / 1e6, 1) == 220.1
    for text in (CELL, UNREACHABLE, DEAD):
        arch = nb.validate(Arch.from_json(text))
        net = build(nb.layers(arch))
        assert sum(p.numel() for p in net.parameters()) == nb.params(arch)
        macs = []
        hooks = [m.register_forward_hook(lambda m, i, o: macs.append(
            o.numel() * m.in_channels * m.kernel_size[0] ** 2 // m.groups if isinstance(m, torch.nn.Conv2d)
            else m.in_features * m.out_features)) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
        [h.remove() for h in hooks]
        assert sum(macs) == nb.flops(arch)


def test_an_unreachable_cell_is_valid_and_computes_a_constant(nb) -> None:
    arch = nb.validate(Arch.from_json(UNREACHABLE))
    assert not nb.live_edges(nb.encode(arch)).any()
    net = build(nb.layers(arch))
    a, b = net(torch.randn(1, 3, 32, 32)), net(torch.randn(1, 3, 32, 32))
    assert torch.allclose(a, b)


def test_whole_network_exports_to_onnx_and_runs(nb, tmp_path: Path) -> None:
    import onnxruntime as ort

    from latencykit.export import ExportCache, export_network

    arch = nb.validate(Arch.from_json(CELL))
    path = export_network(nb.layers(arch), ExportCache(tmp_path), "onnx")
    x = torch.randn(1, 3, 32, 32)
    torch.manual_seed(0)
    out = ort.InferenceSession(str(path)).run(None, {"input0": x.numpy()})[0]
    torch.manual_seed(0)
    assert np.allclose(out, build(nb.layers(arch))(x).detach().numpy(), atol=1e-4)


def write_csv(path: Path, rows: list[tuple[str, object]], header=("arch", "ms")) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def test_import_refuses_bad_rows_with_one_line(tmp_path: Path, nb) -> None:
    good = nb.sample(0).cell_string
    for rows, words in [([(good, "-1")], "line 2"), ([(good, "nan")], "not a positive"),
                        ([("|bogus~0|", "3")], "not an architecture"), ([(good, "3"), (good, "4")], "repeats")]:
        r = cli("lut", "import", "measurements", str(write_csv(tmp_path / "bad.csv", rows)), "--device", "p9",
                "--space", "nasbench201")
        assert_one_line_error(r, words)
    r = cli("lut", "import", "measurements", str(write_csv(tmp_path / "w.csv", [(good, 3)], ("arch", "a", "b"))),
            "--device", "p9", "--space", "nasbench201")
    assert_one_line_error(r, "--column")


def synthetic_devices(nb, n: int = 1500) -> dict:
    """Three devices whose latency is linear in the counts with different per-op costs, plus noise."""
    from latencykit.lut.transfer import count_features

    genes = nb.all_genes()[np.random.default_rng(0).choice(nb.size(), n, replace=False)]
    _, counts = count_features(nb, genes)
    rng = np.random.default_rng(0)
    out = {}
    for d, scale in (("gpu", 1.0), ("cpu", 3.0), ("target", 2.0)):
        coef = rng.uniform(0.2, 1.0, counts.shape[1]) * scale
        out[d] = (genes, (5 + counts @ coef) * rng.lognormal(0, 0.02, n))
    return out


def test_transfer_from_imported_sets_predicts_a_file_and_reports_cv(tmp_path: Path, nb, home: Path) -> None:
    devices = synthetic_devices(nb)
    for d in ("gpu", "cpu"):
        genes, ms = devices[d]
        rows = [(nb.decode(g).cell_string, f"{v:.4f}") for g, v in zip(genes, ms)]
        assert cli("lut", "import", "measurements", str(write_csv(tmp_path / f"{d}.csv", rows)), "--device", d,
                   "--space", "nasbench201").returncode == 0
    genes, ms = devices["target"]
    r = cli("lut", "import", "measurements", str(write_csv(tmp_path / "t.csv", [(nb.decode(g).cell_string, v)
            for g, v in zip(genes[:10], ms[:10])])), "--device", "newphone", "--space", "nasbench201", "--json")
    assert r.returncode == 0, r.stderr
    stored = json.loads(r.stdout)
    assert stored["count"] == 10 and stored["column"] == "ms" and len(stored["sha256"]) == 64
    r = cli("fit", "--predictor", "transfer", "--device", "newphone", "--space", "nasbench201")
    assert r.returncode == 0, r.stderr
    assert "cross-validated error" in r.stdout and "references: cpu, gpu" in r.stdout
    archs = tmp_path / "archs.txt"
    archs.write_text("\n".join(nb.decode(g).cell_string for g in genes[10:]) + "\n")
    r = cli("predict", "--archs", str(archs), "--device", "newphone", "--space", "nasbench201", "--out",
            str(tmp_path / "p.csv"))
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "p.csv") as f:
        pred = np.array([float(row["predicted_ms"]) for row in csv.DictReader(f)])
    assert len(pred) == len(genes) - 10
    flops = nb.evaluate(nb.flops_values, genes[10:])
    assert spearmanr(pred, ms[10:]).statistic > max(0.9, spearmanr(flops, ms[10:]).statistic)
    assert np.median(np.abs(pred / ms[10:] - 1)) < 0.1
    # search runs from the transfer predictor of a device known only by measurements
    r = cli("search", "--space", "nasbench201", "--device", "newphone", "--latency", f"{np.median(ms):.2f}ms",
            "--proxy", "params", "--population", "6", "--generations", "1", "--parents", "2", "--coarse-samples",
            "200", "--out", str(tmp_path / "s"), "--json")
    assert r.returncode == 0, r.stderr
    best = json.loads(r.stdout)[0]
    assert best["best"]["latency_ms"] <= np.median(ms) + 1e-6


def test_a_device_known_only_by_measurements_asks_for_a_fit(tmp_path: Path, nb) -> None:
    rows = [(nb.sample(s).cell_string, 3 + s) for s in range(5)]
    assert cli("lut", "import", "measurements", str(write_csv(tmp_path / "m.csv", rows)), "--device", "p9",
               "--space", "nasbench201").returncode == 0
    arch = tmp_path / "a.txt"
    arch.write_text(CELL + "\n")
    assert_one_line_error(cli("predict", str(arch), "--device", "p9", "--space", "nasbench201"),
                          "fit --predictor transfer")


@pytest.mark.slow
def test_measure_set_on_the_host_then_transfer(nb) -> None:
    r = cli("measure-set", "--device", "host", "--space", "nasbench201", "--samples", "4", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["count"] == 4
    r = cli("fit", "--predictor", "transfer", "--device", "host", "--space", "nasbench201", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == "flops"  # no other device known: the baseline is all there is


@pytest.mark.slow
@needs_data
def test_ten_measurements_of_a_new_device_predict_all_15625_quickly(tmp_path: Path, nb) -> None:
    import pandas as pd

    data = pd.read_csv(DATA)
    for col in [c for c in data.columns if c not in ("index", "arch", "pixel3")]:
        assert cli("lut", "import", "measurements", str(DATA), "--device", col, "--column", col,
                   "--space", "nasbench201").returncode == 0
    k10 = data.sample(10, random_state=3)
    write_csv(tmp_path / "k.csv", list(zip(k10["arch"], k10["samsung_s7"] * 1.3)))
    data[["arch"]].to_csv(tmp_path / "all.csv", index=False)
    start = time.perf_counter()
    assert cli("lut", "import", "measurements", str(tmp_path / "k.csv"), "--device", "s7b", "--space",
               "nasbench201").returncode == 0
    r = cli("fit", "--predictor", "transfer", "--device", "s7b", "--space", "nasbench201")
    assert r.returncode == 0 and "cross-validated error" in r.stdout
    r = cli("predict", "--archs", str(tmp_path / "all.csv"), "--device", "s7b", "--space", "nasbench201")
    assert r.returncode == 0, r.stderr
    seconds = time.perf_counter() - start
    pred = pd.read_csv(tmp_path / "all.s7b.predicted.csv")["predicted_ms"].to_numpy()
    assert len(pred) == 15625 and spearmanr(pred, data["samsung_s7"]).statistic > 0.85
    print(f"import + fit + predict 15625: {seconds:.1f} s")


def test_a_measurement_near_zero_is_left_out_of_the_transfer_fit(nb) -> None:
    """One network optimised away on the device (timed at microseconds) must not decide the fit: with
    relative-error weights it would, and the predictions would be wrong everywhere else."""
    from latencykit.lut.transfer import Reference, count_features, design_matrix, fit_transfer

    devices = synthetic_devices(nb)
    genes, y = devices["target"]
    names, counts = count_features(nb, genes)
    design = design_matrix(counts, nb.evaluate(nb.flops_values, genes) / 1e6)
    refs = [Reference.fit(d, count_features(nb, g)[1], ms) for d, (g, ms) in devices.items() if d != "target"]
    k = np.arange(10)
    clean = fit_transfer(design[k], y[k], refs, len(names))
    broken_y = y[k].copy()
    broken_y[3] = 0.003
    fit = fit_transfer(design[k], broken_y, refs, len(names))
    assert fit.cv["left_out"] == 1 and "1 measured under 10% of the median left out" in fit.cv["method"]
    assert clean.cv["left_out"] == 0
    nine = fit_transfer(design[k[k != 3]], y[k[k != 3]], refs, len(names))
    np.testing.assert_allclose(fit.coef, nine.coef)
    rho = {name: spearmanr(f.predict(design), y).statistic for name, f in (("clean", clean), ("broken", fit))}
    assert rho["broken"] > 0.9 and rho["broken"] >= rho["clean"] - 0.02, rho
