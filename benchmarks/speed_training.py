"""Training throughput of the speed benchmark (used by ``speed_measure.py``).

One step = ``evaluate_model(..., is_training=True)`` (forces with
``create_graph=True``), energy + forces MSE, ``backward``, gradient clipping and
the architecture's trainer's Adam (torch's for ``pet``, fused for ``pet_ecse``),
on the first 16 frames of rmd17_ethanol/train.xyz. The steps of all models are
timed round-robin.
"""

import copy

import ase.io
import common
import numpy as np
import torch
from metatomic.torch import systems_to_torch
from metatrain.utils.evaluate_model import evaluate_model
from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists
from speed_models import DATA, dataset_info, set_mode

from pet_metatrain.optimization import make_optimizer

PAPER_MODE = "plain, paper defaults"
LOOP_ADAM_MODE = "plain, torch's Adam"
BATCH = 16


def _batch():
    """(frames, centred energies, forces, atom offsets) of the training batch."""
    frames = ase.io.read(DATA / "rmd17_ethanol" / "train.xyz", f":{BATCH}")
    energies = torch.tensor([a.get_potential_energy() for a in frames])
    energies = (energies - energies.mean()).to(torch.float32)
    forces = torch.tensor(np.concatenate([a.get_forces() for a in frames]))
    offsets = torch.tensor([0] + [len(a) for a in frames]).cumsum(0)[:-1]
    for atoms in frames:
        atoms.pbc = False
        atoms.cell = np.zeros((3, 3))
    return frames, energies, forces.to(torch.float32), offsets


def contenders(pet, ecse, paper) -> dict:
    """{mode: model in training mode}: ``pet``; ``pet_ecse`` plain, plain with the
    isotropic fallback of structure frames (``mtt train`` with
    ``during_training: false``), with token frames (the ``mtt train`` default),
    with per-atom frames, with torch's Adam; the ``paper`` model plain."""
    models = {"pet": copy.deepcopy(pet)}
    for mode in ("plain", "plain+fallback", "ecse-token", "ecse-atom", LOOP_ADAM_MODE):
        models[mode] = copy.deepcopy(ecse)
        set_mode(models[mode], mode if mode.startswith("ecse") else "plain")
        if mode == "plain+fallback":
            # structure frames not trained in: training runs plain PET with
            # their isotropic fallback
            block = dict(models[mode].hypers["symmetrization"])
            block.update(method="ecse", frames="structure", during_training=False)
            models[mode].set_symmetrization(block)
        # what the trainer asks for in its steps (frame-weight noise included)
        models[mode].set_phase("train")
    if paper is not None:
        models[PAPER_MODE] = copy.deepcopy(paper)
        set_mode(models[PAPER_MODE], "plain")
    for model in models.values():
        model.train()
        model.requires_grad_(True)
    return models


def _step_function(mode, model, batch):
    """One optimizer step of ``model`` on the batch, as a callable."""
    frames, energies, forces, offsets = batch
    targets = dataset_info(position_gradients=True).targets
    if mode in ("pet", LOOP_ADAM_MODE):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    else:
        optimizer = make_optimizer(model.parameters(), 1e-4, None)
    systems = [
        get_system_with_neighbor_lists(
            systems_to_torch(a, dtype=torch.float32),
            model.requested_neighbor_lists(),
        )
        for a in frames
    ]

    def step():
        optimizer.zero_grad()
        predictions = evaluate_model(model, systems, targets, is_training=True)
        block = predictions["energy"].block()
        gradient = block.gradient("positions")
        names = gradient.samples.names
        samples = gradient.samples.values
        # gradient samples: (row of the energy = structure, atom)
        index = offsets[samples[:, names.index("sample")]]
        index = index + samples[:, names.index("atom")]
        predicted = -gradient.values.reshape(-1, 3)
        loss = torch.mean((block.values.reshape(-1) - energies) ** 2)
        loss = loss + torch.mean((predicted - forces[index]) ** 2)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def section_training(pet, ecse, paper, steps, max_memory_mb) -> dict:
    """{mode: result} of one training step of each contender: after a warm-up
    step, one guarded step gives the peak memory, then ``steps`` rounds are timed
    round-robin; throughputs are per CPU (and wall) second."""
    batch = _batch()
    n_atoms = sum(len(a) for a in batch[0])
    results, steps_of = {}, {}
    for mode, model in contenders(pet, ecse, paper).items():
        step = _step_function(mode, model, batch)
        step()  # an extra warm-up (Adam state)
        budget = common.memory_budget(max_memory_mb)
        results[mode] = common.guarded(step, 1, budget, min_time=0.0)
        steps_of[mode] = step
    common.round_robin(steps_of, results, steps)
    for mode, result in results.items():
        result["atoms"] = n_atoms
        if result["status"] != "measured":
            common.log(f"  train {mode:22s} {result['status']}")
            continue
        result["structures/s"] = BATCH / (result["cpu"] / 1e3)
        result["atoms/s"] = n_atoms / (result["cpu"] / 1e3)
        result["structures/s (wall)"] = BATCH / (result["wall"] / 1e3)
        common.log(
            f"  train {mode:22s} {result['cpu']:8.1f} ms/step cpu "
            f"({result['wall']:8.1f} wall) {result['structures/s']:7.1f} structures/s"
            f"  peak +{result['mem']:.0f} MB"
        )
    return results
