"""`pet-ecse symmetrize` against metatomic's SymmetrizedCalculator, same inner model.

The inner model is any exported metatomic model (default: a tiny model of
metatrain's own `pet` architecture trained here on EMT-labelled molecules, as in
tests/test_wrapper.py). For an ethanol molecule, each way of symmetrizing is
evaluated on random rotations: the spread of the energy (std, relative to |E|), the
largest back-rotated force difference, and the median cost of one energy+forces call.

    OMP_NUM_THREADS=1 python benchmarks/wrapper_quadrature.py [--model model.pt]
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import ase.build
import numpy as np
import torch
from metatomic_ase import MetatomicCalculator, SymmetrizedCalculator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from models import random_rotation, rotated  # noqa: E402
from test_wrapper import train_pet  # noqa: E402

from pet_metatrain.cli import symmetrize_exported  # noqa: E402


def measure(calculator, atoms, rotations, repeats: int = 5):
    energies, forces, times = [], [], []
    for rotation in rotations:
        copy = rotated(atoms, rotation)
        copy.calc = calculator
        start = time.process_time()
        energies.append(copy.get_potential_energy())
        forces.append(copy.get_forces() @ rotation)
        times.append(time.process_time() - start)
    energies = np.array(energies)
    force_error = max(np.abs(f - forces[0]).max() for f in forces)
    return energies.std() / abs(energies.mean()), force_error, np.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="an exported model (default: train one)")
    parser.add_argument("--rotations", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    workdir = Path(tempfile.mkdtemp(prefix="pet-ecse-wrapper-"))
    model = Path(args.model) if args.model else train_pet(workdir, precision=64)
    wrapped = symmetrize_exported(str(model), str(workdir / "ecse.pt"), {})

    atoms = ase.build.molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    rng = np.random.default_rng(0)
    rotations = [np.eye(3)] + [random_rotation(rng) for _ in range(args.rotations)]

    base = MetatomicCalculator(str(model), device="cpu")
    rows = [("inner model (plain)", 1, *measure(base, atoms, rotations))]
    for l_max in (1, 3, 5):
        calculator = SymmetrizedCalculator(base, l_max=l_max, include_inversion=True)
        count = len(calculator.quadrature_rotations)
        rows.append(
            (
                f"SymmetrizedCalculator l_max={l_max}",
                count,
                *measure(calculator, atoms, rotations),
            )
        )
    ecse = MetatomicCalculator(str(wrapped), device="cpu")
    rows.append(
        ("pet-ecse symmetrize (ECSE)", "frames", *measure(ecse, atoms, rotations))
    )

    plain_cost = rows[0][4]
    lines = [
        "# ECSE around another architecture's model vs quadrature averaging",
        "",
        "`OMP_NUM_THREADS=1 python benchmarks/wrapper_quadrature.py`: "
        f"{platform.platform()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        "1 thread, float64. Inner model: a tiny metatrain `pet` (1 epoch on EMT "
        "molecules, so far from invariant); ethanol, "
        f"{len(rotations)} rotations; CPU time of one energy+forces call (median).",
        "",
        "| method | evaluations | energy std / abs(E) | max force error (eV/A) "
        "| CPU ms/call | vs plain |",
        "|---|---|---|---|---|---|",
    ]
    for name, count, energy, force, cost in rows:
        lines.append(
            f"| {name} | {count} | {energy:.2e} | {force:.2e} | {cost:.1f} "
            f"| {cost / plain_cost:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    Path(args.out, "benchmarks-wrapper.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
