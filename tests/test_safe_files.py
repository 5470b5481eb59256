"""Files from elsewhere run no code; files written here are whole or untouched; one writer per table."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import SHARED, TINY
from latencykit.cli import main
from latencykit.files import FileWriteError, TableBusyError, atomic_write, atomic_write_text, writer_lock
from latencykit.lut.table import default_path
from latencykit.nas.samplers import SAMPLERS
from latencykit.nas.train import TrainingError, load_checkpoint, train_supernet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_nas_train import config, few_digits, space_file  # noqa: E402,F401  (fixtures)


class Payload:
    """Unpickling this creates `marker`: a stand-in for any code a crafted file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_checkpoint(path: Path, marker: Path, legacy: bool = False) -> Path:
    state = {"format": 1, "space": "tiny", "model": {}, "optimizer": Payload(marker)}
    if legacy:
        path.write_bytes(pickle.dumps(state))
    else:
        torch.save(state, path)
    return path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("legacy", [False, True], ids=["torch-zip", "plain-pickle"])
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(legacy, tmp_path) -> None:
    marker = tmp_path / "code-ran"
    evil = evil_checkpoint(tmp_path / "shared.pt", marker, legacy)
    arch = tmp_path / "arch.json"
    arch.write_text(subprocess.run([sys.executable, "-m", "latencykit", "arch", "--space", TINY, "--which", "smallest"],
                                   capture_output=True, text=True, check=True).stdout)
    result = subprocess.run([sys.executable, "-m", "latencykit", "export", str(arch), "--space", TINY,
                             "--checkpoint", str(evil)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "refusing to load" in one_line(result.stderr) and "could run code" in result.stderr
    assert not marker.exists()


def test_a_crafted_checkpoint_in_a_run_folder_or_as_teacher_is_refused(space_file, tmp_path, capsys) -> None:
    marker = tmp_path / "code-ran"
    run = tmp_path / "run"
    run.mkdir()
    evil_checkpoint(run / "checkpoint.pt", marker)
    for argv in (["train", "--space", space_file, "--out", str(run), "--max-steps", "1"],
                 ["train", "--space", space_file, "--out", str(tmp_path / "other"), "--max-steps", "1",
                  "--teacher", str(run / "checkpoint.pt")],
                 ["search", "--space", space_file, "--device", "host", "--checkpoint", str(run / "checkpoint.pt"),
                  "--no-measure"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        assert "refusing to load" in one_line(capsys.readouterr().err), argv
        assert not marker.exists()
    with pytest.raises(TrainingError, match="refusing to load"):
        load_checkpoint(run / "checkpoint.pt")
    assert not marker.exists()


@pytest.mark.parametrize("sampler", SAMPLERS.names())
def test_every_sampler_checkpoints_plain_data_and_resumes(sampler, space_file, few_digits, tmp_path) -> None:
    out = tmp_path / sampler
    train_supernet(config(space_file, out, sampler=sampler, max_steps=1), dataset=few_digits)
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # tensors and plain containers only
    assert state["step"] == 1 and json.dumps(state["config"]) and json.dumps(state["sampler"])
    _, summary = train_supernet(config(space_file, out, sampler=sampler, max_steps=2), dataset=few_digits)
    assert summary["steps"] == 2


# -- writes and locks ------------------------------------------------------------------------------

def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path) -> None:
    target = atomic_write_text(tmp_path / "folder" / "table.json", "old")

    def full_disk(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(FileWriteError, match="No space left on device; the previous file is unchanged"):
        atomic_write(target, full_disk)
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["table.json"]


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path) -> None:
    table = tmp_path / "tables" / "host" / "tiny.parquet"
    with writer_lock(table):
        with pytest.raises(TableBusyError, match=f"process {os.getpid()} is already writing"):
            with writer_lock(table):
                pass
        other = subprocess.run([sys.executable, "-c", "from latencykit.files import writer_lock\n"
                                f"with writer_lock({str(table)!r}): pass"], capture_output=True, text=True)
        assert other.returncode != 0 and f"process {os.getpid()} is already writing" in other.stderr
    with writer_lock(table):  # released: the next writer gets it
        pass


def test_lut_import_refuses_while_a_profile_holds_the_table(home, tmp_path) -> None:
    path = default_path("pixel4", "elasticvit")
    data = SHARED / "data" / "nn-meter-luts" / "pixel4_lut_ln_v3.json"
    with writer_lock(path):
        result = subprocess.run([sys.executable, "-m", "latencykit", "lut", "import", "nn-meter", str(data),
                                 "--device", "pixel4", "--space", "elasticvit"],
                                capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and f"process {os.getpid()} is already writing" in one_line(result.stderr)
    assert not path.exists()
