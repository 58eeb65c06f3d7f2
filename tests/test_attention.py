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
    model.set_phase("train")  # what the trainer asks for: plain PET here
    trained = evaluate(model, structures())
    np.testing.assert_allclose(trained["energy"], evaluated["energy"], rtol=1e-12)
    for f0, f1 in zip(evaluated["forces"], trained["forces"], strict=True):
        np.testing.assert_allclose(f1, f0, rtol=1e-9, atol=1e-12)


def test_force_loss_gradients_are_finite_in_float32():
    model = make_model(dtype=torch.float32, method="none").train()
    model.set_phase("train")
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


def test_angular_basis_is_legendre_of_the_edge_angles():
    """P_l(cos theta_jk) for every two edges, zero beside the central token and for
    padding (r = 0), finite gradients there."""
    from pet_metatrain.modules.transformer import angular_basis

    rng = np.random.default_rng(0)
    vectors = torch.tensor(rng.normal(size=(1, 3, 3)))
    radius = vectors.norm(dim=-1, keepdim=True)
    geometry = torch.cat([vectors, radius], dim=-1)
    padded = torch.cat([geometry, torch.zeros(1, 1, 4, dtype=geometry.dtype)], dim=1)
    padded.requires_grad_(True)
    basis = angular_basis(padded, 4)
    assert basis.shape == (1, 4, 5, 5)
    unit = (vectors / radius)[0].numpy()
    cosine = unit @ unit.T
    for degree in range(1, 5):
        expected = np.polynomial.legendre.legval(cosine, [0] * degree + [1])
        np.testing.assert_allclose(basis[0, degree - 1, 1:4, 1:4].detach(), expected)
    assert torch.all(basis[:, :, 0] == 0) and torch.all(basis[:, :, :, 0] == 0)
    basis.sum().backward()
    assert bool(torch.isfinite(padded.grad).all())


def test_angular_bias_changes_the_model_and_keeps_it_exact():
    """With random bias weights the prediction differs from the model without the
    bias, and stays rotation invariant (the cosines are)."""
    from models import random_rotation, rotated

    frames = [ase.build.molecule("CH3CH2OH")]
    with_bias = make_model(frames="token")
    without = make_model(frames="token", angular_bias_order=0)
    assert not np.allclose(
        evaluate(with_bias, frames)["energy"], evaluate(without, frames)["energy"]
    )
    turned = [rotated(frames[0], random_rotation(np.random.default_rng(1)))]
    np.testing.assert_allclose(
        evaluate(with_bias, turned)["energy"],
        evaluate(with_bias, frames)["energy"],
        rtol=1e-12,
    )
