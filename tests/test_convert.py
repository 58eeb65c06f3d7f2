"""``pet-ecse convert``: metatrain ``pet`` checkpoints as ``pet_ecse`` models."""

import copy
import gzip
from pathlib import Path

import ase
import ase.build
import numpy as np
import pytest
import torch
from metatrain.utils.io import model_from_checkpoint
from models import diamond_cell, evaluate, random_rotation, rattled_ethanol, rotated
from pet_models import random_pet

from pet_metatrain import PETECSE
from pet_metatrain.cli import main
from pet_metatrain.convert import ConversionError, convert_checkpoint

REFERENCE = Path(__file__).parent / "checkpoints" / "pet-reference.ckpt.gz"


def molecule() -> ase.Atoms:
    return rattled_ethanol(0.1)


def cell() -> ase.Atoms:
    return diamond_cell("CNOHCNC2", a=3.6, stdev=0.1)


def both(pet_checkpoint: dict, dtype: torch.dtype):
    """pet's model and the converted one, as they are exported (best weights)."""
    pet = model_from_checkpoint(copy.deepcopy(pet_checkpoint), "export")
    converted = convert_checkpoint(copy.deepcopy(pet_checkpoint))
    ours = model_from_checkpoint(converted, "export")
    assert isinstance(ours, PETECSE)
    return pet.to(dtype).eval(), ours.to(dtype).eval()


def relative(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(a).max())


def compare(pet, ours, outputs=("energy",)) -> float:
    """Largest relative difference of energies, forces, stress and outputs."""
    worst = 0.0
    for atoms in (molecule(), cell()):
        expected = evaluate(pet, [atoms], outputs)
        actual = evaluate(ours, [atoms], outputs)
        for name in outputs:
            worst = max(worst, relative(expected[name], actual[name]))
        worst = max(worst, relative(expected["forces"][0], actual["forces"][0]))
        if atoms.pbc.all():
            worst = max(worst, relative(expected["stress"][0], actual["stress"][0]))
    return worst


LAYOUTS = {
    "default": {},
    "silu-layernorm-cosine": dict(
        activation="SiLU", normalization="LayerNorm", cutoff_function="Cosine"
    ),
    "postln": dict(transformer_type="PostLN", d_node=8),
    "residual": dict(featurizer_type="residual", num_gnn_layers=1),
    "three-layers": dict(num_gnn_layers=3, num_attention_layers=1),
    "zbl": dict(zbl=True),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_converted_model_predicts_what_pet_predicts(layout):
    pet = random_pet(seed=3, with_dipole=True, **LAYOUTS[layout])
    model_pet, model_ours = both(pet.get_checkpoint(), torch.float64)
    assert compare(model_pet, model_ours, ("energy", "mtt::dipole")) < 1e-10


def test_zbl_takes_part_in_the_comparison():
    """The test structures have atoms within ZBL's range (the sum of their
    covalent radii), so the ``zbl`` layout above compares the repulsion too."""
    with_zbl, _ = both(random_pet(seed=3, zbl=True).get_checkpoint(), torch.float64)
    without, _ = both(random_pet(seed=3).get_checkpoint(), torch.float64)
    for atoms in (molecule(), cell()):
        energies = [evaluate(m, [atoms])["energy"][0, 0] for m in (with_zbl, without)]
        assert energies[0] > energies[1] + 1e-3


def test_float32_agreement():
    pet = random_pet(seed=4)
    model_pet, model_ours = both(pet.get_checkpoint(), torch.float32)
    assert compare(model_pet, model_ours) < 1e-5


def test_exports_agree(tmp_path):
    """What `mtt export` writes: TorchScript models, run by metatomic-ase."""
    from metatomic_ase import MetatomicCalculator

    pet = random_pet(seed=5).to(torch.float64)
    path = tmp_path / "pet.ckpt"
    torch.save(pet.get_checkpoint(), path)
    main(["convert", str(path), "-o", str(tmp_path / "ours.ckpt")])
    ours = model_from_checkpoint(
        torch.load(tmp_path / "ours.ckpt", weights_only=False), "export"
    )
    for atoms in (molecule(), cell()):
        results = []
        for model in (pet, ours):
            copy_ = atoms.copy()
            copy_.calc = MetatomicCalculator(model.export(), device="cpu")
            results.append((copy_.get_potential_energy(), copy_.get_forces()))
        assert relative(results[0][0], results[1][0]) < 1e-10
        assert relative(results[0][1], results[1][1]) < 1e-10
    # and symmetrized by `pet-ecse export --method ecse` (structure frames)
    ecse = str(tmp_path / "ours.pt")
    main(["export", str(tmp_path / "ours.ckpt"), "--method", "ecse", "-o", ecse])
    calculator = MetatomicCalculator(ecse, device="cpu")
    energies = []
    for seed in range(2):
        rotation = random_rotation(np.random.default_rng(seed))
        copy_ = rotated(molecule(), rotation)
        copy_.calc = calculator
        energies.append(copy_.get_potential_energy())
    assert relative(energies[0], energies[1]) < 1e-12


def test_lora_finetuned_pet_is_merged():
    from metatrain.pet.modules.finetuning import apply_finetuning_strategy

    # float64: merged weights are rounded to the checkpoint's precision
    pet = random_pet(seed=6).to(torch.float64)
    strategy = {
        "method": "lora",
        "config": {"rank": 2, "alpha": 3.0},
        "inherit_heads": {},
    }
    pet = apply_finetuning_strategy(pet, strategy)
    with torch.no_grad():
        for name, parameter in pet.named_parameters():
            if "lora_" in name:
                parameter.normal_(0.0, 0.5)
    checkpoint = pet.get_checkpoint()
    # as pet's trainer stores it
    checkpoint["best_model_state_dict"]["finetune_config"] = strategy
    model_pet, model_ours = both(checkpoint, torch.float64)
    assert compare(model_pet, model_ours) < 1e-10


@pytest.mark.parametrize("frames", ["structure", "atom"])
def test_converted_model_with_ecse_is_exactly_invariant(frames):
    pet = random_pet(seed=7)
    _, ours = both(pet.get_checkpoint(), torch.float64)
    block = {**ours.hypers["symmetrization"], "method": "ecse", "frames": frames}
    ours.set_symmetrization(block)
    atoms = molecule()
    rng = np.random.default_rng(0)
    reference = evaluate(ours, [atoms])
    for _ in range(2):
        rotation = random_rotation(rng)
        result = evaluate(ours, [rotated(atoms, rotation)])
        assert relative(reference["energy"], result["energy"]) < 1e-12
        forces = result["forces"][0] @ rotation
        assert relative(reference["forces"][0], forces) < 1e-10


def test_frames_auto_without_edge_embedding():
    """A converted model has no edge embedding: ``frames: auto`` trained in is
    per-atom frames, ``token`` is refused."""
    _, ours = both(random_pet(seed=8).get_checkpoint(), torch.float64)
    block = ours.hypers["symmetrization"]
    assert block["method"] == "none"
    ours.set_symmetrization({**block, "method": "ecse", "during_training": True})
    assert ours.symmetrization.frames == "atom"
    ours.set_symmetrization({**block, "method": "ecse", "during_training": False})
    assert ours.symmetrization.frames == "structure"
    with pytest.raises(ValueError, match="frames: token"):
        ours.set_symmetrization({**block, "method": "ecse", "frames": "token"})


def test_reference_pet_checkpoint_converts():
    """A stored pet checkpoint: a metatrain whose pet reads it differently, or
    no longer reads it, fails here."""
    with gzip.open(REFERENCE, "rb") as file:
        checkpoint = torch.load(file, weights_only=False)
    assert checkpoint["architecture_name"] == "pet"
    model_pet, model_ours = both(checkpoint, torch.float64)
    assert compare(model_pet, model_ours) < 1e-10


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_neighbors_adaptive": 16}, "num_neighbors_adaptive"),
        ({"attention_temperature": 2.0}, "attention_temperature"),
        ({"long_range": {"enable": True}}, "long_range"),
        ({"system_conditioning": True}, "system_conditioning"),
        ({"featurizer_type": "residual"}, "residual"),
        ({"d_node": 8}, "PreLN with d_node == d_pet"),
    ],
)
def test_unsupported_options_are_refused(tmp_path, change, message):
    checkpoint = random_pet(seed=9).get_checkpoint()
    checkpoint["model_data"]["model_hypers"].update(change)
    path = tmp_path / "pet.ckpt"
    torch.save(checkpoint, path)
    output = tmp_path / "out.ckpt"
    with pytest.raises(SystemExit, match=message) as error:
        main(["convert", str(path), "-o", str(output)])
    assert "\n" not in str(error.value)
    assert not output.exists()


def test_other_architectures_and_newer_versions_are_refused(tmp_path):
    checkpoint = random_pet(seed=10).get_checkpoint()
    with pytest.raises(ConversionError, match="not a metatrain pet checkpoint"):
        convert_checkpoint({**checkpoint, "architecture_name": "soap_bpnn"})
    with pytest.raises(ConversionError, match="already a pet_ecse"):
        convert_checkpoint(convert_checkpoint(copy.deepcopy(checkpoint)))
    newer = {**checkpoint, "model_ckpt_version": checkpoint["model_ckpt_version"] + 1}
    path = tmp_path / "pet.ckpt"
    torch.save(newer, path)
    output = tmp_path / "out.ckpt"
    with pytest.raises(SystemExit, match="newer than metatrain"):
        main(["convert", str(path), "-o", str(output)])
    assert not output.exists()


def test_version_6_upgrade_has_no_bond_bias():
    path = REFERENCE.parent / "model-v6_trainer-v1.ckpt.gz"
    with gzip.open(path, "rb") as file:
        checkpoint = PETECSE.upgrade_checkpoint(torch.load(file, weights_only=False))
    assert checkpoint["model_data"]["model_hypers"]["bond_bias"] is False
    model = model_from_checkpoint(checkpoint, context="export")
    assert len(model.network.bond_biases) == 0
    assert model.network.last_layers["energy"].bias is not None


def test_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot read it") as error:
        main(["convert", str(path), "-o", str(tmp_path / "out.ckpt")])
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out.ckpt").exists()


def test_non_conservative_heads_convert_and_become_exact():
    """pet's non-conservative forces (rank 1, per atom) and stress (rank 2, per
    structure, per volume and symmetrized as pet does): the converted model
    predicts what pet predicts, and with ECSE they are exactly equivariant."""
    from metatrain.utils.architectures import import_architecture
    from metatrain.utils.data import DatasetInfo
    from metatrain.utils.data.target_info import get_generic_target_info
    from pet_models import dataset_info, pet_hypers

    targets = dict(dataset_info().targets)
    for name, rank, per_atom in [
        ("non_conservative_forces", 1, True),
        ("non_conservative_stress", 2, False),
    ]:
        targets[name] = get_generic_target_info(
            name,
            {
                "quantity": "",
                "unit": "",
                "type": {"cartesian": {"rank": rank}},
                "num_subtargets": 1,
                "per_atom": per_atom,
                "sample_kind": "atom" if per_atom else "system",
            },
        )
    info = DatasetInfo(length_unit="angstrom", atomic_types=[1, 6], targets=targets)
    torch.manual_seed(0)
    pet = import_architecture("pet").__model__(pet_hypers(), info)
    model_pet, ours = both(pet.get_checkpoint(), torch.float64)
    atoms = cell()
    atoms.numbers[atoms.numbers > 6] = 6

    def outputs(model, atoms):
        forces = evaluate(
            model, [atoms], ("energy", "non_conservative_forces"), True, False
        )
        stress = evaluate(
            model, [atoms], ("energy", "non_conservative_stress"), False, False
        )
        return forces["non_conservative_forces"], stress["non_conservative_stress"]

    pairs = zip(outputs(model_pet, atoms), outputs(ours, atoms), strict=True)
    for expected, actual in pairs:
        assert np.abs(expected).max() > 1e-8
        assert relative(expected, actual) < 1e-10
    block = {**ours.hypers["symmetrization"], "method": "ecse", "frames": "structure"}
    ours.set_symmetrization(block)
    rotation = random_rotation(np.random.default_rng(0))
    forces, stress = outputs(ours, atoms)
    rotated_forces, rotated_stress = outputs(ours, rotated(atoms, rotation))
    assert relative(np.einsum("ia,nap->nip", rotation, forces), rotated_forces) < 1e-10
    expected = np.einsum("ia,nabp,jb->nijp", rotation, stress, rotation)
    assert relative(expected, rotated_stress) < 1e-10


def test_spherical_targets_are_refused():
    from metatrain.utils.architectures import import_architecture
    from metatrain.utils.data import DatasetInfo
    from metatrain.utils.data.target_info import get_generic_target_info
    from pet_models import dataset_info, pet_hypers

    targets = dict(dataset_info().targets)
    irreps = [{"o3_lambda": 1, "o3_sigma": 1}]
    targets["mtt::spherical"] = get_generic_target_info(
        "mtt::spherical",
        {
            "quantity": "",
            "unit": "",
            "type": {"spherical": {"irreps": irreps}},
            "num_subtargets": 1,
            "per_atom": False,
            "sample_kind": "system",
        },
    )
    info = DatasetInfo(length_unit="angstrom", atomic_types=[1, 6], targets=targets)
    checkpoint = import_architecture("pet").__model__(pet_hypers(), info)
    with pytest.raises(ConversionError, match="is spherical"):
        convert_checkpoint(checkpoint.get_checkpoint())
