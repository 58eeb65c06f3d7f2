"""From metatomic systems to the padded edge arrays PET works on.

PET's tokens are directed edges grouped by their centre atom, so the flat neighbour
list is reshaped into ``[n_atoms, max_neighbors]`` arrays, and every directed edge
(i -> j) learns the index of its reverse edge (j -> i) for message exchange:
systems -> :class:`EdgeGraph` (:func:`systems_to_graph`) -> :class:`NetworkInputs`
(:func:`network_inputs`), what :class:`~pet_metatrain.modules.pet.PETNetwork` reads.
"""

from typing import List, NamedTuple

import torch
from metatensor.torch import Labels
from metatomic.torch import NeighborListOptions, System
from metatrain.pet.modules.utilities import cutoff_func_bump

from .cutoff import cosine_cutoff


class EdgeGraph(NamedTuple):
    """A batch of systems as padded per-atom neighbourhoods."""

    edge_vectors: torch.Tensor  # [n_atoms, max_neighbors, 3], zero where padded
    distances: torch.Tensor  # [n_atoms, max_neighbors], zero where padded
    mask: torch.Tensor  # [n_atoms, max_neighbors], True for real edges
    neighbor_species: torch.Tensor  # [n_atoms, max_neighbors] atomic numbers
    species: torch.Tensor  # [n_atoms] atomic numbers
    reverse: torch.Tensor  # [n_atoms * max_neighbors] flat index of reverse edge
    system_index: torch.Tensor  # [n_atoms]
    samples: Labels  # ("system", "atom") of every atom
    positions: torch.Tensor  # [n_atoms, 3]
    periodic: torch.Tensor  # [n_systems] bool, periodic in any direction


class NetworkInputs(NamedTuple):
    """What the network reads of every centre atom i and its neighbours j (the
    unrotated graph, or rotated copies of structures: ecse/structure.py)."""

    geometry: torch.Tensor  # [n_atoms, max_neighbors, 4]: (x_ij, y_ij, z_ij, r_ij)
    factors: torch.Tensor  # [n_atoms, max_neighbors]: c(r_ij), zero where padded
    species: torch.Tensor  # [n_atoms] atomic numbers of the centres
    neighbor_species: torch.Tensor  # [n_atoms, max_neighbors] atomic numbers
    reverse: torch.Tensor  # [n_atoms * max_neighbors] flat index of edge j -> i


def network_inputs(
    graph: EdgeGraph, cutoff: float, width: float, bump: bool
) -> NetworkInputs:
    """The network's inputs for ``graph``: ``geometry = (r_ij, |r_ij|)`` and the
    cutoff factors ``c(r_ij)`` times the mask, ``c`` the bump (``bump``) or
    cosine switch from ``cutoff - width`` to ``cutoff``."""
    geometry = torch.cat([graph.edge_vectors, graph.distances[:, :, None]], dim=-1)
    if bump:
        factors = cutoff_func_bump(
            graph.distances,
            torch.tensor(cutoff, dtype=graph.distances.dtype),
            width,
        )
    else:
        factors = cosine_cutoff(graph.distances, cutoff, width)
    return NetworkInputs(
        geometry,
        factors * graph.mask.to(factors.dtype),
        graph.species,
        graph.neighbor_species,
        graph.reverse,
    )


def systems_to_graph(systems: List[System], options: NeighborListOptions) -> EdgeGraph:
    """Concatenate ``systems`` and pad their neighbour lists per centre atom.

    Edge vectors are recomputed from positions, cell and cell shifts so that
    gradients with respect to positions and cell (forces, stress) flow through them.
    """
    device = systems[0].positions.device
    positions_list: List[torch.Tensor] = []
    species_list: List[torch.Tensor] = []
    system_list: List[torch.Tensor] = []
    atom_list: List[torch.Tensor] = []
    pairs_list: List[torch.Tensor] = []
    shifts_list: List[torch.Tensor] = []
    edge_system_list: List[torch.Tensor] = []
    cells: List[torch.Tensor] = []
    periodic: List[torch.Tensor] = []
    offset = 0
    for index, system in enumerate(systems):
        neighbors = system.get_neighbor_list(options)
        values = neighbors.samples.values
        n_atoms = len(system)
        positions_list.append(system.positions)
        species_list.append(system.types)
        system_list.append(torch.full((n_atoms,), index, device=device))
        atom_list.append(torch.arange(n_atoms, device=device))
        pairs_list.append(values[:, :2] + offset)
        shifts_list.append(values[:, 2:])
        edge_system_list.append(torch.full((values.shape[0],), index, device=device))
        cells.append(system.cell)
        periodic.append(torch.any(system.pbc))
        offset += n_atoms

    positions = torch.cat(positions_list)
    species = torch.cat(species_list)
    system_index = torch.cat(system_list)
    samples = Labels(
        ["system", "atom"],
        torch.stack([system_index, torch.cat(atom_list)], dim=1),
        assume_unique=True,
    )
    pairs = torch.cat(pairs_list)
    shifts = torch.cat(shifts_list)
    edge_system = torch.cat(edge_system_list)
    centers = pairs[:, 0]
    neighbors = pairs[:, 1]

    cell = torch.stack(cells)[edge_system]
    shift_vectors = torch.einsum("ei,eij->ej", shifts.to(positions.dtype), cell)
    vectors = positions[neighbors] - positions[centers] + shift_vectors
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    # edges shorter than 1e-4 are two atoms on top of each other
    overlapping = distances < 1e-4
    if bool(torch.any(overlapping)):
        bad = int(torch.nonzero(overlapping)[0, 0])
        raise ValueError(
            f"atoms {int(centers[bad])} and {int(neighbors[bad])} (batch indices) "
            f"of system {int(edge_system[bad])} are at the same position: "
            "PET cannot describe overlapping atoms"
        )

    n_atoms = positions.shape[0]
    order = torch.argsort(centers, stable=True)
    counts = torch.bincount(centers, minlength=n_atoms)
    max_neighbors = int(counts.max()) if centers.shape[0] > 0 else 0
    first_edge = torch.cumsum(counts, 0) - counts
    sorted_centers = centers[order]
    slot_in_center = (
        torch.arange(order.shape[0], device=device) - first_edge[sorted_centers]
    )
    flat_slot = torch.empty_like(order)
    flat_slot[order] = sorted_centers * max_neighbors + slot_in_center

    size = n_atoms * max_neighbors
    padded_vectors = torch.zeros(size, 3, dtype=positions.dtype, device=device)
    padded_vectors = padded_vectors.index_copy(0, flat_slot, vectors)
    padded_distances = torch.zeros(size, dtype=positions.dtype, device=device)
    padded_distances = padded_distances.index_copy(0, flat_slot, distances)
    mask = torch.zeros(size, dtype=torch.bool, device=device)
    mask[flat_slot] = True
    # padded slots get the centre's own (valid) species; they are masked anyway
    neighbor_species = torch.repeat_interleave(species, max_neighbors)
    neighbor_species[flat_slot] = species[neighbors]

    reverse = torch.arange(size, device=device)
    reverse[flat_slot] = flat_slot[_reverse_edges(centers, neighbors, shifts)]

    return EdgeGraph(
        edge_vectors=padded_vectors.reshape(n_atoms, max_neighbors, 3),
        distances=padded_distances.reshape(n_atoms, max_neighbors),
        mask=mask.reshape(n_atoms, max_neighbors),
        neighbor_species=neighbor_species.reshape(n_atoms, max_neighbors),
        species=species,
        reverse=reverse,
        system_index=system_index,
        samples=samples,
        positions=positions,
        periodic=torch.stack(periodic),
    )


def _reverse_edges(
    centers: torch.Tensor, neighbors: torch.Tensor, shifts: torch.Tensor
) -> torch.Tensor:
    """Index of edge (j, i, -S) for every edge (i, j, S), by sorting integer keys."""
    if centers.shape[0] == 0:
        return centers
    n_atoms = int(torch.maximum(centers.max(), neighbors.max())) + 1
    max_shift = int(shifts.abs().max())
    keys = _edge_keys(centers, neighbors, shifts, n_atoms, max_shift)
    reverse_keys = _edge_keys(neighbors, centers, -shifts, n_atoms, max_shift)
    sorted_keys, order = torch.sort(keys)
    position = torch.searchsorted(sorted_keys, reverse_keys).clamp(
        max=keys.shape[0] - 1
    )
    if not bool(torch.all(sorted_keys[position] == reverse_keys)):
        raise ValueError(
            "the neighbour list is not symmetric (an edge i->j has no j->i): "
            "PET needs a full neighbour list"
        )
    return order[position]


def _edge_keys(
    centers: torch.Tensor,
    neighbors: torch.Tensor,
    shifts: torch.Tensor,
    n_atoms: int,
    max_shift: int,
) -> torch.Tensor:
    """A unique integer for every (centre, neighbour, cell shift) triple."""
    base = 2 * max_shift + 1
    key = centers * n_atoms + neighbors
    for axis in range(3):
        key = key * base + (shifts[:, axis] + max_shift)
    return key
