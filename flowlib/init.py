"""Initial token configurations and random parameters. Every function takes ``generator=``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._validation import check_matrix, check_positive_int

__all__ = ["uniform_sphere", "gaussian_tokens", "random_orthonormal", "gaussian_matrix"]


def uniform_sphere(
    n: int,
    d: int,
    *,
    batch_shape: Sequence[int] = (),
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
) -> Tensor:
    """``n`` i.i.d. uniform points on the unit sphere of R^d, shape ``(*batch_shape, n, d)``."""
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    z = torch.randn((*batch_shape, n, d), generator=generator, device=device, dtype=dtype or torch.float64)
    return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)


def gaussian_tokens(
    n: int,
    mean: Tensor,
    cov: Tensor,
    *,
    batch_shape: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> Tensor:
    """``n`` i.i.d. samples of N(mean, cov), shape ``(*batch_shape, n, d)``, in ``mean``'s dtype/device."""
    n = check_positive_int(n, "n")
    mean = torch.as_tensor(mean)
    if mean.ndim != 1:
        raise ValueError(f"mean must have shape (d,); got {tuple(mean.shape)}")
    d = mean.shape[0]
    cov = check_matrix(cov, "cov", rows=d, cols=d, like=mean)
    L = torch.linalg.cholesky(cov)
    z = torch.randn((*batch_shape, n, d), generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + z @ L.mT


def random_orthonormal(
    n: int,
    d: int,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
) -> Tensor:
    """``n <= d`` orthonormal tokens in R^d (rows of a random orthogonal matrix), shape ``(n, d)``."""
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    if n > d:
        raise ValueError(f"need n <= d for orthonormal tokens; got n={n}, d={d}")
    z = torch.randn((d, d), generator=generator, device=device, dtype=dtype or torch.float64)
    q, r = torch.linalg.qr(z)
    q = q * torch.sign(torch.diagonal(r))
    return q[:n]


def gaussian_matrix(
    rows: int,
    cols: int,
    *,
    scale: float | None = None,
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
) -> Tensor:
    """A ``(rows, cols)`` matrix of i.i.d. N(0, scale^2) entries; default ``scale = 1/sqrt(cols)``."""
    rows = check_positive_int(rows, "rows")
    cols = check_positive_int(cols, "cols")
    s = 1.0 / math.sqrt(cols) if scale is None else float(scale)
    return s * torch.randn((rows, cols), generator=generator, device=device, dtype=dtype or torch.float64)
