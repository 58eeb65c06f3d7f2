"""The trainer's optimizer: torch's Adam, fused where torch has a kernel."""

import pytest
import torch

from pet_metatrain.trainer import make_optimizer


def parameters() -> list:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    return list(model.double().parameters())


@pytest.mark.parametrize("weight_decay", [None, 0.01])
def test_optimizer_is_fused_on_cpu_and_steps_like_torchs_loop(weight_decay):
    fused_parameters, loop_parameters = parameters(), parameters()
    fused = make_optimizer(fused_parameters, 1e-2, weight_decay)
    expected_class = torch.optim.Adam if weight_decay is None else torch.optim.AdamW
    loop = expected_class(loop_parameters, lr=1e-2, weight_decay=weight_decay or 0)
    assert type(fused) is expected_class
    assert fused.defaults["fused"]
    for _ in range(3):
        for group in (fused_parameters, loop_parameters):
            for parameter in group:
                parameter.grad = torch.cos(parameter.detach())
        fused.step()
        loop.step()
    for a, b in zip(fused_parameters, loop_parameters, strict=True):
        torch.testing.assert_close(a, b)
