"""Small labelled data sets made on the fly (the tests never read ../shared)."""

import ase
import ase.build
import ase.io
import numpy as np
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

MOLECULES = ["CH4", "NH3", "H2O", "CH3OH", "HCN", "C2H4", "CH3CN", "HCOOH", "H2CO"]


def labelled(atoms: ase.Atoms, energy_key: str = "energy") -> ase.Atoms:
    """Attach EMT energy (under ``energy_key``), forces and, if periodic, stress."""
    atoms.calc = EMT()
    results = {"forces": atoms.get_forces()}
    energy = atoms.get_potential_energy()
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress(voigt=False)
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info[energy_key] = energy
    return atoms


def molecules(count: int, seed: int = 0, energy_key: str = "energy") -> list:
    """Rattled small H/C/N/O molecules with EMT labels."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        atoms = ase.build.molecule(MOLECULES[index % len(MOLECULES)])
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        frames.append(labelled(atoms, energy_key))
    return frames


def write(path, frames: list) -> str:
    ase.io.write(str(path), frames)
    return str(path)
