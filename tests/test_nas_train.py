"""Supernet training: samplers, resume, errors, gradient projection, data, the train command."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latencykit.errors import LatencykitError
from latencykit.nas.data import digits, image_folder, load_dataset
from latencykit.nas.samplers import SAMPLERS, ComplexityAware, PerformanceAware, prefers_wide_shallow
from latencykit.nas.train import TrainConfig, TrainingError, train_supernet, project
from latencykit.space import SearchSpace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_nas_supernet import TINY  # noqa: E402


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("space") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


@pytest.fixture(scope="module")
def few_digits():
    d = digits()
    return d.subset(np.arange(120))


def config(space_file: str, out: Path, **kw) -> TrainConfig:
    base = TrainConfig(space=space_file, out=str(out), sampler="uniform", epochs=1, batch=16, resolution=16,
                       calib_batches=1, checkpoint_every=1, seed=3)
    return replace(base, **kw)


def test_every_sampler_draws_valid_subnets_and_round_trips_its_state(space_file):
    space = SearchSpace.from_dict(json.loads(Path(space_file).read_text()), "tiny")
    for name in SAMPLERS.names():
        a, b = SAMPLERS.get(name)(space, seed=1, total_steps=10), SAMPLERS.get(name)(space, seed=1, total_steps=10)
        for step in range(3):
            draws = a.draws(step)
            assert draws and all(space.validate(d.arch) for d in draws)
            for d in draws:
                a.observe(d.arch, float(step))
        b.load_state_dict(a.state_dict())
        assert [d.arch for d in a.draws(3)] == [d.arch for d in b.draws(3)], name
    sandwich = SAMPLERS.get("sandwich")(space).draws(0)
    assert sandwich[0].arch == space.largest() and sandwich[0].role == "sup"
    assert sandwich[1].arch == space.smallest() and all(d.target == "largest" for d in sandwich[1:])


def test_complexity_aware_moves_one_flops_level_at_most_and_uses_the_nearest_smallest(space_file):
    space = SearchSpace.from_dict(json.loads(Path(space_file).read_text()), "tiny")
    s = ComplexityAware(space, seed=0)
    levels = []
    for step in range(30):
        draws = s.draws(step)
        levels.append(s.level)
        flops = [space.flops(d.arch) for d in draws[:-1]]
        lo, hi = s.bin_flops[s.level].min(), s.bin_flops[s.level].max()
        assert all(lo <= f <= hi for f in flops)
        assert draws[-1].arch in [a for _, a in s.hss_set]
        assert space.largest() not in [d.arch for d in draws]
    assert max(abs(a - b) for a, b in zip(levels, levels[1:])) <= 1
    assert len(set(levels)) > 1
    assert s.nearest_min(0) == space.smallest()


def test_performance_aware_keeps_the_lowest_loss_subnets_per_level(space_file):
    space = SearchSpace.from_dict(json.loads(Path(space_file).read_text()), "tiny")
    s = PerformanceAware(space, seed=0, total_steps=20)
    for step in range(20):
        for i, d in enumerate(s.draws(step)):
            s.observe(d.arch, loss=float(space.params(d.arch)))  # lower params = "better" here
    for bank in s.bank:
        assert len(bank) <= s.bank_size
    filled = [b for b in s.bank if b]
    assert filled and s.q() == pytest.approx(0.8 - 0.6 / 20)
    anchor = space.smallest()
    assert prefers_wide_shallow(space, anchor, anchor)


def test_gradient_projection_removes_only_the_conflicting_component():
    sub = torch.tensor([1.0, 0.0])
    assert torch.equal(project(torch.tensor([1.0, 1.0]), sub), torch.tensor([2.0, 1.0]))
    g = project(torch.tensor([-1.0, 1.0]), sub)
    assert torch.allclose(g, torch.tensor([1.0, 1.0]))
    assert torch.dot(g - sub, sub) == 0


def test_interrupted_run_resumes_to_the_same_weights(space_file, few_digits, tmp_path):
    kw = dict(sampler="performance", grad_projection=True, scaling=True)
    straight, s1 = train_supernet(config(space_file, tmp_path / "a", **kw), dataset=few_digits)
    total = s1["total_steps"]
    assert s1["finished"] and s1["steps"] == total >= 4 and len(s1["history"]) == 1
    part, s2 = train_supernet(config(space_file, tmp_path / "b", max_steps=3, **kw), dataset=few_digits)
    assert not s2["finished"] and s2["steps"] == 3
    resumed, s3 = train_supernet(config(space_file, tmp_path / "b", **kw), dataset=few_digits)
    assert s3["finished"] and s3["steps"] == total
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert s1["history"] == s3["history"]
    row = s3["history"][0]
    assert row["train_resolution"] == 16 and row["deploy_resolution"] == 32
    assert 0.0 <= row["smallest_acc"] <= 1.0
    text = (tmp_path / "b" / "metrics.csv").read_text()
    assert text.startswith("epoch,step,space,data,sampler,train_resolution,deploy_resolution")
    assert (tmp_path / "b" / "accuracy.png").stat().st_size > 1000


def test_sandwich_with_a_teacher_checkpoint_learns_from_it(space_file, few_digits, tmp_path):
    """One step from the same seed without a teacher, with soft and with hard distillation: the
    teacher's outputs enter the loss, so each run ends with different weights."""
    train_supernet(config(space_file, tmp_path / "teacher", max_steps=1), dataset=few_digits)
    weights = {}
    for mode in (None, "soft", "hard"):
        teacher = str(tmp_path / "teacher" / "checkpoint.pt") if mode else None
        net, s = train_supernet(config(space_file, tmp_path / str(mode), sampler="sandwich", max_steps=1,
                                       teacher=teacher, distill=mode or "soft"), dataset=few_digits)
        assert s["steps"] == 1
        weights[mode] = {k: v.clone() for k, v in net.state_dict().items() if v.is_floating_point()}
    for a, b in [(None, "soft"), (None, "hard"), ("soft", "hard")]:
        assert any(not torch.equal(weights[a][k], weights[b][k]) for k in weights[a]), (a, b)


def test_clear_errors(space_file, few_digits, tmp_path):
    with pytest.raises(TrainingError, match="loss is (nan|inf)"):
        train_supernet(config(space_file, tmp_path / "nan", lr=1e30, max_steps=3), dataset=few_digits)
    train_supernet(config(space_file, tmp_path / "other", max_steps=1), dataset=few_digits)
    other = json.loads(Path(space_file).read_text()) | {"name": "tiny-other"}
    other_file = tmp_path / "other.json"
    other_file.write_text(json.dumps(other))
    with pytest.raises(TrainingError, match="checkpoint .* is for space tiny-hybrid"):
        train_supernet(config(str(other_file), tmp_path / "other", max_steps=1), dataset=few_digits)
    with pytest.raises(LatencykitError, match="does not exist"):
        load_dataset(str(tmp_path / "missing"))
    with pytest.raises(TrainingError, match="multiple of 16"):
        train_supernet(config(space_file, tmp_path / "res", resolution=24), dataset=few_digits)


def test_image_folder_dataset(tmp_path):
    tmp_path = tmp_path / "images"
    tmp_path.mkdir()
    for c, value in (("cat", 30), ("dog", 220)):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(np.full((10, 12, 3), value + i, dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    d = image_folder(tmp_path, size=8)
    assert d.classes == ("cat", "dog") and len(d) == 6 and d.images.shape == (6, 3, 8, 8)
    x, y = next(d.batches(4, 16, seed=0))
    assert x.shape == (4, 3, 16, 16) and set(y.tolist()) <= {0, 1}


def test_train_command_json(space_file, tmp_path, monkeypatch, capsys):
    from latencykit.cli import main

    monkeypatch.setattr(sys, "argv", ["latencykit", "train", "--space", space_file, "--out", str(tmp_path / "r"),
                                      "--max-steps", "1", "--batch", "16", "--resolution", "16", "--json"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train_resolution"] == 16 and summary["deploy_resolution"] == 32 and summary["steps"] == 1


def test_train_command_turns_a_missing_dataset_into_an_error_line(space_file, tmp_path, monkeypatch, capsys):
    from latencykit.cli import main

    monkeypatch.setattr(sys, "argv", ["latencykit", "train", "--space", space_file, "--out", str(tmp_path / "x"),
                                      "--data", str(tmp_path / "nope"), "--json"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: dataset folder")
