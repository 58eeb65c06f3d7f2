"""Cost, peak memory and exactness of the default export on periodic cells.

Builds metatrain's ``pet`` and ``pet_ecse`` with their DEFAULT model hypers (both
cutoff 4.5 A) for bcc Mo, exports them (untrained: the cost of a forward and
backward pass does not depend on the weights, and ECSE's frames depend on the
geometry only), and measures on rattled bcc supercells of 64 to 1000 atoms (2000
and 4394 on request, ``--sizes``):

- energy + forces through metatomic's ASE calculator, timed round-robin (every
  round a new random order of the models), median per model and size;
- peak resident memory of an energy + forces call, each model and size in a
  fresh process (the growth over the process after loading and a first call,
  and the total); with ``--device cuda`` also the GPU memory the caching
  allocator hands out (``torch.cuda.max_memory_allocated`` over a second call,
  and what is allocated after loading and a first call); and the bytes autograd
  keeps for the backward pass of the forces (the same on every device);
- the rotation error of the ``pet_ecse`` export (energy relative, force max abs).

Also a 9-atom and a 25-atom molecule (types H, C, N, O) for the molecule floor.
Writes JSON (rewritten after each system, so an interrupted run keeps the rows
done; a system that fails is recorded with its error); ``materials_render.py``
turns it into tables.

    OMP_NUM_THREADS=1 python benchmarks/materials_measure.py -o materials.json
    OMP_NUM_THREADS=1 python benchmarks/materials_measure.py --device cuda \
        --sizes 64 216 512 1000 2000 4394 --rounds 15 -o materials-gpu.json
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
import traceback
from pathlib import Path

import ase
import ase.build
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CELLS = {64: (4, 4, 2), 216: (6, 6, 3), 512: (8, 8, 4), 1000: (10, 10, 5)}
DEFAULT_SIZES = list(CELLS)
CELLS.update({2000: (10, 10, 10), 4394: (13, 13, 13)})  # only with --sizes
NEIGHBORS_ON_CPU = False  # --neighbors-on-cpu, passed on to the memory probes


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


def default_model(
    name: str,
    types: list[int],
    cutoff: float = 4.5,
    model: dict | None = None,
    symmetrization: dict | None = None,
) -> torch.nn.Module:
    """An untrained ``pet`` or ``pet_ecse`` (``name``) in evaluation mode, with
    its default hypers but ``cutoff``, the ``model`` hypers and (``pet_ecse``)
    the ``symmetrization`` options given; energy (with forces) for ``types``."""
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
    hypers = copy.deepcopy(get_default_hypers(name)["model"])
    hypers.update(cutoff=cutoff, **(model or {}))
    if symmetrization:
        hypers["symmetrization"].update(symmetrization)
    torch.manual_seed(0)
    return {"pet": PET, "pet_ecse": PETECSE}[name](hypers, info).eval()


def export_models(types: list[int], folder: Path) -> dict[str, str]:
    """Untrained default ``pet`` and ``pet_ecse`` exports for ``types``."""
    paths = {}
    for name in ("pet", "pet_ecse"):
        path = folder / f"{name}-{'-'.join(map(str, types))}.pt"
        default_model(name, types).export().save(str(path))
        paths[name] = str(path)
    return paths


def calculator(path: str, device: str = "cpu"):
    from metatomic_ase import MetatomicCalculator

    return MetatomicCalculator(path, device=device, check_consistency=False)


def compute_neighbors_on_cpu() -> None:
    """Make metatomic's ASE calculator run vesin on the CPU and move the neighbor
    lists to the model's device (what it does for devices other than cpu and cuda),
    for a machine where vesin cannot load CUDA's libraries."""
    from metatomic_ase import _neighbors

    def on_cpu(systems: list, calculators: list) -> list:
        devices = [system.device for system in systems]
        systems = [system.to(device="cpu") for system in systems]
        for calc in calculators:
            calc.add_neighbor_list(systems=systems, copy=len(systems) > 1)
        return [s.to(device=d) for s, d in zip(systems, devices, strict=True)]

    _neighbors._compute_requested_neighbors_vesin = on_cpu


def synchronize(device: str) -> None:
    """Wait for queued GPU work (the ASE calculator returns numpy arrays, which
    synchronizes already; this makes the clock readings safe regardless)."""
    if device == "cuda":
        torch.cuda.synchronize()


def energy_forces(calc, atoms: ase.Atoms) -> tuple[float, np.ndarray]:
    calc.reset()
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


def time_round_robin(
    paths: dict,
    atoms: ase.Atoms,
    rounds: int,
    device: str = "cpu",
    keep: dict | None = None,
) -> dict:
    """Median seconds per model; the calculators are put in ``keep`` if given."""
    calcs = {name: calculator(path, device) for name, path in paths.items()}
    if keep is not None:
        keep.update(calcs)
    for calc in calcs.values():  # TorchScript specializes on the first calls
        for _ in range(3):
            energy_forces(calc, atoms)
    times: dict[str, list[float]] = {name: [] for name in calcs}
    rng = np.random.default_rng(0)
    for _ in range(rounds):
        for name in rng.permutation(list(calcs)):
            synchronize(device)
            start = time.perf_counter()
            energy_forces(calcs[name], atoms)
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}


def rotation_error(model, atoms: ase.Atoms, device: str = "cpu") -> dict:
    """Rotation error of ``model``: the path of an export (a fresh calculator on
    ``device``) or a calculator."""
    calc = calculator(model, device) if isinstance(model, str) else model
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


def probe_memory(path: str, name: str, device: str = "cpu") -> dict:
    """Resident memory (kB) of this (fresh) process after loading the model and
    a first call, and its peak during a second call (Linux: the peak is reset
    through /proc/self/clear_refs, so loading does not hide the call's peak).
    On cuda also the bytes the caching allocator has handed out after loading and
    a first call, and their peak during the second call."""
    calc = calculator(path, device)
    atoms = structure(name)
    energy_forces(calc, atoms)
    synchronize(device)
    result = {}
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # then peak_kb is the peak of the whole process
        result["rss_peak_reset"] = False
    result["loaded_kb"] = _status_kb("VmRSS")
    if device == "cuda":
        result["gpu_loaded_bytes"] = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    energy_forces(calc, atoms)
    synchronize(device)
    result["peak_kb"] = _status_kb("VmHWM")
    if device == "cuda":
        result["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
        result["gpu_peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
    result["saved_bytes"] = saved_for_backward(calc, atoms)
    return result


def saved_for_backward(calc, atoms: ase.Atoms) -> int:
    """Bytes of the distinct storages autograd keeps for the forces' backward
    pass during one energy + forces call: what the call's memory grows by on any
    device (on a GPU, what the caching allocator hands out beyond the model)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        energy_forces(calc, atoms)
    return sum(storages.values())


def start_probe(path: str, name: str, device: str) -> subprocess.Popen:
    """``probe_memory`` in a fresh process; ``finish_probe`` reads its result."""
    command = [sys.executable, __file__, "--probe-memory", path, name]
    command += ["--device", device]
    if NEIGHBORS_ON_CPU:
        command.append("--neighbors-on-cpu")
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_probe(process: subprocess.Popen, name: str) -> dict:
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"memory probe of {name} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def memory_in_fresh_process(path: str, name: str, device: str = "cpu") -> dict:
    return finish_probe(start_probe(path, name, device), name)


def measure(name: str, paths: dict, args) -> dict:
    """One row: timings, memory and rotation errors of both models on ``name``.

    On cuda, where most of the time goes into warming up calculators and starting
    processes, the rotation errors reuse the (warm) calculators of the timing, and
    the memory probes of both models run at the same time as they are computed
    (memory is per process; nothing is timed then)."""
    atoms = structure(name)
    row = {"system": name, "atoms": len(atoms)}
    if args.device == "cpu":
        row["seconds"] = time_round_robin(paths, atoms, args.rounds)
        row["memory"] = {m: memory_in_fresh_process(p, name) for m, p in paths.items()}
        row["rotation_error"] = rotation_error(paths["pet_ecse"], atoms)
        row["rotation_error_pet"] = rotation_error(paths["pet"], atoms)
        return row
    calcs: dict = {}
    row["seconds"] = time_round_robin(paths, atoms, args.rounds, args.device, calcs)
    probes = {m: start_probe(p, name, args.device) for m, p in paths.items()}
    try:
        row["rotation_error"] = rotation_error(calcs["pet_ecse"], atoms)
        row["rotation_error_pet"] = rotation_error(calcs["pet"], atoms)
        del calcs
        row["memory"] = {m: finish_probe(p, name) for m, p in probes.items()}
    finally:
        for process in probes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()
    return row


def main() -> None:
    global NEIGHBORS_ON_CPU
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="materials.json")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=DEFAULT_SIZES, choices=list(CELLS)
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--neighbors-on-cpu",
        action="store_true",
        help="with --device cuda: neighbor lists by vesin on the CPU, moved to the GPU",
    )
    parser.add_argument("--probe-memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.neighbors_on_cpu and args.device != "cpu":
        NEIGHBORS_ON_CPU = True
        compute_neighbors_on_cpu()
    if args.probe_memory:
        print(json.dumps(probe_memory(*args.probe_memory, args.device)))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")

    results = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rounds": args.rounds,
        "neighbors": "cpu" if NEIGHBORS_ON_CPU else args.device,
        "systems": [],
    }
    if args.device == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
        results["cuda"] = torch.version.cuda
    Path(args.output).write_text(json.dumps(results, indent=1))
    with tempfile.TemporaryDirectory() as folder:
        models = {
            "mo": export_models([42], Path(folder)),
            "molecule": export_models([1, 6, 7, 8], Path(folder)),
        }
        names = [f"mo-{size}" for size in args.sizes] + ["ethanol", "molecule-25"]
        for name in names:
            paths = models["mo" if name.startswith("mo-") else "molecule"]
            start = time.perf_counter()
            try:
                row = measure(name, paths, args)
            except Exception as error:  # keep the other systems of a one-shot run
                traceback.print_exc()
                row = {"system": name, "atoms": len(structure(name))}
                row["error"] = f"{type(error).__name__}: {error}"[-2000:]
            row["wall_seconds"] = time.perf_counter() - start
            if args.device == "cuda":
                torch.cuda.empty_cache()  # what a failed or large system left
            print(json.dumps(row), flush=True)
            results["systems"].append(row)
            Path(args.output).write_text(json.dumps(results, indent=1))
    Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
