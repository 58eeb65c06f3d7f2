"""What the per-view edge embedding keeps for the backward pass of the forces.

Token frames evaluate the edge embedding in every frame of every atom: its
[n_views, max_neighbors, d] tensors dominate the memory of an energy + forces
call on dense periodic cells, so each copy autograd keeps of them counts.
"""

import typing

import numpy as np
import pytest
import torch
from metatrain.utils.architectures import get_default_hypers
from models import make_model, rattled_ethanol

from pet_metatrain.documentation import ModelHypers
from pet_metatrain.modules.block import EDGE_ACTIVATIONS, EdgeEmbedding
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


def copies_per_view(activation: str) -> float:
    """[n_views, max_neighbors, d] tensors autograd keeps for an edge embedding
    with ``activation`` over 240 views of 12 atoms."""
    torch.manual_seed(0)
    n_atoms, n_views, neighbors, width = 12, 240, 10, 32
    embedding = EdgeEmbedding(width, activation)
    geometry = torch.randn(n_atoms, neighbors, 4, requires_grad=True)
    local = torch.sort(torch.randint(0, n_atoms, (n_views,))).values
    rotation = torch.linalg.qr(torch.randn(n_views, 3, 3)).Q.requires_grad_()
    isotropic = torch.zeros(n_views, dtype=torch.bool)
    weight = torch.rand(n_views, requires_grad=True)
    saved = saved_bytes(lambda: embedding(geometry, local, rotation, isotropic, weight))
    return saved / (n_views * neighbors * width * 4)


@pytest.mark.parametrize(
    "activation, bound", [("expm1", 1.3), ("ELU", 1.3), ("SiLU", 2.3)]
)
def test_edge_embedding_copies_per_view(activation, bound):
    """expm1 and ELU keep one [n_views, max_neighbors, d] copy per view: their
    output, which their own derivative and the weights' gradient both read;
    SiLU keeps its pre-activation as well. All keep the (x', y', z', r) inputs
    of the linear map (4/32 and 3/32 of a copy)."""
    assert bound - 1.0 < copies_per_view(activation) < bound


def test_default_edge_embedding_keeps_one_copy_per_view():
    """The default is one of the one-copy embeddings (memory on large cells)."""
    hypers = get_default_hypers("pet_ecse")["model"]
    assert copies_per_view(hypers["edge_embedding_activation"]) < 1.3


@pytest.mark.parametrize(
    "activation, function",
    [
        ("expm1", torch.expm1),
        ("ELU", torch.nn.functional.elu),
        ("SiLU", torch.nn.functional.silu),
    ],
)
def test_embedding_is_its_function_to_second_derivatives(activation, function):
    """Each embedding is ``sigma(A g + b)`` and differentiates twice (training
    takes gradients of the forces) as that formula does; ELU, applied in place
    on the linear map's output, included."""
    torch.manual_seed(0)
    embedding = EdgeEmbedding(8, activation).double()
    geometry = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)

    def reference(x: torch.Tensor) -> torch.Tensor:
        return function(embedding.linear(x))

    in_place = embedding(geometry, None, None, None, None)
    assert torch.equal(in_place, reference(geometry))
    gradient = torch.autograd.grad(in_place.pow(2).sum(), geometry, create_graph=True)
    expected = torch.autograd.grad(
        reference(geometry).pow(2).sum(), geometry, create_graph=True
    )
    assert torch.allclose(gradient[0], expected[0])
    second = torch.autograd.grad(gradient[0].sum(), embedding.linear.weight)
    assert torch.allclose(
        second[0],
        torch.autograd.grad(expected[0].sum(), embedding.linear.weight)[0],
    )


def test_the_embedding_accepts_exactly_the_hyper_choices():
    """block.py repeats the hyper's names (the network does not import the
    hypers' module); they must not drift apart."""
    hyper = ModelHypers.__annotations__["edge_embedding_activation"]
    assert set(EDGE_ACTIVATIONS) == set(typing.get_args(hyper))


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="must be one of"):
        EdgeEmbedding(8, "ReLU")


def test_exported_elu_embedding_answers_repeated_calls(tmp_path):
    """TorchScript optimizes an export after its first calls (differentiable
    subgraphs), and refuses in-place ops on views there: the in-place ELU must
    act on a fresh tensor, in every call an engine makes."""
    from metatomic_ase import MetatomicCalculator

    model = make_model(frames="token", edge_embedding_activation="ELU")
    path = tmp_path / "model.pt"
    model.export().save(str(path))
    calculator = MetatomicCalculator(str(path), device="cpu")
    atoms = rattled_ethanol()
    atoms.calc = calculator
    first = atoms.get_forces()
    for _ in range(4):
        calculator.reset()
        assert np.allclose(atoms.get_forces(), first, atol=1e-10)
