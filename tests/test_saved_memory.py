"""What the per-view edge embedding keeps for the backward pass of the forces.

Token frames evaluate the edge embedding in every frame of every atom: its
[n_views, max_neighbors, d] tensors dominate the memory of an energy + forces
call on dense periodic cells, so each copy autograd keeps of them counts.
"""

import torch

from pet_metatrain.modules.block import EdgeEmbedding
from pet_metatrain.modules.views import weighted_sum


def saved_bytes(function) -> int:
    """Bytes of the distinct storages autograd saves while ``function`` runs."""
    storages = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function()
    return sum(storages.values())


def test_weighted_sum_does_not_keep_its_weighted_source():
    torch.manual_seed(0)
    values = torch.randn(300, 10, 16, requires_grad=True)
    weight = torch.rand(300, requires_grad=True)
    index = torch.sort(torch.randint(0, 20, (300,))).values
    copies = saved_bytes(lambda: weighted_sum(values, index, weight, 20))
    # the weights' gradient needs the values once; a second copy (the weighted
    # source that index_add keeps) would double this
    assert copies < 1.2 * values.numel() * values.element_size()


def test_edge_embedding_keeps_two_copies_per_view():
    torch.manual_seed(0)
    n_atoms, n_views, neighbors, width = 12, 240, 10, 32
    embedding = EdgeEmbedding(width)
    geometry = torch.randn(n_atoms, neighbors, 4, requires_grad=True)
    local = torch.sort(torch.randint(0, n_atoms, (n_views,))).values
    rotation = torch.linalg.qr(torch.randn(n_views, 3, 3)).Q.requires_grad_()
    isotropic = torch.zeros(n_views, dtype=torch.bool)
    weight = torch.rand(n_views, requires_grad=True)
    copies = saved_bytes(
        lambda: embedding(geometry, local, rotation, isotropic, weight)
    ) / (n_views * neighbors * width * 4)
    # the SiLU's pre-activation and its output (for the weights' gradient),
    # plus the (x', y', z', r) inputs of the linear map: 4/32 + 3/32 each
    assert copies < 2.3
