"""Running the package's commands (``mtt``, ``pet-ecse``) from the tests, and the
options of the tiny trainings they run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import yaml
from datasets import TINY_MODEL


def executable(name: str) -> str:
    """A command of the running interpreter's environment, activated or not."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    assert found is not None, f"the `{name}` command is not installed"
    return found


def environment() -> dict:
    """The test process's environment, one OpenMP thread unless set."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run(
    name: str,
    *args: str,
    cwd: Path,
    check: bool = True,
    timeout: Optional[float] = 900,
) -> subprocess.CompletedProcess:
    """Run command ``name`` with ``args`` in ``cwd``; a failure (with ``check``)
    fails the test with the end of both outputs."""
    result = subprocess.run(
        [executable(name), *args],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"`{name} {' '.join(args)}` failed with exit code {result.returncode}\n"
            f"--- stdout ---\n{result.stdout[-5000:]}\n"
            f"--- stderr ---\n{result.stderr[-5000:]}"
        )
    return result


def mtt(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``mtt`` with ``args`` in ``cwd``."""
    return run("mtt", *args, cwd=cwd, check=check)


def tiny_options(
    data: str = "data.xyz",
    energy_key: str = "energy",
    num_epochs: int = 3,
    **training,
) -> dict:
    """``mtt train`` options of the tiny float64 model on periodic Cu-Au cells
    (energies, forces and stress), with a checkpoint after every epoch."""
    return {
        "seed": 0,
        "base_precision": 64,
        "final_eval": False,
        "architecture": {
            "name": "pet_ecse",
            "model": dict(TINY_MODEL),
            "training": {
                "batch_size": 4,
                "num_epochs": num_epochs,
                "learning_rate": 3.0e-3,
                "checkpoint_interval": 1,
                **training,
            },
        },
        "training_set": {
            "systems": {"read_from": data, "length_unit": "angstrom"},
            "targets": {
                "energy": {
                    "key": energy_key,
                    "unit": "eV",
                    "forces": {"key": "forces"},
                    "stress": {"key": "stress"},
                }
            },
        },
        "validation_set": 0.2,
        "test_set": 0.0,
    }


def write_options(directory: Path, content: dict, name: str = "options.yaml") -> str:
    (directory / name).write_text(yaml.safe_dump(content))
    return name
