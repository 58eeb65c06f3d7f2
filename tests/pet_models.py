"""Tiny metatrain ``pet`` models with random weights, made at test time."""

import copy

import metatensor.torch as mts
import torch
from metatrain.utils.architectures import get_default_hypers, import_architecture
from metatrain.utils.data import DatasetInfo
from models import dataset_info as ecse_dataset_info


def pet_hypers(**changes) -> dict:
    hypers = copy.deepcopy(get_default_hypers("pet")["model"])
    hypers.update(
        cutoff=4.0,
        d_pet=8,
        d_head=8,
        d_node=16,
        d_feedforward=16,
        num_heads=2,
        num_attention_layers=2,
        num_gnn_layers=2,
    )
    hypers.update(changes)
    return hypers


def dataset_info(with_dipole: bool = False) -> DatasetInfo:
    """Energy (forces, stress), optionally a per-structure vector target."""
    return ecse_dataset_info(with_dipole, dipole="mtt::dipole")


def _randomize_tensor_maps(module, buffer_suffixes, maps, seed: int) -> None:
    """Random values in the TensorMaps of a composition model or scaler, and
    in the buffers that store them."""
    generator = torch.Generator().manual_seed(seed)
    for suffix, tensor_maps in zip(buffer_suffixes, maps, strict=True):
        for name, tensor_map in tensor_maps.items():
            for block in tensor_map.blocks():
                values = block.values
                random = torch.rand(
                    values.shape, generator=generator, dtype=values.dtype
                )
                values.copy_(0.5 + random)
            setattr(module, name + suffix, mts.save_buffer(tensor_map).to(torch.uint8))


def random_pet(seed: int = 0, with_dipole: bool = False, **changes):
    """A metatrain ``pet`` model with random weights, composition and scales."""
    torch.manual_seed(seed)
    model = import_architecture("pet").__model__(
        pet_hypers(**changes), dataset_info(with_dipole)
    )
    # torch's initialization, perturbed so that biases and norms are not 0 or 1.
    # Not larger: pet masks padding with log(1e-15) in the attention scores, not
    # -inf, so weights large enough for score differences near 34 let padding
    # leak into its predictions (which then depend on the padding of the batch)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    composition = model.additive_models[0]
    _randomize_tensor_maps(
        composition, ["_composition_buffer"], [composition.model.weights], seed
    )
    scaler = model.scaler
    _randomize_tensor_maps(
        scaler,
        ["_scaler_buffer", "_per_target_scaler_buffer", "_per_property_scaler_buffer"],
        [
            scaler.model.scales,
            scaler.model.per_target_scales,
            scaler.model.per_property_scales,
        ],
        seed + 1,
    )
    return model
