"""ECSE's smooth switching functions: the frames' weights (fc, q, q_lin) and the
offset of the adaptive inner cutoff's smooth maximum.

All of them are exactly constant outside their window, and their gradients stay
finite everywhere (no NaN leaks through ``torch.where``).
"""

import torch

# SMAX(a, b) + _SMAX_OFFSET / beta >= max(a, b) (Lambert W0(1/e))
SMAX_OFFSET = 0.2784645427610738


def _stitch(x: torch.Tensor) -> torch.Tensor:
    """C-infinity step from +1 (x <= -1) to -1 (x >= 1)."""
    # beyond |x| = 1 - 1e-3 the stitch is +-1 to machine precision (tanh(>18.5))
    x = x.clamp(-0.999, 0.999)
    return torch.tanh(1.0 / (x + 1.0) + 1.0 / (x - 1.0))


def smooth_cutoff(r: torch.Tensor, cutoff: torch.Tensor, width: float) -> torch.Tensor:
    """ECSE's fc: 1 for r <= cutoff - width, 0 for r >= cutoff, C-infinity between.

    ``cutoff`` may be a tensor (per-atom adaptive cutoffs, with gradients).
    """
    return 0.5 * _stitch(2.0 * (r - cutoff + 0.5 * width) / width) + 0.5


def smooth_step(
    g: torch.Tensor, start: torch.Tensor, width: torch.Tensor
) -> torch.Tensor:
    """ECSE's q: 0 for g <= start, 1 for g >= start + width."""
    return 0.5 * _stitch(-2.0 * (g - start - 0.5 * width) / width) + 0.5


def smooth_ramp(g: torch.Tensor, start: float, width: float) -> torch.Tensor:
    """ECSE's q_lin: the step times a linear ramp, growing for more orthogonal pairs."""
    step = smooth_step(g, torch.full_like(g, start), torch.full_like(g, width))
    return step * (g - start).clamp(min=0.0) / width
