"""Checkpoint versioning and clear errors for incompatible or corrupt files."""

import gzip
from pathlib import Path

import pytest
import torch
from metatrain.utils.io import model_from_checkpoint

from pet_metatrain import PETECSE, Trainer
from pet_metatrain.checkpoints import upgrade
from pet_metatrain.cli import export_checkpoint

REFERENCE = Path(__file__).parent / "checkpoints" / "model-v1_trainer-v1.ckpt.gz"


def reference() -> dict:
    with gzip.open(REFERENCE, "rb") as file:
        return torch.load(file, weights_only=False)


def test_reference_checkpoint_loads_and_exports(tmp_path):
    checkpoint = reference()
    model = model_from_checkpoint(checkpoint, context="export")
    assert isinstance(model, PETECSE)
    path = tmp_path / "reference.ckpt"
    torch.save(reference(), path)
    assert export_checkpoint(str(path), str(tmp_path / "out.pt"), {}).exists()


def test_upgrade_applies_each_step_in_order():
    steps = []
    upgrades = {
        1: lambda c: steps.append((1, c["model_ckpt_version"])),
        2: lambda c: steps.append((2, c["model_ckpt_version"])),
    }
    checkpoint = upgrade({"model_ckpt_version": 1}, "model", 3, upgrades)
    assert steps == [(1, 1), (2, 2)]
    assert checkpoint["model_ckpt_version"] == 3


@pytest.mark.parametrize("version", [None, 0, "1"])
def test_missing_or_invalid_version_is_reported(version):
    with pytest.raises(RuntimeError, match="corrupt"):
        PETECSE.upgrade_checkpoint({"model_ckpt_version": version})


def test_newer_checkpoint_is_refused():
    checkpoint = reference()
    checkpoint["trainer_ckpt_version"] = Trainer.__checkpoint_version__ + 1
    with pytest.raises(RuntimeError, match="Unable to upgrade the checkpoint"):
        Trainer.upgrade_checkpoint(checkpoint)


def test_truncated_checkpoint_gives_an_error(tmp_path):
    path = tmp_path / "broken.ckpt"
    torch.save(reference(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(Exception, match="(?i)zip|archive|corrupt|EOF|pickle"):
        export_checkpoint(str(path), str(tmp_path / "out.pt"), {})


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({**reference(), "architecture_name": "soap_bpnn"}, path)
    with pytest.raises(ValueError, match="not a pet_ecse checkpoint"):
        export_checkpoint(str(path), str(tmp_path / "out.pt"), {})


def test_version_1_upgrade_keeps_the_paper_model_and_resets_the_optimizer():
    checkpoint = PETECSE.upgrade_checkpoint(reference())
    hypers = checkpoint["model_data"]["model_hypers"]
    assert hypers["d_node"] is None and hypers["transformer_type"] == "PostLN"
    bias = checkpoint["model_state_dict"]["network.last_layers.energy.bias"]
    assert torch.equal(bias, torch.zeros_like(bias))
    assert checkpoint["optimizer_state_dict"] is None
    model = model_from_checkpoint(checkpoint, context="restart")
    assert model.network.last_layers["energy"].bias is not None


def test_version_2_upgrade_keeps_the_residual_featurizer():
    path = REFERENCE.parent / "model-v2_trainer-v1.ckpt.gz"
    with gzip.open(path, "rb") as file:
        checkpoint = PETECSE.upgrade_checkpoint(torch.load(file, weights_only=False))
    hypers = checkpoint["model_data"]["model_hypers"]
    assert hypers["featurizer_type"] == "residual"
    assert (hypers["activation"], hypers["normalization"]) == ("SiLU", "LayerNorm")
    model = model_from_checkpoint(checkpoint, context="export")
    assert len(model.network.combinations) == 0


@pytest.mark.parametrize("during_training", [False, True])
def test_version_4_upgrade_keeps_the_model_and_its_frames(during_training):
    """v4 had no edge embedding, a cosine cutoff and ``max_frames_per_batch``;
    ``frames: auto`` trained in meant per-atom (``atom``) frames then."""
    path = REFERENCE.parent / "model-v4_trainer-v1.ckpt.gz"
    with gzip.open(path, "rb") as file:
        checkpoint = torch.load(file, weights_only=False)
    symmetrization = checkpoint["model_data"]["model_hypers"]["symmetrization"]
    symmetrization["during_training"] = during_training
    checkpoint = PETECSE.upgrade_checkpoint(checkpoint)
    hypers = checkpoint["model_data"]["model_hypers"]
    assert hypers["d_edge_embedding"] is None
    assert hypers["cutoff_function"] == "Cosine"
    assert "max_frames_per_batch" not in hypers["symmetrization"]
    model = model_from_checkpoint(checkpoint, context="export")
    assert model.network.edge_embedding is None
    expected = "atom" if during_training else "structure"
    assert model.symmetrization.frames == expected


def test_token_frames_need_the_edge_embedding():
    path = REFERENCE.parent / "model-v4_trainer-v1.ckpt.gz"
    with gzip.open(path, "rb") as file:
        checkpoint = PETECSE.upgrade_checkpoint(torch.load(file, weights_only=False))
    model = model_from_checkpoint(checkpoint, context="export")
    symmetrization = {**model.hypers["symmetrization"], "frames": "token"}
    with pytest.raises(ValueError, match="frames: token.*edge embedding"):
        model.set_symmetrization(symmetrization)


def test_version_8_upgrade_keeps_training_without_weight_noise():
    """v8 models were trained with exact frame weights; fine-tuning or
    restarting them keeps it so (new models jitter the weights in training)."""
    path = REFERENCE.parent / "model-v8_trainer-v1.ckpt.gz"
    with gzip.open(path, "rb") as file:
        checkpoint = PETECSE.upgrade_checkpoint(torch.load(file, weights_only=False))
    model = model_from_checkpoint(checkpoint, context="finetune")
    assert model.hypers["symmetrization"]["training_weight_noise"] == 0.0
    assert model.symmetrization.frame_builder.weight_noise == 0.0


def test_version_9_upgrade_keeps_training_on_all_frames():
    """v9 models were trained on all their frames; fine-tuning or restarting
    them keeps it so (new models draw at most 32 per atom in training)."""
    path = REFERENCE.parent / "model-v9_trainer-v1.ckpt.gz"
    with gzip.open(path, "rb") as file:
        checkpoint = PETECSE.upgrade_checkpoint(torch.load(file, weights_only=False))
    model = model_from_checkpoint(checkpoint, context="finetune")
    assert model.hypers["symmetrization"]["training_frames_per_atom"] is None
    assert model.symmetrization.frame_builder.training_frame_limit == 0


def test_version_10_upgrade_adds_no_repulsion():
    path = REFERENCE.parent / "model-v10_trainer-v1.ckpt.gz"
    with gzip.open(path, "rb") as file:
        checkpoint = PETECSE.upgrade_checkpoint(torch.load(file, weights_only=False))
    model = model_from_checkpoint(checkpoint, context="export")
    assert model.hypers["zbl"] is False
    assert len(model.additive_models) == 1


def test_version_11_upgrade_keeps_the_silu_edge_embedding():
    """v11 models were trained with a SiLU edge embedding, the only one then."""
    path = REFERENCE.parent / "model-v11_trainer-v1.ckpt.gz"
    with gzip.open(path, "rb") as file:
        checkpoint = PETECSE.upgrade_checkpoint(torch.load(file, weights_only=False))
    model = model_from_checkpoint(checkpoint, context="export")
    assert model.hypers["edge_embedding_activation"] == "SiLU"
    assert model.network.edge_embedding.activation == "SiLU"
