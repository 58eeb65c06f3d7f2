"""Short-range repulsion of exported models: the energy as one atom is pushed
towards another, far closer than any training frame.

From the first frame of a structure file, atom ``m`` is moved along the line to
atom ``t`` until they are ``d`` apart, everything else fixed; the table gives
``E(d) - E(1.5 A)`` in eV for d = 1.0, 0.7 and 0.5 A. A model without repulsion
there lets MD trajectories run atoms into each other (see the ethanol NVE notes in
``materials-notes.md``). Writes JSON and prints a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/short_range.py pet=pet/model.pt \\
        pet_ecse=pet_ecse/model.pt --structure ethanol.xyz --pairs 8:3 8:4 3:4 8:0
"""

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np
import torch

DISTANCES = [1.5, 1.0, 0.7, 0.5]


def approach_energies(model: str, atoms: ase.Atoms, pairs: list) -> list:
    """``E(d) - E(DISTANCES[0])`` [len(pairs), len(DISTANCES) - 1] in eV."""
    from metatomic_ase import MetatomicCalculator

    calculator = MetatomicCalculator(model, device="cpu", check_consistency=False)
    rows = []
    for moving, target in pairs:
        direction = atoms.positions[moving] - atoms.positions[target]
        direction /= np.linalg.norm(direction)
        energies = []
        for distance in DISTANCES:
            moved = atoms.copy()
            moved.positions[moving] = atoms.positions[target] + distance * direction
            moved.calc = calculator
            energies.append(moved.get_potential_energy())
        rows.append([float(e - energies[0]) for e in energies[1:]])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="name=path/to/model.pt")
    parser.add_argument("--structure", required=True, help="extxyz (first frame)")
    parser.add_argument("--pairs", nargs="+", required=True, help="moving:target")
    parser.add_argument("-o", "--output", default="short-range.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    atoms = ase.io.read(args.structure, 0)
    pairs = [tuple(int(i) for i in pair.split(":")) for pair in args.pairs]
    symbols = atoms.get_chemical_symbols()
    names = [f"{symbols[m]}{m} -> {symbols[t]}{t}" for m, t in pairs]
    runs = []
    for item in args.models:
        name, path = item.split("=", 1)
        runs.append({"model": name, "rise_ev": approach_energies(path, atoms, pairs)})
    steps = "/".join(f"{d:g}" for d in DISTANCES[1:])
    lines = [
        f"E(d) - E({DISTANCES[0]:g} A) in eV at d = {steps} A",
        "",
        "| model | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for run in runs:
        cells = ["/".join(f"{e:+.2f}" for e in row) for row in run["rise_ev"]]
        lines.append(f"| {run['model']} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    result = {
        "structure": Path(args.structure).name,
        "pairs": names,
        "distances": DISTANCES,
        "runs": runs,
    }
    Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
