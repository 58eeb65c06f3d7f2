"""docs/quickstart.md as a new user runs it: its commands and scripts, in order, in
a copy of the repository, and the numbers it says they print.

Two changes keep the test short: `mtt train` runs 2 epochs instead of 40, and the
molecular dynamics 100 steps instead of 1000. Everything else runs as written.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "docs" / "quickstart.md"
BIN = Path(sys.executable).parent
SHORTER = {
    "mtt train options.yaml": "mtt train options.yaml "
    "-r architecture.training.num_epochs=2",
    "dynamics.run(1000)": "dynamics.run(100)",
}
# files the quickstart and the README tell users to create at the repository root
USER_FILES = [
    "eval.yaml",
    "predictions.xyz",
    "md.traj",
    "md.log",
    "curves.png",
    "parity.png",
    "model.pt",
    "plain.pt",
    "model.ckpt",
    "outputs/2026-01-01/12-00-00/train.csv",
]


def blocks() -> list:
    """(language, text) of the fenced code blocks of the quickstart, in order."""
    pattern = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return pattern.findall(QUICKSTART.read_text())


def test_quickstart_shows_options_yaml_in_full():
    yaml_blocks = [text for language, text in blocks() if language == "yaml"]
    assert (ROOT / "options.yaml").read_text() in yaml_blocks


def test_files_users_create_are_ignored_by_git():
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", *USER_FILES],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert sorted(result.stdout.split()) == sorted(USER_FILES)


def bounds(script: str) -> list:
    """For each ``print(...)`` line, the bound of a ``# below X`` comment or None."""
    found = []
    for line in script.splitlines():
        if line.startswith("print("):
            match = re.search(r"#\s*below ([0-9.eE+-]+)", line)
            found.append(float(match.group(1)) if match else None)
    return found


def run(command: list, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, (
        f"{command}\n--- stdout ---\n{result.stdout[-4000:]}\n"
        f"--- stderr ---\n{result.stderr[-4000:]}"
    )
    return result


@pytest.mark.slow
def test_quickstart_runs_as_written(tmp_path):
    shutil.copy(ROOT / "options.yaml", tmp_path)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    outputs = []
    for language, text in blocks():
        for long, short in SHORTER.items():
            text = text.replace(long, short)
        if language == "bash":
            if "pip install" in text:
                continue  # the installation is this test's environment
            result = run(["bash", "-e", "-c", text], tmp_path)
        elif language == "python":
            result = run([sys.executable, "-c", text], tmp_path)
            assert "Warning" not in result.stderr, result.stderr
            limits = bounds(text)
            if any(limit is not None for limit in limits):
                printed = result.stdout.strip().splitlines()
                for limit, line in zip(limits, printed, strict=True):
                    if limit is not None:
                        assert abs(float(line)) < limit, (line, text)
        elif language == "yaml" and text.startswith("systems:"):
            (tmp_path / "eval.yaml").write_text(text)  # "write ... as eval.yaml"
            continue
        else:
            continue
        outputs.append(result.stdout + result.stderr)

    assert (tmp_path / "model.pt").is_file() and (tmp_path / "model.ckpt").is_file()
    for name in ["curves.png", "parity.png", "predictions.xyz", "md.traj", "md.log"]:
        assert (tmp_path / name).is_file(), name
    text = "\n".join(outputs)
    # what the text says `mtt eval` and the parity plot print
    assert "energy RMSE (per atom)" in text and "energy MAE (per atom)" in text
    assert re.search(r"forces: MAE [0-9.e+-]+ eV/A, RMSE [0-9.e+-]+ eV/A", text)
