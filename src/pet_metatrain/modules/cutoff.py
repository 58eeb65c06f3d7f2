"""PET's cosine cutoff function (metatrain's ``Bump`` is imported from metatrain)."""

import math

import torch


def cosine_cutoff(r: torch.Tensor, cutoff: float, width: float) -> torch.Tensor:
    """PET's cutoff: 1 below ``cutoff - width``, cosine to 0 at ``cutoff``."""
    x = ((r - (cutoff - width)) / width).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * x))
