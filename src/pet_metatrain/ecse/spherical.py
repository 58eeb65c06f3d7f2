"""Real spherical components of order 1 and 2 as Cartesian tensors, and back.

In metatomic's convention (the one of its Wigner-D matrices and of
``metatomic.torch.o3``): ``o3_lambda = 1`` lists a vector as ``(mu = -1, 0, 1) =
(y, z, x)``; ``o3_lambda = 2`` lists the symmetric traceless part of a matrix
``S`` in the orthonormal basis

    B_-2 = (E_xy + E_yx) / sqrt(2),   B_-1 = (E_yz + E_zy) / sqrt(2),
    B_0 = (2 E_zz - E_xx - E_yy) / sqrt(6),
    B_1 = (E_xz + E_zx) / sqrt(2),    B_2 = (E_xx - E_yy) / sqrt(2),

``c_mu = <B_mu, S>``. Both maps commute with rotations (a rotation R acts as
``D^l(R)`` on one side and as ``R v``, ``R S R^T`` on the other), so rotating the
Cartesian form rotates the spherical one exactly: ECSE treats an order-1 or
order-2 spherical block as a Cartesian vector or matrix.
"""

import torch


def spherical_basis(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The matrices B_mu [5, 3, 3] of ``o3_lambda = 2``."""
    # integer patterns (exact in any dtype) times sqrt(1/2) or sqrt(1/6): in
    # TorchScript a float literal stored into a tensor (``b[i] = 0.7``, or
    # ``torch.tensor([0.7])``) passes through float32, which would cost float64
    # its last 9 digits
    pattern = torch.zeros(5, 3, 3, dtype=dtype, device=device)
    for mu, (row, column) in enumerate([(0, 1), (1, 2), (2, 2), (0, 2), (0, 0)]):
        pattern[mu, row, column] = 1
        pattern[mu, column, row] = 1
    pattern[2, 2, 2] = 2
    pattern[2, 0, 0] = -1
    pattern[2, 1, 1] = -1
    pattern[4, 1, 1] = -1
    half = torch.full((5,), 0.5, dtype=dtype, device=device).sqrt()
    three = torch.full((5,), 3.0, dtype=dtype, device=device).sqrt()
    scale = torch.where(torch.arange(5, device=device) == 2, half / three, half)
    return pattern * scale[:, None, None]


def to_spherical(values: torch.Tensor, o3_lambda: int) -> torch.Tensor:
    """Cartesian vectors [n, 3, p] (``o3_lambda = 1``) or matrices [n, 3, 3, p]
    (``o3_lambda = 2``, projected on the basis) as spherical components
    [n, 2 o3_lambda + 1, p]; scalars [n, 1, p] pass through."""
    if o3_lambda == 1:
        return values.roll(-1, dims=1)
    if o3_lambda == 2:
        basis = spherical_basis(values.dtype, values.device)
        return torch.einsum("mab,nabp->nmp", basis, values)
    return values


def to_cartesian(values: torch.Tensor, o3_lambda: int) -> torch.Tensor:
    """Spherical components [n, 2 o3_lambda + 1, p] as Cartesian vectors
    [n, 3, p] or symmetric traceless matrices [n, 3, 3, p] (the inverse of
    :func:`to_spherical` on them); ``o3_lambda = 0`` passes through."""
    if o3_lambda == 1:
        return values.roll(1, dims=1)
    if o3_lambda == 2:
        basis = spherical_basis(values.dtype, values.device)
        return torch.einsum("mab,nmp->nabp", basis, values)
    return values
