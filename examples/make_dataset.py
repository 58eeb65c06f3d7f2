"""Write the example data set: rattled periodic Cu-Au cells labelled with ASE's EMT.

Energies (eV), forces (eV/A) and stress (eV/A^3) of 8-atom fcc supercells with
random composition, a lattice constant near Vegard's law, and thermal-like rattling.
Deterministic for a given seed.
"""

import argparse

import ase.build
import ase.io
import numpy as np
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


def make_structures(count: int, seed: int) -> list:
    """``count`` labelled structures, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    structures = []
    for _ in range(count):
        gold_fraction = rng.uniform(0.1, 0.6)
        # Vegard's law between the EMT lattice constants of Cu and Au
        lattice = (1 - gold_fraction) * 3.61 + gold_fraction * 4.08
        atoms = ase.build.bulk("Cu", "fcc", a=lattice * rng.uniform(0.98, 1.02))
        atoms = atoms.repeat((2, 2, 2))
        gold = rng.random(len(atoms)) < gold_fraction
        atoms.numbers[gold] = 79
        atoms.positions += rng.normal(0.0, 0.06, atoms.positions.shape)
        atoms.calc = EMT()
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        stress = atoms.get_stress(voigt=False)
        atoms.calc = SinglePointCalculator(
            atoms, energy=energy, forces=forces, stress=stress
        )
        structures.append(atoms)
    return structures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="examples/cuau_emt.xyz")
    args = parser.parse_args()
    ase.io.write(args.output, make_structures(args.count, args.seed))


if __name__ == "__main__":
    main()
