"""How blocks pass information on: the paper's residual featurizer and metatrain
``pet``'s feedforward one, and the transformer's activation and normalization."""

import ase.build
import pytest
import torch
from metatomic.torch import ModelOutput, systems_to_torch
from metatrain.utils.neighbor_lists import get_system_with_neighbor_lists
from models import make_model

from pet_metatrain.modules.transformer import SwiGLU

FEEDFORWARD = dict(featurizer_type="feedforward", d_node=12, num_gnn_layers=3)


def energy_of_ethanol(model) -> torch.Tensor:
    system = systems_to_torch(ase.build.molecule("CH3CH2OH"), dtype=torch.float64)
    system = get_system_with_neighbor_lists(system, model.requested_neighbor_lists())
    outputs = model([system], {"energy": ModelOutput(sample_kind="system")})
    return outputs["energy"].block().values.sum()


@pytest.mark.parametrize(
    ("featurizer", "readout_blocks"), [("residual", 3), ("feedforward", 1)]
)
def test_readout_heads(featurizer, readout_blocks):
    model = make_model(featurizer_type=featurizer, num_gnn_layers=3)
    network = model.network
    with_heads = [len(block.central_heads) > 0 for block in network.blocks]
    assert sum(with_heads) == readout_blocks and with_heads[-1]
    assert network.last_layers["energy"].in_features == 2 * readout_blocks * 8


def test_feedforward_carries_the_node_stream_and_combines_messages():
    """Block 1 has no heads: its last node update reaches the energy only through
    the node stream the next block receives; the message MLPs (the last one feeds
    the bond heads) reach it only through the messages."""
    model = make_model(method="none", **FEEDFORWARD)
    network = model.network
    assert isinstance(network.blocks[1].central_embedding, torch.nn.Identity)
    assert isinstance(network.blocks[1].neighbor_embedding, torch.nn.Embedding)
    assert len(network.combinations) == 3
    last_node_update = network.blocks[0].transformer.layers[-1].node_feedforward
    watched = list(last_node_update.parameters()) + list(
        network.combinations.parameters()
    )
    gradients = torch.autograd.grad(energy_of_ethanol(model), watched)
    assert all(float(g.abs().max()) > 0 for g in gradients)


def test_gated_feedforward_and_rms_norm_are_used():
    model = make_model(activation="SwiGLU", normalization="RMSNorm", d_node=12)
    layer = model.network.blocks[0].transformer.layers[0]
    assert isinstance(layer.feedforward, SwiGLU)
    assert isinstance(layer.node_feedforward, SwiGLU)
    assert isinstance(layer.norm_attention, torch.nn.RMSNorm)
    assert isinstance(layer.norm_node, torch.nn.RMSNorm)
    assert torch.isfinite(energy_of_ethanol(model))


@pytest.mark.parametrize("carried", [False, True])
@pytest.mark.parametrize("from_table", [False, True])
def test_folded_token_embedding_is_the_written_out_one(carried, from_table):
    """The token embedding's first layer folds the geometry embedding and the
    embedding rows into small weights and tables: same map as applying it to the
    concatenated inputs."""
    model = make_model(method="none", **FEEDFORWARD)
    block = model.network.blocks[1 if carried else 0]
    species_table = model.network.neighbor_embedding.weight
    torch.manual_seed(0)
    d_edge = block.geometry_embedding.weight.shape[1]  # the edge embedding's width
    geometry = torch.randn(5, 7, d_edge, dtype=torch.float64)
    neighbor_index = torch.randint(0, species_table.shape[0], (5, 7))
    messages = species_table[neighbor_index]
    if not from_table:
        messages = torch.randn(5, 7, species_table.shape[1], dtype=torch.float64)
    inputs = [block.geometry_embedding(geometry)]
    if carried:
        inputs.append(block.neighbor_embedding(neighbor_index))
    expected = block.token_embedding[0](torch.cat(inputs + [messages], dim=-1))
    if from_table:
        folded = block._token_inputs(geometry, None, neighbor_index, species_table)
    else:
        folded = block._token_inputs(geometry, messages, neighbor_index, None)
    torch.testing.assert_close(folded, expected)
