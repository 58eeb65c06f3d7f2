"""``pet-ecse`` for a new user: one-line errors with a remedy and exit code 1 (no
traceback), and help that describes every option with its default."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pet_metatrain.cli import _parser, main

BIN = Path(sys.executable).parent


def run_main(capsys, *args):
    """``pet-ecse args``: (exit code, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err


@pytest.fixture
def files(tmp_path):
    """An exported TorchScript model and a checkpoint that is not pet_ecse's."""
    torch.jit.script(torch.nn.Linear(2, 1)).save(str(tmp_path / "model.pt"))
    torch.save({"architecture_name": "pet"}, tmp_path / "other.ckpt")
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    return tmp_path


@pytest.mark.parametrize(
    "args, expected",
    [
        (["export", "{}/missing.ckpt"], "checkpoint '.*missing.ckpt' does not exist"),
        (["symmetrize", "{}/missing.pt"], "model '.*missing.pt' does not exist"),
        (
            ["export", "{}/model.pt"],
            "is an exported model, not a checkpoint: give the checkpoint",
        ),
        (["export", "{}/other.ckpt"], r"not a pet_ecse checkpoint .*'pet'.*mtt export"),
        (["export", "{}/notes.txt"], "cannot read .* as a checkpoint"),
        (["symmetrize", "{}/other.ckpt"], "is not an exported model: export"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(capsys, files, args, expected):
    code, err = run_main(capsys, *[a.format(files) for a in args])
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pet-ecse: error: ")
    assert re.search(expected, lines[0]), lines[0]


def test_the_installed_command_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [str(BIN / "pet-ecse"), "export", "missing.ckpt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "pet-ecse: error: checkpoint 'missing.ckpt' does not exist (or is not a file)"
    )


def test_traceback_option_shows_the_traceback(files):
    with pytest.raises(ValueError, match="not a pet_ecse checkpoint"):
        main(["--traceback", "export", str(files / "other.ckpt")])


def test_wrong_arguments_exit_with_code_2(capsys):
    code, err = run_main(capsys, "export")
    assert code == 2
    assert "pet-ecse export: error:" in err


def subparser(name: str) -> str:
    parser = _parser()
    commands = next(
        action for action in parser._actions if action.dest == "command"
    ).choices
    return commands[name]


@pytest.mark.parametrize("name", ["export", "symmetrize"])
def test_every_option_has_a_description_and_a_default(name):
    parser = subparser(name)
    for action in parser._actions:
        if action.dest in ("help",):
            continue
        assert action.help, action.dest
        if action.option_strings and action.dest != "output":
            assert "default: " in action.help, (action.dest, action.help)
    # numbers shown are the documented defaults
    text = parser.format_help()
    assert "(default: 32768)" in text  # --max-copied-atoms
    assert "1 for token frames" in text  # --beta
    assert "0.5 for token frames" in text  # --pruning-threshold


def test_top_level_help_is_plain_text():
    text = " ".join(_parser().format_help().split())
    assert "``" not in text
    assert "pet-ecse export" in text and "pet-ecse symmetrize" in text
