"""Centre preference of structure-wide frames: molecules keep the frames of their
central atoms, so the cost of ECSE stops growing with molecule size."""

import ase
import ase.build
import numpy as np
import pytest
import torch
from models import graph_of, make_model
from test_ecse import assert_continuous, rotation_errors

from pet_metatrain.ecse.frames import centre_preference


def ethanol_cluster() -> ase.Atoms:
    """Three differently distorted ethanol molecules 4.5 A apart (27 atoms)."""
    rng = np.random.default_rng(3)
    cluster = ase.Atoms()
    for shift in [(0, 0, 0), (4.5, 0, 0), (0, 4.5, 0)]:
        piece = ase.build.molecule("CH3CH2OH")
        piece.positions += rng.normal(0, 0.08, piece.positions.shape)
        piece.rotate(float(rng.uniform(0, 360)), rng.normal(size=3), center="COP")
        piece.positions += shift
        cluster += piece
    return cluster


def structure_frame_count(model, atoms: ase.Atoms) -> int:
    graph = graph_of(model, atoms)
    return int(
        model.symmetrization.frame_builder.structure_frames(graph, 1).group.shape[0]
    )


def test_molecule_keeps_the_frames_of_its_central_atoms():
    with_preference = make_model(frames="structure")
    without = make_model(frames="structure")
    block = dict(without.hypers["symmetrization"], centre_preference_length=None)
    without.set_symmetrization(block)
    cluster = ethanol_cluster()
    few = structure_frame_count(with_preference, cluster)
    many = structure_frame_count(without, cluster)
    assert few <= 8
    assert many >= 3 * few


def test_periodic_structures_rank_frames_by_weight_alone():
    positions = torch.tensor(np.random.default_rng(0).normal(size=(6, 3)))
    system_index = torch.tensor([0, 0, 0, 1, 1, 1])
    periodic = torch.tensor([False, True])
    preference = centre_preference(positions, system_index, periodic, 0.5)
    assert torch.all(preference[3:] == 1.0)
    assert torch.all((preference[:3] > 0) & (preference[:3] <= 1.0))


def test_preference_is_invariant():
    rng = np.random.default_rng(1)
    positions = torch.tensor(rng.normal(size=(7, 3)))
    system_index = torch.zeros(7, dtype=torch.long)
    periodic = torch.tensor([False])
    reference = centre_preference(positions, system_index, periodic, 0.5)
    rotation = torch.linalg.qr(torch.tensor(rng.normal(size=(3, 3))))[0]
    moved = positions @ rotation.T + torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)
    permutation = torch.randperm(7)
    other = centre_preference(moved[permutation], system_index, periodic, 0.5)
    torch.testing.assert_close(other, reference[permutation])


def sliding(position: float) -> ase.Atoms:
    """A bent molecule whose most central atom changes as one atom slides."""
    return ase.Atoms(
        "CONH",
        positions=[[0, 0, 0], [1.25, 0, 0], [-0.45, 1.05, 0], [position, -1.0, 0.4]],
    )


def test_smooth_when_the_most_central_atom_changes():
    path = np.linspace(-1.5, 2.5, 321)
    central = set()
    for position in path:
        atoms = sliding(position)
        offsets = atoms.positions - atoms.positions.mean(axis=0)
        central.add(int(np.argmin(np.linalg.norm(offsets, axis=1))))
    assert len(central) >= 2  # the path really crosses a change of central atom
    model = make_model(frames="structure")
    assert_continuous(model, sliding, path, moving=3)


@pytest.mark.parametrize("length", [0.5, 2.0])
def test_exact_invariance_with_preference(length):
    model = make_model(frames="structure")
    model.set_symmetrization(
        dict(model.hypers["symmetrization"], centre_preference_length=length)
    )
    energy, force, _ = rotation_errors(model, [ethanol_cluster()], count=2)
    assert energy < 1e-10
    assert force < 1e-9


def test_command_line_switches_the_preference_off_or_sets_it():
    from pet_metatrain.cli import _parser

    for text, expected in [("none", 0.0), ("0.7", 0.7)]:
        args = _parser().parse_args(
            ["export", "model.ckpt", "--centre-preference-length", text]
        )
        assert args.centre_preference_length == expected


def test_zero_length_ranks_by_weight_alone():
    off = make_model(frames="structure")
    off.set_symmetrization(
        dict(off.hypers["symmetrization"], centre_preference_length=0.0)
    )
    reference = make_model(frames="structure")
    reference.set_symmetrization(
        dict(reference.hypers["symmetrization"], centre_preference_length=None)
    )
    cluster = ethanol_cluster()
    assert structure_frame_count(off, cluster) == structure_frame_count(
        reference, cluster
    )
