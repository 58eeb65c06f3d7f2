"""Weighted frames ("views"): the one type that ECSE produces and the network reads,
and the algebra of reading predictions made in frames back in the lab frame.

A frame F maps lab coordinates to the frame's, ``x' = x @ F``; a prediction made
in frame F is read back as ``v = F v'`` (vectors) or ``S = F S' F^T`` (rank 2),
and averaged with the frames' weights. Averages of co-rotating frames co-rotate:
that is what makes ECSE exact (docs/ecse.md).
"""

from typing import List, NamedTuple, Optional

import torch


class WeightedFrames(NamedTuple):
    """Rotations with normalized weights, each attached to a group (a structure
    for structure frames, an atom for per-atom and token frames); isotropic
    entries stand for the distance-only fallback."""

    group: torch.Tensor  # [n_frames]
    rotation: torch.Tensor  # [n_frames, 3, 3], coordinates x' = x @ F
    weight: torch.Tensor  # [n_frames], sums to one within each group
    isotropic: torch.Tensor  # [n_frames] bool


def selected(frames: WeightedFrames, keep: torch.Tensor) -> WeightedFrames:
    """The frames where ``keep`` [n_frames] (bool) is true."""
    return WeightedFrames(
        frames.group[keep],
        frames.rotation[keep],
        frames.weight[keep],
        frames.isotropic[keep],
    )


def sorted_by_group(frames: WeightedFrames) -> WeightedFrames:
    """The frames ordered by group (stable): each group's frames contiguous."""
    order = torch.argsort(frames.group, stable=True)
    return WeightedFrames(
        frames.group[order],
        frames.rotation[order],
        frames.weight[order],
        frames.isotropic[order],
    )


def to_lab_frame(
    tensors: torch.Tensor, rotation: torch.Tensor, isotropic: torch.Tensor
) -> torch.Tensor:
    """Cartesian predictions made in frames ``rotation`` [n, 3, 3], back in the
    lab frame: vectors [n, 3, p] as v = F v', rank-2 tensors [n, 3, 3, p] as
    S = F S' F^T. The isotropic fallback carries no direction: vectors are zero,
    rank-2 tensors keep only their isotropic part (tr S' / 3) 1."""
    keep = (~isotropic).to(tensors.dtype)
    if tensors.dim() == 3:
        lab = torch.einsum("nij,njp->nip", rotation, tensors)
        return lab * keep[:, None, None]
    lab = torch.einsum("nia,nabp,njb->nijp", rotation, tensors, rotation)
    eye = torch.eye(3, dtype=tensors.dtype, device=tensors.device)
    trace = tensors.diagonal(dim1=1, dim2=2).sum(-1) / 3.0  # [n, p]
    isotropic_part = eye[None, :, :, None] * trace[:, None, None, :]
    keep = keep[:, None, None, None]
    return lab * keep + isotropic_part * (1.0 - keep)


def token_frames_to_lab(
    tensors: torch.Tensor,
    lab_frames: torch.Tensor,
    atom: torch.Tensor,
    rotation: torch.Tensor,
    weight: torch.Tensor,
    isotropic: torch.Tensor,
) -> torch.Tensor:
    """Invariant per-atom Cartesian predictions (token frames) in the lab frame.

    Vectors [n, 3, p]: ``v = M v'`` with ``M = sum_f w_f F_f`` (``lab_frames``
    [n, 3, 3], isotropic views counted as zero), which co-rotates because every
    F_f does. Rank-2 [n, 3, 3, p]: ``S = sum_f w_f F_f S' F_f^T`` over the views
    (``atom``, ``rotation``, ``weight``, ``isotropic``) of each atom, each term
    co-rotating as R S R^T; ``M S' M^T`` would co-rotate too, but shrinks (M is
    an average of rotations, not a rotation) and so would not keep S' = 1 the
    identity."""
    if tensors.dim() == 3:
        return torch.einsum("nij,njp->nip", lab_frames, tensors)
    per_view = to_lab_frame(tensors[atom], rotation, isotropic)
    return weighted_sum(per_view, atom, weight, tensors.shape[0])


def weighted_sum(
    values: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, size: int
) -> torch.Tensor:
    """Sum of ``values`` [n, ...] times ``weight`` [n] into ``size`` rows given by
    ``index`` [n]: ``out[r] = sum_{k: index_k = r} w_k values_k``.

    An accumulating ``index_put``, not ``index_add``: autograd keeps
    ``index_add``'s whole source for its backward pass (it reads only the
    source's shape), which for the per-view edge embedding is a third copy of
    [n_views, max_neighbors, d] kept until the forces are computed."""
    shape = [-1] + [1] * (values.dim() - 1)
    out = torch.zeros(
        [size] + list(values.shape[1:]), dtype=values.dtype, device=values.device
    )
    weighted = values * weight.to(values.dtype).reshape(shape)
    indices: List[Optional[torch.Tensor]] = [index]
    return out.index_put_(indices, weighted, accumulate=True)
