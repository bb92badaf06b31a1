"""Diagnostics for attention dynamics on the sphere: energy, inner products, the equiangular ODE."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._validation import check_positive_int, check_real, check_tokens

__all__ = ["interaction_energy", "pairwise_inner_products", "equiangular_rhs", "cluster_count"]


def interaction_energy(x: Tensor, beta: float) -> Tensor:
    r"""GLPR interaction energy :math:`E_\beta(x) = \frac{1}{2\beta n^2}\sum_{i,j} e^{\beta\langle x_i, x_j\rangle}`.

    Non-decreasing along the SA and USA dynamics on the sphere. Computed with a log-sum-exp.

    Parameters
    ----------
    x : Tensor, shape (..., n, d)
    beta : float
        Must be > 0.

    Returns
    -------
    Tensor, shape (...)
    """
    x = check_tokens(x)
    beta = check_real(beta, "beta", positive=True)
    n = x.shape[-2]
    lse = torch.logsumexp((beta * (x @ x.mT)).flatten(-2), dim=-1)
    return torch.exp(lse - 2 * math.log(n)) / (2 * beta)


def pairwise_inner_products(x: Tensor, *, offdiag: bool = True) -> Tensor:
    """Gram matrix ``<x_i, x_j>`` ``(..., n, n)``, or its off-diagonal entries ``(..., n(n-1))`` if ``offdiag``."""
    x = check_tokens(x)
    G = x @ x.mT
    if not offdiag:
        return G
    n = x.shape[-2]
    keep = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return G[..., keep]


def equiangular_rhs(gamma: Tensor | float, beta: float, n: int, *, normalized: bool = True) -> Tensor | float:
    r"""Right-hand side of GLPR's equiangular ODE for the common inner product :math:`\gamma(t)`.

    Starting from pairwise orthogonal unit tokens (``n <= d``), all inner products stay equal to
    :math:`\gamma(t)` with

    .. math::

        \dot\gamma = \frac{2 e^{\beta\gamma}(1-\gamma)((n-1)\gamma+1)}{e^{\beta} + (n-1)e^{\beta\gamma}} \ \text{(SA)},
        \qquad
        \dot\gamma = \frac{2}{n} e^{\beta\gamma}(1-\gamma)((n-1)\gamma+1) \ \text{(USA)}.
    """
    beta = check_real(beta, "beta")
    n = check_positive_int(n, "n")
    g = gamma
    exp = torch.exp if isinstance(g, Tensor) else math.exp
    num = 2 * exp(beta * g) * (1 - g) * ((n - 1) * g + 1)
    if normalized:
        return num / (math.exp(beta) + (n - 1) * exp(beta * g))
    return num / n


def cluster_count(x: Tensor, *, threshold: float = 0.999) -> Tensor:
    """Number of clusters: connected groups of tokens whose pairwise inner products exceed ``threshold``.

    Parameters
    ----------
    x : Tensor, shape (..., n, d)
        Unit-norm tokens.

    Returns
    -------
    Tensor of int64, shape (...)
    """
    x = check_tokens(x)
    close = (x @ x.mT) > threshold
    n = x.shape[-2]
    # transitive closure by repeated boolean matrix products (log2(n) squarings)
    reach = close | torch.eye(n, dtype=torch.bool, device=x.device)
    for _ in range(max(1, math.ceil(math.log2(max(n, 2))))):
        reach = (reach.to(torch.float32) @ reach.to(torch.float32)) > 0
    # a cluster is counted once, at its smallest index
    first = torch.arange(n, device=x.device)
    smallest = torch.where(reach, first, n).amin(dim=-1)
    return (smallest == first).sum(dim=-1)
