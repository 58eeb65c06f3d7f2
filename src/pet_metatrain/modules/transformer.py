"""PET's transformer with cutoff-smoothed attention.

Attention weights towards a neighbour token are multiplied by the neighbour's cutoff
factor and renormalized, so a neighbour entering or leaving the cutoff changes
nothing abruptly: ``softmax(scores + log c)``. In training it is written out, which
supports the double backward needed to train on forces; in evaluation it runs in
torch's fused attention, which never stores the attention matrices (far less
memory, e.g. for ECSE's many views).
"""

from typing import Optional, Tuple

import torch


def angular_basis(geometry: torch.Tensor, order: int) -> torch.Tensor:
    """Legendre polynomials of the angle between every two edges of an atom.

    ``geometry`` [n, max_neighbors, 4] holds (x, y, z, r) of every edge (zeros for
    padding). Returns ``P_l(cos theta_jk)`` for l = 1..``order``, with
    ``cos theta_jk = r_ij . r_ik / (|r_ij| |r_ik|)``, as [n, order, 1 + K, 1 + K]
    (K = max_neighbors), zero in the central token's row and column. The cosines
    are rotation invariant, so a bias built from them keeps every ECSE mode exact.
    """
    radius = geometry[:, :, 3:]
    # padding has r = 0: divide by one there (its attention weight is zero)
    unit = geometry[:, :, :3] / torch.where(radius > 0, radius, torch.ones_like(radius))
    cosine = torch.bmm(unit, unit.transpose(1, 2))
    # Bonnet's recursion: (l + 1) P_{l+1} = (2l + 1) c P_l - l P_{l-1}
    previous = torch.ones_like(cosine)
    current = cosine
    polynomials = [current]
    for degree in range(1, order):
        following = ((2 * degree + 1) * cosine * current - degree * previous) / (
            degree + 1
        )
        previous, current = current, following
        polynomials.append(current)
    return torch.nn.functional.pad(torch.stack(polynomials, dim=1), (1, 0, 1, 0))


class SmoothAttention(torch.nn.Module):
    """Multi-head self-attention whose weights are scaled by per-token factors,
    with an optional angular bias ``sum_l c_hl P_l(cos theta_jk)`` on the scores
    between edge tokens j and k (one learnt weight per head and degree, zero at
    initialization): PET's tokens see angles only through learnt embeddings of
    coordinates, this gives every head the angle between two edges directly."""

    def __init__(self, d_model: int, num_heads: int, angular_order: int = 0) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(
                f"d_pet ({d_model}) must be a multiple of num_heads ({num_heads})"
            )
        self.num_heads = num_heads
        self.d_head = d_model // num_heads
        self.input = torch.nn.Linear(d_model, 3 * d_model)
        self.output = torch.nn.Linear(d_model, d_model)
        # [heads, order]; without the bias an empty buffer outside the state
        # dict, so that models without it keep their checkpoints' keys
        if angular_order > 0:
            self.angular_weight = torch.nn.Parameter(
                torch.zeros(num_heads, angular_order)
            )
        else:
            self.register_buffer(
                "angular_weight", torch.zeros(num_heads, 0), persistent=False
            )

    def forward(
        self,
        tokens: torch.Tensor,
        factors: torch.Tensor,
        angular: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``tokens`` [batch, seq, d]; ``factors`` [batch, seq] in [0, 1];
        ``angular`` [batch, order, seq, seq] from :func:`angular_basis`."""
        batch, seq, d_model = tokens.shape
        qkv = self.input(tokens).reshape(batch, seq, 3, self.num_heads, self.d_head)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        # log(0) = -inf for padding and neighbours at the cutoff; the clamp keeps
        # the gradients of those entries zero instead of NaN, and those of the
        # others finite through the double backward of training on forces
        log_factors = torch.where(
            factors > 0,
            torch.log(factors.clamp(min=1e-15)),
            torch.full_like(factors, -float("inf")),
        )[:, None, None, :]
        if angular is not None:
            # [batch, heads, seq, seq]
            log_factors = log_factors + torch.einsum(
                "hl,blij->bhij", self.angular_weight, angular
            )
        if self.training:
            # written out: supports the double backward of training on forces
            scores = torch.matmul(query, key.transpose(-1, -2)) * self.d_head**-0.5
            weights = torch.softmax(scores + log_factors, dim=-1)
            mixed = torch.matmul(weights, value)
        else:
            mixed = torch.nn.functional.scaled_dot_product_attention(
                query, key, value, attn_mask=log_factors
            )
        return self.output(mixed.transpose(1, 2).reshape(batch, seq, d_model))


class TransformerLayer(torch.nn.Module):
    """One transformer layer over [central token, edge tokens].

    The central token may live in a wider ``d_node`` stream (as in metatrain's
    ``pet``): it is projected to ``d_model`` for attention and its update is
    projected back, followed by a feed-forward network that runs once per atom, so
    node width costs little. ``pre_norm`` chooses pre-LayerNorm (stable at higher
    learning rates) over the paper's post-LayerNorm.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_feedforward: int,
        d_node: int,
        pre_norm: bool,
        gated: bool,
        norm: type,
        angular_order: int = 0,
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attention = SmoothAttention(d_model, num_heads, angular_order)
        self.norm_attention = norm(d_model)
        self.feedforward = feedforward_network(d_model, d_feedforward, gated)
        self.norm_feedforward = norm(d_model)
        self.separate_node = d_node != d_model
        if self.separate_node:
            self.node_to_token = torch.nn.Linear(d_node, d_model)
            self.token_to_node = torch.nn.Linear(d_model, d_node)
            self.node_feedforward = feedforward_network(d_node, 2 * d_node, gated)
            self.norm_node = norm(d_node)
        else:
            self.node_to_token = torch.nn.Identity()
            self.token_to_node = torch.nn.Identity()
            self.node_feedforward = torch.nn.Identity()
            self.norm_node = torch.nn.Identity()

    def forward(
        self,
        node: torch.Tensor,
        edges: torch.Tensor,
        factors: torch.Tensor,
        angular: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``node`` [batch, d_node], ``edges`` [batch, seq, d], ``factors``
        [batch, 1 + seq] (central token first), ``angular`` the optional
        [batch, order, 1 + seq, 1 + seq] basis of the angular bias."""
        tokens = torch.cat([self.node_to_token(node)[:, None, :], edges], dim=1)
        if self.pre_norm:
            mixed = self.attention(self.norm_attention(tokens), factors, angular)
            if not self.separate_node:
                tokens = tokens + mixed
                tokens = tokens + self.feedforward(self.norm_feedforward(tokens))
                return tokens[:, 0], tokens[:, 1:]
            edges = edges + mixed[:, 1:]
            edges = edges + self.feedforward(self.norm_feedforward(edges))
            node = node + self.token_to_node(mixed[:, 0])
            return node + self.node_feedforward(self.norm_node(node)), edges
        tokens = self.norm_attention(tokens + self.attention(tokens, factors, angular))
        if not self.separate_node:
            tokens = self.norm_feedforward(tokens + self.feedforward(tokens))
            return tokens[:, 0], tokens[:, 1:]
        edges = tokens[:, 1:]
        edges = self.norm_feedforward(edges + self.feedforward(edges))
        node = node + self.token_to_node(tokens[:, 0])
        return self.norm_node(node + self.node_feedforward(node)), edges


class SwiGLU(torch.nn.Module):
    """Gated feed-forward network (SwiGLU): ``W_out (v * sigmoid(g))``."""

    def __init__(self, d_model: int, d_hidden: int) -> None:
        super().__init__()
        self.input = torch.nn.Linear(d_model, 2 * d_hidden)
        self.output = torch.nn.Linear(d_hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., d_model] -> [..., d_model]."""
        value, gate = self.input(x).chunk(2, dim=-1)
        return self.output(value * torch.sigmoid(gate))


def feedforward_network(d_model: int, d_hidden: int, gated: bool) -> torch.nn.Module:
    """The transformer's feed-forward network, SiLU or gated (SwiGLU)."""
    if gated:
        return SwiGLU(d_model, d_hidden)
    return torch.nn.Sequential(
        torch.nn.Linear(d_model, d_hidden),
        torch.nn.SiLU(),
        torch.nn.Linear(d_hidden, d_model),
    )


class Transformer(torch.nn.Module):
    """A stack of :class:`TransformerLayer`."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_feedforward: int,
        num_layers: int,
        d_node: int,
        pre_norm: bool,
        gated: bool,
        norm: type,
        angular_order: int = 0,
    ) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(
            [
                TransformerLayer(
                    d_model,
                    num_heads,
                    d_feedforward,
                    d_node,
                    pre_norm,
                    gated,
                    norm,
                    angular_order,
                )
                for _ in range(num_layers)
            ]
        )

    def forward(
        self,
        node: torch.Tensor,
        edges: torch.Tensor,
        factors: torch.Tensor,
        angular: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``node`` [n, d_node] and ``edges`` [n, max_neighbors, d_model] through
        every layer in turn; ``factors`` [n, 1 + max_neighbors] are the cutoff
        factors that scale attention to each token (central token first),
        ``angular`` the optional [n, order, 1 + max_neighbors, 1 + max_neighbors]
        basis of the angular bias. Returns both streams, same shapes."""
        for layer in self.layers:
            node, edges = layer(node, edges, factors, angular)
        return node, edges
