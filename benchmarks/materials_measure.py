"""Cost, peak memory and exactness of the default export on periodic cells.

Builds metatrain's ``pet`` and ``pet_ecse`` with their DEFAULT model hypers (both
cutoff 4.5 A) for bcc Mo, exports them (untrained: the cost of a forward and
backward pass does not depend on the weights, and ECSE's frames depend on the
geometry only), and measures on rattled bcc supercells of 64 to 1000 atoms:

- energy + forces through metatomic's ASE calculator, timed round-robin (every
  round a new random order of the models), median per model and size;
- peak resident memory of an energy + forces call, each model and size in a
  fresh process (the growth over the process after loading and a first call,
  and the total);
- the rotation error of the ``pet_ecse`` export (energy relative, force max abs).

Also a 9-atom and a 25-atom molecule (types H, C, N, O) for the molecule floor.
Writes JSON; ``materials_render.py`` turns it into tables.

    OMP_NUM_THREADS=1 python benchmarks/materials_measure.py -o materials.json
"""

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase
import ase.build
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CELLS = {64: (4, 4, 2), 216: (6, 6, 3), 512: (8, 8, 4), 1000: (10, 10, 5)}


def structure(name: str) -> ase.Atoms:
    """A rattled bcc Mo supercell ("mo-<atoms>") or a molecule."""
    rng = np.random.default_rng(7)
    if name.startswith("mo-"):
        atoms = ase.build.bulk("Mo", "bcc", 3.16, cubic=True)
        atoms = atoms.repeat(CELLS[int(name[3:])])
    elif name == "ethanol":
        atoms = ase.build.molecule("CH3CH2OH")
    else:  # "molecule-25": ethanol, acetamide and nitromethane, C5H14N2O4
        atoms = ase.build.molecule("CH3CH2OH")
        for shift, formula in [
            ((2.6, 0.4, 0.2), "CH3CONH2"),
            ((-2.4, 2.1, 0), "CH3NO2"),
        ]:
            part = ase.build.molecule(formula)
            part.positions += shift
            atoms += part
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    return atoms


def export_models(types: list[int], folder: Path) -> dict[str, str]:
    """Untrained default ``pet`` and ``pet_ecse`` exports for ``types``."""
    from metatrain.pet import PET
    from metatrain.utils.architectures import get_default_hypers
    from metatrain.utils.data import DatasetInfo
    from metatrain.utils.data.target_info import get_energy_target_info

    from pet_metatrain import PETECSE

    target = get_energy_target_info(
        "energy", {"quantity": "energy", "unit": "eV"}, add_position_gradients=True
    )
    info = DatasetInfo(
        length_unit="angstrom", atomic_types=types, targets={"energy": target}
    )
    paths = {}
    for name, cls in [("pet", PET), ("pet_ecse", PETECSE)]:
        torch.manual_seed(0)
        hypers = copy.deepcopy(get_default_hypers(name)["model"])
        hypers["cutoff"] = 4.5
        path = folder / f"{name}-{'-'.join(map(str, types))}.pt"
        cls(hypers, info).eval().export().save(str(path))
        paths[name] = str(path)
    return paths


def calculator(path: str):
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(path, device="cpu", check_consistency=False)


def energy_forces(calc, atoms: ase.Atoms) -> tuple[float, np.ndarray]:
    calc.reset()
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


def time_round_robin(paths: dict, atoms: ase.Atoms, rounds: int) -> dict:
    calcs = {name: calculator(path) for name, path in paths.items()}
    for calc in calcs.values():  # TorchScript specializes on the first calls
        for _ in range(3):
            energy_forces(calc, atoms)
    times: dict[str, list[float]] = {name: [] for name in calcs}
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        for name in rng.permutation(list(calcs)):
            start = time.perf_counter()
            energy_forces(calcs[name], atoms)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def rotation_error(path: str, atoms: ase.Atoms) -> dict:
    calc = calculator(path)
    energy, forces = energy_forces(calc, atoms)
    errors = {"energy_rel": 0.0, "forces_max": 0.0}
    rng = np.random.default_rng(3)
    for _ in range(2):
        rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        rotation *= np.linalg.det(rotation)
        rotated = atoms.copy()
        rotated.positions = atoms.positions @ rotation.T
        if atoms.pbc.any():
            rotated.cell = np.array(atoms.cell) @ rotation.T
        energy2, forces2 = energy_forces(calc, rotated)
        errors["energy_rel"] = max(
            errors["energy_rel"], abs(energy2 - energy) / abs(energy)
        )
        errors["forces_max"] = max(
            errors["forces_max"], float(np.abs(forces2 - forces @ rotation.T).max())
        )
    return errors


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def probe_memory(path: str, name: str) -> dict:
    """Resident memory (kB) of this (fresh) process after loading the model and
    a first call, and its peak during a second call (Linux: the peak is reset
    through /proc/self/clear_refs, so loading does not hide the call's peak)."""
    calc = calculator(path)
    atoms = structure(name)
    energy_forces(calc, atoms)
    Path("/proc/self/clear_refs").write_text("5")
    loaded = _status_kb("VmRSS")
    energy_forces(calc, atoms)
    return {"loaded_kb": loaded, "peak_kb": _status_kb("VmHWM")}


def memory_in_fresh_process(path: str, name: str) -> dict:
    command = [sys.executable, __file__, "--probe-memory", path, name]
    output = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="materials.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(CELLS))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--probe-memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.probe_memory:
        print(json.dumps(probe_memory(*args.probe_memory)))
        return

    results = {
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "systems": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        models = {
            "mo": export_models([42], Path(folder)),
            "molecule": export_models([1, 6, 7, 8], Path(folder)),
        }
        names = [f"mo-{size}" for size in args.sizes] + ["ethanol", "molecule-25"]
        for name in names:
            paths = models["mo" if name.startswith("mo-") else "molecule"]
            atoms = structure(name)
            row = {"system": name, "atoms": len(atoms)}
            row["seconds"] = time_round_robin(paths, atoms, args.rounds)
            row["memory"] = {
                m: memory_in_fresh_process(p, name) for m, p in paths.items()
            }
            row["rotation_error"] = rotation_error(paths["pet_ecse"], atoms)
            row["rotation_error_pet"] = rotation_error(paths["pet"], atoms)
            print(json.dumps(row), flush=True)
            results["systems"].append(row)
    Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
