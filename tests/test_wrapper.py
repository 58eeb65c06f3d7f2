"""`pet-ecse symmetrize`: ECSE around models this package did not train (a tiny
model of metatrain's own `pet` architecture, trained here)."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import ase
import ase.build
import numpy as np
import pytest
import torch
import yaml
from datasets import molecules, write
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelMetadata,
    ModelOutput,
    NeighborListOptions,
    System,
)
from metatomic_ase import MetatomicCalculator
from models import diamond_cell, random_rotation, rattled_ethanol, rotated

from pet_metatrain.cli import symmetrize_exported

BIN = Path(sys.executable).parent
PET_MODEL = {
    "cutoff": 4.0,
    "d_pet": 8,
    "d_head": 8,
    "d_node": 8,
    "d_feedforward": 8,
    "num_heads": 1,
    "num_attention_layers": 1,
    "num_gnn_layers": 1,
}


def train_pet(directory: Path, precision: int) -> Path:
    write(directory / "data.xyz", molecules(12))
    options = {
        "seed": 0,
        "base_precision": precision,
        "architecture": {
            "name": "pet",
            "model": PET_MODEL,
            "training": {"num_epochs": 1, "batch_size": 4},
        },
        "training_set": {
            "systems": {"read_from": "data.xyz", "length_unit": "angstrom"},
            "targets": {"energy": {"key": "energy", "unit": "eV"}},
        },
        "validation_set": 0.25,
        "test_set": 0.0,
    }
    (directory / "options.yaml").write_text(yaml.safe_dump(options))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [str(BIN / "mtt"), "train", "options.yaml"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return directory / "model.pt"


@pytest.fixture(scope="module", params=[64, 32], ids=["float64", "float32"])
def trained_pet(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"pet{request.param}")
    plain = train_pet(directory, request.param)
    result = subprocess.run(
        [str(BIN / "pet-ecse"), "symmetrize", "model.pt", "-o", "ecse.pt"],
        cwd=directory,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return plain, directory / "ecse.pt", request.param


def spread(model: Path, atoms: ase.Atoms, count: int = 3):
    """Energy spread and largest back-rotated force difference over rotations."""
    calculator = MetatomicCalculator(str(model), device="cpu")
    rng = np.random.default_rng(0)
    energies, forces = [], []
    for rotation in [np.eye(3)] + [random_rotation(rng) for _ in range(count)]:
        copy = rotated(atoms, rotation)
        copy.calc = calculator
        energies.append(copy.get_potential_energy())
        forces.append(copy.get_forces() @ rotation)
    errors = [np.abs(f - forces[0]).max() for f in forces]
    return np.ptp(energies), max(errors), energies[0]


@pytest.mark.parametrize(
    "make", [rattled_ethanol, diamond_cell], ids=["molecule", "periodic"]
)
def test_wrapped_pet_is_exactly_invariant(trained_pet, make):
    plain, symmetrized, precision = trained_pet
    tolerance = 1e-10 if precision == 64 else 2e-5
    energy, force, _ = spread(plain, make())
    assert energy > 1e-6 or force > 1e-5, "metatrain's pet should not be invariant"
    energy, force, value = spread(symmetrized, make())
    assert energy < tolerance * max(1.0, abs(value))
    assert force < 10 * tolerance


def test_collinear_fallback_is_finite_and_nearly_invariant(trained_pet):
    _, symmetrized, precision = trained_pet
    for atoms in [
        ase.Atoms("C", positions=[[0, 0, 0]]),
        ase.Atoms("CO", positions=[[0, 0, 0], [1.13, 0, 0]]),
        ase.Atoms("OCO", positions=[[-1.16, 0, 0], [0, 0, 0], [1.16, 0, 0]]),
    ]:
        energy, force, value = spread(symmetrized, atoms)
        assert np.isfinite(value)
        # octahedral average: exact to angular order 3, small residual beyond
        assert energy < 1e-3 * max(1.0, abs(value))


class _NoEnergy(torch.nn.Module):
    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        return {}


class _Anchored(torch.nn.Module):
    """An 'energy' that depends on absolute positions."""

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [NeighborListOptions(cutoff=3.0, full_list=True, strict=True)]

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        values = torch.stack([s.positions[:, 0].sum() for s in systems]).reshape(-1, 1)
        block = TensorBlock(
            values=values,
            samples=Labels(
                ["system"], torch.arange(len(systems), dtype=torch.int32).reshape(-1, 1)
            ),
            components=[],
            properties=Labels(["energy"], torch.zeros(1, 1, dtype=torch.int32)),
        )
        return {
            "energy": TensorMap(
                Labels(["_"], torch.zeros(1, 1, dtype=torch.int32)), [block]
            )
        }


def _wrap(module: torch.nn.Module, outputs: dict, tmp_path: Path) -> Path:
    capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=[6],
        interaction_range=3.0,
        length_unit="angstrom",
        supported_devices=["cpu"],
        dtype="float64",
    )
    path = tmp_path / "toy.pt"
    AtomisticModel(module.eval(), ModelMetadata(), capabilities).save(str(path))
    return path


def test_refuses_models_without_energy(tmp_path):
    path = _wrap(_NoEnergy(), {"features": ModelOutput(sample_kind="atom")}, tmp_path)
    with pytest.raises(ValueError, match="no 'energy' output"):
        symmetrize_exported(str(path), str(tmp_path / "out.pt"), {})


def test_refuses_models_that_are_not_translation_invariant(tmp_path):
    outputs = {"energy": ModelOutput(unit="eV", sample_kind="system")}
    path = _wrap(_Anchored(), outputs, tmp_path)
    with pytest.raises(ValueError, match="not translation invariant"):
        symmetrize_exported(str(path), str(tmp_path / "out.pt"), {})


def test_wrapped_forces_match_finite_differences(trained_pet):
    _, symmetrized, precision = trained_pet
    if precision != 64:
        pytest.skip("finite differences need float64")
    calculator = MetatomicCalculator(str(symmetrized), device="cpu")
    atoms = rattled_ethanol()
    atoms.calc = calculator
    forces = atoms.get_forces()
    step = 1e-6
    for atom, axis in [(0, 0), (4, 1), (8, 2)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * step
            moved.calc = calculator
            energies.append(moved.get_potential_energy())
        numerical = -(energies[0] - energies[1]) / (2 * step)
        assert numerical == pytest.approx(forces[atom, axis], rel=1e-4, abs=1e-6)


def test_wrapped_energy_is_continuous_along_a_bending_scan(trained_pet):
    """Across the collinearity window, pruning thresholds and into the fallback:
    energy changes match the work of the forces (no jumps)."""
    _, symmetrized, precision = trained_pet
    if precision != 64:
        pytest.skip("a tight energy balance needs float64")
    calculator = MetatomicCalculator(str(symmetrized), device="cpu")
    frames, energies, forces = [], [], []
    for angle in np.radians(np.linspace(130.0, 180.0, 201)):
        atoms = ase.Atoms(
            "OCN",
            positions=[
                [1.2, 0, 0],
                [0, 0, 0],
                [1.15 * np.cos(angle), 1.15 * np.sin(angle), 0],
            ],
        )
        atoms.calc = calculator
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces()[2])
        frames.append(atoms.positions[2].copy())
    residuals = [
        energies[i + 1]
        - energies[i]
        + 0.5 * (forces[i] + forces[i + 1]) @ (frames[i + 1] - frames[i])
        for i in range(len(frames) - 1)
    ]
    assert np.all(np.isfinite(energies))
    assert np.abs(residuals).max() < 1e-4
