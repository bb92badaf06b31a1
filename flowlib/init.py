"""Initial token configurations and random parameters. Every function takes ``generator=``.

A generator may live on any device: the numbers are drawn on the generator's device and then moved
to the requested ``device``, so ``generator=torch.Generator().manual_seed(0), device="cuda"`` gives the
same numbers on every machine. The default dtype is :func:`torch.get_default_dtype` (float32 unless
changed; call ``torch.set_default_dtype(torch.float64)`` or pass ``dtype=torch.float64`` for double
precision), except that float64 becomes float32 on Apple MPS (which has no float64).
:func:`gaussian_tokens` follows the dtype of its ``mean``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ._validation import check_matrix, check_positive_int

__all__ = ["uniform_sphere", "gaussian_tokens", "random_orthonormal", "gaussian_matrix"]


def _randn(shape: Sequence[int], generator: torch.Generator | None, device, dtype) -> Tensor:
    """Standard normals of ``shape``: drawn where ``generator`` lives, returned on ``device`` with ``dtype``.

    ``dtype=None`` means :func:`torch.get_default_dtype`, with float32 instead of float64 on MPS.
    """
    device = torch.device(device) if device is not None else None
    if dtype is None:
        dtype = torch.get_default_dtype()
        if dtype == torch.float64 and device is not None and device.type == "mps":
            dtype = torch.float32
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    draw_dtype = torch.float32 if generator.device.type == "mps" and dtype == torch.float64 else dtype
    z = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=draw_dtype)
    return z.to(device=device if device is not None else generator.device, dtype=dtype)


def uniform_sphere(
    n: int,
    d: int,
    *,
    batch_shape: Sequence[int] = (),
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
) -> Tensor:
    """``n`` i.i.d. uniform points on the unit sphere of R^d, shape ``(*batch_shape, n, d)``.

    ``dtype`` defaults to :func:`torch.get_default_dtype` (see the module docstring).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x = fl.uniform_sphere(5, 3, batch_shape=(2,), generator=torch.Generator().manual_seed(0))
    >>> x.shape
    torch.Size([2, 5, 3])
    >>> torch.allclose(x.norm(dim=-1), torch.ones_like(x[..., 0]))
    True
    """
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    z = _randn((*batch_shape, n, d), generator, device, dtype)
    return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True)


def gaussian_tokens(
    n: int,
    mean: Tensor,
    cov: Tensor,
    *,
    batch_shape: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> Tensor:
    """``n`` i.i.d. samples of N(mean, cov), shape ``(*batch_shape, n, d)``, in ``mean``'s dtype/device.

    ``cov`` may be singular (rank-deficient): samples are ``mean + z S`` with ``S`` the symmetric
    square root of ``cov`` (from an eigendecomposition, not Cholesky), so they lie in
    ``mean + range(cov)``.

    Raises
    ------
    ValueError
        If ``mean`` is not ``(d,)``, ``cov`` not ``(d, d)``, or ``cov`` is not symmetric positive
        semi-definite (to round-off).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> mean = torch.tensor([1.0, -1.0], dtype=torch.float64); cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    >>> x = fl.gaussian_tokens(20000, mean, cov, generator=torch.Generator().manual_seed(0))
    >>> x.shape, x.dtype
    (torch.Size([20000, 2]), torch.float64)
    >>> m, c = fl.empirical_moments(x)
    >>> torch.allclose(m, mean, atol=0.05) and torch.allclose(c, cov, atol=0.05)
    True
    """
    n = check_positive_int(n, "n")
    mean = torch.as_tensor(mean)
    if mean.ndim != 1:
        raise ValueError(f"mean must have shape (d,); got {tuple(mean.shape)}")
    if not mean.is_floating_point():
        mean = mean.to(torch.get_default_dtype())
    d = mean.shape[0]
    cov = check_matrix(cov, "cov", rows=d, cols=d, like=mean)
    scale = float(cov.abs().max()) if cov.numel() else 0.0
    tol = 100 * torch.finfo(cov.dtype).eps * max(scale, 1.0)
    if float((cov - cov.mT).abs().max()) > tol:
        raise ValueError("cov must be symmetric")
    w, U = torch.linalg.eigh(0.5 * (cov + cov.mT))
    if float(w.min()) < -tol * d:
        raise ValueError(f"cov must be positive semi-definite; its smallest eigenvalue is {float(w.min()):.3g}")
    # eigenvalues at round-off level are zero: their square roots (~1e-8) would leak out of range(cov)
    w = torch.where(w > d * torch.finfo(w.dtype).eps * float(w.abs().max()), w, torch.zeros_like(w))
    root = (U * w.sqrt().unsqueeze(-2)) @ U.mT
    z = _randn((*batch_shape, n, d), generator, mean.device, mean.dtype)
    return mean + z @ root


def random_orthonormal(
    n: int,
    d: int,
    *,
    generator: torch.Generator | None = None,
    device=None,
    dtype=None,
) -> Tensor:
    """``n <= d`` orthonormal tokens in R^d (rows of a random orthogonal matrix), shape ``(n, d)``.

    ``dtype`` defaults to :func:`torch.get_default_dtype` (see the module docstring).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x = fl.random_orthonormal(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> x.shape, torch.allclose(x @ x.T, torch.eye(3, dtype=torch.float64))
    (torch.Size([3, 5]), True)
    """
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    if n > d:
        raise ValueError(f"need n <= d for orthonormal tokens; got n={n}, d={d}")
    z = _randn((d, d), generator, device, dtype)
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
    """A ``(rows, cols)`` matrix of i.i.d. N(0, scale^2) entries; default ``scale = 1/sqrt(cols)``.

    ``dtype`` defaults to :func:`torch.get_default_dtype` (see the module docstring).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> W = fl.gaussian_matrix(400, 100, generator=torch.Generator().manual_seed(0))
    >>> W.shape, round(W.var().item() * 100, 1)  # variance 1/cols
    (torch.Size([400, 100]), 1.0)
    """
    rows = check_positive_int(rows, "rows")
    cols = check_positive_int(cols, "cols")
    s = 1.0 / math.sqrt(cols) if scale is None else float(scale)
    return s * _randn((rows, cols), generator, device, dtype)
