"""The optional ZBL repulsion (``zbl: true``, as in metatrain's ``pet``)."""

import shutil

import ase
import numpy as np
import pytest
from commands import mtt, tiny_options, write_options
from metatomic_ase import MetatomicCalculator
from metatrain.utils.data import DatasetInfo
from models import (
    dataset_info,
    evaluate,
    make_model,
    random_rotation,
    rotated,
    small_hypers,
)

from pet_metatrain import PETECSE


def dimer(distance: float) -> ase.Atoms:
    """Two hydrogens ``distance`` apart next to a carbon and an oxygen."""
    positions = [[0, 0, 0], [distance, 0, 0], [0.4, 1.5, 0.2], [-0.9, -0.8, 1.1]]
    return ase.Atoms("HHCO", positions=positions)


def repulsion(distance: float) -> float:
    """Energy of the ZBL model minus that of the same weights without it."""
    with_zbl = make_model(seed=3, frames="token", zbl=True)
    without = make_model(seed=3, frames="token")
    atoms = dimer(distance)
    return float(
        evaluate(with_zbl, [atoms])["energy"][0, 0]
        - evaluate(without, [atoms])["energy"][0, 0]
    )


def test_zbl_repels_below_the_covalent_radii_and_vanishes_above():
    # H-H: switched off at twice hydrogen's covalent radius (0.62 A)
    assert repulsion(0.7) == 0.0
    close, closer = repulsion(0.4), repulsion(0.2)
    assert 0.0 < close < closer
    assert closer > 5.0  # eV: a wall, not a bump


def test_zbl_model_is_exact_under_rotations():
    model = make_model(seed=3, frames="token", zbl=True)
    atoms = dimer(0.3)
    reference = evaluate(model, [atoms])
    rotation = random_rotation(np.random.default_rng(0))
    turned = evaluate(model, [rotated(atoms, rotation)])
    assert turned["energy"] == pytest.approx(reference["energy"], rel=1e-12)
    np.testing.assert_allclose(
        turned["forces"][0], reference["forces"][0] @ rotation.T, atol=1e-10
    )


def test_exported_zbl_model_requests_its_neighbor_list():
    """The engine computes ZBL's own (shorter) neighbour list for the export."""
    model = make_model(seed=3, frames="token", zbl=True)
    exported = model.export()
    cutoffs = sorted(options.cutoff for options in exported.requested_neighbor_lists())
    assert len(cutoffs) == 2 and cutoffs[1] == model.cutoff
    atoms = dimer(0.3)
    atoms.calc = MetatomicCalculator(exported, device="cpu")
    energy = atoms.get_potential_energy()
    assert energy == pytest.approx(evaluate(model, [dimer(0.3)])["energy"][0, 0])


def test_zbl_needs_angstrom():
    info = dataset_info()
    info = DatasetInfo(
        length_unit="bohr", atomic_types=info.atomic_types, targets=info.targets
    )
    with pytest.raises(ValueError, match="ZBL only supports angstrom"):
        PETECSE(small_hypers(frames="token", zbl=True), info)


@pytest.mark.slow
def test_mtt_trains_and_exports_with_zbl(tmp_path, cuau_data):
    """``mtt train`` with ``zbl: true``: the trainer removes the repulsion from
    the targets, the export adds it back (Cu-Cu within 2.64 A repel)."""
    shutil.copy(cuau_data, tmp_path / "data.xyz")
    options = tiny_options(num_epochs=1)
    options["architecture"]["model"]["zbl"] = True
    write_options(tmp_path, options)
    mtt(tmp_path, "train", "options.yaml")
    atoms = ase.Atoms("Cu2", positions=[[0, 0, 0], [1.0, 0, 0]])
    atoms.calc = MetatomicCalculator(str(tmp_path / "model.pt"), device="cpu")
    close = atoms.get_potential_energy()
    atoms.positions[1, 0] = 1.6
    assert close - atoms.get_potential_energy() > 10.0  # eV
