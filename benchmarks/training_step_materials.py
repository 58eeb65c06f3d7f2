"""Training cost per step on mlearn cells: metatrain's ``pet`` against the default
``pet_ecse`` (token frames, frame-weight noise), both at their DEFAULT hypers
(cutoff 4.5 A), float32, one thread.

One step = ``evaluate_model(..., is_training=True)`` (forces with
``create_graph=True``), energy + forces MSE, ``backward``, gradient clipping and an
Adam step, on a batch of the first ``--batch`` training cells (4, as in the
accuracy runs). Steps are timed round-robin (a new random order every round), so
that load changes affect both models alike; medians over the rounds. Writes JSON.

    OMP_NUM_THREADS=1 python benchmarks/training_step_materials.py --element Mo \\
        -o training-step-mo.json
"""

import argparse
import copy
import json
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from metatomic.torch import systems_to_torch
from metatrain.pet import PET
from metatrain.utils.architectures import get_default_hypers
from metatrain.utils.data import DatasetInfo
from metatrain.utils.data.target_info import get_energy_target_info
from metatrain.utils.evaluate_model import evaluate_model
from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists

from pet_metatrain import PETECSE

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mlearn"


def step_function(model: torch.nn.Module, frames: list, info: DatasetInfo):
    """One optimizer step of ``model`` on ``frames``, as a callable."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    systems = [
        get_system_with_neighbor_lists(
            systems_to_torch(atoms, dtype=torch.float32, positions_requires_grad=True),
            model.requested_neighbor_lists(),
        )
        for atoms in frames
    ]
    energies = torch.tensor([a.get_potential_energy() for a in frames]).float()
    energies = energies - energies.mean()
    forces = torch.tensor(np.concatenate([a.get_forces() for a in frames])).float()

    def step() -> None:
        optimizer.zero_grad()
        predictions = evaluate_model(model, systems, info.targets, is_training=True)
        block = predictions["energy"].block()
        predicted = -block.gradient("positions").values.reshape(-1, 3)
        loss = torch.mean((block.values.reshape(-1) - energies) ** 2)
        loss = loss + torch.mean((predicted - forces) ** 2)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--element", default="Mo")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("-o", "--output", default="training-step.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    frames = ase.io.read(DATA / f"{args.element}_training.xyz", f":{args.batch}")
    types = sorted({int(z) for atoms in frames for z in atoms.numbers})
    target = get_energy_target_info(
        "energy", {"quantity": "energy", "unit": "eV"}, add_position_gradients=True
    )
    info = DatasetInfo(
        length_unit="angstrom", atomic_types=types, targets={"energy": target}
    )
    models = {}
    for name, cls in (("pet", PET), ("pet_ecse", PETECSE)):
        hypers = copy.deepcopy(get_default_hypers(name)["model"])
        hypers["cutoff"] = 4.5
        torch.manual_seed(0)
        models[name] = cls(hypers, info).to(torch.float32).train()
    models["pet_ecse"].set_phase("train")  # what its trainer asks for
    steps = {name: step_function(model, frames, info) for name, model in models.items()}
    for step in steps.values():
        step()  # warm-up
    times = {name: [] for name in steps}
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        for name in rng.permutation(list(steps)):
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    result = {
        "element": args.element,
        "atoms": [len(atoms) for atoms in frames],
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "seconds_per_step": medians,
        "ratio": medians["pet_ecse"] / medians["pet"],
    }
    print(f"| model | s / step ({args.element}, {sum(result['atoms'])} atoms) |")
    print("|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value:.3f} |")
    print(f"pet_ecse / pet: {result['ratio']:.2f} ({result['threads']} thread)")
    Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
