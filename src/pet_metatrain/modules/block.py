"""One PET block and the edge embedding the blocks share.

A block turns every centre atom i's neighbourhood into tokens, one per directed
edge i -> j, runs a transformer over them and feeds per-target heads:

    t_ij = MLP([G g_ij, (E z_j), m_ij])                    [n, max_neighbors, d_pet]
    (h_i, t'_ij) = Transformer(h_i^0, t_ij; c_ij)          [n, d_node], [n, K, d_pet]

with ``g_ij`` the edge geometry (x, y, z, r) or its embedding ``e_ij``
(:class:`EdgeEmbedding`), ``E z_j`` the neighbour's species embedding (carried
blocks only), ``m_ij`` the message (the embedding of z_j in the first block),
``c_ij`` the cutoff factors that smooth the attention, and ``h_i^0`` the centre's
species embedding or, in carried blocks, the previous block's node stream.
:class:`~pet_metatrain.modules.pet.PETNetwork` chains the blocks.
"""

from typing import Dict, Optional, Tuple

import torch

from .transformer import Transformer
from .views import weighted_sum

# the network imports nothing above its layer (tests/test_layers.py), so the
# names repeat the ``Literal`` of ``edge_embedding_activation`` (documentation.py)
EDGE_ACTIVATIONS = ("expm1", "SiLU", "ELU")
"""Nonlinearities of :class:`EdgeEmbedding` (``edge_embedding_activation``)."""


class EdgeEmbedding(torch.nn.Module):
    """A nonlinear embedding of every edge's (x, y, z, r), shared by all blocks,
    optionally averaged over the views of the edge's centre atom.

    ``e_ij = sum_f w_f sigma(A (r_ij F_f, |r_ij|) + b)`` [n, max_neighbors, d]:
    the only part of the network that reads directions, evaluated in every
    co-rotating frame F_f of atom i and averaged, so that the blocks that read
    ``e_ij`` are exactly rotation invariant (ECSE's ``token`` frames). Without
    views it is the same map in the lab frame (F = identity).

    ``sigma`` is one of :data:`EDGE_ACTIVATIONS`. The backward pass of the forces
    needs, per view, sigma's output (the weights' gradient reads it) and whatever
    sigma's own derivative reads: ``SiLU``'s reads its input, a second
    [n_views, max_neighbors, d] tensor; ``expm1`` (``exp(x) - 1``, derivative
    ``expm1(x) + 1``) and ``ELU`` (applied in place; derivative 1 above zero,
    ``ELU(x) + 1`` below) read their own output, so they keep one.
    """

    def __init__(self, width: int, activation: str = "expm1") -> None:
        super().__init__()
        if activation not in EDGE_ACTIVATIONS:
            raise ValueError(
                f"edge_embedding_activation must be one of {EDGE_ACTIVATIONS}, "
                f"not {activation!r}"
            )
        self.linear = torch.nn.Linear(4, width)
        self.activation = activation

    def forward(
        self,
        geometry: torch.Tensor,
        local: Optional[torch.Tensor],
        rotation: Optional[torch.Tensor],
        isotropic: Optional[torch.Tensor],
        weight: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """The edge embedding [n, max_neighbors, d] of ``geometry``.

        :param geometry: (x, y, z, r) of every edge [n, max_neighbors, 4].
        :param local: the row of ``geometry`` of every view [n_views], or None
            (no views: the lab frame).
        :param rotation: every view's frame F_f [n_views, 3, 3] (x' = x @ F_f).
        :param isotropic: views that read distances only [n_views] (bool).
        :param weight: the views' weights w_f [n_views], one in sum per row.
        """
        if local is None:
            return self._embed(geometry)
        assert rotation is not None and isotropic is not None and weight is not None
        per_view = self._embed(rotated_geometry(geometry, local, rotation, isotropic))
        return weighted_sum(per_view, local, weight, geometry.shape[0])

    def _embed(self, geometry: torch.Tensor) -> torch.Tensor:
        """``sigma(A g + b)`` [..., d] of ``geometry`` [..., 4].

        The linear map runs on the rows as a matrix, so that its output is a
        fresh tensor, not a view: ELU overwrites it in place, which autograd
        (TorchScript's differentiable graphs included) refuses on views."""
        rows = torch.nn.functional.linear(
            geometry.reshape(-1, 4), self.linear.weight, self.linear.bias
        )
        if self.activation == "expm1":
            rows = torch.expm1(rows)
        elif self.activation == "ELU":
            rows = torch.nn.functional.elu(rows, inplace=True)
        else:
            rows = torch.nn.functional.silu(rows)
        return rows.reshape(list(geometry.shape[:-1]) + [rows.shape[1]])


def node_width(hypers: Dict) -> int:
    """``d_node``, which defaults to ``d_pet`` (the paper's single width)."""
    d_node = hypers.get("d_node")
    return int(hypers["d_pet"] if d_node is None else d_node)


def angular_order(hypers: Dict) -> int:
    """Degree of the attention's angular bias, 0 (none) in models without it."""
    return int(hypers.get("angular_bias_order") or 0)


def mlp(d_in: int, d_hidden: int) -> torch.nn.Module:
    """Two SiLU layers, [..., d_in] -> [..., d_hidden] (a readout head's body)."""
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
        """The block's output tokens for n rows (atoms or views of atoms).

        :param geometry: every edge's geometry g_ij [n, max_neighbors, 4] or its
            embedding e_ij [n, max_neighbors, d_edge_embedding].
        :param messages: m_ij [n, max_neighbors, d_pet], or None in the first
            block, whose messages are rows of an embedding: then
            ``message_table`` [n_species, d_pet] is that embedding's weight.
        :param species_index: the centres' embedding rows [n].
        :param neighbor_index: the neighbours' embedding rows [n, max_neighbors].
        :param node: the carried node stream [n, d_node] (``carried`` blocks
            only), else None: the centre's species embedding.
        :param factors: cutoff factors c_ij [n, max_neighbors], which smooth the
            attention (the central token's factor is one).
        :param angular: the attention's angular bias basis [n, order, 1 + K,
            1 + K] (:func:`~.transformer.angular_basis`), or None.
        :return: central tokens h_i [n, d_node], edge tokens t'_ij [n,
            max_neighbors, d_pet].
        """
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


def combination(d_pet: int) -> torch.nn.Module:
    """``[t_ij, t_ji]`` [..., 2 d_pet] -> [..., d_pet]: how a carried block
    merges an edge's token with its reverse edge's (the message m_ij)."""
    return torch.nn.Sequential(
        torch.nn.LayerNorm(2 * d_pet),
        torch.nn.Linear(2 * d_pet, 2 * d_pet),
        torch.nn.SiLU(),
        torch.nn.Linear(2 * d_pet, d_pet),
    )


def rotated_geometry(
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
