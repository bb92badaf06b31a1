"""Diagnostics for attention dynamics on the sphere: energy, inner products, the equiangular ODE."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._validation import check_positive_int, check_real, check_tokens
from .fields import SphereAttention, unit_normalize
from .init import uniform_sphere
from .integrate import simulate
from .integrate.steppers import STEPPERS

__all__ = [
    "interaction_energy",
    "pairwise_inner_products",
    "equiangular_rhs",
    "equiangular_solution",
    "hitting_time",
    "cluster_count",
    "clustered_fraction",
    "phase_diagram",
    "effective_rank",
    "mean_pairwise_cosine",
]


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

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    >>> fl.interaction_energy(x, beta=1.0)  # one cluster: e^beta / (2 beta)
    tensor(1.3591)
    >>> torch.e / 2
    1.3591409142295225
    """
    x = check_tokens(x)
    beta = check_real(beta, "beta", positive=True)
    n = x.shape[-2]
    lse = torch.logsumexp((beta * (x @ x.mT)).flatten(-2), dim=-1)
    return torch.exp(lse - 2 * math.log(n)) / (2 * beta)


def pairwise_inner_products(x: Tensor, *, offdiag: bool = True) -> Tensor:
    """Gram matrix ``<x_i, x_j>`` ``(..., n, n)``, or its off-diagonal entries ``(..., n(n-1))`` if ``offdiag``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> fl.pairwise_inner_products(x, offdiag=False)
    tensor([[1., 0., 1.],
            [0., 1., 1.],
            [1., 1., 2.]])
    >>> fl.pairwise_inner_products(x)
    tensor([0., 1., 0., 1., 1., 1.])
    """
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

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> fl.diagnostics.equiangular_rhs(1.0, beta=1.0, n=4)  # gamma = 1 (one cluster) is an equilibrium
    0.0
    >>> fl.diagnostics.equiangular_rhs(0.0, beta=1.0, n=4) > 0  # orthogonal tokens attract
    True
    """
    beta = check_real(beta, "beta")
    n = check_positive_int(n, "n")
    g = gamma
    exp = torch.exp if isinstance(g, Tensor) else math.exp
    num = 2 * exp(beta * g) * (1 - g) * ((n - 1) * g + 1)
    if normalized:
        return num / (math.exp(beta) + (n - 1) * exp(beta * g))
    return num / n


#: Largest | ||x_i|| - 1 | that the clustering statistics accept (they threshold raw inner products).
UNIT_NORM_TOL = 1e-2


def _check_unit_norm(x: Tensor, what: str) -> None:
    dev = float((torch.linalg.vector_norm(x.detach(), dim=-1) - 1).abs().max()) if x.numel() else 0.0
    if not dev <= UNIT_NORM_TOL:
        raise ValueError(
            f"{what} thresholds inner products of unit-norm tokens; got tokens with | ||x_i|| - 1 | up to {dev:.3g} "
            f"(> {UNIT_NORM_TOL:g}). Normalise them with flowlib.unit_normalize (layer_norm_projection has norm sqrt(d))"
        )


def cluster_count(x: Tensor, *, threshold: float = 0.999) -> Tensor:
    """Number of clusters: connected groups of tokens whose pairwise inner products exceed ``threshold``.

    Parameters
    ----------
    x : Tensor, shape (..., n, d)
        Unit-norm tokens (to within 1e-2; others raise ``ValueError``).

    Returns
    -------
    Tensor of int64, shape (...)

    Raises
    ------
    ValueError
        If some token's norm is not 1 to within 1e-2 (inner products of other tokens do not measure angles).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> fl.cluster_count(x)
    tensor(2)
    """
    x = check_tokens(x)
    _check_unit_norm(x, "cluster_count")
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


def equiangular_solution(
    beta: float,
    n: int,
    t: Tensor | Sequence[float],
    *,
    normalized: bool = True,
    gamma0: float = 0.0,
    n_substeps: int = 20,
) -> Tensor:
    r"""Solve the equiangular ODE (see :func:`equiangular_rhs`) with RK4 and return :math:`\gamma` at times ``t``.

    Parameters
    ----------
    beta, n, normalized
        As in :func:`equiangular_rhs`.
    t : Tensor or sequence, shape (S,)
        Increasing times starting at or after 0.
    gamma0 : float
        Initial common inner product (0 for orthogonal tokens).
    n_substeps : int
        RK4 steps between consecutive output times (and from 0 to ``t[0]``); 20 gives ~1e-10 for
        output spacing 0.1 and moderate ``beta``.

    Returns
    -------
    Tensor of float64, shape (S,)

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> gamma = fl.diagnostics.equiangular_solution(beta=1.0, n=4, t=[0.0, 1.0, 10.0])
    >>> gamma.dtype, gamma[0].item()
    (torch.float64, 0.0)
    >>> bool(gamma[1] < gamma[2] < 1)  # increases towards 1
    True
    """
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    n_substeps = check_positive_int(n_substeps, "n_substeps")
    if t.numel() == 0 or float(t[0]) < 0 or bool((torch.diff(t) < 0).any()):
        raise ValueError("t must be a non-empty, non-decreasing sequence of times >= 0")
    f = lambda _, g: equiangular_rhs(g, beta, n, normalized=normalized)  # noqa: E731
    rk4 = STEPPERS["rk4"].step
    out, g, t_prev = [], float(gamma0), 0.0
    for tk in t.tolist():
        h = (tk - t_prev) / n_substeps
        for i in range(n_substeps if h > 0 else 0):
            g = rk4(f, t_prev + i * h, g, h)
        out.append(g)
        t_prev = tk
    return torch.tensor(out, dtype=torch.float64)


def hitting_time(
    beta: float,
    n: int,
    *,
    delta: float = 1e-3,
    normalized: bool = True,
    gamma0: float = 0.0,
    t_max: float = 1e4,
    dt: float | None = None,
) -> float:
    r"""First time the equiangular solution reaches :math:`\gamma = 1 - \delta`.

    The equiangular ODE is scalar and autonomous with :math:`\dot\gamma > 0` on
    :math:`(-1/(n-1), 1)`, so the time is the integral
    :math:`\int_{\gamma_0}^{1-\delta} d\gamma / \dot\gamma(\gamma)`, computed by Gauss-Legendre quadrature
    in :math:`u = -\log(1-\gamma)` (where the integrand is smooth): milliseconds whatever the answer,
    accurate to about 1e-10 relative. Returns ``inf`` beyond ``t_max`` or when :math:`\gamma_0 \le -1/(n-1)`
    (an equilibrium), and 0 when :math:`\gamma_0 \ge 1-\delta`.

    The equiangular solution describes ``n`` pairwise-orthogonal unit tokens, so it needs ``n <= d``
    tokens in :math:`\mathbb R^d`; for ``n > d`` it is only a heuristic.

    Parameters
    ----------
    beta, n, normalized, gamma0
        As in :func:`equiangular_solution`.
    delta : float
        The target is :math:`1 - \delta`.
    t_max : float
        Times beyond this are reported as ``inf``.
    dt : float, optional
        Ignored; the step of the fixed-step integrator of flowlib 0.2 (deprecated).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> t1 = fl.hitting_time(1.0, 4); t2 = fl.hitting_time(4.0, 4)
    >>> 0 < t1 < t2  # a larger beta clusters later
    True
    >>> fl.hitting_time(16.0, 32)  # about 1.35e5, beyond t_max = 1e4
    inf
    """
    if dt is not None:
        warnings.warn(
            "hitting_time(dt=...) is deprecated and ignored since flowlib 0.3 (the time is a quadrature now)",
            DeprecationWarning,
            stacklevel=2,
        )
    beta = check_real(beta, "beta")
    n = check_positive_int(n, "n")
    delta = check_real(delta, "delta", positive=True)
    gamma0 = check_real(gamma0, "gamma0")
    t_max = check_real(t_max, "t_max", positive=True)
    if delta >= 1:
        raise ValueError(f"delta must be in (0, 1); got {delta}")
    target = 1.0 - delta
    if gamma0 >= target:
        return 0.0
    if n > 1 and gamma0 <= -1.0 / (n - 1):
        return math.inf  # (n - 1) gamma + 1 <= 0: an equilibrium (or beyond the simplex)
    u0, u1 = -math.log1p(-gamma0), -math.log(delta)
    nodes, wts = np.polynomial.legendre.leggauss(16)
    edges = np.linspace(u0, u1, 257)
    mid, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * np.diff(edges)
    u = (mid[:, None] + half[:, None] * nodes[None, :]).ravel()
    g = -np.expm1(-u)  # gamma = 1 - e^{-u}; then dgamma = e^{-u} du and (1 - gamma) = e^{-u} cancel
    lin = (n - 1) * g + 1
    with np.errstate(over="ignore"):
        if normalized:  # (e^beta + (n-1) e^{beta g}) / (2 e^{beta g} ((n-1) g + 1))
            integrand = (np.exp(beta * (1 - g)) + (n - 1)) / (2 * lin)
        else:  # n / (2 e^{beta g} ((n-1) g + 1))
            integrand = n * np.exp(-beta * g) / (2 * lin)
    t = float(np.sum(integrand.reshape(len(mid), -1) * wts[None, :] * half[:, None]))
    return t if t <= t_max else math.inf


def clustered_fraction(x: Tensor, *, threshold: float = 0.999) -> Tensor:
    """Fraction of ordered pairs ``i != j`` with ``<x_i, x_j> > threshold`` (GLPR's phase-diagram statistic), shape ``(...)``.

    The tokens must have unit norm (to within 1e-2), as for :func:`cluster_count`.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> fl.diagnostics.clustered_fraction(x)  # 2 of the 6 ordered pairs coincide
    tensor(0.3333)
    """
    x = check_tokens(x)
    _check_unit_norm(x, "clustered_fraction")
    n = x.shape[-2]
    if n < 2:
        return torch.ones(x.shape[:-2], dtype=x.dtype, device=x.device)
    G = x @ x.mT
    close = (G > threshold).to(x.dtype).sum(dim=(-2, -1)) - (torch.diagonal(G, dim1=-2, dim2=-1) > threshold).sum(-1)
    return close / (n * (n - 1))


def phase_diagram(
    betas: Sequence[float] | Tensor,
    *,
    n: int,
    d: int,
    t1: float,
    n_systems: int = 64,
    step: float = 0.1,
    save_every: int = 1,
    threshold: float = 0.999,
    normalized: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> tuple[Tensor, Tensor]:
    r"""Clustering phase diagram of the sphere dynamics over (time, beta), all systems in one batch.

    For each ``beta``, ``n_systems`` independent systems of ``n`` uniform tokens on :math:`\mathbb S^{d-1}`
    follow SA (``normalized=True``) or USA, discretised as GLPR do: an Euler step of size ``step``
    followed by renormalisation. The statistic is the fraction of pairs with inner product above
    ``threshold`` (:func:`clustered_fraction`), averaged over systems. ``t1 / step`` must be a whole
    number (otherwise ``ValueError``: the step would silently differ from ``step``).

    Returns
    -------
    t : Tensor, shape (S,)
    fraction : Tensor, shape (len(betas), S)

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> t, frac = fl.diagnostics.phase_diagram([1.0, 4.0], n=8, d=3, t1=4.0, n_systems=4, step=0.5, generator=torch.Generator().manual_seed(0))
    >>> t.shape, frac.shape
    (torch.Size([9]), torch.Size([2, 9]))
    >>> bool((frac >= 0).all() and (frac <= 1).all())
    True
    """

    betas = torch.as_tensor(betas, dtype=torch.float64).reshape(-1)
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    n_systems = check_positive_int(n_systems, "n_systems")
    t1 = check_real(t1, "t1", positive=True)
    step = check_real(step, "step", positive=True)
    n_steps = max(1, round(t1 / step))
    if abs(n_steps * step - t1) > 1e-9 * t1:
        raise ValueError(
            f"t1 / step must be a whole number of steps; got t1={t1:g}, step={step:g} (the nearest step is "
            f"{t1 / n_steps:g}, {n_steps} steps)"
        )
    x0 = uniform_sphere(n, d, batch_shape=(len(betas), n_systems), generator=generator, dtype=dtype)
    x0 = x0.to(device) if device is not None else x0
    # beta enters through Q = beta I, broadcast over the systems of each row
    Q = betas.to(dtype=x0.dtype, device=x0.device)[:, None, None, None] * torch.eye(d, dtype=x0.dtype, device=x0.device)
    field = SphereAttention(beta=1.0, Q=Q, normalized=normalized)
    traj = simulate(field, x0, t1=t1, n_steps=n_steps, method="euler", retraction=unit_normalize, save_every=save_every)
    frac = clustered_fraction(traj.x, threshold=threshold).mean(dim=-1)  # (S, B)
    return traj.t, frac.mT.cpu()


def effective_rank(x: Tensor, *, center: bool = False) -> Tensor:
    r"""Effective rank :math:`\exp(-\sum_k p_k\log p_k)`, :math:`p_k = \sigma_k/\sum_j\sigma_j`, of token matrices.

    :math:`\sigma_k` are the singular values of the ``(n, d)`` matrix (of the centred one if ``center``);
    the value lies in :math:`[1, \min(n, d)]` and equals ``r`` for ``r`` equal non-zero singular values.

    Parameters
    ----------
    x : Tensor, shape (..., n, d)

    Returns
    -------
    Tensor, shape (...)

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> fl.diagnostics.effective_rank(torch.eye(3, dtype=torch.float64))
    tensor(3.0000, dtype=torch.float64)
    """
    x = check_tokens(x)
    if center:
        x = x - x.mean(dim=-2, keepdim=True)
    s = torch.linalg.svdvals(x)
    p = s / s.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    ent = -(p * torch.log(p.clamp_min(torch.finfo(x.dtype).tiny))).sum(dim=-1)
    return torch.exp(ent)


def mean_pairwise_cosine(x: Tensor) -> Tensor:
    r"""Mean of :math:`\cos\angle(x_i, x_j)` over pairs ``i != j``, shape ``(...)`` for ``x`` of shape ``(..., n, d)``.

    It is 1 exactly when all tokens point the same way (one cluster on the sphere after normalisation).

    Raises
    ------
    ValueError
        If ``n < 2``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> fl.diagnostics.mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    tensor(1.)
    """
    x = check_tokens(x)
    n = x.shape[-2]
    if n < 2:
        raise ValueError(f"need n >= 2 tokens; got {n}")
    u = x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    G = u @ u.mT
    return (G.sum(dim=(-2, -1)) - G.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))
