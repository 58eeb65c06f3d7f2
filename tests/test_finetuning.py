"""Fine-tuning methods as metatrain ``pet``'s: full, heads, lora, inherit_heads,
new targets, and ``finetune: read_from:`` a pet checkpoint."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import ase.build
import numpy as np
import pytest
import torch
import yaml
from datasets import molecules, write
from metatrain.pet.modules.finetuning import LoRALinear
from metatrain.utils.data import DatasetInfo
from metatrain.utils.data.target_info import get_energy_target_info
from metatrain.utils.io import model_from_checkpoint
from models import TYPES, evaluate
from pet_models import random_pet

from pet_metatrain.convert import convert_checkpoint
from pet_metatrain.finetuning import apply_finetuning
from pet_metatrain.modules.transformer import SmoothAttention

BIN = Path(sys.executable).parent


def converted(seed: int = 0):
    checkpoint = convert_checkpoint(random_pet(seed=seed).get_checkpoint())
    return model_from_checkpoint(checkpoint, "finetune")


def trainable(model) -> set:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_heads_trains_only_heads_and_last_layers():
    model = apply_finetuning(converted(), {"method": "heads"}, True)
    names = trainable(model)
    assert names, "nothing to train"
    for name in names:
        assert any(
            part in name
            for part in (
                ".central_heads.",
                ".bond_heads.",
                "last_layers",
                "bond_biases",
            )
        ), name
    assert "network.bond_biases.energy.weight" in names
    assert "network.last_layers.energy.weight" in names


def test_heads_with_pets_module_names():
    strategy = {
        "method": "heads",
        "config": {"head_modules": ["node_heads"], "last_layer_modules": []},
    }
    names = trainable(apply_finetuning(converted(), strategy, True))
    assert names and all(".central_heads." in name for name in names)


def test_lora_wraps_attention_and_survives_a_checkpoint():
    model = converted()
    strategy = {
        "method": "lora",
        "config": {"rank": 2, "alpha": 4.0},
        "inherit_heads": {},
    }
    model = apply_finetuning(model, strategy, True)
    attentions = [m for m in model.modules() if isinstance(m, SmoothAttention)]
    assert attentions
    for attention in attentions:
        assert isinstance(attention.input, LoRALinear)
        assert isinstance(attention.output, LoRALinear)
    names = trainable(model)
    assert names and all("lora_" in name for name in names)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.normal_(0.0, 0.1)
    atoms = ase.build.molecule("CH3OH")
    model = model.to(torch.float64).eval()
    expected = evaluate(model, [atoms])
    reloaded = model_from_checkpoint(copy.deepcopy(model.get_checkpoint()), "export")
    actual = evaluate(reloaded.to(torch.float64).eval(), [atoms])
    assert np.allclose(expected["energy"], actual["energy"], rtol=1e-12)
    assert reloaded.finetune_config["method"] == "lora"
    # TorchScript accepts the LoRA layers
    reloaded.export()


def test_unknown_lora_target_is_refused():
    strategy = {"method": "lora", "config": {"target_modules": ["nowhere"]}}
    with pytest.raises(ValueError, match="unknown LoRA target_modules"):
        apply_finetuning(converted(), strategy, True)


def test_new_target_inherits_heads():
    """Transfer to another level of theory: a new energy target with its own
    heads, initialized from the old target's."""
    model = converted()
    targets = {
        "mtt::energy_pbe0": get_energy_target_info(
            "mtt::energy_pbe0",
            {"quantity": "energy", "unit": "eV"},
            add_position_gradients=True,
        )
    }
    model = model.restart(
        DatasetInfo(length_unit="angstrom", atomic_types=TYPES, targets=targets)
    )
    assert "mtt::energy_pbe0" in model.target_names
    strategy = {
        "method": "full",
        "inherit_heads": {"mtt::energy_pbe0": "energy"},
    }
    model = apply_finetuning(model, strategy, True)
    state = model.state_dict()
    for name, value in state.items():
        if ".energy." in name and "network." in name:
            other = name.replace("energy", "mtt::energy_pbe0")
            assert torch.equal(value, state[other]), name


@pytest.mark.slow
def test_mtt_train_finetunes_a_pet_checkpoint_with_ecse(tmp_path):
    """``finetune: read_from:`` a metatrain pet checkpoint, heads only, with ECSE
    switched on (per-atom frames: a converted model has no edge embedding)."""
    pet = random_pet(seed=1)
    torch.save(pet.get_checkpoint(), tmp_path / "pet.ckpt")
    write(tmp_path / "data.xyz", molecules(8))
    options = {
        "seed": 0,
        "base_precision": 32,
        "architecture": {
            "name": "pet_ecse",
            "model": {"symmetrization": {"method": "ecse"}},
            "training": {
                "num_epochs": 1,
                "batch_size": 4,
                "finetune": {
                    "read_from": "pet.ckpt",
                    "method": "heads",
                    # pet's names, which pet's hypers require for `heads`
                    "config": {
                        "head_modules": ["node_heads", "edge_heads"],
                        "last_layer_modules": ["node_last_layers", "edge_last_layers"],
                    },
                },
            },
        },
        "training_set": {
            "systems": {"read_from": "data.xyz", "length_unit": "angstrom"},
            "targets": {"energy": {"key": "energy", "unit": "eV"}},
        },
        "validation_set": 0.25,
        "test_set": 0.0,
    }
    (tmp_path / "options.yaml").write_text(yaml.safe_dump(options))
    result = subprocess.run(
        [str(BIN / "mtt"), "train", "options.yaml"],
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=False)
    assert checkpoint["architecture_name"] == "pet_ecse"
    model = model_from_checkpoint(checkpoint, "export")
    strategy = model.symmetrization  # evaluation: ECSE on per-atom frames
    assert strategy.mode == "per_atom" and strategy.frames == "atom"
    assert model.finetune_config["method"] == "heads"
    # heads only: the backbone is pet's
    before = convert_checkpoint(pet.get_checkpoint())["model_state_dict"]
    after = model.state_dict()
    name = "network.blocks.0.transformer.layers.0.attention.input.weight"
    assert torch.equal(before[name], after[name])
    head = "network.last_layers.energy.weight"
    assert not torch.equal(before[head], after[head])


@pytest.mark.slow
def test_mtt_train_transfers_a_pet_checkpoint_to_a_new_target(tmp_path):
    """Another level of theory: a new target with its own heads, inherited from
    pet's energy, all weights trained."""
    torch.save(random_pet(seed=2).get_checkpoint(), tmp_path / "pet.ckpt")
    write(tmp_path / "data.xyz", molecules(8))
    target = {"quantity": "energy", "key": "energy", "unit": "eV"}
    options = {
        "seed": 0,
        "base_precision": 32,
        "architecture": {
            "name": "pet_ecse",
            "training": {
                "num_epochs": 1,
                "batch_size": 4,
                "finetune": {
                    "read_from": "pet.ckpt",
                    "method": "full",
                    "inherit_heads": {"mtt::energy_pbe0": "energy"},
                },
            },
        },
        "training_set": {
            "systems": {"read_from": "data.xyz", "length_unit": "angstrom"},
            "targets": {"mtt::energy_pbe0": target},
        },
        "validation_set": 0.25,
        "test_set": 0.0,
    }
    (tmp_path / "options.yaml").write_text(yaml.safe_dump(options))
    result = subprocess.run(
        [str(BIN / "mtt"), "train", "options.yaml"],
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = model_from_checkpoint(
        torch.load(tmp_path / "model.ckpt", weights_only=False), "export"
    )
    assert "mtt::energy_pbe0" in model.target_names
    assert model.finetune_config["inherit_heads"] == {"mtt::energy_pbe0": "energy"}
