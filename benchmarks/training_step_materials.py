"""Training cost per step on mlearn cells: metatrain's ``pet`` against the default
``pet_ecse`` (token frames, frame-weight noise), both at their DEFAULT hypers
(cutoff 4.5 A), float32, one thread.

One step = ``evaluate_model(..., is_training=True)`` (forces with
``create_graph=True``), energy + forces MSE, ``backward``, gradient clipping and an
Adam step, on a batch of the first ``--batch`` training cells (4, as in the
accuracy runs). Steps are timed round-robin (a new random order every round), so
that load changes affect both models alike; medians over the rounds. Writes JSON.

With ``--device cuda`` the models, systems (neighbor lists computed on the CPU first,
as metatrain's data loading does) and targets live on the GPU, and the clock is read
after ``torch.cuda.synchronize()``. ``--data`` is the folder with
``<element>_training.xyz`` (only the first ``--batch`` cells are read).

    OMP_NUM_THREADS=1 python benchmarks/training_step_materials.py --element Mo \\
        -o training-step-mo.json
"""

import argparse
import copy
import json
import platform
import time
from pathlib import Path
from typing import Optional

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


def step_function(
    model: torch.nn.Module,
    frames: list,
    info: DatasetInfo,
    device: str = "cpu",
    foreach: Optional[bool] = None,
):
    """One optimizer step of ``model`` (already on ``device``) on ``frames``, as a
    callable; ``foreach`` is Adam's (None: torch's choice for the device)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=foreach)
    systems = [
        get_system_with_neighbor_lists(
            systems_to_torch(atoms, dtype=torch.float32, positions_requires_grad=True),
            model.requested_neighbor_lists(),
        )
        for atoms in frames
    ]
    if device != "cpu":
        systems = [system.to(device=device) for system in systems]
    energies = torch.tensor([a.get_potential_energy() for a in frames]).float()
    energies = (energies - energies.mean()).to(device)
    forces = torch.tensor(np.concatenate([a.get_forces() for a in frames])).float()
    forces = forces.to(device)

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


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--element", default="Mo")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--data", type=Path, default=DATA, help="folder with <element>_training.xyz"
    )
    parser.add_argument("-o", "--output", default="training-step.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    frames = ase.io.read(args.data / f"{args.element}_training.xyz", f":{args.batch}")
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
        model = cls(hypers, info).to(device=args.device, dtype=torch.float32)
        models[name] = model.train()
    models["pet_ecse"].set_phase("train")  # what its trainer asks for
    steps = {
        name: step_function(model, frames, info, args.device)
        for name, model in models.items()
    }
    for step in steps.values():
        for _ in range(1 if args.device == "cpu" else 3):  # warm-up
            step()
    times = {name: [] for name in steps}
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        for name in rng.permutation(list(steps)):
            synchronize(args.device)
            start = time.perf_counter()
            steps[name]()
            synchronize(args.device)
            times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    result = {
        "element": args.element,
        "atoms": [len(atoms) for atoms in frames],
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "seconds_per_step": medians,
        "ratio": medians["pet_ecse"] / medians["pet"],
    }
    if args.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    print(f"| model | s / step ({args.element}, {sum(result['atoms'])} atoms) |")
    print("|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value:.3f} |")
    where = result.get("gpu", f"{result['threads']} thread")
    print(f"pet_ecse / pet: {result['ratio']:.2f} ({where})")
    Path(args.output).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
