"""ECSE's FrameBuilder on its own: normalized weights, proper rotations that
co-rotate with the structure, and pruning that only ever removes frames."""

import ase
import ase.build
import numpy as np
import pytest
import torch
from models import (
    diamond_cell,
    evaluate,
    graph_of,
    make_model,
    random_rotation,
    rattled_ethanol,
    rotated,
)

from pet_metatrain.ecse.frames import jitter_weights, subsampled
from pet_metatrain.modules.views import WeightedFrames


def ethanol() -> ase.Atoms:
    return rattled_ethanol(seed=3)  # no two frames of an atom with equal weights


def cell() -> ase.Atoms:
    return diamond_cell(a=3.6, seed=4)


def per_atom_frames(
    atoms: ase.Atoms,
    frames: str = "atom",
    cutoff: float = 4.0,
    training: bool = False,
    **symmetrization,
) -> WeightedFrames:
    """Per-atom ``frames`` (atom or token) of ``atoms`` with the frame builder of
    a small model of ``cutoff``; ``training``: as in a trainer's step (frame
    subsets, weight noise)."""
    model = make_model(frames=frames, cutoff=cutoff)
    model.set_symmetrization({**model.hypers["symmetrization"], **symmetrization})
    builder = model.symmetrization.frame_builder
    builder.train(training)
    builder.jitter = training
    graph = graph_of(model, atoms)
    n_atoms = len(atoms)
    return builder(
        graph.edge_vectors,
        graph.distances,
        graph.mask,
        torch.arange(n_atoms),
        n_atoms,
        graph.neighbor_species,
    )


@pytest.mark.parametrize("structure", [ethanol, cell])
def test_weights_are_positive_and_sum_to_one_per_atom(structure):
    atoms = structure()
    frames = per_atom_frames(atoms)
    assert bool((frames.weight > 0).all())
    totals = torch.zeros(len(atoms), dtype=frames.weight.dtype)
    totals.index_add_(0, frames.group, frames.weight)
    torch.testing.assert_close(totals, torch.ones_like(totals))


@pytest.mark.parametrize("structure", [ethanol, cell])
def test_frames_are_proper_rotations(structure):
    frames = per_atom_frames(structure())
    rotation = frames.rotation[~frames.isotropic]
    identity = torch.eye(3, dtype=rotation.dtype).expand_as(rotation)
    torch.testing.assert_close(rotation.transpose(1, 2) @ rotation, identity)
    determinant = torch.linalg.det(rotation)
    torch.testing.assert_close(determinant, torch.ones_like(determinant))


@pytest.mark.parametrize("structure", [ethanol, cell])
def test_frames_co_rotate_with_the_structure(structure):
    """Rotating the structure by R maps every frame F to R F (x' = x @ F is
    unchanged) with the same weight: the ensemble is equivariant."""
    atoms = structure()
    rotation = random_rotation(np.random.default_rng(7))
    before = per_atom_frames(atoms)
    after = per_atom_frames(rotated(atoms, rotation))
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
    atoms = cell()
    counts = [
        per_atom_frames(atoms, pruning_passes=0).group.shape[0],
        per_atom_frames(atoms, pruning_threshold=0.3, pruning_width=0.3).group.shape[0],
        per_atom_frames(atoms, pruning_threshold=0.6, pruning_width=0.3).group.shape[0],
        per_atom_frames(atoms, pruning_threshold=0.9, pruning_width=0.1).group.shape[0],
    ]
    assert counts == sorted(counts, reverse=True)
    assert counts[-1] < counts[0]
    # every atom keeps at least one frame
    assert bool(
        (torch.bincount(per_atom_frames(atoms, pruning_threshold=0.9).group) > 0).all()
    )


def test_jittered_weights_are_the_weights_times_log_normal_noise():
    frames = per_atom_frames(ethanol())
    torch.manual_seed(0)
    jittered = jitter_weights(frames, 0.5)
    assert torch.equal(jittered.group, frames.group)
    assert torch.equal(jittered.rotation, frames.rotation)
    # relative weights: no renormalization per atom
    torch.manual_seed(0)
    noise = torch.randn_like(frames.weight)
    torch.testing.assert_close(jittered.weight, frames.weight * torch.exp(0.5 * noise))
    unchanged = jitter_weights(frames, 0.0)
    torch.testing.assert_close(unchanged.weight, frames.weight)


@pytest.mark.parametrize("structure", [ethanol, cell])
def test_training_frames_are_subsampled_jittered_and_normalized(structure):
    """A training step's frames (at most ``training_frames_per_atom`` per atom,
    jittered weights) are normalized once, at the end, like evaluation's."""
    atoms = structure()
    limit = 3
    torch.manual_seed(0)
    frames = per_atom_frames(
        atoms, "token", training=True, training_frames_per_atom=limit
    )
    n_atoms = len(atoms)
    counts = torch.bincount(frames.group[~frames.isotropic], minlength=n_atoms)
    assert int(counts.max()) <= limit
    totals = torch.zeros(n_atoms, dtype=frames.weight.dtype)
    totals.index_add_(0, frames.group, frames.weight)
    torch.testing.assert_close(totals, torch.ones_like(totals))
    evaluation = per_atom_frames(atoms, "token", training_frames_per_atom=limit)
    assert evaluation.group.shape[0] > frames.group.shape[0]


def test_subsampled_frames_keep_at_most_the_limit_per_atom():
    """Training draws at most ``limit`` frames per atom (a new draw each step),
    the isotropic fallback always among them; atoms with fewer keep all."""
    frames = per_atom_frames(cell())
    counts = torch.bincount(frames.group[~frames.isotropic], minlength=8)
    limit = int(counts.min()) - 1  # every atom loses frames
    torch.manual_seed(0)
    kept = subsampled(frames, limit, 8)
    kept_counts = torch.bincount(kept.group[~kept.isotropic], minlength=8)
    assert kept_counts.tolist() == [limit] * 8
    assert int(kept.isotropic.sum()) == int(frames.isotropic.sum())
    # each kept frame is one of the atom's frames, with its weight
    assert torch.equal(kept.weight, frames.weight[_matching(frames, kept)])
    again = subsampled(frames, limit, 8)
    assert not torch.equal(again.rotation, kept.rotation)
    everything = subsampled(frames, int(counts.max()), 8)
    torch.testing.assert_close(
        everything.weight.sort().values, frames.weight.sort().values
    )


def _matching(frames: WeightedFrames, kept: WeightedFrames) -> torch.Tensor:
    """Index in ``frames`` of every frame of ``kept`` (same group and rotation)."""
    same = (kept.rotation[:, None] == frames.rotation[None]).flatten(2).all(-1)
    same = same & (kept.group[:, None] == frames.group[None])
    assert bool((same.sum(1) == 1).all())
    return same.float().argmax(1)


@pytest.mark.parametrize("frames", ["token", "atom"])
def test_weight_noise_acts_in_training_only(frames):
    """The trainer's steps draw new weights (and frame subsets) at every call;
    outside them (a
    model in training mode that no trainer drives, evaluation) the model is
    deterministic and exact: the noise never reaches an exported model."""
    atoms = ethanol()
    model = make_model(frames=frames)
    assert model.symmetrization.frame_builder.weight_noise == 0.5  # the default
    model.train()
    first, second = (evaluate(model, [atoms])["energy"] for _ in range(2))
    np.testing.assert_array_equal(first, second)
    model.set_phase("train")  # what the trainer asks for in its training steps
    first, second = (evaluate(model, [atoms])["energy"] for _ in range(2))
    assert not np.allclose(first, second)
    model.set_phase("validate")
    first, second = (evaluate(model, [atoms])["energy"] for _ in range(2))
    np.testing.assert_array_equal(first, second)
    model.set_phase("train")
    model.eval()
    first, second = (evaluate(model, [atoms])["energy"] for _ in range(2))
    np.testing.assert_array_equal(first, second)
    spun = evaluate(model, [rotated(atoms, random_rotation(np.random.default_rng(5)))])
    np.testing.assert_allclose(spun["energy"], first, rtol=1e-12)
    model.set_symmetrization(
        {
            **model.hypers["symmetrization"],
            "training_weight_noise": 0.0,
            "training_frames_per_atom": None,
        }
    )
    model.train()
    model.set_phase("train")
    first, second = (evaluate(model, [atoms])["energy"] for _ in range(2))
    np.testing.assert_array_equal(first, second)
    # without weight noise, the training steps' frame subsets still change
    model.set_symmetrization(
        {**model.hypers["symmetrization"], "training_frames_per_atom": 1}
    )
    model.train()
    model.set_phase("train")
    first, second = (evaluate(model, [atoms])["energy"] for _ in range(2))
    assert not np.allclose(first, second)
    model.set_phase("validate")
    first, second = (evaluate(model, [atoms])["energy"] for _ in range(2))
    np.testing.assert_array_equal(first, second)


def bent_neighbourhood(angle: float) -> ase.Atoms:
    """A C with two close neighbours at ``angle`` (degrees) between them and four
    further out: as the pair nears collinear, it stops defining the inner cutoff."""
    rad = np.radians(angle)
    positions = [
        [0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [1.1 * np.cos(rad), 1.1 * np.sin(rad), 0.0],
        [0.3, 0.4, 2.0],
        [-0.5, -1.6, 1.3],
        [0.8, -1.5, -1.5],
        [-1.2, 1.0, -1.9],
    ]
    return ase.Atoms("CHHOONN", positions=positions)


def inner_cutoffs(frames: str, angles: np.ndarray) -> np.ndarray:
    model = make_model(frames=frames)
    values = []
    for angle in angles:
        graph = graph_of(model, bent_neighbourhood(angle))
        values.append(
            model.symmetrization.frame_builder.inner_cutoffs(
                graph.edge_vectors, graph.distances, graph.mask
            )
        )
    return torch.stack(values)[:, 0].numpy()


def test_token_frames_inner_cutoff_follows_a_bending_pair_gently():
    """Token frames' soft minimum (beta 1): the inner cutoff of the centre moves
    a third as fast as with the sharp one (beta 5) while its two nearest
    neighbours bend towards collinear, where frames would switch on within an
    MD step."""
    assert make_model(frames="token").symmetrization.frame_builder.beta == 1.0
    assert make_model(frames="atom").symmetrization.frame_builder.beta == 5.0
    angles = np.linspace(120.0, 170.0, 201)
    soft = np.abs(np.diff(inner_cutoffs("token", angles))).max()
    sharp = np.abs(np.diff(inner_cutoffs("atom", angles))).max()
    assert soft < sharp / 3, (soft, sharp)


def test_token_frames_do_not_grow_with_the_model_cutoff():
    """The soft inner cutoff averages over the neighbour pairs within
    ``max_outer_cutoff``, so a wider radius moves it outwards and multiplies the
    frames (bcc Mo: 162 per atom within 5 A, 3095 within 8). The default bound
    gives a model of cutoff 7 the frames of one of cutoff 5."""
    atoms = ase.build.bulk("Mo", "bcc", 3.16, cubic=True).repeat((2, 2, 2))
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, (len(atoms), 3))
    near = per_atom_frames(atoms, "token", cutoff=5.0)
    far = per_atom_frames(atoms, "token", cutoff=7.0)
    assert far.group.shape == near.group.shape
    torch.testing.assert_close(
        torch.sort(far.weight).values, torch.sort(near.weight).values
    )
    unbounded = per_atom_frames(atoms, "token", cutoff=7.0, max_outer_cutoff=10.0)
    assert unbounded.group.shape[0] > 2 * near.group.shape[0]


def test_no_isotropic_fallback_lighter_than_a_dropped_frame():
    """The fallback's switch nears zero without reaching it (a best frame weight
    of 0.48 gives it 4e-11): like any frame lighter than 1e-10 it is left out,
    where a group whose best weight is 0.3 gets it."""
    builder = make_model(frames="token").symmetrization.frame_builder
    frames = builder._prune(
        torch.tensor([0, 1]),
        torch.eye(3, dtype=torch.float64).expand(2, 3, 3),
        torch.tensor([0.48, 0.3], dtype=torch.float64),
        None,
        None,
        2,
    )
    assert frames.group[frames.isotropic].tolist() == [1]
