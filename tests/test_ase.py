"""An exported ``pet_ecse`` model in ASE, through ``metatomic_ase``.

The tiny float64 model trained once for the session (``trained_tiny``: periodic
Cu-Au cells with energies, forces and stress); its ``model.pt`` runs ECSE, so it is
exactly rotationally equivariant.
"""

from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from commands import run
from models import cuau_cell, random_rotation


@pytest.fixture(scope="module")
def model_path(trained_tiny) -> Path:
    return trained_tiny / "model.pt"


@pytest.fixture(scope="module")
def calculator(model_path):
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(str(model_path), device="cpu")


@pytest.fixture(scope="module")
def energy_calculator(model_path):
    """Energies only (for finite differences)."""
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(
        str(model_path), device="cpu", do_gradients_with_energy=False
    )


def with_calculator(atoms: ase.Atoms, calculator) -> ase.Atoms:
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms


def energy(atoms: ase.Atoms) -> float:
    atoms.calc.reset()
    return atoms.get_potential_energy()


def test_single_point(calculator):
    atoms = with_calculator(cuau_cell(100), calculator)
    assert np.isfinite(atoms.get_potential_energy())
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False)
    assert forces.shape == (len(atoms), 3)
    assert stress.shape == (3, 3)
    assert np.all(np.isfinite(forces)) and np.all(np.isfinite(stress))
    assert np.any(forces != 0.0)
    np.testing.assert_allclose(stress, stress.T, atol=1e-12)
    # translation invariance: forces sum to zero
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-10)


def test_forces_are_minus_energy_gradient(calculator, energy_calculator):
    forces = with_calculator(cuau_cell(101), calculator).get_forces()
    atoms = with_calculator(cuau_cell(101), energy_calculator)
    # central differences: the truncation error is about 1e-8 relative here
    step = 1e-5
    numerical = np.zeros_like(forces)
    positions = atoms.positions.copy()
    for atom in range(len(atoms)):
        for axis in range(3):
            displaced = positions.copy()
            displaced[atom, axis] += step
            atoms.positions = displaced
            plus = energy(atoms)
            displaced[atom, axis] -= 2 * step
            atoms.positions = displaced
            minus = energy(atoms)
            numerical[atom, axis] = -(plus - minus) / (2 * step)
    atoms.positions = positions
    scale = np.abs(forces).max()
    np.testing.assert_allclose(numerical, forces, rtol=0, atol=1e-5 * scale)


def test_stress_is_strain_derivative(calculator, energy_calculator):
    stress = with_calculator(cuau_cell(102), calculator).get_stress(voigt=False)
    atoms = with_calculator(cuau_cell(102), energy_calculator)
    volume = atoms.get_volume()
    original = atoms.cell.array.copy()
    step = 1e-5
    numerical = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            values = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[i, j] += sign * step
                atoms.set_cell(original @ strain, scale_atoms=True)
                values.append(energy(atoms))
            numerical[i, j] = (values[0] - values[1]) / (2 * step) / volume
    atoms.set_cell(original, scale_atoms=True)
    scale = np.abs(stress).max()
    np.testing.assert_allclose(numerical, stress, rtol=0, atol=1e-5 * scale)


def test_nve_energy_is_conserved(calculator):
    atoms = with_calculator(cuau_cell(103), calculator)
    MaxwellBoltzmannDistribution(
        atoms, temperature_K=300, rng=np.random.default_rng(0), force_temp=True
    )
    total = [atoms.get_total_energy()]
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dynamics.attach(lambda: total.append(atoms.get_total_energy()), interval=1)
    dynamics.run(20)
    total = np.array(total)
    assert np.all(np.isfinite(total))
    kinetic = 1.5 * len(atoms) * units.kB * 300  # about 0.3 eV
    # drift and fluctuations of the total energy (a few 1e-6 eV when written)
    assert np.abs(total - total[0]).max() < 1e-3 * kinetic


def test_rotations(calculator):
    rng = np.random.default_rng(42)
    atoms = with_calculator(cuau_cell(104), calculator)
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False)
    for _ in range(3):
        rotation = random_rotation(rng)
        rotated = atoms.copy()
        rotated.positions = atoms.positions @ rotation.T
        rotated.cell = atoms.cell.array @ rotation.T
        rotated.calc = calculator
        assert rotated.get_potential_energy() == pytest.approx(
            energy, rel=1e-10, abs=1e-8
        )
        np.testing.assert_allclose(
            rotated.get_forces(), forces @ rotation.T, rtol=0, atol=1e-8
        )
        np.testing.assert_allclose(
            rotated.get_stress(voigt=False),
            rotation @ stress @ rotation.T,
            rtol=0,
            atol=1e-8,
        )


def test_atoms_without_neighbours(calculator):
    atoms = ase.Atoms("CuAu", positions=[[0.0, 0.0, 0.0], [20.0, 0.0, 0.0]])
    atoms.calc = calculator
    assert np.isfinite(atoms.get_potential_energy())
    np.testing.assert_array_equal(atoms.get_forces(), 0.0)

    # nothing but the two isolated atoms: the sum of their energies
    single = []
    for symbol in ("Cu", "Au"):
        alone = ase.Atoms(symbol, positions=[[0.0, 0.0, 0.0]])
        alone.calc = calculator
        single.append(alone.get_potential_energy())
    assert atoms.get_potential_energy() == pytest.approx(sum(single), abs=1e-10)


def nve_drift(atoms: ase.Atoms, calculator, steps: int = 40) -> float:
    """Largest change of the total energy along a short NVE run."""
    atoms = with_calculator(atoms, calculator)
    MaxwellBoltzmannDistribution(
        atoms, temperature_K=300, rng=np.random.default_rng(1), force_temp=True
    )
    total = [atoms.get_total_energy()]
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.attach(lambda: total.append(atoms.get_total_energy()), interval=1)
    dynamics.run(steps)
    return float(np.abs(np.array(total) - total[0]).max())


def test_nve_drift_of_ecse_is_of_the_order_of_plain_pet(
    model_path, calculator, tmp_path
):
    """The same checkpoint exported plain and with ECSE: ECSE's smooth frame
    switching must not spoil energy conservation."""
    from metatomic_ase import MetatomicCalculator

    plain_path = tmp_path / "plain.pt"
    checkpoint = str(model_path.parent / "model.ckpt")
    run(
        "pet-ecse",
        "export",
        checkpoint,
        "--method",
        "none",
        "-o",
        str(plain_path),
        cwd=tmp_path,
    )
    plain = nve_drift(
        cuau_cell(105), MetatomicCalculator(str(plain_path), device="cpu")
    )
    ecse = nve_drift(cuau_cell(105), calculator)
    assert ecse < 3 * plain + 1e-6
