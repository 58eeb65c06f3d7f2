"""ECSE: exact rotational equivariance, invariances, smoothness, degenerate inputs."""

import ase
import ase.build
import numpy as np
import pytest
import torch
from metatrain.utils.architectures import get_default_hypers
from models import (
    ethanol,
    evaluate,
    graph_of,
    make_model,
    periodic_cell,
    random_rotation,
    rotated,
)

from pet_metatrain.ecse.structure import frame_chunks
from pet_metatrain.modules.views import WeightedFrames

# the paper's network, and one in metatrain ``pet``'s layout (node stream carried
# through the blocks, messages updated by an MLP, gated feed-forward, RMSNorm)
LAYOUTS = {
    "paper": dict(
        featurizer_type="residual",
        activation="SiLU",
        normalization="LayerNorm",
        transformer_type="PostLN",
        cutoff_function="Cosine",
    ),
    "pet-like": dict(
        featurizer_type="feedforward",
        activation="SwiGLU",
        normalization="RMSNorm",
        transformer_type="PreLN",
        d_node=12,
    ),
}


def rotation_errors(model, frames, seed=0, count=3):
    """Largest relative energy error and absolute force/stress errors over random
    rotations of ``frames`` (evaluated as one batch)."""
    reference = evaluate(model, frames)
    rng = np.random.default_rng(seed)
    energy_error = force_error = stress_error = 0.0
    for _ in range(count):
        rotation = random_rotation(rng)
        result = evaluate(model, [rotated(a, rotation) for a in frames])
        scale = np.abs(reference["energy"]).max()
        energy_error = max(
            energy_error,
            np.abs(result["energy"] - reference["energy"]).max() / scale,
        )
        for f0, f1 in zip(reference["forces"], result["forces"], strict=True):
            force_error = max(force_error, np.abs(f0 @ rotation.T - f1).max())
        for s0, s1 in zip(reference["stress"], result["stress"], strict=True):
            if s0 is not None:
                expected = rotation @ s0 @ rotation.T
                stress_error = max(stress_error, np.abs(expected - s1).max())
    return energy_error, force_error, stress_error


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
def test_float64_exact_for_molecules_cells_and_batches(frames, layout):
    model = make_model(frames=frames, **LAYOUTS[layout])
    energy, force, stress = rotation_errors(model, [ethanol(), periodic_cell()])
    assert energy < 1e-10
    assert force < 1e-9
    assert stress < 1e-9


@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
def test_float32_exact_to_round_off(frames):
    model = make_model(dtype=torch.float32, frames=frames)
    energy, force, _ = rotation_errors(model, [ethanol()])
    assert energy < 1e-5
    # typically ~1e-5 eV/A; where pruning switches frames steeply, float32
    # round-off of the weights is amplified (this geometry, per-atom frames:
    # 8e-4 with random weights, whose frames disagree far more than trained ones)
    assert force < 1e-3


def test_plain_pet_is_not_equivariant():
    model = make_model(method="none")
    energy, force, _ = rotation_errors(model, [ethanol()])
    assert energy > 1e-4
    assert force > 1e-3


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
def test_vector_outputs_rotate(frames, layout):
    model = make_model(frames=frames, with_dipole=True, **LAYOUTS[layout])
    atoms = ethanol()
    rotation = random_rotation(np.random.default_rng(3))
    reference = evaluate(model, [atoms], ("energy", "dipole"), forces=False)
    result = evaluate(model, [rotated(atoms, rotation)], ("energy", "dipole"), False)
    dipole = reference["dipole"][0]  # [3, properties]
    assert np.abs(dipole).max() > 1e-3
    np.testing.assert_allclose(rotation @ dipole, result["dipole"][0], atol=1e-10)


@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
def test_per_atom_energies_and_selected_atoms_are_invariant(frames):
    model = make_model(frames=frames)
    atoms = ethanol()
    rotation = random_rotation(np.random.default_rng(4))
    reference = evaluate(model, [atoms], per_atom=True, forces=False)["energy"]
    result = evaluate(model, [rotated(atoms, rotation)], per_atom=True, forces=False)
    np.testing.assert_allclose(reference, result["energy"], atol=1e-10)


def test_permutation_and_translation_invariance():
    model = make_model()
    atoms = ethanol()
    order = np.random.default_rng(5).permutation(len(atoms))
    shifted = atoms.copy()
    shifted.positions += [1.3, -2.1, 0.7]
    results = evaluate(model, [atoms, atoms[order], shifted])
    energies = results["energy"].ravel()
    np.testing.assert_allclose(energies[1:], energies[0], rtol=1e-10)
    np.testing.assert_allclose(
        results["forces"][1], results["forces"][0][order], atol=1e-9
    )
    np.testing.assert_allclose(results["forces"][2], results["forces"][0], atol=1e-9)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
def test_forces_match_finite_differences(frames, layout):
    model = make_model(frames=frames, **LAYOUTS[layout])
    atoms = ethanol()
    forces = evaluate(model, [atoms])["forces"][0]
    # small steps: pruning can make the energy steep (smooth on a 1e-6 A scale)
    step = 1e-7
    for atom, axis in [(0, 0), (3, 1), (8, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[atom, axis] += step
        minus.positions[atom, axis] -= step
        energies = evaluate(model, [plus, minus], forces=False)["energy"].ravel()
        numerical = -(energies[0] - energies[1]) / (2 * step)
        assert numerical == pytest.approx(forces[atom, axis], rel=1e-5, abs=1e-7)


def path_residuals(model, make_atoms, parameters, moving: int) -> np.ndarray:
    """Trapezoid-rule check along a path: the energy change between two points must
    equal minus the work of the forces on the moving atom. A jump in the energy (a
    frame appearing or vanishing abruptly) leaves a residual of the jump's size
    however fine the path; a smooth but steep stretch leaves one that shrinks as
    the step cubed."""
    frames = [make_atoms(p) for p in parameters]
    results = evaluate(model, frames)
    energies = results["energy"].ravel()
    residuals = []
    for i in range(len(frames) - 1):
        displacement = frames[i + 1].positions[moving] - frames[i].positions[moving]
        mean_force = 0.5 * (results["forces"][i] + results["forces"][i + 1])[moving]
        residuals.append(energies[i + 1] - energies[i] + mean_force @ displacement)
    return np.abs(residuals)


def assert_continuous(model, make_atoms, parameters, moving: int) -> None:
    """Scan the path, then zoom into the worst intervals (200-fold, up to three
    times): a jump keeps its residual at every zoom, a steep but smooth stretch
    (pruning switching frames off) falls below 1e-7 eV."""
    residuals = path_residuals(model, make_atoms, parameters, moving)
    for i in np.argsort(residuals)[-2:]:
        low, high = parameters[i], parameters[i + 1]
        for _ in range(3):
            fine = np.linspace(low, high, 201)
            zoomed = path_residuals(model, make_atoms, fine, moving)
            if zoomed.max() < 1e-7:
                break
            worst = int(np.argmax(zoomed))
            low, high = fine[worst], fine[worst + 1]
        assert zoomed.max() < 1e-7


def stretched(distance: float) -> ase.Atoms:
    """A bent triatomic plus a fourth atom moving radially out of the cutoffs."""
    atoms = ase.Atoms(
        "CONH", positions=[[0, 0, 0], [1.2, 0, 0], [-0.4, 1.1, 0], [0, 0, 0]]
    )
    atoms.positions[3] = (
        distance * np.array([0.3, -0.5, 0.81]) / np.linalg.norm([0.3, -0.5, 0.81])
    )
    return atoms


def bent(angle_degrees: float) -> ase.Atoms:
    """A triatomic opened towards linearity (crossing the collinearity window)."""
    angle = np.radians(angle_degrees)
    return ase.Atoms(
        "OCN",
        positions=[
            [1.2, 0, 0],
            [0, 0, 0],
            [1.15 * np.cos(angle), 1.15 * np.sin(angle), 0],
        ],
    )


@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
def test_smooth_when_a_neighbor_crosses_inner_and_outer_cutoffs(frames):
    model = make_model(frames=frames)
    assert_continuous(model, stretched, np.linspace(1.0, 4.2, 321), moving=3)


@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
def test_smooth_across_collinearity_and_pruning_thresholds(frames):
    model = make_model(frames=frames)
    assert_continuous(model, bent, np.linspace(120.0, 180.0, 301), moving=2)


@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
@pytest.mark.parametrize(
    "atoms",
    [
        ase.Atoms("C", positions=[[0, 0, 0]]),
        ase.Atoms("CO", positions=[[0, 0, 0], [20, 0, 0]]),
        ase.Atoms("CO", positions=[[0, 0, 0], [1.13, 0, 0]]),
        ase.Atoms("OCO", positions=[[-1.16, 0, 0], [0, 0, 0], [1.16, 0, 0]]),
        ase.Atoms("C5", positions=[[1.3 * i, 0, 0] for i in range(5)]),
        ase.Atoms("COH", positions=[[0, 0, 0], [1.2, 0, 0], [5.0, 3.0, 0]]),
        ase.build.bulk("C", "diamond", 3.567, cubic=True),
    ],
    ids=["atom", "separated", "diatomic", "CO2", "chain", "lone", "crystal"],
)
def test_degenerate_inputs_are_finite_and_invariant(atoms, frames):
    model = make_model(frames=frames)
    energy, force, _ = rotation_errors(model, [atoms], count=2)
    results = evaluate(model, [atoms])
    assert np.isfinite(results["energy"]).all()
    assert np.isfinite(results["forces"][0]).all()
    assert energy < 1e-10
    assert force < 1e-9


def test_overlapping_atoms_are_refused():
    model = make_model()
    atoms = ase.Atoms("CO", positions=[[0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="same position"):
        evaluate(model, [atoms])


def test_deterministic():
    model = make_model()
    first = evaluate(model, [ethanol(), periodic_cell()])
    second = evaluate(model, [ethanol(), periodic_cell()])
    np.testing.assert_array_equal(first["energy"], second["energy"])
    np.testing.assert_array_equal(first["forces"][1], second["forces"][1])


def test_plain_training_blends_the_isotropic_fallback_as_ecse_will():
    """In training mode, plain PET is blended with the distance-only fallback with
    the weights structure-wide ECSE uses, so the fallback trains in the same run."""
    model = make_model()
    symmetrization = model.hypers["symmetrization"]
    model.set_symmetrization({**symmetrization, "during_training": False})
    linear = ase.Atoms("OCO", positions=[[-1.16, 0, 0], [0, 0, 0], [1.16, 0, 0]])
    exact = evaluate(model, [linear, ethanol()], forces=False)["energy"].ravel()

    model.train()
    # plain PET alone, for comparison
    model.set_symmetrization({**symmetrization, "method": "none"})
    plain = evaluate(model, [linear, ethanol()], forces=False)["energy"].ravel()
    model.set_symmetrization({**symmetrization, "during_training": False})
    model.set_phase("train")
    assert model.symmetrization.mode == "plain+fallback"
    blended = evaluate(model, [linear, ethanol()], forces=False)["energy"].ravel()

    assert blended[0] == pytest.approx(exact[0], rel=1e-12)  # fallback only
    assert blended[0] != pytest.approx(plain[0], rel=1e-6)
    assert blended[1] == pytest.approx(plain[1], rel=1e-12)  # no fallback needed


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
def test_chunked_evaluation_equals_one_chunk(frames, layout):
    """Large systems go through each block in chunks of atoms; the result must not
    depend on the chunking (here forced down to a few atoms per chunk)."""
    model = make_model(frames=frames, **LAYOUTS[layout])
    structures = [ethanol(), periodic_cell()]
    whole = evaluate(model, structures)
    model.network.chunk_elements = 2000
    chunked = evaluate(model, structures)
    np.testing.assert_allclose(chunked["energy"], whole["energy"], rtol=1e-12)
    for f0, f1 in zip(whole["forces"], chunked["forces"], strict=True):
        np.testing.assert_allclose(f1, f0, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("n_atoms", "expected"), [(64, [0, 32, 64]), (65, [0, 33, 65])]
)
def test_chunks_are_of_equal_size(n_atoms, expected):
    """Up to 56 atoms fit in a chunk here; the atoms are split evenly instead of
    leaving a small remainder chunk."""
    network = make_model(method="none").network
    network.chunk_elements = 56 * (72 + 1) * network.chunk_width
    bounds, rows = network._chunk_bounds(n_atoms, 72, None, network.chunk_width)
    assert bounds == expected and rows == expected


@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
def test_exact_with_both_pair_orders(frames):
    """``pair_order: both`` (the paper's frames, and models of checkpoint v3)."""
    model = make_model(frames=frames)
    model.set_symmetrization({**model.hypers["symmetrization"], "pair_order": "both"})
    energy, force, _ = rotation_errors(model, [ethanol()])
    assert energy < 1e-10
    assert force < 1e-9


@pytest.mark.parametrize(("pair_order", "count"), [("both", 2), ("species", 1)])
def test_pairs_of_different_species_make_one_frame(pair_order, count):
    """The O of a bent H-O-C has one neighbour pair: two frames in both orders,
    one with ``pair_order: species``, whose first axis points to the heavier C."""
    atoms = ase.Atoms("HOC", positions=[[0.96, 0, 0], [0, 0, 0], [-0.5, 1.3, 0]])
    model = make_model(frames="atom")
    symmetrization = {**model.hypers["symmetrization"], "pair_order": pair_order}
    model.set_symmetrization(symmetrization)
    graph = graph_of(model, atoms)
    frames = model.symmetrization.frame_builder(
        graph.edge_vectors,
        graph.distances,
        graph.mask,
        torch.arange(3),
        3,
        graph.neighbor_species,
    )
    at_oxygen = (frames.group == 1) & ~frames.isotropic
    assert int(at_oxygen.sum()) == count
    if count == 1:
        to_carbon = torch.tensor([-0.5, 1.3, 0.0], dtype=torch.float64)
        axis = frames.rotation[at_oxygen][0, :, 0]
        torch.testing.assert_close(axis, to_carbon / to_carbon.norm())


def test_structure_frames_chunk_by_copied_atoms():
    """Passes of at most ``max_atoms_per_pass`` copied atoms give the same result
    as one pass (the ethanol has 9 atoms: passes of one or two copies)."""
    model = make_model(frames="structure")
    reference = evaluate(model, [ethanol(), periodic_cell()])
    symmetrization = model.hypers["symmetrization"]
    model.set_symmetrization({**symmetrization, "max_atoms_per_pass": 20})
    chunked = evaluate(model, [ethanol(), periodic_cell()])
    np.testing.assert_allclose(chunked["energy"], reference["energy"], rtol=1e-12)
    for f0, f1 in zip(reference["forces"], chunked["forces"], strict=True):
        np.testing.assert_allclose(f1, f0, atol=1e-12)


def test_frame_chunks_bound_the_atoms_of_a_pass():
    frames = WeightedFrames(
        group=torch.tensor([0, 0, 1, 1, 1, 2]),
        rotation=torch.eye(3).expand(6, 3, 3),
        weight=torch.ones(6),
        isotropic=torch.zeros(6, dtype=torch.bool),
    )
    system_size = torch.tensor([5, 8, 30])
    # copies of 5, 5, 8, 8, 8 and 30 atoms; a single copy may exceed the bound
    chunks = frame_chunks(frames, system_size, 16, 1000)
    assert [chunk.group.tolist() for chunk in chunks] == [[0, 0], [1, 1], [1], [2]]
    assert torch.equal(torch.cat([chunk.weight for chunk in chunks]), frames.weight)


def test_structure_frames_refuse_before_exhausting_memory():
    """Frames times atoms beyond ``max_copied_atoms``: one clear error."""
    model = make_model(frames="structure")
    symmetrization = model.hypers["symmetrization"]
    model.set_symmetrization({**symmetrization, "max_copied_atoms": 50})
    with pytest.raises(ValueError, match="max_copied_atoms=50.*frames: token"):
        evaluate(model, [periodic_cell()])


def test_defaults_train_and_export_token_frames_exactly_on_a_periodic_cell():
    """What a newcomer gets: ECSE token frames, trained in, exact on a cell."""
    defaults = get_default_hypers("pet_ecse")["model"]["symmetrization"]
    model = make_model(frames=defaults["frames"])
    strategy = model.symmetrization
    assert strategy.frames == "token" and strategy.trained_in
    energy, force, stress = rotation_errors(model, [periodic_cell()])
    assert energy < 1e-10
    assert force < 1e-9
    assert stress < 1e-9
