"""ECSE's FrameBuilder on its own: normalized weights, proper rotations that
co-rotate with the structure, and pruning that only ever removes frames."""

import ase
import ase.build
import numpy as np
import pytest
import torch
from models import graph_of, make_model, random_rotation, rotated

from pet_metatrain.modules.views import WeightedFrames


def rattled_ethanol() -> ase.Atoms:
    atoms = ase.build.molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)  # no two frames of an atom with equal weights
    return atoms


def rattled_cell() -> ase.Atoms:
    atoms = ase.build.bulk("C", "diamond", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=4)
    return atoms


def atom_frames(atoms: ase.Atoms, **symmetrization) -> WeightedFrames:
    """Per-atom frames of ``atoms`` with a small model's frame builder."""
    model = make_model(frames="atom")
    model.set_symmetrization({**model.hypers["symmetrization"], **symmetrization})
    graph = graph_of(model, atoms)
    n_atoms = len(atoms)
    return model.frame_builder(
        graph.edge_vectors,
        graph.distances,
        graph.mask,
        torch.arange(n_atoms),
        n_atoms,
        graph.neighbor_species,
    )


@pytest.mark.parametrize("structure", [rattled_ethanol, rattled_cell])
def test_weights_are_positive_and_sum_to_one_per_atom(structure):
    atoms = structure()
    frames = atom_frames(atoms)
    assert bool((frames.weight > 0).all())
    totals = torch.zeros(len(atoms), dtype=frames.weight.dtype)
    totals.index_add_(0, frames.group, frames.weight)
    torch.testing.assert_close(totals, torch.ones_like(totals))


@pytest.mark.parametrize("structure", [rattled_ethanol, rattled_cell])
def test_frames_are_proper_rotations(structure):
    frames = atom_frames(structure())
    rotation = frames.rotation[~frames.isotropic]
    identity = torch.eye(3, dtype=rotation.dtype).expand_as(rotation)
    torch.testing.assert_close(rotation.transpose(1, 2) @ rotation, identity)
    determinant = torch.linalg.det(rotation)
    torch.testing.assert_close(determinant, torch.ones_like(determinant))


@pytest.mark.parametrize("structure", [rattled_ethanol, rattled_cell])
def test_frames_co_rotate_with_the_structure(structure):
    """Rotating the structure by R maps every frame F to R F (x' = x @ F is
    unchanged) with the same weight: the ensemble is equivariant."""
    atoms = structure()
    rotation = random_rotation(np.random.default_rng(7))
    before = atom_frames(atoms)
    after = atom_frames(rotated(atoms, rotation))
    assert torch.equal(before.group, after.group)
    expected = torch.tensor(rotation) @ before.rotation
    for atom in range(len(atoms)):
        mine = (before.group == atom) & ~before.isotropic
        theirs = (after.group == atom) & ~after.isotropic
        # frames of equal weight (a pair in both orders) come in any order:
        # match every rotated frame with the nearest expected one
        distance = (after.rotation[theirs][:, None] - expected[mine][None]).abs()
        distance = (
            distance.amax(dim=(-1, -2))
            + (after.weight[theirs][:, None] - before.weight[mine][None]).abs()
        )
        assert float(distance.min(dim=1).values.max()) < 1e-10
        assert float(distance.min(dim=0).values.max()) < 1e-10


def test_pruning_only_removes_frames_and_a_higher_threshold_removes_more():
    atoms = rattled_cell()
    counts = [
        atom_frames(atoms, pruning_passes=0).group.shape[0],
        atom_frames(atoms, pruning_threshold=0.3, pruning_width=0.3).group.shape[0],
        atom_frames(atoms, pruning_threshold=0.6, pruning_width=0.3).group.shape[0],
        atom_frames(atoms, pruning_threshold=0.9, pruning_width=0.1).group.shape[0],
    ]
    assert counts == sorted(counts, reverse=True)
    assert counts[-1] < counts[0]
    # every atom keeps at least one frame
    assert bool(
        (torch.bincount(atom_frames(atoms, pruning_threshold=0.9).group) > 0).all()
    )
