"""ECSE for any exported metatomic model: rotate whole systems into frames.

The wrapped model is evaluated on every system rotated into each of its pruned,
structure-wide ECSE frames (positions, cell and neighbour lists together, in one
batched call) and its energies are averaged with the ECSE weights, which makes the
energy exactly invariant and forces, stress and virial (autograd of that energy)
exactly equivariant. Frames and weights come from the same
:class:`~pet_metatrain.ecse.frames.FrameBuilder` as the ``pet_ecse`` architecture.

Where no frame is good (isolated atoms, diatomics, linear molecules) the fallback
has no second model to call: it averages the model over the 24 proper rotations of
the octahedral group. That average removes every anisotropy of angular order 1 to 3
exactly; what remains (order 4 and above) is the only inexact part, and it carries
weight only when no pair of neighbours is clearly non-collinear.
"""

import itertools
from typing import Dict, List, Optional

import metatensor.torch as mts
import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (
    AtomisticModel,
    ModelCapabilities,
    ModelOutput,
    NeighborListOptions,
    System,
    register_autograd_neighbors,
)

from ..modules.graph import systems_to_graph
from .frames import FrameBuilder, WeightedFrames
from .structure import copy_chunks, select_frames


def octahedral_rotations() -> torch.Tensor:
    """The 24 proper rotations of the cube (signed permutation matrices)."""
    matrices = []
    for permutation in itertools.permutations(range(3)):
        for signs in itertools.product([1.0, -1.0], repeat=3):
            matrix = torch.zeros(3, 3, dtype=torch.float64)
            for row, (column, sign) in enumerate(zip(permutation, signs, strict=True)):
                matrix[row, column] = sign
            if torch.linalg.det(matrix) > 0:
                matrices.append(matrix)
    return torch.stack(matrices)


class ECSEWrapper(torch.nn.Module):
    """Exactly rotation-invariant energies from any translation-invariant model."""

    def __init__(
        self,
        model: torch.nn.Module,
        requested_neighbor_lists: List[NeighborListOptions],
        frame_cutoff: float,
        symmetrization: Dict,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.model = model
        self.frame_options = NeighborListOptions(
            cutoff=frame_cutoff, full_list=True, strict=True
        )
        self._requested_neighbor_lists = list(requested_neighbor_lists)
        if not any(
            _same_options(o, self.frame_options) for o in requested_neighbor_lists
        ):
            self._requested_neighbor_lists.append(self.frame_options)
        self.frame_builder = FrameBuilder(symmetrization, frame_cutoff, "structure")
        self.max_atoms_per_pass = int(symmetrization["max_atoms_per_pass"])
        self.max_copied_atoms = int(symmetrization["max_copied_atoms"])
        self.register_buffer("fallback_rotations", octahedral_rotations().to(dtype))

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return self._requested_neighbor_lists

    def forward(
        self,
        systems: List[System],
        outputs: Dict[str, ModelOutput],
        selected_atoms: Optional[Labels] = None,
    ) -> Dict[str, TensorMap]:
        results: Dict[str, TensorMap] = {}
        if "energy" not in outputs:
            return results
        graph = systems_to_graph(systems, self.frame_options)
        frames = self.frame_builder.structure_frames(graph, len(systems))
        frames = self._expand_fallback(frames)

        energies = torch.zeros(
            graph.species.shape[0],
            dtype=systems[0].positions.dtype,
            device=systems[0].positions.device,
        )
        system_size = torch.bincount(graph.system_index, minlength=len(systems))
        first_atom = torch.cumsum(system_size, 0) - system_size
        bounds = copy_chunks(
            frames, system_size, self.max_atoms_per_pass, self.max_copied_atoms
        )
        for index in range(len(bounds) - 1):
            chunk = select_frames(frames, bounds[index], bounds[index + 1])
            rotated: List[System] = []
            for index in range(chunk.group.shape[0]):
                rotated.append(
                    self._rotated_system(
                        systems[int(chunk.group[index])], chunk.rotation[index]
                    )
                )
            per_atom = self.model(
                rotated, {"energy": ModelOutput(sample_kind="atom")}, None
            )["energy"].block()
            frame = per_atom.samples.column("system")
            atom = first_atom[chunk.group[frame]] + per_atom.samples.column("atom")
            weighted = per_atom.values[:, 0] * chunk.weight[frame].to(
                per_atom.values.dtype
            )
            energies = energies.index_add(0, atom, weighted)

        block = TensorBlock(
            values=energies.reshape(-1, 1),
            samples=graph.samples,
            components=[],
            properties=Labels(["energy"], torch.zeros(1, 1, dtype=torch.int32)).to(
                energies.device
            ),
        )
        energy = TensorMap(
            Labels(["_"], torch.zeros(1, 1, dtype=torch.int32)).to(energies.device),
            [block],
        )
        if selected_atoms is not None:
            energy = mts.slice(energy, axis="samples", selection=selected_atoms)
        if outputs["energy"].sample_kind != "atom":
            energy = mts.sum_over_samples(energy, ["atom"])
        results["energy"] = energy
        return results

    def _expand_fallback(self, frames: WeightedFrames) -> WeightedFrames:
        """Spread each isotropic fallback weight over the octahedral rotations."""
        fallback = frames.isotropic
        n_rotations = self.fallback_rotations.shape[0]
        groups = frames.group[fallback].repeat_interleave(n_rotations)
        count = int(fallback.sum())
        rotations = self.fallback_rotations.to(frames.rotation.dtype).repeat(
            count, 1, 1
        )
        weights = frames.weight[fallback].repeat_interleave(n_rotations) / n_rotations
        keep = ~fallback
        return WeightedFrames(
            torch.cat([frames.group[keep], groups]),
            torch.cat([frames.rotation[keep], rotations]),
            torch.cat([frames.weight[keep], weights]),
            torch.zeros(
                int(keep.sum()) + groups.shape[0],
                dtype=torch.bool,
                device=frames.group.device,
            ),
        )

    def _rotated_system(self, system: System, rotation: torch.Tensor) -> System:
        """``system`` in the frame ``rotation`` (x' = x @ F), neighbour lists too."""
        rotated = System(
            types=system.types,
            positions=system.positions @ rotation,
            cell=system.cell @ rotation,
            pbc=system.pbc,
        )
        # neighbour vectors get their gradients from the rotated positions and
        # cell (which carry the frame's own dependence on the positions)
        constant = rotation.detach()
        for options in self._requested_neighbor_lists:
            neighbors = system.get_neighbor_list(options)
            block = TensorBlock(
                values=(neighbors.values.detach()[:, :, 0] @ constant).unsqueeze(-1),
                samples=neighbors.samples,
                components=neighbors.components,
                properties=neighbors.properties,
            )
            register_autograd_neighbors(rotated, block)
            rotated.add_neighbor_list(options, block)
        return rotated


def _same_options(first: NeighborListOptions, second: NeighborListOptions) -> bool:
    return (
        first.cutoff == second.cutoff
        and first.full_list == second.full_list
        and first.strict == second.strict
    )


def symmetrize_model(
    model: AtomisticModel,
    symmetrization: Dict,
    frame_cutoff: Optional[float] = None,
) -> AtomisticModel:
    """Wrap an exported model so that its energy is exactly rotation invariant.

    ``frame_cutoff`` (default: the largest neighbour-list cutoff the model
    requests, at most 10) bounds where frames are looked for.
    """
    capabilities = model.capabilities()
    if "energy" not in capabilities.outputs:
        raise ValueError(
            "this model has no 'energy' output: ECSE symmetrizes energies (and "
            "through them forces and stress) only"
        )
    _check_translation_invariance(model)
    requested = list(model.requested_neighbor_lists())
    if frame_cutoff is None:
        cutoffs = [options.cutoff for options in requested] or [5.0]
        frame_cutoff = min(max(cutoffs), 10.0)
    dtype = {"float32": torch.float32, "float64": torch.float64}[capabilities.dtype]
    copies = []
    for options in requested:
        copy = NeighborListOptions(options.cutoff, options.full_list, options.strict)
        for requestor in options.requestors():
            copy.add_requestor(requestor)
        copies.append(copy)
    wrapper = ECSEWrapper(model.module, copies, frame_cutoff, symmetrization, dtype)
    energy = capabilities.outputs["energy"]
    outputs = {
        "energy": ModelOutput(
            unit=energy.unit,
            sample_kind="atom",
            description="ECSE-symmetrized energy (exactly rotation invariant)",
        )
    }
    new_capabilities = ModelCapabilities(
        outputs=outputs,
        atomic_types=capabilities.atomic_types,
        interaction_range=capabilities.interaction_range,
        length_unit=capabilities.length_unit,
        supported_devices=capabilities.supported_devices,
        dtype=capabilities.dtype,
    )
    return AtomisticModel(wrapper.eval(), model.metadata(), new_capabilities)


def _check_translation_invariance(model: AtomisticModel) -> None:
    """Refuse models whose energy changes under a translation: ECSE frames only
    fix orientations."""
    from metatomic.torch import ModelEvaluationOptions
    from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists

    capabilities = model.capabilities()
    dtype = {"float32": torch.float32, "float64": torch.float64}[capabilities.dtype]
    types = torch.tensor(capabilities.atomic_types[:1] * 4)
    generator = torch.Generator().manual_seed(0)
    positions = 1.5 * torch.rand(4, 3, generator=generator, dtype=torch.float64)
    energies = []
    for shift in (0.0, 1.7):
        system = System(
            types=types,
            positions=(positions + shift).to(dtype),
            cell=torch.zeros(3, 3, dtype=dtype),
            pbc=torch.zeros(3, dtype=torch.bool),
        )
        system = get_system_with_neighbor_lists(
            system, model.requested_neighbor_lists()
        )
        options = ModelEvaluationOptions(
            length_unit=capabilities.length_unit,
            outputs={"energy": ModelOutput(sample_kind="system")},
        )
        result = model([system], options, check_consistency=False)
        energies.append(float(result["energy"].block().values.sum()))
    tolerance = 1e-4 * max(1.0, abs(energies[0]))
    if abs(energies[1] - energies[0]) > tolerance:
        raise ValueError(
            "this model is not translation invariant (its energy changed by "
            f"{energies[1] - energies[0]:.3g} under a translation): ECSE needs a "
            "translation- and permutation-invariant model"
        )
