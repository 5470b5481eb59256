"""Bad input through every command and option of `latencykit --help`: exit code 2, one line on stderr,
no traceback, and nothing written.

The matrix is walked in-process through `latencykit.cli.main` (the same entry point as the
`latencykit` script), so it stays fast; a few cases also go through `python -m latencykit`.
`test_the_matrix_covers_every_command_and_option` fails when a command or option is added
without bad-input cases here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from conftest import TINY
from latencykit.cli import app, main
from latencykit.lut.table import LatencyTable, TableMeta, default_path
from latencykit.space import load_space

# Placeholders, filled in per test: a missing file, a folder, an empty file, a file of garbage,
# an unreadable file, a valid architecture file and a valid nn-Meter table.
MISSING, FOLDER, EMPTY, GARBAGE, UNREADABLE, ARCH, NNMETER = (
    "@missing.json", "@folder.json", "@empty.json", "@garbage.json", "@unreadable.json", "@arch", "@nnmeter")
FILES = (MISSING, FOLDER, EMPTY, UNREADABLE)

# The valid rest of each command line; the bad value under test is appended to it.
BASE: dict[str, list[str]] = {
    "devices": [], "spaces": [],
    "arch": ["-s", TINY],
    "profile": ["-d", "host", "-s", TINY],
    "show": ["-d", "host", "-s", TINY],
    "predict": [ARCH, "-d", "host", "-s", TINY],
    "fit": ["-d", "host", "-s", TINY],
    "measure-set": ["-d", "host", "-s", TINY],
    "validate": ["-d", "host", "-s", TINY],
    "train": ["--space", TINY],
    "check-supernet": ["--space", TINY],
    "search": ["-s", TINY, "-d", "host", "--no-measure"],
    "export": [ARCH, "-s", TINY],
    "lut import": ["nn-meter", NNMETER, "-d", "somephone", "-s", TINY],
    "lut phones": ["-s", TINY],
    "measure": ["latencykit.zoo:squeezenet", "--input", "1x3x32x32", "-d", "host"],
}

SPACE_BAD = [["nosuch"], ["@missing.json"], ["@folder.json"], ["@empty.json"], ["@garbage.json"]]
SEED_BAD = [["-1"], [str(2**40)], ["abc"]]
THREADS_BAD = [["0"], ["-2"], ["100000"], ["many"]]
FILE_BAD = [[f] for f in FILES]
DEVICE_BAD = [["nosuch"]]

# command -> option -> bad values (each a list of arguments following the option).
MATRIX: dict[str, dict[str, list[list[str]]]] = {
    "devices": {},
    "spaces": {},
    "arch": {"--space": SPACE_BAD, "--which": [["middle"]], "--seed": SEED_BAD},
    "profile": {"--device": DEVICE_BAD, "--space": SPACE_BAD, "--threads": THREADS_BAD,
                "--serial": [["ZZZ"]], "--benchmark-model": FILE_BAD, "--out": [[FOLDER]],
                "--rounds": [["0"], ["-3"], ["1000000"], ["ten"]], "--mode": [["sideways"]],
                "--calibrate": [["-1"], ["100000"], ["some"]],
                "--kernels": [["--kernels=yes"], ["--kernels"]], "--kernel-samples": [["0"], ["1"], ["100000"], ["x"]],
                "--kernel-networks": [["-1"], ["100000"], ["many"]]},
    "show": {"--device": DEVICE_BAD, "--space": SPACE_BAD, "--table": FILE_BAD + [[GARBAGE]],
             "--top": [["0"], ["-1"], ["x"]]},
    "predict": {"arch_file": FILE_BAD + [[GARBAGE]], "--device": DEVICE_BAD, "--space": SPACE_BAD,
                "--predictor": [["nosuch"], ["calibrated"]], "--table": FILE_BAD + [[GARBAGE]],
                "--archs": FILE_BAD + [[GARBAGE]], "--out": [[FOLDER]], "--breakdown": [["--breakdown=yes"]],
                "--rescale": [["--rescale"], ["--rescale=yes"]]},
    "measure-set": {"--device": DEVICE_BAD, "--space": SPACE_BAD, "--threads": THREADS_BAD, "--serial": [["ZZZ"]],
                    "--benchmark-model": FILE_BAD, "--samples": [["0"], ["-3"], ["10000000"], ["x"]],
                    "--seed": SEED_BAD},
    "fit": {"--device": DEVICE_BAD, "--space": SPACE_BAD, "--predictor": [["nosuch"], ["isolated"]], "--threads": THREADS_BAD,
            "--serial": [["ZZZ"]], "--benchmark-model": FILE_BAD, "--samples": [["0"], ["-3"], ["10000000"], ["x"]],
            "--seed": SEED_BAD, "--table": FILE_BAD + [[GARBAGE]]},
    "validate": {"--device": DEVICE_BAD, "--space": SPACE_BAD, "--predictor": [["nosuch"]],
                 "--threads": THREADS_BAD, "--serial": [["ZZZ"]], "--benchmark-model": FILE_BAD,
                 "--samples": [["-3"], ["0"], ["1"], ["10000000"], ["x"]], "--seed": SEED_BAD,
                 "--table": FILE_BAD + [[GARBAGE]], "--out": [[GARBAGE]]},
    "train": {"--space": SPACE_BAD, "--out": [[GARBAGE]], "--sampler": [["greedy"]],
              "--data": [[MISSING], [GARBAGE], [FOLDER]], "--resolution": [["-1"], ["100000"], ["big"]],
              "--epochs": [["0"], ["-1"], ["x"]], "--batch": [["0"], ["10000000"]], "--lr": [["0"], ["-1"], ["inf"], ["x"]],
              "--seed": SEED_BAD, "--grad-projection": [["--grad-projection=yes"]], "--scaling": [["--scaling=1"]],
              "--teacher": FILE_BAD + [[GARBAGE]], "--distill": [["medium"]],
              "--checkpoint-every": [["0"], ["-5"]], "--max-steps": [["-1"]], "--threads": [["-1"], ["100000"]]},
    "check-supernet": {"--space": SPACE_BAD, "--random": [["-1"], ["100000"], ["x"]]},
    "search": {"--space": SPACE_BAD, "--device": DEVICE_BAD, "--latency": [["fast"], ["-3ms"], ["30 parsecs"]],
               "--params": [["lots"], ["-6M"]], "--flops": [["6X"], ["1e"]], "--proxy": [["oracle"]],
               "--checkpoint": FILE_BAD + [[GARBAGE]], "--method": [["annealing"]], "--predictor": [["nosuch"]],
               "--population": [["0"], ["10000000"]], "--generations": [["-1"], ["x"]], "--parents": [["0"]],
               "--coarse-samples": [["0"], ["100000000000"]], "--seed": SEED_BAD, "--measure": [["--measure=no"]],
               "--out": [[GARBAGE]], "--threads": [["-1"], ["100000"], ["many"]], "--cache": [["--cache=yes"]],
               "--margin": [["--margin=no"]],
               "--skeleton-rank": [["accuracy"]]},
    "export": {"arch_file": FILE_BAD + [[GARBAGE]], "--space": SPACE_BAD, "--format": [["pdf"]],
               "--out": [[FOLDER]], "--checkpoint": FILE_BAD + [[GARBAGE]]},
    "lut import": {"importer": [["nn-meter-v9"]], "file": FILE_BAD + [[GARBAGE]],
                   "--device": [["bad name!"], ["../escape"]], "--space": SPACE_BAD,
                   "--out": [[FOLDER]], "--fill": [["magic"]], "--column": [["pixel3"]]},
    "lut phones": {"--space": SPACE_BAD, "--devices": [["nosuch"]], "--random": [["0"], ["-1"], ["100000"]],
                   "--band": [["0"], ["-0.1"], ["2"], ["wide"]], "--sample": [["1"], ["0"], ["100000000"]],
                   "--seed": SEED_BAD, "--plot": [[FOLDER]]},
    "measure": {"model": FILE_BAD + [[GARBAGE], ["nosuch.module:factory"], ["json:nosuch"]],
                "--device": DEVICE_BAD, "--compare": [["nosuch"], ["host,host"], ["host,"]],
                "--input": [["1x0x3"], ["big"], ["-1x3"], ["99999x99999x99"]], "--rounds": [["0"], ["1000000"], ["x"]],
                "--breakdown": [["--breakdown=yes"]], "--top": [["0"], ["x"]], "--chart": [[FOLDER]],
                "--threads": THREADS_BAD, "--serial": [["ZZZ"]], "--benchmark-model": FILE_BAD},
}
ARGUMENTS = {"arch_file", "importer", "file", "model"}  # positional: the bad value replaces the good one


def _commands() -> dict[str, object]:
    """Every command of the app by its full name ('lut import'), walking sub-groups."""
    found = {}

    def walk(group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            full = f"{prefix}{name}"
            if hasattr(cmd, "commands"):
                walk(cmd, full + " ")
            else:
                found[full] = cmd

    walk(typer.main.get_command(app), "")
    return found


def _option_names(cmd) -> set[str]:
    names = set()
    for p in cmd.params:
        if p.name in ("as_json", "help"):
            continue
        long = [o for o in p.opts if o.startswith("--")]
        names.add(long[0] if long and p.param_type_name == "option" else p.name)
    return names


def test_the_matrix_covers_every_command_and_option() -> None:
    commands = _commands()
    assert set(MATRIX) == set(commands) == set(BASE)
    for name, cmd in commands.items():
        assert set(MATRIX[name]) == _option_names(cmd), name
        assert all(MATRIX[name][o] for o in MATRIX[name]), name


def _cases() -> list:
    cases = []
    for command, options in MATRIX.items():
        cases.append(pytest.param(command, None, ["--no-such-option"], id=f"{command}:unknown-option"))
        for option, values in options.items():
            for value in values:
                cases.append(pytest.param(command, option, value, id=f"{command}:{option}={' '.join(value)}"))
    return cases


@pytest.fixture
def files(tmp_path: Path, home: Path) -> dict[str, str]:
    """The placeholder files, and a (synthetic) host table of the tiny space so commands get past it."""
    space = load_space(TINY)
    layers = space.distinct_layers()
    meta = TableMeta(device="host", space=space.name, space_digest=space.digest)
    LatencyTable.from_entries(meta, layers, [{"latency_ms": 0.1 + i / 100, "runs": 3} for i in range(len(layers))]
                              ).write(default_path("host", space.name))
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "garbage.json").write_text("\x00\x01 not json {")
    unreadable = tmp_path / "unreadable.json"
    unreadable.write_text("{}")
    unreadable.chmod(0)
    arch = tmp_path / "arch.json"
    arch.write_text(space.smallest().to_json())
    nnmeter = tmp_path / "nnmeter.json"
    nnmeter.write_text(json.dumps({"conv_64_16_16_1_1_hard_swish_3_nose": 0.5}))
    return {MISSING: str(tmp_path / "missing.json"), FOLDER: str(tmp_path / "folder.json"),
            EMPTY: str(tmp_path / "empty.json"), GARBAGE: str(tmp_path / "garbage.json"),
            UNREADABLE: str(unreadable), ARCH: str(arch), NNMETER: str(nnmeter)}


def _argv(command: str, option: str | None, value: list[str], files: dict[str, str]) -> list[str]:
    base = list(BASE[command])
    if option is None:
        args = base + value
    elif option in ARGUMENTS:
        position = {"arch_file": 0, "importer": 0, "file": 1, "model": 0}[option]
        args = base[:position] + value + base[position + 1:]
    elif value[0].startswith("--"):  # a flag given a value
        args = base + value
    else:
        flags = {"--device": "-d", "--space": "-s"}
        args = [a for i, a in enumerate(base) if not (a in (option, flags.get(option)) or
                                                      (i and base[i - 1] in (option, flags.get(option))))]
        args += [option, *value]
    for i, a in enumerate(args):
        if a.startswith("@"):
            args[i] = files[a]
    return [*command.split(), *args]


@pytest.mark.parametrize(("command", "option", "value"), _cases())
def test_bad_input_is_one_line_and_exit_code_2(command, option, value, files, tmp_path, home, capsys,
                                               monkeypatch) -> None:
    if UNREADABLE in value and os.geteuid() == 0:
        pytest.skip("root reads any file")
    monkeypatch.chdir(tmp_path)  # relative defaults (train's runs/supernet) land in the test's folder
    monkeypatch.setenv("PATH", str(tmp_path / "no-adb"))  # no phone, no adb: --serial cannot reach anything
    before = _snapshot(home)
    argv = _argv(command, option, value, files)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert exit_info.value.code == 2, (argv, captured.err, captured.out[-500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, captured.err)
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(home) == before, argv  # nothing written, nothing damaged


def _snapshot(home: Path) -> dict[str, bytes]:
    """Every file under LATENCYKIT_HOME (not the shared export cache it links to) with its bytes."""
    return {os.path.join(root, f): Path(root, f).read_bytes()
            for root, _, names in os.walk(home) for f in names}


@pytest.mark.parametrize("args", [
    ["validate", "--device", "host", "--space", TINY, "--samples", "-3"],
    ["profile", "--device", "host", "--space", TINY, "--threads", "0"],
    ["profile", "--device", "host"],
    ["bogus-command"],
], ids=["validate-samples-negative", "profile-threads-zero", "missing-option", "unknown-command"])
def test_through_the_real_entry_point(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "latencykit", *args], capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_help_and_no_arguments_still_show_help() -> None:
    ok = subprocess.run([sys.executable, "-m", "latencykit", "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "profile" in ok.stdout and not ok.stderr.strip()
    bare = subprocess.run([sys.executable, "-m", "latencykit", "lut"], capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and "import" in bare.stdout + bare.stderr and "Traceback" not in bare.stderr
