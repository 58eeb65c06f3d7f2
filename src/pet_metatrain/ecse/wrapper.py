"""ECSE for any exported metatomic model: rotate whole systems into frames.

The wrapped model is evaluated on every system rotated into each of its pruned,
structure-wide ECSE frames (positions, cell and neighbour lists together, in one
batched call) and its outputs are averaged with the ECSE weights, Cartesian ones
rotated back first (:mod:`pet_metatrain.ecse.outputs`). That makes the energy
(and every other scalar output: uncertainties, ensembles, variants, features)
exactly invariant, forces, stress and virial (autograd of that energy) and
non-conservative forces and stress exactly equivariant. Frames and weights come
from the same :class:`~pet_metatrain.ecse.frames.FrameBuilder` as the
``pet_ecse`` architecture.

Where no frame is good (isolated atoms, diatomics, linear molecules) the fallback
has no second model to call: it averages the model over the 24 proper rotations of
the octahedral group. That average removes every anisotropy of angular order 1 to 3
exactly; what remains (order 4 and above) is the only inexact part, and it carries
weight only when no pair of neighbours is clearly non-collinear.
"""

import itertools
from typing import Dict, List, Optional

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
from ..modules.views import WeightedFrames, to_lab_frame, weighted_sum
from .frames import FrameBuilder
from .outputs import log_dropped, probe_system, symmetrizable_outputs
from .spherical import to_cartesian, to_spherical
from .structure import frame_chunks


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
    """Exactly rotation-invariant (or equivariant) outputs from any
    translation-invariant model; ``output_names`` are the outputs it passes on."""

    def __init__(
        self,
        model: torch.nn.Module,
        requested_neighbor_lists: List[NeighborListOptions],
        frame_cutoff: float,
        symmetrization: Dict,
        dtype: torch.dtype,
        output_names: Optional[List[str]] = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.output_names: List[str] = (
            ["energy"] if output_names is None else list(output_names)
        )
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
        """Every requested output of the kept ones, averaged over the frames of
        each system: ``sum_f w_f F_f . O(x F_f)`` (see
        :mod:`pet_metatrain.ecse.outputs` for ``F_f .``)."""
        results: Dict[str, TensorMap] = {}
        requested: Dict[str, ModelOutput] = {}
        for name, output in outputs.items():
            if name in self.output_names:
                if len(output.explicit_gradients) > 0:
                    raise ValueError(
                        f"the ECSE wrapper does not compute explicit gradients "
                        f"(asked for '{name}'): differentiate its outputs with "
                        "autograd instead"
                    )
                requested[name] = output
        if len(requested) == 0:
            return results
        graph = systems_to_graph(systems, self.frame_options)
        frames = self.frame_builder.structure_frames(graph, len(systems))
        frames = self._expand_fallback(frames)

        n_rows = {"atom": graph.species.shape[0], "system": len(systems)}
        system_size = torch.bincount(graph.system_index, minlength=len(systems))
        first_atom = torch.cumsum(system_size, 0) - system_size
        sums: Dict[str, torch.Tensor] = {}
        references: Dict[str, torch.Tensor] = {}
        templates: Dict[str, TensorMap] = {}
        for chunk in frame_chunks(
            frames, system_size, self.max_atoms_per_pass, self.max_copied_atoms
        ):
            rotated: List[System] = []
            for copy in range(chunk.group.shape[0]):
                rotated.append(
                    self._rotated_system(
                        systems[int(chunk.group[copy])], chunk.rotation[copy]
                    )
                )
            copy_selection: Optional[Labels] = None
            if selected_atoms is not None:
                copy_selection = _selection_in_copies(selected_atoms, chunk.group)
            answers = self.model(rotated, requested, copy_selection)
            for name, output in requested.items():
                tensor = answers[name]
                if name not in templates:
                    templates[name] = tensor
                per_atom = output.sample_kind == "atom"
                for block_index, block in enumerate(tensor.blocks()):
                    frame = block.samples.column("system").to(torch.long)
                    row = chunk.group[frame]
                    if per_atom:
                        atom = block.samples.column("atom").to(torch.long)
                        row = first_atom[row] + atom
                    o3_lambda = -1
                    if "o3_lambda" in tensor.keys.names:
                        o3_lambda = int(tensor.keys.entry(block_index)["o3_lambda"])
                    values = _to_lab(
                        block.values,
                        chunk.rotation[frame],
                        len(block.components),
                        o3_lambda,
                    )
                    add_weighted(
                        sums,
                        references,
                        f"{name}::{block_index}",
                        values,
                        row,
                        chunk.weight[frame],
                        n_rows[output.sample_kind],
                    )

        for name, output in requested.items():
            per_atom = output.sample_kind == "atom"
            template = templates[name]
            samples = graph.samples
            if not per_atom:
                samples = Labels(
                    ["system"],
                    torch.arange(
                        len(systems), dtype=torch.int32, device=graph.species.device
                    ).reshape(-1, 1),
                )
            blocks: List[TensorBlock] = []
            for block_index, block in enumerate(template.blocks()):
                # the rows the wrapped model answered for (selected atoms, or the
                # atoms of a block keyed by type)
                key = f"{name}::{block_index}"
                present = weighted_rows(references, key)
                blocks.append(
                    TensorBlock(
                        values=weighted_total(sums, references, key)[present],
                        samples=Labels(samples.names, samples.values[present]),
                        components=block.components,
                        properties=block.properties,
                    )
                )
            results[name] = TensorMap(template.keys, blocks)
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


def _to_lab(
    values: torch.Tensor, rotation: torch.Tensor, n_components: int, o3_lambda: int
) -> torch.Tensor:
    """Values predicted in frames ``rotation`` [n, 3, 3] back in the lab frame:
    scalars as they are, Cartesian vectors and matrices as ``F v``, ``F S F^T``,
    spherical blocks (``o3_lambda`` 1 or 2) through their Cartesian form."""
    rotation = rotation.to(values.dtype)
    isotropic = torch.zeros(rotation.shape[0], dtype=torch.bool, device=values.device)
    if o3_lambda > 0:
        cartesian = to_cartesian(values, o3_lambda)
        return to_spherical(to_lab_frame(cartesian, rotation, isotropic), o3_lambda)
    if o3_lambda == 0 or n_components == 0:
        return values
    return to_lab_frame(values, rotation, isotropic)


def add_weighted(
    sums: Dict[str, torch.Tensor],
    references: Dict[str, torch.Tensor],
    key: str,
    values: torch.Tensor,
    row: torch.Tensor,
    weight: torch.Tensor,
    n_rows: int,
) -> None:
    """Add ``values`` [n, ...] times ``weight`` [n] into rows ``row`` [n] of
    ``sums[key]``, relative to a detached reference per row.

    The total is ``references[key] + sums[key]`` = ``r + sum_f w_f (V_f - r)``,
    ``r`` the first value a row receives: the same value and gradient as
    ``sum_f w_f V_f`` (``sum_f w_f = 1``), but the weights' gradients multiply
    ``V_f - r`` (the spread over frames) instead of ``V_f``, so that a large
    constant in every frame, such as a model's composition baseline in its
    per-atom energies, no longer carries its float32 round-off into the forces
    through ``sum_f V_f dw_f/dx``."""
    if key not in sums:
        shape = [n_rows] + list(values.shape[1:])
        sums[key] = torch.zeros(shape, dtype=values.dtype, device=values.device)
        # NaN marks rows without a reference yet
        references[key] = torch.full(
            shape, float("nan"), dtype=values.dtype, device=values.device
        )
    reference = references[key]
    fresh = torch.isnan(reference[row].reshape(row.shape[0], -1)[:, 0])
    if bool(torch.any(fresh)):
        reference = reference.index_copy(0, row[fresh], values.detach()[fresh])
        references[key] = reference
    spread = values - reference[row]
    sums[key] = sums[key] + weighted_sum(spread, row, weight, n_rows)


def weighted_rows(references: Dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """Which rows of ``references[key]`` received values [n_rows] (bool)."""
    reference = references[key]
    return ~torch.isnan(reference.reshape(reference.shape[0], -1)[:, 0])


def weighted_total(
    sums: Dict[str, torch.Tensor], references: Dict[str, torch.Tensor], key: str
) -> torch.Tensor:
    """``r + sum_f w_f (V_f - r)`` (zero in rows that received nothing)."""
    reference = references[key]
    return (
        torch.where(torch.isnan(reference), torch.zeros_like(reference), reference)
        + sums[key]
    )


def _selection_in_copies(selected_atoms: Labels, group: torch.Tensor) -> Labels:
    """``selected_atoms`` (system, atom) in the stack of copies: copy ``k`` of
    system ``group[k]`` selects that system's atoms."""
    system = selected_atoms.column("system").to(group.dtype)
    atom = selected_atoms.column("atom")
    pairs = torch.nonzero(group[:, None] == system[None, :])
    values = torch.stack([pairs[:, 0].to(atom.dtype), atom[pairs[:, 1]]], dim=1)
    return Labels(["system", "atom"], values.to(torch.int32))


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
    """Wrap an exported model so that its energy, and every other output it can
    symmetrize exactly, is exactly rotation invariant (or equivariant); the
    others are dropped with a logged warning.

    ``frame_cutoff`` (default: the largest neighbour-list cutoff the model
    requests, at most ``max_outer_cutoff``) bounds where frames are looked for.
    """
    capabilities = model.capabilities()
    if "energy" not in capabilities.outputs:
        raise ValueError(
            "this model has no 'energy' output: the ECSE wrapper needs one (it "
            "checks the model's translation invariance on it)"
        )
    _check_translation_invariance(model)
    requested = list(model.requested_neighbor_lists())
    if frame_cutoff is None:
        cutoffs = [options.cutoff for options in requested] or [5.0]
        frame_cutoff = min(max(cutoffs), float(symmetrization["max_outer_cutoff"]))
    # an explicit frame_cutoff is the radius, whatever the block's bound
    symmetrization = dict(symmetrization, max_outer_cutoff=frame_cutoff)
    dtype = {"float32": torch.float32, "float64": torch.float64}[capabilities.dtype]
    copies = []
    for options in requested:
        copy = NeighborListOptions(options.cutoff, options.full_list, options.strict)
        for requestor in options.requestors():
            copy.add_requestor(requestor)
        copies.append(copy)
    outputs, dropped = symmetrizable_outputs(model)
    log_dropped(dropped)
    wrapper = ECSEWrapper(
        model.module, copies, frame_cutoff, symmetrization, dtype, list(outputs)
    )
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

    capabilities = model.capabilities()
    energies = []
    for shift in (0.0, 1.7):
        options = ModelEvaluationOptions(
            length_unit=capabilities.length_unit,
            outputs={"energy": ModelOutput(sample_kind="system")},
        )
        result = model([probe_system(model, shift)], options, check_consistency=False)
        energies.append(float(result["energy"].block().values.sum()))
    tolerance = 1e-4 * max(1.0, abs(energies[0]))
    if abs(energies[1] - energies[0]) > tolerance:
        raise ValueError(
            "this model is not translation invariant (its energy changed by "
            f"{energies[1] - energies[0]:.3g} under a translation): ECSE needs a "
            "translation- and permutation-invariant model"
        )
