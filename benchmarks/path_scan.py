"""Smoothness of exported models along one common MD path (energy against work).

NVE trajectories of different models part after a few hundred steps (and those of
poorly trained models wander into broken molecules), so comparing their energy
conservation mixes smoothness with where each one went. This benchmark runs one
NVE trajectory with a *guide* model, then evaluates every model on the same
positions ``x_k`` and reports, per step, the trapezoid error of energy against
work,

    err_k = E(x_{k+1}) - E(x_k) + (F(x_k) + F(x_{k+1})) . (x_{k+1} - x_k) / 2,

which is zero for a smooth potential sampled finely and large where the energy
changes faster than one step resolves (a frame switching on within a step).
Reports the largest, the 99th percentile and the sum of |err_k|. Writes JSON.

    OMP_NUM_THREADS=1 python benchmarks/path_scan.py --guide pet_ecse/model.pt \\
        pet=pet/model.pt pet_ecse=pet_ecse/model.pt \\
        --structure ethanol.xyz --timestep 0.5 --steps 800 -o path-scan.json
"""

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np
import torch
from nve_materials import nve_run


def trajectory(
    model: str, atoms: ase.Atoms, steps: int, timestep_fs: float
) -> np.ndarray:
    """Positions [steps + 1, n_atoms, 3] of an NVE run of ``model`` (300 K start)."""
    return np.array(
        nve_run(model, atoms, steps, timestep_fs, lambda a: a.positions.copy())
    )


def work_errors(model: str, atoms: ase.Atoms, positions: np.ndarray) -> np.ndarray:
    """|err_k| [n_steps] of ``model`` along ``positions`` (eV; see above)."""
    from metatomic_ase import MetatomicCalculator

    atoms = atoms.copy()
    atoms.calc = MetatomicCalculator(model, device="cpu", check_consistency=False)
    energies, forces = [], []
    for x in positions:
        atoms.positions = x
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
    energies, forces = np.array(energies), np.array(forces)
    steps = np.diff(positions, axis=0)
    work = 0.5 * ((forces[1:] + forces[:-1]) * steps).sum(axis=(1, 2))
    return np.abs(np.diff(energies) + work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="name=path/to/model.pt")
    parser.add_argument("--guide", required=True, help="model.pt that runs the MD")
    parser.add_argument("--structure", required=True, help="extxyz (first frame)")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("-o", "--output", default="path-scan.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    atoms = ase.io.read(args.structure, 0)
    positions = trajectory(args.guide, atoms, args.steps, args.timestep)
    rows = []
    for item in args.models:
        name, path = item.split("=", 1)
        errors = 1e3 * work_errors(path, atoms, positions)
        rows.append(
            {
                "model": name,
                "max_error_mev": float(errors.max()),
                "p99_error_mev": float(np.percentile(errors, 99)),
                "sum_error_mev": float(errors.sum()),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "structure": Path(args.structure).stem,
        "guide": args.guide,
        "atoms": len(atoms),
        "steps": args.steps,
        "timestep_fs": args.timestep,
        "threads": torch.get_num_threads(),
        "runs": rows,
    }
    Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
