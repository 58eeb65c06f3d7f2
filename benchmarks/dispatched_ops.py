"""Kernels one call dispatches: metatrain's ``pet`` against the default ``pet_ecse``
(token frames), counted on the CPU, as a proxy for a GPU's launch-bound cost.

A GPU runs ``pet`` on cells of up to ~1000 atoms in the time its kernel launches
take (the H200 page: 24-27 ms from 64 to 1000 atoms), so there the ratio of
launched kernels predicts the ratio of times. Every ATen operator that reaches
the dispatcher is counted (``TorchDispatchMode``), split into kernels (what
launches on a GPU) and views (``view``, ``transpose``, ``detach``, ...: no
launch); host synchronizations (``.item()``, ``nonzero``, boolean masks) are
counted apart. ``pet_ecse`` runs with its GPU chunk sizes (``GPU_CHUNK_FACTOR``
times the CPU's), as on a GPU.

Two calls, untrained models at default hypers (cutoff 4.5 A), float32:
- inference: energy + forces (forward and one backward), eager, on rattled bcc Mo
  cells and ethanol;
- training step: forces with ``create_graph``, loss, backward, clipping and an
  Adam step that updates all tensors at once (``foreach``, a GPU's default;
  ``training_step_materials.step_function``) on the first 4 cells of mlearn Mo
  and Ge (skipped where ``--data`` lacks them).

The table gives the kernels ``pet_ecse`` launches beyond ``pet``'s next to their
ratio: the extra kernels are what a launch-bound GPU pays for.

    OMP_NUM_THREADS=1 python benchmarks/dispatched_ops.py -o dispatched-ops.json
"""

import argparse
from pathlib import Path
from typing import Any, Optional

import ase.io
import torch
from common import write_json
from materials_measure import default_model, structure
from metatomic.torch import ModelOutput, systems_to_torch
from metatrain.pet import PET
from metatrain.utils.architectures import get_default_hypers
from metatrain.utils.data import DatasetInfo
from metatrain.utils.data.target_info import get_energy_target_info
from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists
from torch.utils._python_dispatch import TorchDispatchMode
from training_step_materials import DATA, step_function

from pet_metatrain import PETECSE

# no kernel: views (``func.is_view``) and ``_unsafe_view``, a view that does not
# declare itself one
UNSAFE_VIEWS = {"_unsafe_view"}
SYNCS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "bincount"}


class OperatorCount(TorchDispatchMode):
    """Counts the operators dispatched inside the ``with`` block by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = {"kernels": 0, "views": 0, "syncs": 0}

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: tuple,
        args: tuple = (),
        kwargs: Optional[dict] = None,
    ) -> Any:
        name = func.__name__.split(".")[0]
        is_view = func.is_view or name in UNSAFE_VIEWS
        kind = "views" if is_view else "kernels"
        self.counts[kind] += 1
        if name in SYNCS:
            self.counts["syncs"] += 1
        return func(*args, **(kwargs or {}))


def with_gpu_chunks(model: torch.nn.Module) -> torch.nn.Module:
    """``pet_ecse`` chunks atoms as it does on a GPU; ``pet`` is left alone."""
    if isinstance(model, PETECSE):
        model.network.chunk_elements *= model.network.gpu_chunk_factor
    return model


def count_inference(name: str, atoms: ase.Atoms) -> dict:
    """Operators of one energy + forces call of an untrained default model."""
    types = sorted({int(z) for z in atoms.numbers})
    model = with_gpu_chunks(default_model(name, types).float())
    system = systems_to_torch(atoms, dtype=torch.float32, positions_requires_grad=True)
    system = get_system_with_neighbor_lists(system, model.requested_neighbor_lists())
    outputs = {"energy": ModelOutput(per_atom=False)}

    def call() -> None:
        energy = model([system], outputs)["energy"].block().values.sum()
        torch.autograd.grad(energy, system.positions)

    call()  # warm-up: lazily built buffers are not part of a call
    with OperatorCount() as counter:
        call()
    return counter.counts


def count_training_step(name: str, frames: list) -> dict:
    """Operators of one training step (forces with ``create_graph``, Adam)."""
    types = sorted({int(z) for atoms in frames for z in atoms.numbers})
    target = get_energy_target_info(
        "energy", {"quantity": "energy", "unit": "eV"}, add_position_gradients=True
    )
    info = DatasetInfo(
        length_unit="angstrom", atomic_types=types, targets={"energy": target}
    )
    hypers = get_default_hypers(name)["model"]
    hypers["cutoff"] = 4.5
    torch.manual_seed(0)
    model = {"pet": PET, "pet_ecse": PETECSE}[name](hypers, info).float().train()
    if name == "pet_ecse":
        model.set_phase("train")  # what its trainer asks for
    # Adam updates all tensors in a few kernels (``foreach``), as on a GPU
    step = step_function(with_gpu_chunks(model), frames, info, foreach=True)
    step()
    with OperatorCount() as counter:
        step()
    return counter.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[64, 216, 512])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("-o", "--output", default="dispatched-ops.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    calls = {
        f"energy + forces, {name}": (count_inference, structure(name))
        for name in [f"mo-{size}" for size in args.cells] + ["ethanol"]
    }
    for element in ("Mo", "Ge"):
        path = args.data / f"{element}_training.xyz"
        if path.exists():
            frames = ase.io.read(path, ":4")
            label = f"training step, 4 mlearn {element} cells"
            calls[label] = (count_training_step, frames)

    rows = []
    print(
        "| call | pet kernels | pet_ecse kernels | more than pet | ratio "
        "| host syncs pet / ecse |"
    )
    print("|---|---|---|---|---|---|")
    for label, (count, system) in calls.items():
        pet, ecse = count("pet", system), count("pet_ecse", system)
        ratio = ecse["kernels"] / pet["kernels"]
        rows.append({"call": label, "pet": pet, "pet_ecse": ecse, "ratio": ratio})
        print(
            f"| {label} | {pet['kernels']} | {ecse['kernels']} "
            f"| {ecse['kernels'] - pet['kernels']} | {ratio:.2f}x "
            f"| {pet['syncs']} / {ecse['syncs']} |"
        )
    result = {"torch": torch.__version__, "threads": 1, "rows": rows}
    write_json(args.output, result)


if __name__ == "__main__":
    main()
