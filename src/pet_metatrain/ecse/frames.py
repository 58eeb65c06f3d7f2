"""ECSE frames: local coordinate systems from neighbour pairs, with smooth weights.

Everything is vectorized over atoms and neighbour pairs; the set of (frame, weight)
pairs co-rotates with the structure, which is what makes the average exact. See
docs/ecse.md (and the ECSE paper) for the protocol and its defaults.
"""

from typing import Any, Dict, Optional, Tuple

import torch

from ..modules.graph import EdgeGraph
from ..modules.views import WeightedFrames, selected
from .switching import (
    SMAX_OFFSET,
    smooth_cutoff,
    smooth_ramp,
    smooth_step,
    smooth_step_at,
)

# pruning (threshold, width, passes) and inner cutoff width where the
# symmetrization block leaves them unset: narrow where each frame costs a forward
# pass; token frames are cheap, and kept smooth enough for MD (no pruning, wide
# inner cutoff: NVE energy conserved as well as plain PET's, see documentation.py)
DEFAULT_PRUNING = {
    "token": (0.5, 0.5, 0),
    "structure": (0.9, 0.1, 2),
    "atom": (0.9, 0.1, 2),
}
DEFAULT_INNER_CUTOFF_WIDTH = {"token": 0.3, "structure": 0.15, "atom": 0.15}
# sharpness of the adaptive inner cutoff's smooth minimum: token frames take
# the soft one that keeps MD smooth (see documentation.py)
DEFAULT_BETA = {"token": 1.0, "structure": 5.0, "atom": 5.0}


def resolved_frames(symmetrization: Dict[str, Any], edge_embedding: bool = True) -> str:
    """The frames mode a ``symmetrization`` block asks for: ``auto`` is
    ``token`` where ECSE is trained in and ``structure`` (a-posteriori) where
    it is not; models without the edge embedding that ``token`` frames need
    (converted ``pet`` models, old checkpoints) train ``atom`` frames in."""
    frames = str(symmetrization["frames"])
    if frames == "auto":
        if not symmetrization["during_training"]:
            return "structure"
        return "token" if edge_embedding else "atom"
    return frames


class FrameBuilder(torch.nn.Module):
    """Builds, weights and prunes ECSE frames for groups of atoms."""

    # frames (the isotropic fallback included) lighter than this are dropped:
    # the average changes by at most about this much (a class constant, which
    # TorchScript reads where it refuses a module-level float)
    min_weight: torch.jit.Final[float] = 1e-10

    def __init__(self, hypers: Dict, cutoff: float, frames: str) -> None:
        """``frames`` (token, structure or atom) selects the pruning defaults."""
        super().__init__()
        self.outer_cutoff = min(float(cutoff), float(hypers["max_outer_cutoff"]))
        beta = hypers["beta"]
        self.beta = float(DEFAULT_BETA[frames] if beta is None else beta)
        # SMAX_beta(a, b) + offset >= max(a, b)
        self.smax_offset = SMAX_OFFSET / self.beta
        self.beta_weights = float(hypers["beta_weights"])
        width = hypers["inner_cutoff_width"]
        self.width = float(
            DEFAULT_INNER_CUTOFF_WIDTH[frames] if width is None else width
        )
        self.collinearity = float(hypers["collinearity_threshold"])
        self.collinearity_width = float(hypers["collinearity_width"])
        threshold, width, passes = DEFAULT_PRUNING[frames]
        if hypers["pruning_threshold"] is not None:
            threshold = hypers["pruning_threshold"]
        if hypers["pruning_width"] is not None:
            width = hypers["pruning_width"]
        if hypers["pruning_passes"] is not None:
            passes = hypers["pruning_passes"]
        self.pruning_threshold = float(threshold)
        self.pruning_width = float(width)
        self.pruning_passes = int(passes)
        self.centre_pruning_passes = int(hypers["centre_pruning_passes"])
        self.centre_pruning_threshold = float(hypers["centre_pruning_threshold"])
        self.centre_pruning_width = float(hypers["centre_pruning_width"])
        length = hypers["centre_preference_length"]
        self.centre_preference_length = 0.0 if length is None else float(length)
        self.order_by_species = hypers["pair_order"] == "species"
        # per-atom frames only: random frame subsets and weight noise, in the
        # trainer's training steps (``jitter``; never in validation or evaluation)
        self.weight_noise = float(hypers["training_weight_noise"])
        limit = hypers["training_frames_per_atom"]
        self.training_frame_limit = 0 if limit is None else int(limit)
        self.randomized = frames != "structure" and (
            self.weight_noise > 0.0 or self.training_frame_limit > 0
        )
        self.jitter = False

    def structure_frames(self, graph: EdgeGraph, num_structures: int) -> WeightedFrames:
        """Frames of all atoms pooled and pruned per structure, molecules ranked by
        centre preference."""
        preference: Optional[torch.Tensor] = None
        ranked: Optional[torch.Tensor] = None
        if self.centre_preference_length > 0.0:
            preference = centre_preference(
                graph.positions,
                graph.system_index,
                graph.periodic,
                self.centre_preference_length,
            )
            ranked = ~graph.periodic
        return self.forward(
            graph.edge_vectors,
            graph.distances,
            graph.mask,
            graph.system_index,
            num_structures,
            graph.neighbor_species,
            preference,
            ranked,
        )

    def forward(
        self,
        edge_vectors: torch.Tensor,
        distances: torch.Tensor,
        mask: torch.Tensor,
        atom_group: torch.Tensor,
        num_groups: int,
        neighbor_species: torch.Tensor,
        preference: Optional[torch.Tensor] = None,
        ranked: Optional[torch.Tensor] = None,
    ) -> WeightedFrames:
        """Frames of every atom's neighbourhood, pooled and pruned per group.

        ``atom_group`` [n_atoms] assigns atoms to groups: the structure index for
        structure-wide frames, ``arange(n_atoms)`` for per-atom frames.
        ``neighbor_species`` [n_atoms, max_neighbors] orders the pairs of
        different species (``pair_order: species``). Pruning
        ranks frames by weight times ``preference`` [n_atoms] of their centre atom
        (in (0, 1], invariant): lower preference is pruned first; the weights of
        the surviving frames are not scaled by it. Groups flagged in ``ranked``
        [num_groups] are pruned with the ``centre_pruning_*`` parameters.
        """
        dtype = edge_vectors.dtype
        sine2, outer_factors = self._pairs(edge_vectors, distances, mask)
        inner = self._inner_cutoff(distances, sine2, outer_factors)

        # the outer factor keeps weights smooth when r_in reaches the outer cutoff
        inner_factors = (
            smooth_cutoff(distances, inner[:, None], self.width) * outer_factors
        )
        weights = (
            inner_factors[:, :, None]
            * inner_factors[:, None, :]
            * smooth_ramp(
                sine2,
                self.collinearity - self.collinearity_width,
                self.collinearity_width,
            )
        )
        if self.order_by_species:
            # one order for pairs of different species: heavier neighbour first
            weights = weights * (
                neighbor_species[:, :, None] >= neighbor_species[:, None, :]
            ).to(dtype)
        candidates = torch.nonzero(weights > self.min_weight)
        atom, first, second = candidates[:, 0], candidates[:, 1], candidates[:, 2]
        frame_weights = weights[atom, first, second]
        rotations = _pair_frames(edge_vectors[atom, first], edge_vectors[atom, second])
        group = atom_group[atom]
        scores: Optional[torch.Tensor] = None
        if preference is not None:
            scores = frame_weights * preference[atom]
        frames = self._prune(
            group, rotations, frame_weights, scores, ranked, num_groups
        )
        if self.training and self.jitter and self.randomized:
            if self.training_frame_limit > 0:
                frames = subsampled(frames, self.training_frame_limit, num_groups)
            frames = jitter_weights(frames, self.weight_noise)
        # normalized once, at the end: each normalization adds kernels to the
        # double backward of a training step on forces
        weight = normalized(frames.weight, frames.group, num_groups)
        return WeightedFrames(frames.group, frames.rotation, weight, frames.isotropic)

    def _pairs(
        self, edge_vectors: torch.Tensor, distances: torch.Tensor, mask: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Squared sines of the angles between neighbour pairs [n_atoms, n, n]
        and the outer switching factor of every neighbour [n_atoms, n] (zero
        outside ``mask`` and the outer cutoff)."""
        inside = mask & (distances < self.outer_cutoff)
        safe_distances = torch.where(inside, distances, torch.ones_like(distances))
        units = edge_vectors / safe_distances[:, :, None]
        sine2 = (
            torch.linalg.cross(
                units[:, :, None, :].expand(-1, -1, units.shape[1], -1),
                units[:, None, :, :].expand(-1, units.shape[1], -1, -1),
                dim=-1,
            )
            .square()
            .sum(-1)
        )
        outer = torch.tensor(
            self.outer_cutoff, dtype=distances.dtype, device=distances.device
        )
        return sine2, smooth_cutoff(distances, outer, self.width) * inside

    def inner_cutoffs(
        self, edge_vectors: torch.Tensor, distances: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The adaptive inner cutoff r_in [n_atoms] of every atom (see
        ``_inner_cutoff``), from its padded neighbourhood [n_atoms, n, ...]."""
        sine2, outer_factors = self._pairs(edge_vectors, distances, mask)
        return self._inner_cutoff(distances, sine2, outer_factors)

    def _inner_cutoff(
        self,
        distances: torch.Tensor,
        sine2: torch.Tensor,
        outer_factors: torch.Tensor,
    ) -> torch.Tensor:
        """Adaptive per-atom inner cutoff: a smooth minimum over neighbour pairs of
        the (smooth) larger distance, weighted by how non-collinear the pair is."""
        n_atoms, n_neighbors = distances.shape
        r_j = distances[:, :, None]
        r_k = distances[:, None, :]
        pair_max = r_k + (r_j - r_k) * torch.sigmoid(self.beta * (r_j - r_k))
        values = pair_max + self.smax_offset
        upper = torch.ones(
            n_neighbors, n_neighbors, dtype=torch.bool, device=distances.device
        ).triu(1)
        pair_weights = (
            outer_factors[:, :, None]
            * outer_factors[:, None, :]
            * smooth_step_at(sine2, self.collinearity, self.collinearity_width)
            * upper
        )
        # the outer cutoff itself enters the smooth minimum with weight one
        values = torch.cat(
            [
                values.reshape(n_atoms, n_neighbors * n_neighbors),
                distances.new_full((n_atoms, 1), self.outer_cutoff),
            ],
            dim=1,
        )
        pair_weights = torch.cat(
            [
                pair_weights.reshape(n_atoms, n_neighbors * n_neighbors),
                distances.new_ones((n_atoms, 1)),
            ],
            dim=1,
        )
        shift = torch.where(pair_weights > 0, values, torch.full_like(values, 1e30))
        shift = shift.min(dim=1, keepdim=True).values.detach()
        boltzmann = pair_weights * torch.exp(-self.beta * (values - shift))
        smooth_min = (boltzmann * values).sum(1) / boltzmann.sum(1)
        return smooth_min + self.width

    def _prune(
        self,
        group: torch.Tensor,
        rotations: torch.Tensor,
        weights: torch.Tensor,
        scores: Optional[torch.Tensor],
        ranked: Optional[torch.Tensor],
        num_groups: int,
    ) -> WeightedFrames:
        """Smoothly drop frames whose score is much lower than the best one of
        their group, and weight in the isotropic fallback where no frame is good.
        Frames of ``ranked`` groups (molecules ranked by centre preference) use
        the ``centre_pruning_*`` window and passes. Returns relative weights (not
        yet normalized per group)."""
        best = _group_smooth_max(weights, group, num_groups, self.beta_weights)
        half = torch.tensor(0.5, dtype=weights.dtype, device=weights.device)
        fallback = smooth_cutoff(best, half, 0.5)
        # centre passes prune ranked groups only: none run for per-atom frames
        # of unpruned modes (token), which then skip the loop's kernels
        passes = self.pruning_passes
        if ranked is not None:
            passes = max(passes, self.centre_pruning_passes)
        pruning_off = best  # read by the passes only
        if passes > 0:
            pruning_off = smooth_cutoff(best, half, 0.25)
        top: Optional[torch.Tensor] = None
        if scores is None:
            scores = weights
            top = best  # the first pass reuses the maximum above
        centre = torch.zeros_like(weights)
        if ranked is not None:
            centre = ranked[group].to(weights.dtype)
        threshold = self.pruning_threshold
        width = self.pruning_width
        shift = self.centre_pruning_threshold - threshold
        widen = self.centre_pruning_width - width
        for index in range(passes):
            if top is None:
                top = _group_smooth_max(scores, group, num_groups, self.beta_weights)
            reference = top[group]
            keep = smooth_step(
                scores,
                (threshold + shift * centre) * reference,
                (width + widen * centre) * reference,
            )
            off = pruning_off[group]
            active = (1.0 - centre) * float(
                index < self.pruning_passes
            ) + centre * float(index < self.centre_pruning_passes)
            factor = active * (keep * (1.0 - off) + off) + (1.0 - active)
            weights = weights * factor
            scores = scores * factor
            selected = weights > self.min_weight
            group = group[selected]
            rotations = rotations[selected]
            weights = weights[selected]
            scores = scores[selected]
            centre = centre[selected]
            top = None

        with_fallback = torch.nonzero(fallback > self.min_weight).flatten()
        group = torch.cat([group, with_fallback])
        weights = torch.cat([weights, fallback[with_fallback]])
        identity = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
        rotations = torch.cat(
            [rotations, identity.expand(with_fallback.shape[0], 3, 3)]
        )
        isotropic = torch.arange(group.shape[0], device=group.device) >= (
            group.shape[0] - with_fallback.shape[0]
        )
        return WeightedFrames(group, rotations, weights, isotropic)


def jitter_weights(frames: WeightedFrames, strength: float) -> WeightedFrames:
    """The same frames with log-normally jittered weights ``w_f exp(strength *
    n_f)``, ``n_f`` drawn from N(0, 1); relative weights, normalized per group by
    the caller (``FrameBuilder.forward``). Used in training only: a network that
    predicts the same for any weighting of its frames has small ``dE/dw_f``, so
    the weights' switching (at the adaptive inner cutoff, collinearity) cannot
    make forces steep."""
    noise = torch.exp(strength * torch.randn_like(frames.weight))
    return WeightedFrames(
        frames.group, frames.rotation, frames.weight * noise, frames.isotropic
    )


def subsampled(frames: WeightedFrames, limit: int, num_groups: int) -> WeightedFrames:
    """At most ``limit`` frames of each group, drawn uniformly at random without
    replacement, with their relative weights (normalized per group by the caller,
    ``FrameBuilder.forward``); the isotropic fallback is always kept. Used in
    training only: the cost of per-atom frames then stops growing with the frames
    of dense solids (bcc Mo 160 per atom), and the network learns, as with
    ``jitter_weights``, to predict nearly the same from any subset of its
    frames."""
    n_frames = frames.weight.shape[0]
    key = torch.rand_like(frames.weight)
    key = torch.where(frames.isotropic, torch.full_like(key, 2.0), key)
    # order by group, then by the random key within each group
    order = torch.argsort(key)
    order = order[torch.sort(frames.group[order], stable=True).indices]
    counts = torch.bincount(frames.group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(frames.group)
    positions = torch.arange(n_frames, device=frames.group.device)
    rank[order] = positions - starts[frames.group[order]]
    return selected(frames, (rank < limit) | frames.isotropic)


def normalized(
    weight: torch.Tensor, group: torch.Tensor, num_groups: int
) -> torch.Tensor:
    """``weight`` [n_frames] divided by its sum within each group."""
    total = torch.zeros(num_groups, dtype=weight.dtype, device=weight.device)
    return weight / total.index_add(0, group, weight)[group]


def centre_preference(
    positions: torch.Tensor,
    system_index: torch.Tensor,
    periodic: torch.Tensor,
    length: float,
) -> torch.Tensor:
    """Pruning preference of every atom for structure-wide frames: ``exp(-(d -
    d_min) / length)`` with ``d`` the atom's distance to the centroid of its
    molecule and ``d_min`` a smooth minimum over the molecule (so the most
    central atoms score about 1). Frames of central atoms then survive pruning
    and the number of frames stops growing with the size of a molecule. Periodic
    structures have no centroid (wrapping an atom moves it): preference 1."""
    n_systems = periodic.shape[0]
    dtype = positions.dtype
    counts = torch.bincount(system_index, minlength=n_systems).to(dtype)
    centroid = (
        torch.zeros(n_systems, 3, dtype=dtype, device=positions.device).index_add(
            0, system_index, positions
        )
        / counts.clamp(min=1.0)[:, None]
    )
    offsets = positions - centroid[system_index]
    # smooth at the centroid itself, where |offset| has a cone
    distance = torch.sqrt(offsets.square().sum(-1) + length**2)
    sharp = 4.0 / length
    peak = torch.zeros(n_systems, dtype=dtype, device=positions.device)
    peak = peak.scatter_reduce(
        0, system_index, -sharp * distance.detach(), "amax", include_self=False
    )
    total = torch.zeros(n_systems, dtype=dtype, device=positions.device)
    total = total.index_add(
        0, system_index, torch.exp(-sharp * distance - peak[system_index])
    )
    smooth_min = -(torch.log(total.clamp(min=1e-30)) + peak) / sharp
    preference = torch.exp(-(distance - smooth_min[system_index]) / length)
    return torch.where(periodic[system_index], torch.ones_like(preference), preference)


def _pair_frames(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Right-handed orthonormal frames [n, 3, 3] (columns a1, a2, a3) from pairs of
    non-collinear vectors [n, 3]: a1 along ``first``, a2 along ``first x second``
    and a3 = a1 x a2, along ``first x (first x second)``. The three are
    orthogonal before they are normalized, so one normalization of the columns
    does (fewer kernels through a training step's double backward than
    normalizing a1 and a2 and crossing them)."""
    normal = torch.linalg.cross(first, second, dim=-1)
    third = torch.linalg.cross(first, normal, dim=-1)
    axes = torch.stack([first, normal, third], dim=-1)
    return axes * torch.rsqrt(axes.square().sum(-2, keepdim=True))


def _group_smooth_max(
    values: torch.Tensor, group: torch.Tensor, num_groups: int, beta: float
) -> torch.Tensor:
    """SMAX_beta(w; w) within each group; zero for groups without entries."""
    peak = torch.zeros(num_groups, dtype=values.dtype, device=values.device)
    peak = peak.scatter_reduce(0, group, values.detach(), "amax", include_self=True)
    boltzmann = values * torch.exp(beta * (values - peak[group]))
    numerator = torch.zeros_like(peak).index_add(0, group, boltzmann * values)
    denominator = torch.zeros_like(peak).index_add(0, group, boltzmann)
    filled = denominator > 0
    safe = torch.where(filled, denominator, torch.ones_like(denominator))
    return torch.where(filled, numerator / safe, torch.zeros_like(numerator))
