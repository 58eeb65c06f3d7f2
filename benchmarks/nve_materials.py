"""Energy conservation (NVE) of exported models on a periodic DFT cell.

Runs velocity Verlet (Maxwell-Boltzmann start at ``--temperature``, 300 K by
default, fixed seed) with each given exported model on one structure (by default
the first of the largest cells of an mlearn test set), through metatomic's ASE
calculator, and records the total energy: the largest excursion from the start
and the fitted drift per ps and atom.
Writes JSON (rendered by ``materials_render.py``).

    OMP_NUM_THREADS=1 python benchmarks/nve_materials.py pet=pet/model.pt \\
        pet_ecse=pet_ecse/model.pt --steps 2000 -o nve-mo.json
    OMP_NUM_THREADS=1 python benchmarks/nve_materials.py pet=pet/model.pt \\
        pet_ecse=pet_ecse/model.pt --structure ethanol.xyz --timestep 0.5 \\
        --steps 20000 -o nve-ethanol.json
"""

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from common import write_json

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlearn"


def nve_run(
    model: str,
    atoms: ase.Atoms,
    steps: int,
    timestep_fs: float,
    observe,
    temperature_k: float = 300.0,
) -> list:
    """``observe(atoms)`` at the start and after every step of a velocity Verlet
    run of ``atoms`` with the exported ``model`` (Maxwell-Boltzmann start at
    ``temperature_k``, fixed seed)."""
    from metatomic_ase import MetatomicCalculator

    atoms = atoms.copy()
    atoms.calc = MetatomicCalculator(model, device="cpu", check_consistency=False)
    MaxwellBoltzmannDistribution(
        atoms,
        temperature_K=temperature_k,
        rng=np.random.default_rng(0),
        force_temp=True,
    )
    observed = [observe(atoms)]
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    dynamics.attach(lambda: observed.append(observe(atoms)), interval=1)
    dynamics.run(steps)
    return observed


def total_energies(
    model: str,
    atoms: ase.Atoms,
    steps: int,
    timestep_fs: float,
    temperature_k: float = 300.0,
) -> np.ndarray:
    """Total energy [steps + 1] along an NVE trajectory of ``atoms``."""
    return np.array(
        nve_run(
            model,
            atoms,
            steps,
            timestep_fs,
            lambda a: a.get_total_energy(),
            temperature_k,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="name=path/to/model.pt")
    parser.add_argument("--element", default="Mo", choices=["Mo", "Ge"])
    parser.add_argument("--structure", help="extxyz file (first frame) instead")
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("-o", "--output", default="nve.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.structure:
        atoms = ase.io.read(args.structure, 0)
        system = Path(args.structure).stem
    else:
        cells = ase.io.read(DATA / f"{args.element}_test.xyz", ":")
        atoms = max(cells, key=len)
        system = args.element
    rows = []
    for item in args.models:
        name, path = item.split("=", 1)
        energies = total_energies(
            path, atoms, args.steps, args.timestep, args.temperature
        )
        times_ps = np.arange(len(energies)) * args.timestep * 1e-3
        slope = np.polyfit(times_ps, energies, 1)[0]
        rows.append(
            {
                "model": name,
                "max_excursion_mev": 1e3 * float(np.abs(energies - energies[0]).max()),
                "drift_mev_per_ps_atom": 1e3 * float(slope) / len(atoms),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "element": system,
        "atoms": len(atoms),
        "steps": args.steps,
        "timestep_fs": args.timestep,
        "temperature_k": args.temperature,
        "runs": rows,
    }
    write_json(args.output, result)


if __name__ == "__main__":
    main()
