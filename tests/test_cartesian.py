"""Cartesian outputs of rank 1 and 2 (non-conservative forces and stress,
per-atom and per-structure tensors): exactly equivariant with ECSE, in every
frames mode."""

import ase
import ase.build
import numpy as np
import pytest
import torch
from metatrain.utils.data import DatasetInfo
from metatrain.utils.data.target_info import get_generic_target_info
from models import (
    CARTESIAN_TARGETS,
    TYPES,
    ethanol,
    evaluate,
    make_model,
    periodic_cell,
    random_rotation,
    rotated,
    small_hypers,
)

from pet_metatrain import PETECSE


def linear() -> ase.Atoms:
    """Collinear: the isotropic fallback carries (part of) the weight."""
    return ase.Atoms("OCO", positions=[[-1.16, 0, 0], [0, 0, 0], [1.16, 0, 0]])


def rotate_back(values: np.ndarray, rotation: np.ndarray, rank: int) -> np.ndarray:
    """``values`` [..., 3, (3,) p] rotated as R v or R S R^T."""
    if rank == 1:
        return np.einsum("ia,...ap->...ip", rotation, values)
    return np.einsum("ia,...abp,jb->...ijp", rotation, values, rotation)


def cartesian_errors(model, atoms, seed=3, count=2):
    """Largest equivariance error and size of every Cartesian output."""
    results = {}
    for per_atom in (False, True):
        names = ("energy",) + tuple(
            name for name, (_, atom) in CARTESIAN_TARGETS.items() if atom == per_atom
        )
        reference = evaluate(model, [atoms], names, per_atom=per_atom, forces=False)
        rng = np.random.default_rng(seed)
        for _ in range(count):
            rotation = random_rotation(rng)
            result = evaluate(
                model, [rotated(atoms, rotation)], names, per_atom, forces=False
            )
            for name in names[1:]:
                rank = CARTESIAN_TARGETS[name][0]
                expected = rotate_back(reference[name], rotation, rank)
                error = np.abs(expected - result[name]).max()
                size = np.abs(reference[name]).max()
                old = results.get((name, per_atom), (0.0, size))
                results[(name, per_atom)] = (max(old[0], error), size)
    return results


@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
@pytest.mark.parametrize("make", [ethanol, periodic_cell, linear])
def test_cartesian_outputs_float64_exact(frames, make):
    model = make_model(frames=frames, cartesian=True)
    atoms = make()
    for (name, per_atom), (error, size) in cartesian_errors(model, atoms).items():
        if name == "non_conservative_stress" and not atoms.pbc.all():
            assert size == 0.0, "a molecule has no volume: zero stress"
            continue
        if make is not linear or CARTESIAN_TARGETS[name][0] == 2:
            # (a linear molecule's vectors may vanish: only the fallback's
            # isotropic part of a rank-2 tensor survives everywhere)
            assert size > 1e-3, (name, per_atom)
        assert error < 1e-10 * max(1.0, size), (name, per_atom, error)


@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
def test_cartesian_outputs_float32_round_off(frames):
    model = make_model(dtype=torch.float32, frames=frames, cartesian=True)
    for make in (ethanol, periodic_cell):
        for (name, per_atom), (error, size) in cartesian_errors(
            model, make(), count=1
        ).items():
            assert error < 1e-5 * max(1.0, size), (name, per_atom, error)


def test_plain_pet_rank_2_is_not_equivariant():
    model = make_model(method="none", cartesian=True)
    errors = cartesian_errors(model, periodic_cell(), count=1)
    assert errors[("mtt::polarizability", False)][0] > 1e-4


def test_non_conservative_stress_is_symmetric_and_per_volume():
    model = make_model(frames="token", cartesian=True)
    atoms = periodic_cell()
    names = ("energy", "non_conservative_stress", "mtt::polarizability")
    stress = evaluate(model, [atoms], names, forces=False)["non_conservative_stress"]
    np.testing.assert_allclose(stress, stress.transpose(0, 2, 1, 3), atol=1e-14)
    # doubling the cell (same per-atom environments) keeps the intensive stress
    doubled = evaluate(model, [atoms.repeat((2, 1, 1))], names, forces=False)
    np.testing.assert_allclose(doubled["non_conservative_stress"], stress, atol=1e-12)
    # while a general rank-2 target is extensive and not symmetrized
    polarizability = evaluate(model, [atoms], names, forces=False)[
        "mtt::polarizability"
    ]
    assert np.abs(polarizability - polarizability.transpose(0, 2, 1, 3)).max() > 1e-6


def test_rank_3_and_spherical_order_3_targets_are_refused():
    rank_3 = get_generic_target_info(
        "mtt::t3",
        {
            "quantity": "",
            "unit": "",
            "type": {"cartesian": {"rank": 3}},
            "num_subtargets": 1,
            "per_atom": False,
            "sample_kind": "system",
        },
    )
    info = DatasetInfo("angstrom", TYPES, {"mtt::t3": rank_3})
    with pytest.raises(ValueError, match="rank 3"):
        PETECSE(small_hypers(), info)
    spherical = get_generic_target_info(
        "mtt::sph",
        {
            "quantity": "",
            "unit": "",
            "type": {"spherical": {"irreps": [{"o3_lambda": 3, "o3_sigma": 1}]}},
            "num_subtargets": 1,
            "per_atom": False,
            "sample_kind": "system",
        },
    )
    info = DatasetInfo("angstrom", TYPES, {"mtt::sph": spherical})
    with pytest.raises(ValueError, match="o3_lambda <= 2"):
        PETECSE(small_hypers(), info)


def test_plain_training_blends_the_isotropic_part_of_rank_2_as_ecse_will():
    """Plain training blends in the fallback (see test_ecse.py): for a collinear
    molecule only the isotropic part of a rank-2 tensor, as ECSE will."""
    model = make_model(cartesian=True)
    symmetrization = model.hypers["symmetrization"]
    model.set_symmetrization({**symmetrization, "during_training": False})
    names = ("energy", "mtt::polarizability")
    exact = evaluate(model, [linear()], names, forces=False)["mtt::polarizability"]
    model.train()
    model.set_phase("train")
    blended = evaluate(model, [linear()], names, forces=False)["mtt::polarizability"]
    np.testing.assert_allclose(blended, exact, rtol=1e-12)
    trace = np.trace(blended[0]) / 3.0  # [properties]
    assert np.abs(trace).max() > 1e-3
    np.testing.assert_allclose(blended[0], np.eye(3)[:, :, None] * trace, atol=1e-14)


def spherical_target(name: str, per_atom: bool):
    """o3_lambda 0, 1 (a pseudovector too) and 2, two properties each."""
    irreps = [
        {"o3_lambda": 0, "o3_sigma": 1},
        {"o3_lambda": 1, "o3_sigma": 1},
        {"o3_lambda": 1, "o3_sigma": -1},
        {"o3_lambda": 2, "o3_sigma": 1},
    ]
    return get_generic_target_info(
        name,
        {
            "quantity": "",
            "unit": "",
            "type": {"spherical": {"irreps": irreps}},
            "num_subtargets": 2,
            "per_atom": per_atom,
            "sample_kind": "atom" if per_atom else "system",
        },
    )


def spherical_model(frames: str, dtype=torch.float64) -> PETECSE:
    from metatrain.utils.data.target_info import get_energy_target_info

    energy = get_energy_target_info("energy", {"quantity": "energy", "unit": "eV"})
    targets = {
        "energy": energy,
        "mtt::spherical": spherical_target("mtt::spherical", False),
        "mtt::atomic_spherical": spherical_target("mtt::atomic_spherical", True),
    }
    torch.manual_seed(0)
    model = PETECSE(
        small_hypers(frames=frames), DatasetInfo("angstrom", TYPES, targets)
    )
    return model.to(dtype).eval()


def spherical_outputs(model: PETECSE, atoms: ase.Atoms) -> dict:
    """{(target, o3_lambda, o3_sigma): values [n, 2l+1, p]} as float64 tensors."""
    from metatomic.torch import ModelOutput, systems_to_torch
    from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists

    dtype = next(model.parameters()).dtype
    system = systems_to_torch(atoms, dtype=dtype)
    system = get_system_with_neighbor_lists(system, model.requested_neighbor_lists())
    outputs = {
        "mtt::spherical": ModelOutput(sample_kind="system"),
        "mtt::atomic_spherical": ModelOutput(sample_kind="atom"),
    }
    results = model([system], outputs)
    values = {}
    for name, tensor in results.items():
        for key, block in tensor.items():
            entry = (name, int(key["o3_lambda"]), int(key["o3_sigma"]))
            values[entry] = block.values.detach().double()
    return values


@pytest.mark.parametrize("frames", ["token", "structure", "atom"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_spherical_targets_rotate_with_metatomics_wigner_matrices(frames, dtype):
    """Blocks of o3_lambda <= 2 are predicted as Cartesian tensors and projected:
    exact under metatomic's own Wigner-D matrices (its o3 convention)."""
    from metatomic.torch.o3 import O3Transformations

    model = spherical_model(frames, dtype)
    rotation = random_rotation(np.random.default_rng(3))
    wigner = O3Transformations(torch.tensor(rotation)[None], 2)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    for atoms in (ethanol(), periodic_cell()):
        reference = spherical_outputs(model, atoms)
        result = spherical_outputs(model, rotated(atoms, rotation))
        assert len(reference) == 8
        for (name, o3_lambda, o3_sigma), values in reference.items():
            matrix = wigner.wigner_D_matrices(o3_lambda)[0]
            expected = torch.einsum("mk,nkp->nmp", matrix, values)
            error = (expected - result[(name, o3_lambda, o3_sigma)]).abs().max()
            size = values.abs().max()
            assert size > 1e-3, (name, o3_lambda)
            assert error < tolerance * max(1.0, size), (name, o3_lambda, error)


def test_spherical_model_exports(tmp_path):
    model = spherical_model("token")
    model.export().save(str(tmp_path / "model.pt"))


@pytest.mark.slow
def test_spherical_target_trains_and_exports_exactly(tmp_path):
    """``mtt train`` with an o3_lambda = 2 target (the traceless stress), then
    the exported (TorchScript) model rotates it with metatomic's Wigner matrix."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import ase.io
    import yaml
    from datasets import TINY_MODEL, example_structures
    from metatomic.torch import ModelEvaluationOptions, ModelOutput, systems_to_torch
    from metatomic.torch.o3 import O3Transformations
    from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists
    from test_wrapper_outputs import load

    from pet_metatrain.ecse.spherical import to_spherical

    frames = example_structures(12, seed=2)
    for atoms in frames:
        stress = torch.tensor(atoms.get_stress(voigt=False))[None, :, :, None]
        atoms.info["stress_l2"] = to_spherical(stress, 2)[0, :, 0].numpy()
    ase.io.write(tmp_path / "data.xyz", frames)
    irreps = [{"o3_lambda": 2, "o3_sigma": 1}]
    options = {
        "seed": 1,
        "base_precision": 64,
        "final_eval": False,
        "architecture": {
            "name": "pet_ecse",
            "model": TINY_MODEL,
            "training": {"batch_size": 4, "num_epochs": 1},
        },
        "training_set": {
            "systems": {"read_from": "data.xyz", "length_unit": "angstrom"},
            "targets": {
                "mtt::stress_l2": {
                    "key": "stress_l2",
                    "type": {"spherical": {"irreps": irreps}},
                    "per_atom": False,
                }
            },
        },
        "validation_set": 0.25,
        "test_set": 0.0,
    }
    (tmp_path / "options.yaml").write_text(yaml.safe_dump(options))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mtt"), "train", "options.yaml"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    model = load(tmp_path / "model.pt")
    rotation = random_rotation(np.random.default_rng(2))
    wigner = O3Transformations(torch.tensor(rotation)[None], 2).wigner_D_matrices(2)[0]
    values = []
    cell = example_structures(1, seed=100)[0]
    for atoms in (cell, rotated(cell, rotation)):
        system = get_system_with_neighbor_lists(
            systems_to_torch(atoms, dtype=torch.float64),
            model.requested_neighbor_lists(),
        )
        request = {"mtt::stress_l2": ModelOutput(sample_kind="system")}
        options = ModelEvaluationOptions("angstrom", request)
        tensor = model([system], options, check_consistency=True)["mtt::stress_l2"]
        values.append(tensor.block().values.detach())
    expected = torch.einsum("mk,nkp->nmp", wigner, values[0])
    assert values[0].abs().max() > 1e-8
    assert (expected - values[1]).abs().max() < 1e-10 * max(1.0, values[0].abs().max())
