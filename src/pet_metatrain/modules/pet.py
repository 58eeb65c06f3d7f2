"""The Point Edge Transformer: message passing between directed-edge tokens.

The network sees every centre atom through one or more *views*. A view is the
atom's neighbourhood expressed in a rotated coordinate system (or, for isotropic
views, through distances only). Plain PET uses one unrotated view per atom. ECSE
(:mod:`pet_metatrain.ecse`) supplies several weighted views per atom; the network
then averages each block's output tokens over an atom's views, which makes the
exchanged messages, and so the whole model, exactly rotation invariant.
"""

from typing import Dict, List, Optional, Tuple

import torch

from .transformer import Transformer, angular_basis
from .views import WeightedFrames, to_lab_frame, token_frames_to_lab, weighted_sum


class EdgeEmbedding(torch.nn.Module):
    """A nonlinear embedding of every edge's (x, y, z, r), shared by all blocks,
    optionally averaged over the views of the edge's centre atom.

    ``e_ij = sum_f w_f SiLU(A (r_ij F_f, |r_ij|) + b)`` [n, max_neighbors, d]: the
    only part of the network that reads directions, evaluated in every
    co-rotating frame F_f of atom i and averaged, so that the blocks that read
    ``e_ij`` are exactly rotation invariant (ECSE's ``token`` frames). Without
    views it is the same map in the lab frame (F = identity).
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, width)

    def forward(
        self,
        geometry: torch.Tensor,
        local: Optional[torch.Tensor],
        rotation: Optional[torch.Tensor],
        isotropic: Optional[torch.Tensor],
        weight: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """``geometry`` [n, max_neighbors, 4]; the views (if any) give each
        view's row ``local`` in ``geometry``, its frame, whether it reads
        distances only, and its weight (summing to one per row)."""
        if local is None:
            return torch.nn.functional.silu(self.linear(geometry))
        assert rotation is not None and isotropic is not None and weight is not None
        per_view = self.linear(_rotated_geometry(geometry, local, rotation, isotropic))
        return weighted_sum(
            torch.nn.functional.silu(per_view), local, weight, geometry.shape[0]
        )


def node_width(hypers: Dict) -> int:
    """``d_node``, which defaults to ``d_pet`` (the paper's single width)."""
    d_node = hypers.get("d_node")
    return int(hypers["d_pet"] if d_node is None else d_node)


def angular_order(hypers: Dict) -> int:
    """Degree of the attention's angular bias, 0 (none) in models without it."""
    return int(hypers.get("angular_bias_order") or 0)


def _mlp(d_in: int, d_hidden: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(d_in, d_hidden),
        torch.nn.SiLU(),
        torch.nn.Linear(d_hidden, d_hidden),
        torch.nn.SiLU(),
    )


class MessagePassingBlock(torch.nn.Module):
    """One PET block: edge-token embedding, transformer, per-target readout heads.

    ``carried`` blocks (after the first, ``featurizer_type: feedforward``) take the
    previous block's node stream instead of a species embedding of the centre, and
    re-embed the neighbour's species next to the message.
    """

    # a compile-time constant for TorchScript: only one branch reads the
    # neighbour embedding, which non-carried blocks lack
    carried: torch.jit.Final[bool]

    def __init__(self, hypers: Dict, num_species: int, carried: bool) -> None:
        super().__init__()
        d_pet = hypers["d_pet"]
        d_node = node_width(hypers)
        self.carried = carried
        # (x, y, z, r), or the shared edge embedding where the model has one
        d_edge = hypers.get("d_edge_embedding")
        self.geometry_embedding = torch.nn.Linear(
            4 if d_edge is None else int(d_edge), d_pet
        )
        self.token_embedding = torch.nn.Sequential(
            torch.nn.Linear((3 if carried else 2) * d_pet, d_pet),
            torch.nn.SiLU(),
            torch.nn.Linear(d_pet, d_pet),
        )
        # a carried block embeds the neighbour's species, others the centre's
        self.central_embedding: torch.nn.Module = torch.nn.Identity()
        self.neighbor_embedding: torch.nn.Module = torch.nn.Identity()
        if carried:
            self.neighbor_embedding = torch.nn.Embedding(num_species, d_pet)
        else:
            self.central_embedding = torch.nn.Embedding(num_species, d_node)
        self.transformer = Transformer(
            d_pet,
            hypers["num_heads"],
            hypers["d_feedforward"],
            hypers["num_attention_layers"],
            d_node,
            hypers["transformer_type"] == "PreLN",
            hypers["activation"] == "SwiGLU",
            getattr(torch.nn, hypers["normalization"]),
            angular_order(hypers),
        )
        self.central_heads = torch.nn.ModuleDict({})
        self.bond_heads = torch.nn.ModuleDict({})

    def forward(
        self,
        geometry: torch.Tensor,
        messages: Optional[torch.Tensor],
        species_index: torch.Tensor,
        neighbor_index: torch.Tensor,
        node: Optional[torch.Tensor],
        factors: torch.Tensor,
        message_table: Optional[torch.Tensor],
        angular: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Output central tokens [n, d_node] and edge tokens [n, max_neighbors, d].

        ``node`` is the carried node stream (``carried`` blocks only). The messages
        come either as a tensor or, where they are rows of an embedding (the first
        block), as that embedding's weight ``message_table``. ``angular`` is the
        basis of the attention's angular bias (:func:`angular_basis`), if any."""
        hidden = self._token_inputs(geometry, messages, neighbor_index, message_table)
        token = self.token_embedding[2](self.token_embedding[1](hidden))
        if node is None:
            node = self.central_embedding(species_index)
        ones = torch.ones(
            factors.shape[0], 1, dtype=factors.dtype, device=factors.device
        )
        return self.transformer(node, token, torch.cat([ones, factors], dim=1), angular)

    def _token_inputs(
        self,
        geometry: torch.Tensor,
        messages: Optional[torch.Tensor],
        neighbor_index: torch.Tensor,
        message_table: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """The token embedding's first layer, applied to [geometry embedding,
        (neighbour embedding), messages] without forming the concatenation:
        linear maps of linear maps and of embedding rows fold into small weights
        and per-species tables, which saves most of the per-edge products."""
        d_pet = self.geometry_embedding.weight.shape[0]
        first_layer = self.token_embedding[0]
        weight = first_layer.weight
        geometry_weight = weight[:, :d_pet]
        hidden = torch.nn.functional.linear(
            geometry,
            geometry_weight @ self.geometry_embedding.weight,
            geometry_weight @ self.geometry_embedding.bias + first_layer.bias,
        )
        if self.carried:
            species_weight = weight[:, d_pet : 2 * d_pet]
            table = self.neighbor_embedding.weight @ species_weight.T
            hidden = hidden + table[neighbor_index]
        message_weight = weight[:, -d_pet:]
        if messages is not None:
            return hidden + torch.nn.functional.linear(messages, message_weight)
        assert message_table is not None
        return hidden + (message_table @ message_weight.T)[neighbor_index]


def _combination(d_pet: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.LayerNorm(2 * d_pet),
        torch.nn.Linear(2 * d_pet, 2 * d_pet),
        torch.nn.SiLU(),
        torch.nn.Linear(2 * d_pet, d_pet),
    )


class PETNetwork(torch.nn.Module):
    """PET's learnable part: from padded neighbourhoods to per-atom predictions."""

    def __init__(self, hypers: Dict, atomic_types: List[int]) -> None:
        super().__init__()
        self.atomic_types: List[int] = list(atomic_types)
        self.d_pet = int(hypers["d_pet"])
        self.d_node = node_width(hypers)
        self.d_head = int(hypers["d_head"])
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
            self.edge_embedding = EdgeEmbedding(int(d_edge))
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
                _combination(self.d_pet)
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
            block.central_heads[name] = _mlp(self.d_node, self.d_head)
            block.bond_heads[name] = _mlp(self.d_pet, self.d_head)
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
        row_bounds: List[int] = [0]
        for first in bounds[1:-1]:
            row_bounds.append(int(starts[first]))
        row_bounds.append(views.group.shape[0])
        return bounds, row_bounds

    def forward(
        self,
        geometry: torch.Tensor,
        factors: torch.Tensor,
        species: torch.Tensor,
        neighbor_species: torch.Tensor,
        reverse: torch.Tensor,
        views: Optional[WeightedFrames],
        targets: List[str],
        token_views: Optional[WeightedFrames] = None,
    ) -> Dict[str, torch.Tensor]:
        """Per-atom predictions (vectors in the lab frame) and features.

        ``geometry`` [n_atoms, max_neighbors, 4] holds (x, y, z, r) of every edge,
        ``factors`` the cutoff factors (zero for padding), ``reverse`` the flat index
        of every edge's reverse. Returns one entry per target, plus ``"features"``
        and ``"llf::{target}"`` (last-layer features).

        ECSE enters in one of two ways. ``views``: every block runs each atom's
        transformer in each of its views and averages the output tokens.
        ``token_views``: only the edge embedding runs in each view (see
        :class:`EdgeEmbedding`), everything else once per atom; a vector target
        v' is then read as ``sum_f w_f F_f v'``, a rank-2 one S' as
        ``sum_f w_f F_f S' F_f^T``.

        Atoms go through each block in chunks of bounded size: memory use per
        tensor stays small, so large systems reuse the allocator's memory instead
        of page-faulting fresh mappings on every call.
        """
        n_atoms, max_neighbors = factors.shape
        on_gpu = factors.is_cuda
        species_index = self.species_index(species)
        neighbor_index = self.species_index(neighbor_species)
        messages = self.neighbor_embedding(neighbor_index)
        # the node stream exists from the first block's output on
        nodes: Optional[torch.Tensor] = None
        if views is not None:
            views = _sorted_by_atom(views)
            bounds, row_bounds = self._chunk_bounds(
                n_atoms, max_neighbors, views, self.chunk_width, on_gpu
            )
        elif token_views is not None:
            token_views = _sorted_by_atom(token_views)
            bounds, row_bounds = self._chunk_bounds(
                n_atoms, max_neighbors, token_views, self.d_edge, on_gpu
            )
        else:
            bounds, row_bounds = self._chunk_bounds(
                n_atoms, max_neighbors, None, self.chunk_width, on_gpu
            )
        # each chunk's rows (atoms, or views rotated into their frames) are built
        # once and shared by all blocks; only the messages change between blocks
        chunks: List[
            Tuple[
                torch.Tensor,
                torch.Tensor,
                torch.Tensor,
                torch.Tensor,
                torch.Tensor,
                Optional[torch.Tensor],
            ]
        ] = []
        for index in range(len(bounds) - 1):
            start, stop = row_bounds[index], row_bounds[index + 1]
            first, last = bounds[index], bounds[index + 1]
            # the angles between edges are invariant: read in the lab frame
            angular: Optional[torch.Tensor] = None
            if self.angular_order > 0:
                lab_geometry = (
                    geometry[first:last]
                    if views is None
                    else geometry[views.group[start:stop]]
                )
                angular = angular_basis(lab_geometry, self.angular_order)
            if views is None:
                # slices are views of the inputs: no copies
                rows = torch.arange(first, last, device=factors.device)
                row_geometry = geometry[first:last]
                if self.edge_embedding is not None:
                    if token_views is None:
                        row_geometry = self.edge_embedding(
                            row_geometry, None, None, None, None
                        )
                    else:
                        row_geometry = self.edge_embedding(
                            row_geometry,
                            token_views.group[start:stop] - first,
                            token_views.rotation[start:stop],
                            token_views.isotropic[start:stop],
                            token_views.weight[start:stop],
                        )
                chunks.append(
                    (
                        rows,
                        row_geometry,
                        factors[first:last],
                        species_index[first:last],
                        neighbor_index[first:last],
                        angular,
                    )
                )
            else:
                rows = views.group[start:stop]
                row_geometry = _rotated_geometry(
                    geometry,
                    rows,
                    views.rotation[start:stop],
                    views.isotropic[start:stop],
                )
                if self.edge_embedding is not None:
                    row_geometry = self.edge_embedding(
                        row_geometry, None, None, None, None
                    )
                chunks.append(
                    (
                        rows,
                        row_geometry,
                        factors[rows],
                        species_index[rows],
                        neighbor_index[rows],
                        angular,
                    )
                )

        head_features: Dict[str, List[torch.Tensor]] = {name: [] for name in targets}
        features: List[torch.Tensor] = []
        # the first block's messages are embedding rows (see _token_inputs)
        message_table: Optional[torch.Tensor] = self.neighbor_embedding.weight
        for block_index, block in enumerate(self.blocks):
            central_heads: Dict[str, List[torch.Tensor]] = {n: [] for n in targets}
            bond_heads: Dict[str, List[torch.Tensor]] = {n: [] for n in targets}
            centrals: List[torch.Tensor] = []
            edges: List[torch.Tensor] = []
            for index, chunk in enumerate(chunks):
                rows, row_geometry, row_factors, row_species, row_neighbors = chunk[:5]
                first, last = bounds[index], bounds[index + 1]
                # gather only what the block reads: the first block reads the
                # message table instead, non-carried blocks no node stream
                row_messages: Optional[torch.Tensor] = None
                row_nodes: Optional[torch.Tensor] = None
                if message_table is None:
                    row_messages = (
                        messages[first:last] if views is None else messages[rows]
                    )
                if block.carried and nodes is not None:
                    row_nodes = nodes[first:last] if views is None else nodes[rows]
                central, edge_tokens = block(
                    row_geometry,
                    row_messages,
                    row_species,
                    row_neighbors,
                    row_nodes,
                    row_factors,
                    message_table,
                    chunk[5],
                )
                # TorchScript indexes ModuleDicts only by literal keys: iterate
                for name, central_head in block.central_heads.items():
                    if name in central_heads:
                        central_heads[name].append(central_head(central))
                for name, bond_head in block.bond_heads.items():
                    if name in bond_heads and not self.feedforward:
                        bonds = bond_head(edge_tokens) * row_factors[:, :, None]
                        bond_heads[name].append(bonds.sum(dim=1))
                if views is not None:
                    local = rows - first
                    weight = views.weight[row_bounds[index] : row_bounds[index + 1]]
                    central = weighted_sum(central, local, weight, last - first)
                    edge_tokens = weighted_sum(edge_tokens, local, weight, last - first)
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
            reverse_tokens = edge_tokens.reshape(n_atoms * max_neighbors, self.d_pet)[
                reverse
            ].reshape(messages.shape)
            if not self.feedforward:
                messages = 0.5 * (messages + reverse_tokens)
            else:
                for k, combination in enumerate(self.combinations):
                    if k == block_index:
                        pair = torch.cat([edge_tokens, reverse_tokens], dim=-1)
                        messages = messages + edge_tokens + combination(pair)

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
                * (~token_views.isotropic).to(geometry.dtype)[:, None, None],
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


def _rotated_geometry(
    geometry: torch.Tensor,
    atoms: torch.Tensor,
    rotation: torch.Tensor,
    isotropic: torch.Tensor,
) -> torch.Tensor:
    """(x', y', z', r) [n_views, max_neighbors, 4] of each view's atom in its
    frame, x' = x @ F; isotropic views read distances only (x' = 0)."""
    xyz = torch.bmm(geometry[atoms, :, :3], rotation)
    xyz = xyz * (~isotropic).to(xyz.dtype)[:, None, None]
    return torch.cat([xyz, geometry[atoms, :, 3:]], dim=-1)


def _sorted_by_atom(views: WeightedFrames) -> WeightedFrames:
    """Frames ordered by atom: the frames of a range of atoms are contiguous."""
    order = torch.argsort(views.group, stable=True)
    return WeightedFrames(
        views.group[order],
        views.rotation[order],
        views.weight[order],
        views.isotropic[order],
    )
