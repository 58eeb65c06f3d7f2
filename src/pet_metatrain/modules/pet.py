"""The Point Edge Transformer: message passing between directed-edge tokens.

The network sees every centre atom through one or more *views*. A view is the
atom's neighbourhood expressed in a rotated coordinate system (or, for isotropic
views, through distances only). Plain PET uses one unrotated view per atom. ECSE
(:mod:`pet_metatrain.ecse`) supplies several weighted views per atom; the network
then averages each block's output tokens over an atom's views, which makes the
exchanged messages, and so the whole model, exactly rotation invariant.

:meth:`PETNetwork.forward` runs in three steps:

1. gather (:meth:`PETNetwork._gather`): the rows every block runs on, in chunks
   of atoms: one row per atom, or one per view (the atom's neighbourhood rotated
   into the view's frame, x' = x @ F);
2. blocks (:meth:`PETNetwork._run_blocks`): every block on every chunk, its output
   tokens averaged over each atom's views, ``t_ij = sum_f w_f t_ij^(f)``, then
   the message exchange with the reverse edge, ``m_ij <- (m_ij + t_ji) / 2``
   (``residual``) or ``m_ij <- m_ij + t_ij + MLP([t_ij, t_ji])`` (``feedforward``);
3. read-out (:meth:`PETNetwork._read_out`): ``y_i = W [heads of every block] + b``
   per target, Cartesian targets rotated back to the lab frame and averaged over
   the views, ``v_i = sum_f w_f F_f v_i^(f)`` (:mod:`~pet_metatrain.modules.views`).
"""

from typing import Dict, List, NamedTuple, Optional, Tuple

import torch

from .block import (
    EdgeEmbedding,
    MessagePassingBlock,
    angular_order,
    combination,
    mlp,
    node_width,
    rotated_geometry,
)
from .graph import EdgeGraph, NetworkInputs, network_inputs
from .transformer import angular_basis
from .views import (
    WeightedFrames,
    sorted_by_group,
    to_lab_frame,
    token_frames_to_lab,
    weighted_sum,
)


class Rows(NamedTuple):
    """One chunk of the rows a block runs on: atoms ``first:last`` (one row each,
    plain PET and token frames) or their views ``start:stop`` (rotated into each
    view's frame); without views ``start:stop`` is ``first:last``."""

    atoms: torch.Tensor  # [n_rows] the atom of every row
    geometry: torch.Tensor  # [n_rows, max_neighbors, d_edge] (x', y', z', r) or e_ij
    factors: torch.Tensor  # [n_rows, max_neighbors] cutoff factors c_ij
    species: torch.Tensor  # [n_rows] embedding rows of the centre species
    neighbors: torch.Tensor  # [n_rows, max_neighbors] ... of the neighbours'
    angular: Optional[torch.Tensor]  # [n_rows, order, 1 + K, 1 + K] or None
    first: int
    last: int
    start: int
    stop: int


class PETNetwork(torch.nn.Module):
    """PET's learnable part: from padded neighbourhoods to per-atom predictions."""

    def __init__(self, hypers: Dict, atomic_types: List[int]) -> None:
        super().__init__()
        self.atomic_types: List[int] = list(atomic_types)
        self.d_pet = int(hypers["d_pet"])
        self.d_node = node_width(hypers)
        self.d_head = int(hypers["d_head"])
        # the cutoff function of the inputs (see network_inputs)
        self.cutoff = float(hypers["cutoff"])
        self.cutoff_width = float(hypers["cutoff_width"])
        self.bump_cutoff = hypers["cutoff_function"] == "Bump"
        # widest per-token activation of a chunk: the feed-forward hidden layer
        # (doubled by SwiGLU's gate), or a token stream
        hidden = int(hypers["d_feedforward"]) * (
            2 if hypers["activation"] == "SwiGLU" else 1
        )
        self.chunk_width = max(self.d_pet, self.d_node, hidden)
        self.chunk_elements = CHUNK_ELEMENTS
        self.gpu_chunk_factor = GPU_CHUNK_FACTOR
        self.num_blocks = int(hypers["num_gnn_layers"])
        self.angular_order = angular_order(hypers)
        self.feedforward = hypers["featurizer_type"] == "feedforward"
        lookup = torch.full((max(atomic_types) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(atomic_types)] = torch.arange(len(atomic_types))
        self.register_buffer("species_to_index", lookup, persistent=False)
        self.neighbor_embedding = torch.nn.Embedding(len(atomic_types), hypers["d_pet"])
        d_edge = hypers.get("d_edge_embedding")
        self.edge_embedding: Optional[EdgeEmbedding] = None
        if d_edge is not None:
            self.edge_embedding = EdgeEmbedding(
                int(d_edge), hypers["edge_embedding_activation"]
            )
        self.d_edge = 4 if d_edge is None else int(d_edge)
        self.blocks = torch.nn.ModuleList(
            [
                MessagePassingBlock(
                    hypers, len(atomic_types), self.feedforward and k > 0
                )
                for k in range(self.num_blocks)
            ]
        )
        # feedforward featurizer: message update from an edge and its reverse,
        # after every block (the last one's feeds the bond heads)
        self.combinations = torch.nn.ModuleList(
            [
                combination(self.d_pet)
                for _ in range(self.num_blocks if self.feedforward else 0)
            ]
        )
        self.last_layers = torch.nn.ModuleDict({})
        # metatrain ``pet``'s layout (converted models): its bond last layers
        # have a bias, which it adds once per neighbour weighted by the cutoff
        # factor, i.e. ``b sum_j c_ij``; and its vector targets have biases
        self.bond_bias = bool(hypers.get("bond_bias", False))
        self.bond_biases = torch.nn.ModuleDict({})
        self.output_shapes: Dict[str, List[int]] = {}
        self.is_vector: Dict[str, bool] = {}

    def add_output(self, name: str, shape: List[int], is_vector: bool) -> None:
        """Register heads for a target whose per-atom values have ``shape``."""
        readout = self.blocks[-1:] if self.feedforward else self.blocks
        for block in readout:
            block.central_heads[name] = mlp(self.d_node, self.d_head)
            block.bond_heads[name] = mlp(self.d_pet, self.d_head)
        size = 1
        for dim in shape:
            size *= dim
        # a bias lets scalar targets shift freely (an offset learnt through the
        # weights alone lingered for epochs); vectors get none, it would orient them
        self.last_layers[name] = torch.nn.Linear(
            2 * len(readout) * self.d_head, size, bias=self.bond_bias or not is_vector
        )
        if self.bond_bias:
            # applied to sum_j c_ij [n, 1]: the bias of every edge's contribution
            self.bond_biases[name] = torch.nn.Linear(1, size, bias=False)
        self.output_shapes[name] = shape
        self.is_vector[name] = is_vector

    def species_index(self, species: torch.Tensor) -> torch.Tensor:
        """Map atomic numbers to embedding rows, refusing unknown species."""
        known = self.species_to_index.shape[0]
        index = self.species_to_index[species.clamp(0, known - 1)]
        unknown = (species >= known) | (species < 0) | (index < 0)
        if bool(torch.any(unknown)):
            bad = int(species[unknown][0])
            raise ValueError(
                f"unknown atomic type {bad}: this model knows {self.atomic_types}"
            )
        return index

    def _chunk_bounds(
        self,
        n_atoms: int,
        max_neighbors: int,
        views: Optional[WeightedFrames],
        width: int,
        on_gpu: bool = False,
    ) -> Tuple[List[int], List[int]]:
        """First atom and first view of every chunk, plus the ends; chunks hold
        about ``chunk_elements`` entries in their widest tensor: per atom and
        edge ``chunk_width``, or per view and edge ``width``; ``GPU_CHUNK_FACTOR``
        times more on a GPU."""
        rows_per_atom = 1.0
        if views is not None:
            rows_per_atom = float(views.group.shape[0]) / max(n_atoms, 1)
        elements = self.chunk_elements * (self.gpu_chunk_factor if on_gpu else 1)
        budget = elements / (
            max(float(self.chunk_width), rows_per_atom * width) * (max_neighbors + 1)
        )
        # chunks of equal size: no small remainder chunk paying the per-chunk
        # overhead (64 atoms go as 32 + 32, not 56 + 8)
        n_chunks = -(-n_atoms // max(1, int(budget)))
        size = -(-n_atoms // max(1, n_chunks))
        bounds: List[int] = list(range(0, n_atoms, max(1, size)))
        bounds.append(n_atoms)
        if views is None:
            return bounds, bounds
        counts = torch.bincount(views.group, minlength=n_atoms)
        starts = torch.cumsum(counts, 0) - counts
        # one read of the first view of every inner chunk (not one per chunk)
        inner_bounds = torch.tensor(
            bounds[1:-1], dtype=torch.long, device=starts.device
        )
        inner: List[int] = starts[inner_bounds].tolist()
        return bounds, [0] + inner + [views.group.shape[0]]

    @torch.jit.export
    def inputs(self, graph: EdgeGraph) -> NetworkInputs:
        """The inputs of this network for ``graph``, with its cutoff function."""
        return network_inputs(graph, self.cutoff, self.cutoff_width, self.bump_cutoff)

    def forward(
        self,
        inputs: NetworkInputs,
        targets: List[str],
        views: Optional[WeightedFrames] = None,
        token_views: Optional[WeightedFrames] = None,
    ) -> Dict[str, torch.Tensor]:
        """Per-atom predictions (vectors in the lab frame) and features.

        ECSE enters in one of two ways. ``views``: every block runs each atom's
        transformer in each of its views and averages the output tokens,
        ``t_ij = sum_f w_f t_ij^(f)``. ``token_views``: only the edge embedding
        runs in each view (:class:`~.block.EdgeEmbedding`), everything else once
        per atom; a vector target v' is then read as ``sum_f w_f F_f v'``, a
        rank-2 one S' as ``sum_f w_f F_f S' F_f^T``. Atoms go through each block
        in chunks of about ``chunk_elements`` (memory per tensor stays small, so
        large systems reuse the allocator's memory).

        :param inputs: every edge's (x, y, z, r) [n_atoms, max_neighbors, 4], its
            cutoff factor [n_atoms, max_neighbors] (zero for padding), the
            species [n_atoms] and [n_atoms, max_neighbors], the reverse edges
            [n_atoms * max_neighbors].
        :param targets: the outputs to predict (``add_output`` names).
        :param views: frames read by every block: group [n_views] (the atom),
            rotation [n_views, 3, 3], weight [n_views], isotropic [n_views].
        :param token_views: frames read by the edge embedding only (same
            shapes); at most one of ``views`` and ``token_views``.
        :return: per target the predictions [n_atoms, *shape] and their
            last-layer features ``"llf::{target}"`` [n_atoms, 2 * n_readout *
            d_head]; ``"features"`` [n_atoms, n_blocks * (d_node + d_pet)].
        """
        if views is not None:
            views = sorted_by_group(views)
        elif token_views is not None:
            token_views = sorted_by_group(token_views)
        species_index = self.species_index(inputs.species)
        neighbor_index = self.species_index(inputs.neighbor_species)
        messages = self.neighbor_embedding(neighbor_index)
        chunks = self._gather(inputs, species_index, neighbor_index, views, token_views)
        head_features, features, messages = self._run_blocks(
            chunks, messages, inputs.factors, inputs.reverse, views, targets
        )
        return self._read_out(
            head_features,
            features,
            messages,
            inputs.factors,
            views,
            token_views,
            targets,
        )

    def _gather(
        self,
        inputs: NetworkInputs,
        species_index: torch.Tensor,
        neighbor_index: torch.Tensor,
        views: Optional[WeightedFrames],
        token_views: Optional[WeightedFrames],
    ) -> List[Rows]:
        """Each chunk's rows, built once and shared by all blocks (only the
        messages change between blocks). ``species_index`` [n_atoms] and
        ``neighbor_index`` [n_atoms, max_neighbors] are embedding rows; the
        views (if any) are sorted by atom."""
        n_atoms, max_neighbors = inputs.factors.shape
        on_gpu = inputs.factors.is_cuda
        # rows per view: a block's widest tensor; per token view: the embedding
        frames = views if views is not None else token_views
        width = self.chunk_width if token_views is None else self.d_edge
        bounds, row_bounds = self._chunk_bounds(
            n_atoms, max_neighbors, frames, width, on_gpu
        )
        chunks: List[Rows] = []
        for index in range(len(bounds) - 1):
            first, last = bounds[index], bounds[index + 1]
            span = (first, last, row_bounds[index], row_bounds[index + 1])
            if views is None:
                chunk = self._atom_rows(
                    inputs, species_index, neighbor_index, token_views, span
                )
            else:
                chunk = self._view_rows(
                    inputs, species_index, neighbor_index, views, span
                )
            chunks.append(chunk)
        return chunks

    def _atom_rows(
        self,
        inputs: NetworkInputs,
        species_index: torch.Tensor,
        neighbor_index: torch.Tensor,
        token_views: Optional[WeightedFrames],
        span: Tuple[int, int, int, int],
    ) -> Rows:
        """Atoms ``first:last`` in the lab frame (slices: no copies), their edge
        embedding averaged over their token views ``start:stop`` if any."""
        first, last, start, stop = span
        # the angles between edges are invariant: read in the lab frame
        angular: Optional[torch.Tensor] = None
        if self.angular_order > 0:
            angular = angular_basis(inputs.geometry[first:last], self.angular_order)
        rows = torch.arange(first, last, device=inputs.factors.device)
        geometry = inputs.geometry[first:last]
        if self.edge_embedding is not None:
            if token_views is None:
                geometry = self.edge_embedding(geometry, None, None, None, None)
            else:
                geometry = self.edge_embedding(
                    geometry,
                    token_views.group[start:stop] - first,
                    token_views.rotation[start:stop],
                    token_views.isotropic[start:stop],
                    token_views.weight[start:stop],
                )
        return Rows(
            rows,
            geometry,
            inputs.factors[first:last],
            species_index[first:last],
            neighbor_index[first:last],
            angular,
            first,
            last,
            start,
            stop,
        )

    def _view_rows(
        self,
        inputs: NetworkInputs,
        species_index: torch.Tensor,
        neighbor_index: torch.Tensor,
        views: WeightedFrames,
        span: Tuple[int, int, int, int],
    ) -> Rows:
        """Views ``start:stop`` (of atoms ``first:last``), each its atom's
        neighbourhood in the view's frame: (x @ F, r), or (0, r) if isotropic."""
        first, last, start, stop = span
        rows = views.group[start:stop]
        # the angles between edges are invariant: read in the lab frame
        angular: Optional[torch.Tensor] = None
        if self.angular_order > 0:
            angular = angular_basis(inputs.geometry[rows], self.angular_order)
        geometry = rotated_geometry(
            inputs.geometry,
            rows,
            views.rotation[start:stop],
            views.isotropic[start:stop],
        )
        if self.edge_embedding is not None:
            geometry = self.edge_embedding(geometry, None, None, None, None)
        return Rows(
            rows,
            geometry,
            inputs.factors[rows],
            species_index[rows],
            neighbor_index[rows],
            angular,
            first,
            last,
            start,
            stop,
        )

    def _run_blocks(
        self,
        chunks: List[Rows],
        messages: torch.Tensor,
        factors: torch.Tensor,
        reverse: torch.Tensor,
        views: Optional[WeightedFrames],
        targets: List[str],
    ) -> Tuple[Dict[str, List[torch.Tensor]], List[torch.Tensor], torch.Tensor]:
        """Every block on every chunk of rows; a block's output tokens are
        averaged over each atom's views, ``h_i = sum_f w_f h_i^(f)``, before the
        message exchange. ``messages`` [n_atoms, max_neighbors, d_pet] are the
        first block's messages (the neighbour species' embedding), ``factors``
        [n_atoms, max_neighbors] the cutoff factors.

        Returns the head features of every target (one [n_rows, d_head] per
        head, rows as in ``chunks``), the features of every block (node stream
        [n_atoms, d_node] and ``sum_j c_ij t_ij`` [n_atoms, d_pet]) and the
        final messages."""
        # the node stream exists from the first block's output on
        nodes: Optional[torch.Tensor] = None
        lab = views is None
        head_features: Dict[str, List[torch.Tensor]] = {name: [] for name in targets}
        features: List[torch.Tensor] = []
        # the first block's messages are embedding rows (see
        # MessagePassingBlock._token_inputs)
        message_table: Optional[torch.Tensor] = self.neighbor_embedding.weight
        for block_index, block in enumerate(self.blocks):
            central_heads: Dict[str, List[torch.Tensor]] = {n: [] for n in targets}
            bond_heads: Dict[str, List[torch.Tensor]] = {n: [] for n in targets}
            centrals: List[torch.Tensor] = []
            edges: List[torch.Tensor] = []
            for chunk in chunks:
                # gather only what the block reads: the first block reads the
                # message table instead, non-carried blocks no node stream
                row_messages: Optional[torch.Tensor] = None
                row_nodes: Optional[torch.Tensor] = None
                if message_table is None:
                    row_messages = _rows_of(messages, chunk, lab)
                if block.carried and nodes is not None:
                    row_nodes = _rows_of(nodes, chunk, lab)
                central, edge_tokens = block(
                    chunk.geometry,
                    row_messages,
                    chunk.species,
                    chunk.neighbors,
                    row_nodes,
                    chunk.factors,
                    message_table,
                    chunk.angular,
                )
                # TorchScript indexes ModuleDicts only by literal keys: iterate
                for name, central_head in block.central_heads.items():
                    if name in central_heads:
                        central_heads[name].append(central_head(central))
                for name, bond_head in block.bond_heads.items():
                    if name in bond_heads and not self.feedforward:
                        bonds = bond_head(edge_tokens) * chunk.factors[:, :, None]
                        bond_heads[name].append(bonds.sum(dim=1))
                if views is not None:
                    central, edge_tokens = _view_average(
                        central, edge_tokens, chunk, views
                    )
                centrals.append(central)
                edges.append(edge_tokens)
            for name in targets:
                if len(central_heads[name]) > 0:
                    head_features[name].append(_joined(central_heads[name]))
                if len(bond_heads[name]) > 0:
                    head_features[name].append(_joined(bond_heads[name]))
            message_table = None
            node_stream = _joined(centrals)
            nodes = node_stream
            edge_tokens = _joined(edges)
            features.append(node_stream)
            features.append((edge_tokens * factors[:, :, None]).sum(dim=1))
            messages = self._exchange(messages, edge_tokens, reverse, block_index)
        return head_features, features, messages

    def _exchange(
        self,
        messages: torch.Tensor,
        edge_tokens: torch.Tensor,
        reverse: torch.Tensor,
        block_index: int,
    ) -> torch.Tensor:
        """The next block's messages [n_atoms, max_neighbors, d_pet] from this
        block's edge tokens t_ij and those of the reverse edges t_ji:
        ``(m_ij + t_ji) / 2`` (residual featurizer), ``m_ij + t_ij +
        MLP_k([t_ij, t_ji])`` (feedforward, k = ``block_index``)."""
        n_atoms, max_neighbors = messages.shape[0], messages.shape[1]
        reverse_tokens = edge_tokens.reshape(n_atoms * max_neighbors, self.d_pet)[
            reverse
        ].reshape(messages.shape)
        if not self.feedforward:
            return 0.5 * (messages + reverse_tokens)
        for k, combination_mlp in enumerate(self.combinations):
            if k == block_index:
                pair = torch.cat([edge_tokens, reverse_tokens], dim=-1)
                messages = messages + edge_tokens + combination_mlp(pair)
        return messages

    def _read_out(
        self,
        head_features: Dict[str, List[torch.Tensor]],
        features: List[torch.Tensor],
        messages: torch.Tensor,
        factors: torch.Tensor,
        views: Optional[WeightedFrames],
        token_views: Optional[WeightedFrames],
        targets: List[str],
    ) -> Dict[str, torch.Tensor]:
        """Predictions and last-layer features of every target, per atom.

        ``y = W [head features] + b (+ b' sum_j c_ij, converted pet models)``
        per row, Cartesian targets rotated back to the lab frame, then averaged
        over each atom's views: ``v_i = sum_f w_f F_f v_i^(f)``, ``S_i = sum_f
        w_f F_f S_i^(f) F_f^T`` (:func:`to_lab_frame`); token views rotate the
        one prediction per atom instead (:func:`token_frames_to_lab`)."""
        n_atoms = factors.shape[0]
        if self.feedforward:
            # the bond heads read the final messages, which are the same in every
            # view (rotation invariant): computed once per atom, shared by its views
            for name, bond_head in self.blocks[-1].bond_heads.items():
                if name in head_features:
                    bonds = (bond_head(messages) * factors[:, :, None]).sum(dim=1)
                    if views is not None:
                        bonds = bonds[views.group]
                    head_features[name].append(bonds)
        results: Dict[str, torch.Tensor] = {"features": torch.cat(features, dim=1)}
        last_layer_features: Dict[str, torch.Tensor] = {}
        raw_predictions: Dict[str, torch.Tensor] = {}
        for name, last_layer in self.last_layers.items():
            if name in head_features:
                last_layer_features[name] = torch.cat(head_features[name], dim=1)
                raw_predictions[name] = last_layer(last_layer_features[name])
        if self.bond_bias:
            factor_sums = factors.sum(dim=1, keepdim=True)
            if views is not None:
                factor_sums = factor_sums[views.group]
            for name, bond_bias in self.bond_biases.items():
                if name in raw_predictions:
                    raw_predictions[name] = raw_predictions[name] + bond_bias(
                        factor_sums
                    )
        lab_frames: Optional[torch.Tensor] = None
        if token_views is not None:
            # sum_f w_f F_f [n_atoms, 3, 3]: co-rotates with the structure
            lab_frames = weighted_sum(
                token_views.rotation
                * (~token_views.isotropic).to(factors.dtype)[:, None, None],
                token_views.group,
                token_views.weight,
                n_atoms,
            )
        for name in targets:
            llf = last_layer_features[name]
            prediction = raw_predictions[name].reshape([-1] + self.output_shapes[name])
            if token_views is not None and lab_frames is not None:
                if self.is_vector[name]:
                    prediction = token_frames_to_lab(
                        prediction,
                        lab_frames,
                        token_views.group,
                        token_views.rotation,
                        token_views.weight,
                        token_views.isotropic,
                    )
            if views is not None:
                if self.is_vector[name]:
                    prediction = to_lab_frame(
                        prediction, views.rotation, views.isotropic
                    )
                prediction = weighted_sum(
                    prediction, views.group, views.weight, n_atoms
                )
                llf = weighted_sum(llf, views.group, views.weight, n_atoms)
            results[name] = prediction
            results["llf::" + name] = llf
        return results


# elements of the widest per-token tensor of one chunk (8 MB in float32): below
# glibc's largest mmap threshold (32 MB), so chunk buffers are recycled
CHUNK_ELEMENTS = 2**21
# a GPU's caching allocator recycles buffers of any size, and every chunk costs
# kernel launches: 64x larger chunks there (512 MB in float32; on an H200 the
# 1000-atom Mo cell ran in 67 chunks and cost 31x plain PET)
GPU_CHUNK_FACTOR = 64


def _joined(chunks: List[torch.Tensor]) -> torch.Tensor:
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def _rows_of(values: torch.Tensor, chunk: Rows, lab: bool) -> torch.Tensor:
    """The rows of per-atom ``values`` [n_atoms, ...] that ``chunk`` reads:
    a slice (no copy) where rows are atoms (``lab``), else gathered per view."""
    return values[chunk.first : chunk.last] if lab else values[chunk.atoms]


def _view_average(
    central: torch.Tensor, edges: torch.Tensor, chunk: Rows, views: WeightedFrames
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``h_i = sum_f w_f h_i^(f)`` over the views f of each atom i of ``chunk``,
    for the central [n_rows, d_node] and edge tokens [n_rows, max_neighbors,
    d_pet]: [last - first, ...] each."""
    local = chunk.atoms - chunk.first
    weight = views.weight[chunk.start : chunk.stop]
    size = chunk.last - chunk.first
    return (
        weighted_sum(central, local, weight, size),
        weighted_sum(edges, local, weight, size),
    )
