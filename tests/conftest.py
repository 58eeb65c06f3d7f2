"""Shared fixtures, and the test tiers: tests that run ``mtt`` or read the model it
trains are marked ``slow`` (``pytest -m "not slow"`` runs the unit tier)."""

import shutil
from pathlib import Path

import ase.io
import pytest
from commands import mtt, tiny_options, write_options
from datasets import example_structures, molecules, write

import _pet_metatrain_hook

# for PYTHONPATH or `python -S` installs, where the .pth file did not run
_pet_metatrain_hook.install()

# fixtures that run `mtt train`: every test using them is slow
TRAINING_FIXTURES = {
    "trained_tiny",
    "trained",
    "trained_pet",
    "wrapped",  # test_wrapper_outputs.py: a pet trained, then symmetrized
    "pet_ecse_model",  # test_non_conservative.py
}


def pytest_collection_modifyitems(items: list) -> None:
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def molecules_path(tmp_path_factory) -> str:
    """20 small molecules with energies under ``U0`` (like metatrain's qm9 set)."""
    path = tmp_path_factory.mktemp("data") / "molecules.xyz"
    return write(path, molecules(20, energy_key="U0"))


@pytest.fixture(scope="session")
def cuau_data(tmp_path_factory) -> Path:
    """20 periodic Cu-Au cells with EMT energies, forces and stress."""
    path = tmp_path_factory.mktemp("cuau") / "data.xyz"
    ase.io.write(path, example_structures(20, seed=1))
    return path


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, cuau_data) -> Path:
    """A directory where ``mtt train options.yaml`` has run once for the whole
    session (the tiny float64 model, 3 epochs on ``cuau_data``): model.pt,
    model.ckpt, outputs/<date>/<time>/ (checkpoints, train.csv), data.xyz and
    mtt-train.out (the command's output)."""
    directory = tmp_path_factory.mktemp("trained-tiny")
    shutil.copy(cuau_data, directory / "data.xyz")
    write_options(directory, tiny_options())
    result = mtt(directory, "train", "options.yaml")
    assert "Starting training from scratch" in result.stdout
    (directory / "mtt-train.out").write_text(result.stdout + result.stderr)
    return directory
