"""The symmetrization strategy: how ``PETECSE.forward`` runs its network.

Chosen once from the ``symmetrization`` block (``PETECSE.set_symmetrization``)
and told the phase by the trainer (``set_phase``: ``train``, ``validate``,
``evaluate``), :class:`Symmetrization` turns a graph into per-atom predictions
``y_i``, with ``Phi`` the network and ``F_f``, ``w_f`` the frames and weights:

- ``plain`` (``method: none``): ``y_i = Phi(x)_i``;
- ``structure`` (``frames: structure``): every structure S copied once per frame
  of S and rotated into it, ``y_i = sum_{f in S} w_f F_f . Phi(x F_f)_i``
  (``F_f .`` rotates Cartesian predictions back: ``F v``, ``F T F^T``);
- ``per_atom`` (``frames: atom`` or ``token``): the network averages over the
  frames of each atom (``modules/pet.py``): every block's tokens (``atom``)
  or only the edge embedding (``token``);
- ``plain+fallback``: training and validation of structure frames that are
  not trained in (``during_training: false``): plain PET, blended with the
  isotropic fallback exactly as ``structure`` will blend it,
  ``y_i = (1 - w_iso) Phi(x)_i + w_iso Phi_iso(x)_i``.

``token`` and ``atom`` frames change the function and are trained in; so are
structure frames with ``during_training: true``; other structure frames run
in evaluation only. The mode of each phase:

    ====================================  ==============  ==============  =========
    symmetrization block                  train           validate        evaluate
    ====================================  ==============  ==============  =========
    ``method: none``                      plain           plain           plain
    ``frames: token`` or ``atom``         per_atom (*)    per_atom        per_atom
    ``frames: structure``, trained in     structure       structure       structure
    ``frames: structure``, not            plain+fallback  plain+fallback  structure
    ====================================  ==============  ==============  =========

    (*) frames subsampled and weights jittered (``FrameBuilder.jitter``).

Where a frame is built, weighted and pruned: :class:`~.frames.FrameBuilder`
(``frames.py``); where it is averaged: here for whole structures (with the
rotated copies of ``structure.py``), in the network for per-atom frames.
"""

from typing import Any, Dict, List, Optional

import torch

from ..modules.graph import EdgeGraph, NetworkInputs
from ..modules.views import WeightedFrames, selected
from .frames import FrameBuilder, resolved_frames
from .structure import accumulate_copies, frame_chunks, rotated_copies

PHASES = ("train", "validate", "evaluate")


@torch.jit.interface
class Network(torch.nn.Module):
    """What a strategy calls: :class:`~pet_metatrain.modules.pet.PETNetwork`.

    The network stays owned by the model (its weights are the model's
    ``network.*``); TorchScript passes it to the strategy by this interface."""

    def forward(
        self,
        inputs: NetworkInputs,
        targets: List[str],
        views: Optional[WeightedFrames] = None,
        token_views: Optional[WeightedFrames] = None,
    ) -> Dict[str, torch.Tensor]:
        pass

    def inputs(self, graph: EdgeGraph) -> NetworkInputs:
        pass


class Symmetrization(torch.nn.Module):
    """A ``symmetrization`` block made into a strategy (no weights: it can
    change between training, fine-tuning and export)."""

    def __init__(
        self, symmetrization: Dict[str, Any], cutoff: float, edge_embedding: bool
    ) -> None:
        """``cutoff`` is the model's (frames are looked for within it, at most
        ``max_outer_cutoff``); ``edge_embedding``: whether the network has the
        edge embedding that token frames need."""
        super().__init__()
        self.method = str(symmetrization["method"])
        self.frames = resolved_frames(symmetrization, edge_embedding)
        if self.frames == "token" and not edge_embedding:
            raise ValueError(
                "ECSE `frames: token` needs the edge embedding, and this model has "
                "none (`d_edge_embedding: null`, or a checkpoint from before it): "
                "use `frames: atom` (trained in) or `frames: structure`"
            )
        # token and atom frames change the function: they are trained in
        self.trained_in = self.frames != "structure" or bool(
            symmetrization["during_training"]
        )
        self.max_atoms_per_pass = int(symmetrization["max_atoms_per_pass"])
        self.max_copied_atoms = int(symmetrization["max_copied_atoms"])
        self.frame_builder = FrameBuilder(symmetrization, cutoff, self.frames)
        self.mode = "plain"
        self.set_phase("evaluate")

    def set_phase(self, phase: str) -> None:
        """``train`` (the trainer's training steps), ``validate`` or ``evaluate``
        (everything else). Training and validation run ECSE only where it is
        trained in, and otherwise plain PET with the isotropic fallback that
        structure frames will blend in; training steps also subsample and
        jitter per-atom frames (``training_frames_per_atom``,
        ``training_weight_noise``)."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase '{phase}'")
        if self.method != "ecse":
            self.mode = "plain"
        elif self.trained_in or phase == "evaluate":
            self.mode = "structure" if self.frames == "structure" else "per_atom"
        else:
            self.mode = "plain+fallback"
        self.frame_builder.jitter = phase == "train"

    def forward(
        self,
        network: Network,
        graph: EdgeGraph,
        n_systems: int,
        targets: List[str],
        vector_targets: List[str],
    ) -> Dict[str, torch.Tensor]:
        """The network's per-atom outputs, symmetrized as this phase asks.

        :param network: the model's network (called, never owned).
        :param graph: the batch of ``n_systems`` structures, padded per atom
            ([n_atoms, max_neighbors, ...]).
        :param targets: the outputs to predict.
        :param vector_targets: the Cartesian ones among all outputs (rank 1 or 2),
            rotated back to the lab frame: ``F v``, ``F T F^T``.
        :return: what the network returns, per atom: every target [n_atoms,
            *shape], its ``llf::`` last-layer features, ``features``.
        """
        inputs = network.inputs(graph)
        if self.mode == "per_atom":
            return self._per_atom_frames(network, inputs, graph, targets)
        if self.mode == "structure":
            frames = self.frame_builder.structure_frames(graph, n_systems)
            results: Dict[str, torch.Tensor] = {}
            return self._add_rotated_copies(
                network,
                inputs,
                graph,
                frames,
                n_systems,
                targets,
                vector_targets,
                results,
            )
        predictions = network.forward(inputs, targets, None, None)
        if self.mode == "plain+fallback" and self.training:
            predictions = self._with_trained_fallback(
                network, inputs, graph, predictions, n_systems, targets, vector_targets
            )
        return predictions

    def _per_atom_frames(
        self,
        network: Network,
        inputs: NetworkInputs,
        graph: EdgeGraph,
        targets: List[str],
    ) -> Dict[str, torch.Tensor]:
        """ECSE per atom: the frames of every atom's own neighbourhood, averaged
        by the network (in every block, or in the edge embedding only)."""
        n_atoms = graph.species.shape[0]
        frames = self.frame_builder(
            graph.edge_vectors,
            graph.distances,
            graph.mask,
            torch.arange(n_atoms, device=graph.species.device),
            n_atoms,
            graph.neighbor_species,
        )
        # token frames: the frames reach the edge embedding only
        if self.frames == "token":
            return network.forward(inputs, targets, None, frames)
        return network.forward(inputs, targets, frames, None)

    def _with_trained_fallback(
        self,
        network: Network,
        inputs: NetworkInputs,
        graph: EdgeGraph,
        predictions: Dict[str, torch.Tensor],
        n_systems: int,
        targets: List[str],
        vector_targets: List[str],
    ) -> Dict[str, torch.Tensor]:
        """Plain PET, blended with the isotropic fallback exactly as structure-wide
        ECSE will blend it: the fallback trains in the same run, on the (nearly)
        collinear structures of the data set where it will carry weight.
        ``predictions`` [n_atoms, ...] become ``(1 - w_iso) y_i``, plus the
        fallback's ``w_iso y_iso``, ``w_iso`` [n_systems] the weight of the
        isotropic frame of i's structure."""
        frames = self.frame_builder.structure_frames(graph, n_systems)
        fallback = frames.isotropic
        if not bool(torch.any(fallback)):
            return predictions
        weight = torch.zeros(
            n_systems, dtype=frames.weight.dtype, device=frames.weight.device
        ).index_add(0, frames.group[fallback], frames.weight[fallback])
        keep = 1.0 - weight[graph.system_index]
        results: Dict[str, torch.Tensor] = {}
        for name, value in predictions.items():
            shape = [-1] + [1] * (value.dim() - 1)
            results[name] = value * keep.to(value.dtype).reshape(shape)
        only_fallback = selected(frames, fallback)
        return self._add_rotated_copies(
            network,
            inputs,
            graph,
            only_fallback,
            n_systems,
            targets,
            vector_targets,
            results,
        )

    def _add_rotated_copies(
        self,
        network: Network,
        inputs: NetworkInputs,
        graph: EdgeGraph,
        frames: WeightedFrames,
        n_systems: int,
        targets: List[str],
        vector_targets: List[str],
        results: Dict[str, torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """Add ``sum_f w_f F_f . Phi(x F_f)_i`` over ``frames`` (grouped by
        structure) to ``results`` [n_atoms, ...] (created if empty), evaluating
        the rotated structure copies in passes of at most ``max_atoms_per_pass``
        copied atoms; ``inputs`` are the network's for the unrotated graph."""
        n_atoms = graph.species.shape[0]
        system_size = torch.bincount(graph.system_index, minlength=n_systems)
        first_atom = torch.cumsum(system_size, 0) - system_size
        for chunk in frame_chunks(
            frames, system_size, self.max_atoms_per_pass, self.max_copied_atoms
        ):
            copies = rotated_copies(chunk, first_atom, system_size, inputs)
            outputs = network.forward(copies.inputs, targets, None, None)
            if len(results) == 0:
                for name, value in outputs.items():
                    results[name] = value.new_zeros([n_atoms] + list(value.shape[1:]))
            accumulate_copies(results, outputs, copies, chunk, vector_targets)
        return results
