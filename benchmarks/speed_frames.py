"""Speed benchmark, measuring: ECSE frame counts and ECSE against quadrature.

1. ``frames``: with the matched ``pet_ecse`` (``speed_models.py``) on every system,
   the structure frames (as ``ecse-structure`` selects them) and the per-atom
   frames of ``atom`` and ``token`` frames (each mode's pruning defaults), after and
   before pruning, the neighbour counts, and the CPU time of building the per-atom
   frames (forward only);
2. ``quadrature``: on ethanol, the rotational error and cost (ASE ``get_forces``)
   of the plain export wrapped in ``metatomic_ase.SymmetrizedCalculator`` at
   several ``l_max``, against the ECSE exports (structure, atom, token frames).

Writes JSON, read by ``speed_render.py``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed_frames.py -o speed-frames.json
    python benchmarks/speed_frames.py --quick --cells 64 -o /tmp/speed-frames.json

``--quick``: l_max 1 and 3 only, 6 rotations, 30 s per calculator (default: l_max
1, 3, 5, 7, 20 rotations, 100 s); ``--cells`` (default 64 216 512 1000).
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import common
import numpy as np
import torch
from common import log
from speed_models import (
    ECSE_MODES,
    SEED,
    build_systems,
    graph_of,
    in_mode,
    make_models,
)


def _counts(builder, graph, passes, structure) -> dict:
    """Structure frames (``structure``) or per-atom frame counts of ``builder``
    with ``passes`` pruning passes."""
    n = graph.species.shape[0]
    saved = builder.pruning_passes, builder.centre_pruning_passes
    builder.pruning_passes = passes
    builder.centre_pruning_passes = saved[1] if passes else 0
    try:
        with torch.no_grad():
            if structure:
                whole = builder.structure_frames(graph, 1)
                return {
                    "structure": int(whole.group.shape[0]),
                    "structure isotropic": int(whole.isotropic.sum()),
                }
            frames = builder(*_builder_inputs(graph))
    finally:
        builder.pruning_passes, builder.centre_pruning_passes = saved
    per_atom = torch.bincount(frames.group, minlength=n).double()
    return {
        "mean": float(per_atom.mean()),
        "max": int(per_atom.max()),
        "isotropic": int(frames.isotropic.sum()),
    }


def _builder_inputs(graph) -> tuple:
    """The arguments of a frame builder's call for all atoms of ``graph``."""
    n = graph.species.shape[0]
    return (
        graph.edge_vectors,
        graph.distances,
        graph.mask,
        torch.arange(n),
        n,
        graph.neighbor_species,
    )


def count_frames(models: dict, atoms) -> dict:
    """Frames of ``atoms`` for the ``pet_ecse`` ``models`` of every ECSE mode:
    structure frames, per-atom frames of atom and token frames, after and before
    pruning, and the builder's CPU ms (per-atom frames, forward)."""
    result = {"after": {}, "before": {}}
    for mode in ECSE_MODES:
        builder = models[mode].symmetrization.frame_builder
        graph = graph_of(models[mode], atoms)
        key = mode.removeprefix("ecse-")
        for when, passes in (("after", builder.pruning_passes), ("before", 0)):
            counts = _counts(builder, graph, passes, key == "structure")
            if key != "structure":
                counts = {f"{key} {k}": v for k, v in counts.items()}
            result[when].update(counts)
        result[f"pruning passes ({key})"] = builder.pruning_passes
        if key == "structure":
            continue

        inputs = _builder_inputs(graph)

        def build(builder=builder, inputs=inputs):
            with torch.no_grad():
                builder(*inputs)

        result[f"builder ms ({key})"] = common.measure(build, 3, min_time=0.3)["cpu"]
    builder = models["ecse-structure"].symmetrization.frame_builder
    result["pruning passes"] = builder.pruning_passes
    result["centre preference length"] = builder.centre_preference_length
    result["outer cutoff"] = float(builder.outer_cutoff)
    result["max neighbors"] = int(graph.mask.shape[1])
    result["mean neighbors"] = float(graph.mask.sum(1).double().mean())
    return result


def _calculators(paths: dict, l_values) -> dict:
    """{name: factory} of the plain export, its quadratures and the ECSE exports
    (one plain calculator for all: TorchScript warms up once)."""
    from metatomic_ase import MetatomicCalculator, SymmetrizedCalculator

    base = MetatomicCalculator(paths["plain"])
    factories = {"plain": lambda: base}
    for l_max in l_values:
        factories[f"quadrature l_max={l_max}"] = lambda l_max=l_max: (
            SymmetrizedCalculator(base, l_max=l_max, include_inversion=True)
        )
    for mode in ECSE_MODES:
        factories[mode] = lambda mode=mode: MetatomicCalculator(paths[mode])
    return factories


def _rotated_calls(calculator, atoms, rotations, budget_s):
    """Energies, back-rotated forces and CPU/wall seconds of rotated calls."""
    energies, forces, wall, cpu = [], [], [], []
    for rotation in rotations:
        rotated = atoms.copy()
        rotated.positions = atoms.positions @ rotation.T
        rotated.calc = calculator
        before = common.clock()
        f = rotated.get_forces()
        after = common.clock()
        wall.append(after[0] - before[0])
        cpu.append(after[1] - before[1])
        energies.append(rotated.get_potential_energy())
        forces.append(f @ rotation)  # back to the unrotated frame
        if sum(cpu) > budget_s and len(cpu) >= 5:
            break
    return np.array(energies), np.array(forces), wall, cpu


def section_quadrature(paths, atoms, l_values, n_rotations, budget_s) -> dict:
    """{calculator: result}: rotational error and cost of ECSE against
    ``SymmetrizedCalculator``."""
    from metatomic_ase import SymmetrizedCalculator
    from scipy.spatial.transform import Rotation

    rotations = Rotation.random(n_rotations, random_state=SEED).as_matrix()
    results = {}
    for name, factory in _calculators(paths, l_values).items():
        calculator = factory()
        symmetrized = isinstance(calculator, SymmetrizedCalculator)
        for i in range(1 if symmetrized else 4):  # TorchScript's first calls
            warm = atoms.copy()
            warm.positions[0, 0] += 1e-6 * (i + 1)
            warm.calc = calculator
            warm.get_forces()
        energies, forces, wall, cpu = _rotated_calls(
            calculator, atoms, rotations, budget_s
        )
        mean_forces = forces.mean(axis=0)
        results[name] = {
            "evaluations": len(calculator.quadrature_rotations) + 1
            if symmetrized
            else 1,
            "rotations": len(cpu),
            "energy": float(energies.mean()),
            "energy std": float(energies.std()),
            "relative energy error": float(energies.std() / abs(energies.mean())),
            "max force error": float(np.abs(forces - mean_forces).max()),
            "force rms": float(np.sqrt((mean_forces**2).sum(-1).mean())),
            "cpu": 1e3 * statistics.median(cpu),
            "wall": 1e3 * statistics.median(wall),
        }
        r = results[name]
        log(
            f"  {name:22s} {r['evaluations']:5d} evals  rel. E err "
            f"{r['relative energy error']:.2e}  max dF {r['max force error']:.2e} "
            f"eV/A  {r['cpu']:9.1f} ms cpu ({r['wall']:.1f} wall)"
        )
    return results


def main() -> None:
    """Count frames, compare with quadrature, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default="speed-frames.json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cells", type=int, nargs="+", default=[64, 216, 512, 1000])
    parser.add_argument("--no-quadrature", action="store_true")
    args = parser.parse_args()
    l_values = [1, 3] if args.quick else [1, 3, 5, 7]
    n_rotations, budget_s = (6, 30.0) if args.quick else (20, 100.0)
    info = common.machine_info()
    systems, system_info = build_systems(args.cells)
    models = make_models()
    ecse = models["matched/pet_ecse"][0]
    ecse.requires_grad_(False)
    modes = {mode: in_mode(ecse, mode) for mode in ["plain", *ECSE_MODES]}
    out = {
        "command": " ".join(["python benchmarks/speed_frames.py", *sys.argv[1:]]),
        "machine": info,
        "systems": system_info,
        "frames": {},
    }
    log("frames per structure / per atom")
    for name, atoms in systems.items():
        f = out["frames"][name] = count_frames(modes, atoms)
        log(
            f"  {name:10s} {len(atoms):5d} atoms: structure {f['after']['structure']}"
            f" (before {f['before']['structure']}), per atom: atom "
            f"{f['after']['atom mean']:.2f}, token {f['after']['token mean']:.2f}"
        )
    if not args.no_quadrature:
        log("ECSE vs quadrature (SymmetrizedCalculator), ethanol")
        with tempfile.TemporaryDirectory() as folder:
            paths = {}
            for mode, model in modes.items():
                paths[mode] = str(Path(folder) / f"{mode}.pt")
                model.export().save(paths[mode])
            out["quadrature"] = section_quadrature(
                paths, systems["ethanol"], l_values, n_rotations, budget_s
            )
        out.update(l_values=l_values, n_rotations=n_rotations, budget_s=budget_s)
    common.write_json(args.output, out)


if __name__ == "__main__":
    main()
