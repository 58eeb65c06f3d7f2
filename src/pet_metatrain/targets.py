"""How metatrain's targets map to the network's outputs and back: names of
last-layer features, the per-volume non-conservative stress, and composition
contributions added to the blocks they cover."""

from typing import List

import metatensor.torch as mts
import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import System


def last_layer_features_name(target: str) -> str:
    """metatrain's name for the last-layer features of ``target``."""
    base = target.replace("mtt::", "")
    return f"mtt::aux::{base}_last_layer_features"


def is_non_conservative_stress(name: str) -> bool:
    """Whether ``name`` is ``non_conservative_stress`` or one of its variants."""
    return name.split("/")[0] == "non_conservative_stress"


def stress_per_volume(
    values: torch.Tensor, systems: List[System], system_index: torch.Tensor
) -> torch.Tensor:
    """Per-atom stress contributions [n_atoms, 3, 3, p] divided by the volume of
    their cell and symmetrized, ``(S + S^T) / (2 V)``, as metatrain's ``pet``
    reads ``non_conservative_stress``. Both steps commute with rotations
    (``V`` is invariant), so an exactly equivariant S stays exact. A system
    without a full cell (``V = 0``) counts as infinitely large: zero stress."""
    cells = torch.stack([system.cell for system in systems]).to(values.dtype)
    volumes = torch.abs(torch.linalg.det(cells))
    volumes = torch.where(volumes == 0.0, torch.full_like(volumes, torch.inf), volumes)
    per_atom = volumes[system_index].reshape(-1, 1, 1, 1)
    return 0.5 * (values + values.transpose(1, 2)) / per_atom


def add_shared_blocks(tensor: TensorMap, other: TensorMap) -> TensorMap:
    """``tensor`` plus ``other`` on the blocks ``other`` has (a composition
    contribution covers only the invariant block of a spherical target)."""
    if len(other.keys) == len(tensor.keys):
        return mts.add(tensor, other)
    blocks: List[TensorBlock] = []
    for index in range(len(tensor.keys)):
        block = tensor.block(index)
        values = block.values
        position = other.keys.position(tensor.keys.entry(index))
        if position is not None:
            values = values + other.block(position).values
        blocks.append(
            TensorBlock(values, block.samples, block.components, block.properties)
        )
    return TensorMap(tensor.keys, blocks)


def feature_map(values: torch.Tensor, samples: Labels, keys: Labels) -> TensorMap:
    """Per-atom features [n_atoms, n_features] as a one-block TensorMap."""
    properties = Labels(
        ["feature"],
        torch.arange(values.shape[1], device=values.device).reshape(-1, 1),
    )
    block = TensorBlock(
        values=values, samples=samples, components=[], properties=properties
    )
    return TensorMap(keys, [block])
