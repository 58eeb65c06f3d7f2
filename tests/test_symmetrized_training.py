"""Fine-tuning with ECSE active, a-posteriori export with ``pet-ecse export``, and
targets ECSE cannot symmetrize."""

import os
import subprocess
import sys
from pathlib import Path

import ase.build
import numpy as np
import pytest
import torch
import yaml
from datasets import molecules, write
from metatomic_ase import MetatomicCalculator
from metatrain.utils.data import DatasetInfo
from metatrain.utils.data.target_info import get_generic_target_info
from models import random_rotation, rotated, small_hypers

from pet_metatrain import PETECSE

BIN = Path(sys.executable).parent


def run(command: list, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def options(model: dict, training: dict) -> dict:
    return {
        "seed": 0,
        "base_precision": 64,
        "architecture": {"name": "pet_ecse", "model": model, "training": training},
        "training_set": {
            "systems": {"read_from": "data.xyz", "length_unit": "angstrom"},
            "targets": {"energy": {"key": "energy", "unit": "eV"}},
        },
        "validation_set": 0.2,
        "test_set": 0.0,
    }


def tiny_model(**symmetrization) -> dict:
    hypers = small_hypers()
    model = {k: hypers[k] for k in ("cutoff", "d_pet", "d_head", "d_feedforward")}
    model.update(num_heads=2, num_attention_layers=1, num_gnn_layers=1)
    if symmetrization:
        model["symmetrization"] = symmetrization
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A plain-trained checkpoint (ECSE only at export)."""
    directory = tmp_path_factory.mktemp("plain")
    write(directory / "data.xyz", molecules(12))
    training = {"num_epochs": 2, "batch_size": 4, "learning_rate": 1e-3}
    (directory / "options.yaml").write_text(
        yaml.safe_dump(options(tiny_model(), training))
    )
    run([str(BIN / "mtt"), "train", "options.yaml"], directory)
    return directory


def energies(model_path: Path, frames: list) -> np.ndarray:
    calculator = MetatomicCalculator(str(model_path), device="cpu")
    return np.array([calculator.get_potential_energy(atoms) for atoms in frames])


def rotated_ethanols() -> list:
    atoms = ase.build.molecule("CH3CH2OH")
    rng = np.random.default_rng(0)
    return [atoms] + [rotated(atoms, random_rotation(rng)) for _ in range(3)]


def test_pet_ecse_export_switches_ecse_on_and_off(trained):
    run(
        [
            str(BIN / "pet-ecse"),
            "export",
            "model.ckpt",
            "--method",
            "none",
            "-o",
            "plain.pt",
        ],
        trained,
    )
    run(
        [
            str(BIN / "pet-ecse"),
            "export",
            "model.ckpt",
            "--method",
            "ecse",
            "-o",
            "ecse.pt",
        ],
        trained,
    )
    run(
        [
            str(BIN / "pet-ecse"),
            "export",
            "model.ckpt",
            "--frames",
            "structure",
            "-o",
            "structure.pt",
        ],
        trained,
    )
    frames = rotated_ethanols()
    plain = energies(trained / "plain.pt", frames)
    symmetrized = energies(trained / "ecse.pt", frames)
    assert np.ptp(plain) > 1e-6
    for exact in (symmetrized, energies(trained / "structure.pt", frames)):
        assert np.ptp(exact) < 1e-9 * max(1.0, np.abs(exact).max())
    # mtt's own export follows the stored block (ECSE token frames by default)
    np.testing.assert_allclose(energies(trained / "model.pt", frames), symmetrized)


def test_pet_ecse_export_refuses_other_checkpoints(tmp_path):
    torch.save({"architecture_name": "pet"}, tmp_path / "other.ckpt")
    result = subprocess.run(
        [str(BIN / "pet-ecse"), "export", "other.ckpt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "not a pet_ecse checkpoint" in result.stderr


@pytest.mark.parametrize("frames", ["structure", "atom"])
def test_finetuning_with_ecse_active(trained, tmp_path, frames):
    write(tmp_path / "data.xyz", molecules(8, seed=3))
    model = tiny_model(during_training=True, frames=frames)
    training = {
        "num_epochs": 1,
        "batch_size": 4,
        "learning_rate": 1e-4,
        "finetune": {"read_from": str(trained / "model.ckpt")},
    }
    (tmp_path / "options.yaml").write_text(yaml.safe_dump(options(model, training)))
    log = run([str(BIN / "mtt"), "train", "options.yaml"], tmp_path)
    assert "nan" not in (log.stdout + log.stderr).lower()

    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=False)
    stored = checkpoint["model_data"]["model_hypers"]["symmetrization"]
    assert stored["during_training"] and stored["frames"] == frames
    before = torch.load(trained / "model.ckpt", weights_only=False)
    changed = [
        name
        for name, value in checkpoint["model_state_dict"].items()
        if name.startswith("network.")
        and not torch.equal(value, before["best_model_state_dict"][name])
    ]
    assert changed, "fine-tuning did not update the network"
    result = energies(tmp_path / "model.pt", rotated_ethanols())
    assert np.ptp(result) < 1e-9 * max(1.0, np.abs(result).max())


def test_spherical_targets_above_order_2_are_refused():
    """Orders up to 2 are rotated exactly as Cartesian tensors; higher orders are
    refused with a clear error."""
    target = get_generic_target_info(
        "octupole",
        {
            "quantity": "",
            "unit": "",
            "type": {"spherical": {"irreps": [{"o3_lambda": 3, "o3_sigma": 1}]}},
            "num_subtargets": 1,
            "per_atom": False,
            "sample_kind": "system",
        },
    )
    info = DatasetInfo(
        length_unit="angstrom", atomic_types=[1, 6], targets={"octupole": target}
    )
    with pytest.raises(ValueError, match="o3_lambda = 3.*o3_lambda <= 2"):
        PETECSE(small_hypers(), info)
