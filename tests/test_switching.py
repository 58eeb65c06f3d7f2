"""ECSE's switching functions against their definitions (docs/ECSE section 3)."""

import pytest
import torch

from pet_metatrain.ecse.switching import (
    smooth_cutoff,
    smooth_ramp,
    smooth_step,
    smooth_step_at,
)


def stitch(x: torch.Tensor) -> torch.Tensor:
    """tanh(1/(x+1) + 1/(x-1)) inside (-1, 1), +1 below and -1 above."""
    inside = x.clamp(-0.999999, 0.999999)
    value = torch.tanh(1.0 / (inside + 1.0) + 1.0 / (inside - 1.0))
    return torch.where(x <= -1, 1.0, torch.where(x >= 1, -1.0, value))


def fc(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    return 0.5 * stitch(2.0 * (r - cutoff + width / 2) / width) + 0.5


def q(g: torch.Tensor, start: float, width: float) -> torch.Tensor:
    return 0.5 * stitch(-2.0 * (g - start - width / 2) / width) + 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_switching_functions_follow_their_definitions(dtype):
    cutoff, start, width = 4.5, 0.2, 0.3
    r = torch.linspace(3.9, 4.7, 4001, dtype=torch.float64)
    g = torch.linspace(0.0, 0.7, 4001, dtype=torch.float64)
    tolerance = dict(rtol=0.0, atol=1e-12 if dtype == torch.float64 else 2e-6)

    cutoffs = torch.full_like(r, cutoff).to(dtype)
    torch.testing.assert_close(
        smooth_cutoff(r.to(dtype), cutoffs, width),
        fc(r, cutoff, width).to(dtype),
        **tolerance,
    )
    starts, widths = torch.full_like(g, start), torch.full_like(g, width)
    expected = q(g, start, width).to(dtype)
    torch.testing.assert_close(
        smooth_step(g.to(dtype), starts.to(dtype), widths.to(dtype)),
        expected,
        **tolerance,
    )
    torch.testing.assert_close(
        smooth_step_at(g.to(dtype), start, width), expected, **tolerance
    )
    ramp = q(g, start, width) * (g - start).clamp(min=0.0) / width
    torch.testing.assert_close(
        smooth_ramp(g.to(dtype), start, width), ramp.to(dtype), **tolerance
    )


def test_switching_is_exactly_constant_outside_the_window_with_finite_gradients():
    r = torch.tensor([3.0, 4.35, 4.5, 4.5 - 0.3, 5.0], dtype=torch.float64)
    r.requires_grad_(True)
    value = smooth_cutoff(r, torch.full_like(r, 4.5), 0.3)
    assert value[0] == 1.0 and value[3] == 1.0
    assert value[2] == 0.0 and value[4] == 0.0
    (gradient,) = torch.autograd.grad(value.sum(), r, create_graph=True)
    (second,) = torch.autograd.grad(gradient.sum(), r)
    assert torch.isfinite(gradient).all() and torch.isfinite(second).all()
    assert gradient[0] == 0.0 and gradient[4] == 0.0
    assert gradient[1] < 0.0
