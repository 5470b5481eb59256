"""Importing nn-Meter's published phone tables: predictions equal hand sums of the published entries,
the eight ElasticViT models land where the paper measured them, bad files and missing layers are
reported, never silently used or dropped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from latencykit.arch import Arch, StageArch
from latencykit.cli import app, main
from latencykit.elasticvit import arch_from_tuple
from latencykit.errors import TableError
from latencykit.lut.importers import FILLERS, import_table, write_import
from latencykit.lut.predictors import Predictor, get_predictor
from latencykit.lut.table import LatencyTable, default_path
from latencykit.space import load_space

from conftest import SHARED

LUTS = SHARED / "data" / "nn-meter-luts"
MODELS = json.loads((SHARED / "data" / "elasticvit-models" / "models.json").read_text())["models"]
PHONES = ("pixel1", "pixel4", "pixel6", "xiaomi11")


def lut(phone: str) -> Path:
    return LUTS / f"{phone}_lut_ln_v3.json"


@pytest.fixture(scope="module")
def space():
    return load_space("elasticvit")


@pytest.fixture(scope="module")
def published() -> dict[str, dict[str, float]]:
    return {p: json.loads(lut(p).read_text()) for p in PHONES}


@pytest.fixture(scope="module")
def imported(space):
    """phone -> Predictor on its imported table, built once per module."""
    cache: dict[str, Predictor] = {}

    def get(phone: str) -> Predictor:
        if phone not in cache:
            cache[phone] = get_predictor("isolated").fit(space, import_table("nn-meter", lut(phone), phone, space).table)
        return cache[phone]

    return get


# Hand-written architectures and, written out by hand from nn-Meter's key format, the entries they sum.
SMALL = Arch(128, 16, (
    StageArch(16, 1, expand=(1,), kernel=(3,)),
    StageArch(24, 2, expand=(3, 4), kernel=(3, 5)),
    StageArch(32, 2, expand=(6, 3), kernel=(5, 3)),
    StageArch(48, 1, mlp_ratio=(2,), v_scale=(2,)),
    StageArch(80, 2, mlp_ratio=(3, 4), v_scale=(3, 2)),
    StageArch(144, 1, mlp_ratio=(5,), v_scale=(4,)),
    StageArch(160, 1, mlp_ratio=(2,), v_scale=(2,)),
))
SMALL_KEYS = [
    "firstconv_128_3_16_2_3",
    "conv_64_16_16_1_1_hard_swish_3_nose",
    "conv_64_16_24_3_2_hard_swish_3_nose", "conv_32_24_24_4_1_hard_swish_5_nose",
    "conv_32_24_32_6_2_hard_swish_5_se", "conv_16_32_32_3_1_hard_swish_3_se",
    "transds_16_32_48_2_6", "transattn_8_48_hard_swish_2_ln", "transffn_8_48_2_hard_swish_ln",
    "transds_8_48_80_1_6", "transattn_8_80_hard_swish_3_ln", "transffn_8_80_3_hard_swish_ln",
    "transattn_8_80_hard_swish_2_ln", "transffn_8_80_4_hard_swish_ln",
    "transds_8_80_144_2_6", "transattn_4_144_hard_swish_4_ln", "transffn_4_144_5_hard_swish_ln",
    "transds_4_144_160_2_6", "transattn_2_160_hard_swish_2_ln", "transffn_2_160_2_hard_swish_ln",
    "mbpool_2_160_1984_6_hard_swish",
]
# At 224 the maps go 112, 112, 56, 28, 14, 14, 7, 3: odd maps round down as nn-Meter keys them.
ODD = Arch(224, 24, (
    StageArch(24, 2, expand=(1, 1), kernel=(5, 3)),
    StageArch(32, 2, expand=(5, 5), kernel=(3, 3)),
    StageArch(48, 2, expand=(4, 4), kernel=(3, 3)),
    StageArch(96, 1, mlp_ratio=(2,), v_scale=(4,)),
    StageArch(160, 1, mlp_ratio=(2,), v_scale=(2,)),
    StageArch(288, 1, mlp_ratio=(3,), v_scale=(3,)),
    StageArch(320, 1, mlp_ratio=(4,), v_scale=(2,)),
))
ODD_KEYS = [
    "firstconv_224_3_24_2_3",
    "conv_112_24_24_1_1_hard_swish_5_nose", "conv_112_24_24_1_1_hard_swish_3_nose",
    "conv_112_24_32_5_2_hard_swish_3_nose", "conv_56_32_32_5_1_hard_swish_3_nose",
    "conv_56_32_48_4_2_hard_swish_3_se", "conv_28_48_48_4_1_hard_swish_3_se",
    "transds_28_48_96_2_6", "transattn_14_96_hard_swish_4_ln", "transffn_14_96_2_hard_swish_ln",
    "transds_14_96_160_1_6", "transattn_14_160_hard_swish_2_ln", "transffn_14_160_2_hard_swish_ln",
    "transds_14_160_288_2_6", "transattn_7_288_hard_swish_3_ln", "transffn_7_288_3_hard_swish_ln",
    "transds_7_288_320_2_6", "transattn_3_320_hard_swish_2_ln", "transffn_3_320_4_hard_swish_ln",
    "mbpool_3_320_1984_6_hard_swish",
]


def test_prediction_is_the_hand_sum(space, published) -> None:
    for phone in ("pixel4", "pixel6"):
        result = write_import("nn-meter", lut(phone), phone, space)
        assert result.path == default_path(phone, "elasticvit")
        assert result.coverage.share == 1.0 and not result.coverage.missing
        predictor = get_predictor("isolated").fit(load_space("elasticvit"), LatencyTable.read(default_path(phone, "elasticvit")))
        for arch, keys in ((SMALL, SMALL_KEYS), (ODD, ODD_KEYS)):
            assert predictor.predict(arch) == pytest.approx(sum(published[phone][k] for k in keys), rel=1e-12)


def test_table_records_provenance(space) -> None:
    result = import_table("nn-meter", lut("pixel1"), "pixel1", space)
    meta, rows = result.table.meta, result.table.rows
    assert meta.mode == "imported" and meta.space_digest == space.digest and meta.device == "pixel1"
    assert set(rows["source"]) == {"imported"}
    assert "nn-Meter" in meta.provenance["measured_by"] and "TFLite CPU" in meta.provenance["runtime"]
    assert meta.provenance["file"] == str(lut("pixel1").resolve())
    assert len(meta.provenance["sha256"]) == 64
    assert len(rows) == len(space.distinct_layers())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_published_models_match_the_paper(imported, name: str) -> None:
    """The sum of published entries for ElasticViT's models lands within -0.5..3.4% of Table 2."""
    model = MODELS[name]
    ms = imported(model["phone"]).predict(arch_from_tuple(model["tuple"]))
    assert -0.005 <= ms / model["ms"] - 1 <= 0.0345


def test_random_subnets_fully_covered(space, imported) -> None:
    values = imported("xiaomi11").predict_genes(space.sample_genes(2000, 1))
    assert np.isfinite(values).all() and (values > 0).all()


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2, 3]", "expected a non-empty JSON object"),
    ("{}", "expected a non-empty JSON object"),
    ('{"resnet50.layer1": 1.5, "resnet50.layer2": 2.0}', "none of its 2 keys is an nn-Meter block key"),
    ('{"firstconv_128_3_16_2_3": 0.5, "conv_x": 1.0}', "key 'conv_x' is not an nn-Meter block key"),
    ('{"firstconv_128_3_16_2_3": -0.5}', "expected a positive number of ms"),
    ('{"firstconv_128_3_16_2_3": "fast"}', "expected a positive number of ms"),
])
def test_malformed_or_foreign_file_is_rejected(space, tmp_path: Path, content: str, message: str, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(TableError, match=message):
        import_table("nn-meter", bad, "pixel4", space)
    with pytest.raises(SystemExit) as exit_info:
        main(["lut", "import", "nn-meter", str(bad), "--device", "pixel4", "--space", "elasticvit"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err and "Traceback" not in err
    assert not default_path("pixel4", "elasticvit").exists()


def test_cli_one_line_error(tmp_path: Path) -> None:
    """Through the real entry point: one line on stderr, exit 2."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1}')
    proc = subprocess.run([sys.executable, "-m", "latencykit", "lut", "import", "nn-meter", str(bad),
                           "--device", "pixel4", "--space", "elasticvit"],
                          capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "not an nn-Meter ElasticViT table" in proc.stderr


def test_cli_predict_on_an_imported_phone(space, published, tmp_path: Path) -> None:
    """`latencykit predict --device pixel6 --space elasticvit ARCH.json` off the imported table."""
    write_import("nn-meter", lut("pixel6"), "pixel6", space)
    arch = tmp_path / "arch.json"
    arch.write_text(ODD.to_json())
    result = CliRunner().invoke(app, ["predict", str(arch), "--device", "pixel6", "--space", "elasticvit", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["latency"] == "predicted" and data["table_sources"] == ["imported"] and data["predictor"] == "isolated"
    assert data["latency_ms"] == pytest.approx(sum(published["pixel6"][k] for k in ODD_KEYS), rel=1e-12)
    listed = json.loads(CliRunner().invoke(app, ["devices", "--json"]).output)
    pixel6 = next(d for d in listed if d["device"] == "pixel6")
    assert pixel6["reason"] == "table only, no device attached" and pixel6["tables"] == ["elasticvit"]


@pytest.fixture
def partial(tmp_path: Path, published) -> Path:
    """Pixel 4's file without every 224-resolution stem entry and one MLP entry."""
    entries = {k: v for k, v in published["pixel4"].items()
               if not k.startswith("firstconv_224_") and k != "transffn_14_160_5_hard_swish_ln"}
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(entries))
    return path


def test_missing_layers_are_refused(space, partial: Path) -> None:
    with pytest.raises(TableError, match=r"lacks 3 of the \d+ layers .*pass a layer predictor"):
        import_table("nn-meter", partial, "pixel4", space)
    # a space whose layers nn-Meter's ElasticViT tables cannot describe at all (swish, talking heads)
    with pytest.raises(TableError, match=r"0\.0% covered.*have no nn-meter key at all"):
        import_table("nn-meter", lut("pixel4"), "pixel4", load_space("nasvit"))


def test_missing_layers_filled_by_a_layer_predictor(space, partial: Path, published) -> None:
    def per_flop(space, missing, known):
        """A stand-in layer predictor: the median ms per MAC of the imported layers of the same kind."""
        rate = {}
        for spec, ms in known.items():
            rate.setdefault(spec.kind, []).append(ms / spec.flops)
        return {s: float(np.median(rate[s.kind])) * s.flops for s in missing}

    result = import_table("nn-meter", partial, "pixel4", space, fill=per_flop, fill_name="per-flop")
    rows = result.table.rows
    assert (rows["source"] == "predicted").sum() == 3
    assert set(rows.loc[rows["source"] == "predicted", "key"]) == set(result.coverage.missing)
    assert result.table.meta.provenance["filled_by"] == "per-flop"
    # an architecture using a filled layer still predicts; one using only imported layers is exact
    predictor = get_predictor("isolated").fit(space, result.table)
    assert predictor.predict(SMALL) == pytest.approx(sum(published["pixel4"][k] for k in SMALL_KEYS))
    assert np.isfinite(predictor.predict(ODD))


def test_learned_layer_predictor_fills_missing_layers(space, partial: Path, published) -> None:
    """`--fill layer`: latencykit's per-kind random forests, fit on the imported entries."""
    result = CliRunner().invoke(app, ["lut", "import", "nn-meter", str(partial), "--device", "pixel4",
                                      "--space", "elasticvit", "--fill", "layer", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["sources"] == {"imported": data["entries"] - 3, "predicted": 3}
    table = LatencyTable.read(default_path("pixel4", "elasticvit"))
    assert table.meta.provenance["filled_by"] == "layer"
    truth = {"stem:hw=224,cin=3,cout=16,stride=2,kernel=3,act=hswish": published["pixel4"]["firstconv_224_3_16_2_3"],
             "stem:hw=224,cin=3,cout=24,stride=2,kernel=3,act=hswish": published["pixel4"]["firstconv_224_3_24_2_3"],
             "transffn:hw=14,cin=160,cout=160,mlp_ratio=5,act=hswish":
                 published["pixel4"]["transffn_14_160_5_hard_swish_ln"]}
    rows = table.rows[table.rows["source"] == "predicted"]
    assert set(rows["key"]) == set(truth)
    for key, ms in zip(rows["key"], rows["latency_ms"]):
        assert 0.5 < ms / truth[key] < 2.0, (key, ms, truth[key])  # a sane estimate, not the measurement


def test_unknown_filler_is_named(partial: Path) -> None:
    result = CliRunner().invoke(app, ["lut", "import", "nn-meter", str(partial), "--device", "pixel4",
                                      "--space", "elasticvit", "--fill", "nope"])
    assert result.exit_code == 2 and "'nope' is not one of 'layer'" in result.output  # refused at the edge
    assert "nope" not in FILLERS


def test_architecture_with_missing_layers_is_reported(space, imported) -> None:
    """A table lacking layers (e.g. an older import) names them instead of dropping them."""
    table = imported("pixel6").table
    keep = ~table.rows["key"].str.startswith("stem:hw=224")
    partial = LatencyTable(table.meta, table.rows[keep].reset_index(drop=True))
    predictor = get_predictor("isolated").fit(space, partial)
    with pytest.raises(TableError, match=r"1 layer\(s\) of this architecture are missing .*stem:hw=224"):
        predictor.predict(ODD)
    assert np.isnan(predictor.predict_many([ODD])[0])
    assert np.isfinite(predictor.predict(SMALL))


def test_cli_import_json(tmp_path: Path) -> None:
    out = tmp_path / "p6.parquet"
    result = CliRunner().invoke(app, ["lut", "import", "nn-meter", str(lut("pixel6")), "--device", "pixel6",
                                      "--space", "elasticvit", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["coverage"] == 1.0 and data["missing"] == [] and data["path"] == str(out)
    assert data["sources"] == {"imported": data["entries"]}
    assert LatencyTable.read(out).meta.device == "pixel6"
