"""Energy conservation (NVE) of exported models on a periodic DFT cell.

Runs velocity Verlet (1 fs, 300 K Maxwell-Boltzmann start, fixed seed) with each
given exported model on the first cell of an mlearn test set, through metatomic's
ASE calculator, and records the total energy: the largest excursion from the start
and the fitted drift per ps and atom. Writes JSON (rendered by
``materials_render.py``).

    OMP_NUM_THREADS=1 python benchmarks/nve_materials.py pet=pet/model.pt \\
        pet_ecse=pet_ecse/model.pt --steps 500 -o nve-mo.json
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

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlearn"


def total_energies(model: str, atoms: ase.Atoms, steps: int) -> np.ndarray:
    from metatomic_ase import MetatomicCalculator

    atoms = atoms.copy()
    atoms.calc = MetatomicCalculator(model, device="cpu", check_consistency=False)
    MaxwellBoltzmannDistribution(
        atoms, temperature_K=300, rng=np.random.default_rng(0), force_temp=True
    )
    energies = [atoms.get_total_energy()]
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dynamics.run(steps)
    return np.array(energies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="name=path/to/model.pt")
    parser.add_argument("--element", default="Mo", choices=["Mo", "Ge"])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("-o", "--output", default="nve.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    atoms = ase.io.read(DATA / f"{args.element}_test.xyz", 0)
    rows = []
    for item in args.models:
        name, path = item.split("=", 1)
        energies = total_energies(path, atoms, args.steps)
        times_ps = np.arange(len(energies)) * 1e-3
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
        "element": args.element,
        "atoms": len(atoms),
        "steps": args.steps,
        "timestep_fs": 1.0,
        "runs": rows,
    }
    Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
