"""Structure-wide ECSE: evaluate PET on whole rotated copies of each structure.

Every frame of a structure rotates all of that structure's edge vectors (cell and
positions together, since only edge vectors enter PET). All copies of a batch are
stacked into one graph and evaluated by one batched forward pass; neighbour lists,
padding and reverse-edge indices are reused from the unrotated graph.
"""

from typing import Dict, List, NamedTuple

import torch

from ..modules.graph import NetworkInputs
from ..modules.views import WeightedFrames, to_lab_frame, weighted_sum


class RotatedCopies(NamedTuple):
    """A stack of rotated structure copies: the network's inputs for them, and
    where each copied atom comes from."""

    atom: torch.Tensor  # [n_copied_atoms] original atom of each copied atom
    frame: torch.Tensor  # [n_copied_atoms] frame (copy) it belongs to
    inputs: NetworkInputs  # of n_copied_atoms atoms, edges rotated: x' = x @ F


def rotated_copies(
    frames: WeightedFrames,
    first_atom: torch.Tensor,
    system_size: torch.Tensor,
    inputs: NetworkInputs,
) -> RotatedCopies:
    """One copy of structure ``frames.group[f]`` per frame ``f``, rotated by it
    (distance-only for isotropic frames). ``first_atom`` and ``system_size``
    [n_systems] locate each structure's atoms in ``inputs`` (the unrotated
    graph, [n_atoms, max_neighbors, ...])."""
    geometry = inputs.geometry
    sizes = system_size[frames.group]
    total = int(sizes.sum())
    frame = torch.repeat_interleave(
        torch.arange(sizes.shape[0], device=sizes.device), sizes, output_size=total
    )
    copy_start = torch.cumsum(sizes, 0) - sizes
    local = torch.arange(total, device=sizes.device) - copy_start[frame]
    atom = first_atom[frames.group][frame] + local

    xyz = torch.bmm(geometry[atom, :, :3], frames.rotation[frame])
    xyz = xyz * (~frames.isotropic[frame]).to(xyz.dtype)[:, None, None]
    max_neighbors = geometry.shape[1]
    # edges stay within their structure: shift reverse indices by the copy offset
    offset = ((torch.arange(total, device=atom.device) - atom) * max_neighbors)[:, None]
    slots = atom[:, None] * max_neighbors + torch.arange(
        max_neighbors, device=atom.device
    )
    return RotatedCopies(
        atom=atom,
        frame=frame,
        inputs=NetworkInputs(
            geometry=torch.cat([xyz, geometry[atom, :, 3:]], dim=-1),
            factors=inputs.factors[atom],
            species=inputs.species[atom],
            neighbor_species=inputs.neighbor_species[atom],
            reverse=(inputs.reverse[slots] + offset).flatten(),
        ),
    )


def accumulate_copies(
    results: Dict[str, torch.Tensor],
    outputs: Dict[str, torch.Tensor],
    copies: RotatedCopies,
    frames: WeightedFrames,
    vector_outputs: List[str],
) -> None:
    """Add the weighted, back-rotated predictions of ``copies`` into ``results``."""
    weight = frames.weight[copies.frame]
    for name, value in outputs.items():
        if name in vector_outputs:
            value = to_lab_frame(
                value, frames.rotation[copies.frame], frames.isotropic[copies.frame]
            )
        results[name] = results[name] + weighted_sum(
            value, copies.atom, weight, results[name].shape[0]
        )


def frame_chunks(
    frames: WeightedFrames,
    system_size: torch.Tensor,
    max_atoms_per_pass: int,
    max_copied_atoms: int,
) -> List[WeightedFrames]:
    """``frames`` [n_frames] (grouped by structure) split into contiguous chunks,
    in order, each copying at most ``max_atoms_per_pass`` atoms (a single frame
    may copy more); ``system_size`` [n_systems] counts each structure's atoms.
    Every chunk is a ``WeightedFrames`` of [n_chunk_frames] (rotations
    [n_chunk_frames, 3, 3]), so one forward pass evaluates one chunk.

    Forces need every chunk's activations until the backward pass, so memory
    grows with the total number of copied atoms (frames times atoms, which grows
    as N^2 for periodic cells): beyond ``max_copied_atoms`` this refuses before
    anything is allocated."""
    sizes = system_size[frames.group]
    total = int(sizes.sum())
    if total > max_copied_atoms:
        raise ValueError(
            f"ECSE structure frames would evaluate {sizes.shape[0]} rotated copies "
            f"({total} atoms, more than max_copied_atoms={max_copied_atoms}): use "
            "`frames: token` (trained in), evaluate fewer structures at once, or "
            "raise max_copied_atoms if memory allows"
        )
    # one conversion to Python integers, not one tensor read per frame
    ends: List[int] = torch.cumsum(sizes, 0).tolist()
    bounds: List[int] = [0]
    start_atoms = 0
    for index in range(1, len(ends)):
        if ends[index] - start_atoms > max_atoms_per_pass:
            bounds.append(index)
            start_atoms = ends[index - 1]
    bounds.append(len(ends))
    chunks: List[WeightedFrames] = []
    for index in range(len(bounds) - 1):
        start, stop = bounds[index], bounds[index + 1]
        chunks.append(
            WeightedFrames(
                frames.group[start:stop],
                frames.rotation[start:stop],
                frames.weight[start:stop],
                frames.isotropic[start:stop],
            )
        )
    return chunks
