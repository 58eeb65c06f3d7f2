"""Cutoff-smoothed attention: the written-out form used in training equals the
fused one used in evaluation, and trains on forces without overflow."""

import ase
import ase.build
import numpy as np
import torch
from metatomic.torch import ModelOutput, systems_to_torch
from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists
from models import evaluate, make_model


def structures() -> list:
    """A molecule (padding: neighbour counts differ) and a pair of molecules with
    one neighbour a hair inside the cutoff (4.0), where the cutoff factor is tiny."""
    water = ase.build.molecule("H2O")
    far = water.copy()
    far.positions += [0.0, 0.0, 4.0 - 1e-4]  # the two oxygens
    return [ase.build.molecule("CH3CH2OH"), water + far]


def test_training_and_evaluation_attention_agree():
    model = make_model(method="none")
    evaluated = evaluate(model, structures())
    model.train()
    model.train_fallback = False
    trained = evaluate(model, structures())
    np.testing.assert_allclose(trained["energy"], evaluated["energy"], rtol=1e-12)
    for f0, f1 in zip(evaluated["forces"], trained["forces"], strict=True):
        np.testing.assert_allclose(f1, f0, rtol=1e-9, atol=1e-12)


def test_force_loss_gradients_are_finite_in_float32():
    model = make_model(dtype=torch.float32, method="none").train()
    model.train_fallback = False
    systems = []
    for atoms in structures():
        system = systems_to_torch(
            atoms, dtype=torch.float32, positions_requires_grad=True
        )
        systems.append(
            get_system_with_neighbor_lists(system, model.requested_neighbor_lists())
        )
    outputs = model(systems, {"energy": ModelOutput(sample_kind="system")})
    energy = outputs["energy"].block().values.sum()
    positions = [s.positions for s in systems]
    forces = torch.autograd.grad(energy, positions, create_graph=True)
    loss = sum((f**2).sum() for f in forces)
    loss.backward()
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    assert gradients and all(bool(torch.isfinite(g).all()) for g in gradients)
