"""ECSE's smooth switching functions: the frames' weights (fc, q, q_lin) and the
offset of the adaptive inner cutoff's smooth maximum.

All of them are exactly constant outside their window, and their gradients stay
finite everywhere (no NaN leaks through ``torch.where``).
"""

import torch

# SMAX(a, b) + _SMAX_OFFSET / beta >= max(a, b) (Lambert W0(1/e))
SMAX_OFFSET = 0.2784645427610738


def _step_down(y: torch.Tensor) -> torch.Tensor:
    """C-infinity step from 1 (y <= -1) to 0 (y >= 1): ECSE's
    ``0.5 * stitch(y) + 0.5`` with ``stitch(y) = tanh(1/(y+1) + 1/(y-1))``.

    Written as ``sigmoid(2/(y+1) + 2/(y-1))`` (the same function, since
    ``(1 + tanh z) / 2 = sigmoid(2z)``): of the forms tried, it launches about
    the fewest kernels through the backward of forces and the double backward
    of training on them (``benchmarks/dispatched_ops.py``).
    """
    # beyond |y| = 0.999 the step is 0 or 1 to machine precision (sigmoid(-2000));
    # hardtanh is clamp with a one-kernel backward
    y = torch.nn.functional.hardtanh(y, -0.999, 0.999)
    return torch.sigmoid(2.0 * (torch.reciprocal(y + 1.0) + torch.reciprocal(y - 1.0)))


def smooth_cutoff(r: torch.Tensor, cutoff: torch.Tensor, width: float) -> torch.Tensor:
    """ECSE's fc: 1 for r <= cutoff - width, 0 for r >= cutoff, C-infinity between.

    ``cutoff`` may be a tensor (per-atom adaptive cutoffs, with gradients).
    """
    return _step_down((r - cutoff) * (2.0 / width) + 1.0)


def smooth_step(
    g: torch.Tensor, start: torch.Tensor, width: torch.Tensor
) -> torch.Tensor:
    """ECSE's q: 0 for g <= start, 1 for g >= start + width (per-element
    ``start`` and ``width``)."""
    return _step_down((start - g) * 2.0 / width + 1.0)


def smooth_step_at(g: torch.Tensor, start: float, width: float) -> torch.Tensor:
    """``smooth_step`` with one ``start`` and ``width`` for every element."""
    return _step_down((start - g) * (2.0 / width) + 1.0)


def smooth_ramp(g: torch.Tensor, start: float, width: float) -> torch.Tensor:
    """ECSE's q_lin: the step times a linear ramp, growing for more orthogonal pairs."""
    return smooth_step_at(g, start, width) * (g - start).clamp(min=0.0) / width
