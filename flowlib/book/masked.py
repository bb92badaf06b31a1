r"""Masked (causal) attention as a mean-field model: positions, conditional laws and their distances.

With a causal mask, token :math:`i` attends to tokens :math:`j \le i` only, so the order of the tokens
matters and the empirical measure of the features alone no longer determines the dynamics. Chapter 8
of the book attaches to each token its position :math:`s_i = i/n` and works with measures :math:`\mu` on
:math:`[0,1]\times\mathbb R^d`; the causal velocity of such a measure is

.. math::

    \Gamma_\mu(s, x) = \frac{\int_{s' \le s} e^{\beta\langle Qx, Ky\rangle}\, Vy \, d\mu(s', y)}
                            {\int_{s' \le s} e^{\beta\langle Qx, Ky\rangle}\, d\mu(s', y)}.

This module evaluates that velocity for a weighted sample of :math:`\mu` at arbitrary query points
(:func:`causal_velocity`; :func:`flowlib.pde.measure_velocity` does not model positions), gives the exact
position profile of the chapter's causal Gaussian closure (:func:`cesaro_profile`), and measures
distances between conditional laws: the bin-averaged conditional :math:`W_1` of a one-dimensional feature
against a reference law (:func:`binned_conditional_w1`) and :math:`W_1(\delta_z, \mathcal N(m, \sigma^2))`
(:func:`w1_dirac_normal`).

Conventions are flowlib's: tokens ``(..., n, d)``, ``beta`` multiplies :math:`\langle Qx, Ky\rangle`,
matrices act on column vectors, and a query with no admissible key has velocity 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._validation import check_positive_int, check_real

__all__ = ["causal_velocity", "cesaro_profile", "binned_conditional_w1", "w1_dirac_normal"]


def _check_float(t: object, name: str, ndim: int | None = None) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a real floating dtype; got {t.dtype}")
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s); got shape {tuple(t.shape)}")
    return t


def _matrix(M: Tensor | None, d: int, name: str, like: Tensor) -> Tensor:
    if M is None:
        return torch.eye(d, dtype=like.dtype, device=like.device)
    M = _check_float(M, name, ndim=2).to(like)
    if M.shape[-1] != d:
        raise ValueError(f"{name} must have d = {d} columns; got shape {tuple(M.shape)}")
    return M


def causal_velocity(
    s: Tensor,
    x: Tensor,
    key_s: Tensor,
    y: Tensor,
    *,
    Q: Tensor | None = None,
    K: Tensor | None = None,
    V: Tensor | None = None,
    beta: float = 1.0,
    weights: Tensor | None = None,
) -> Tensor:
    r"""Causal velocity :math:`\Gamma_\mu(s, x)` of :math:`\mu = \sum_j w_j\,\delta_{(s'_j, y_j)}` at query points.

    Parameters
    ----------
    s : Tensor, shape (m,)
        Positions of the queries.
    x : Tensor, shape (m, d)
        Features of the queries.
    key_s : Tensor, shape (n,)
        Positions of the atoms of :math:`\mu`.
    y : Tensor, shape (n, d)
        Features of the atoms of :math:`\mu`.
    Q, K : Tensor, shape (k, d), optional
        Query and key matrices (``None`` = identity).
    V : Tensor, shape (d, d), optional
        Value matrix (``None`` = identity).
    beta : float
        Multiplies :math:`\langle Qx, Ky\rangle`.
    weights : Tensor, shape (n,), optional
        Non-negative masses (any total; uniform if omitted).

    Returns
    -------
    Tensor, shape (m, d)
        :math:`\Gamma_\mu(s_i, x_i)`; 0 where no atom has position :math:`\le s_i`.

    Notes
    -----
    With ``s = key_s = (1, ..., n)/n`` and ``x = y`` this is causal softmax attention,
    ``flowlib.SoftmaxAttention(Q, K, V, beta, causal=True)(x)``; with all positions equal it is
    unmasked attention. The cost is O(m n) memory and time (dense).

    Raises
    ------
    TypeError
        If an input is not a real floating tensor.
    ValueError
        On mismatched shapes, negative weights or a non-finite ``beta``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.masked import causal_velocity
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(5, 2, generator=g, dtype=torch.float64)
    >>> s = torch.arange(1, 6, dtype=torch.float64) / 5  # positions i/n
    >>> v = causal_velocity(s, x, s, x, beta=2.0)
    >>> torch.allclose(v[0], x[0])  # the first token attends to itself only
    True
    >>> torch.allclose(v, fl.SoftmaxAttention(beta=2.0, causal=True)(x))  # causal softmax attention
    True
    >>> w = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    >>> twice = causal_velocity(s, x, torch.cat([s[:1], s]), torch.cat([x[:1], x]))
    >>> torch.allclose(causal_velocity(s, x, s, x, weights=w), twice)  # mass 2 = the atom counted twice
    True
    >>> causal_velocity(torch.zeros(1, dtype=torch.float64), x[:1], s, x)  # no atom at a position <= 0
    tensor([[0., 0.]], dtype=torch.float64)
    """
    s = _check_float(s, "s", ndim=1)
    key_s = _check_float(key_s, "key_s", ndim=1).to(s)
    x = _check_float(x, "x", ndim=2)
    y = _check_float(y, "y", ndim=2).to(x)
    if x.shape[0] != s.shape[0] or y.shape[0] != key_s.shape[0]:
        raise ValueError(
            f"s {tuple(s.shape)} must match x {tuple(x.shape)} and key_s {tuple(key_s.shape)} must match y "
            f"{tuple(y.shape)} in their first dimension"
        )
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension d; got {x.shape[1]} and {y.shape[1]}")
    beta = check_real(beta, "beta")
    d = x.shape[1]
    Qm, Km, Vm = _matrix(Q, d, "Q", x), _matrix(K, d, "K", x), _matrix(V, d, "V", x)
    if Qm.shape != Km.shape:
        raise ValueError(f"Q and K must have the same shape (k, d); got {tuple(Qm.shape)} and {tuple(Km.shape)}")
    if Vm.shape != (d, d):
        raise ValueError(f"V must have shape ({d}, {d}); got {tuple(Vm.shape)}")
    logits = beta * (x @ Qm.T) @ (y @ Km.T).T  # (m, n)
    if weights is not None:
        w = _check_float(weights, "weights", ndim=1).to(x)
        if w.shape[0] != y.shape[0]:
            raise ValueError(f"weights must have shape ({y.shape[0]},); got {tuple(w.shape)}")
        if bool((w < 0).any()):
            raise ValueError("weights must be non-negative")
        logits = logits + torch.log(w)  # log 0 = -inf: atoms of zero mass are ignored
    allowed = key_s.unsqueeze(0) <= s.unsqueeze(1)  # (m, n)
    logits = logits.masked_fill(~allowed, float("-inf"))
    empty = torch.isinf(logits).all(dim=1, keepdim=True)  # no admissible atom: velocity 0
    P = torch.softmax(logits.masked_fill(empty, 0.0), dim=1).masked_fill(empty, 0.0)
    return P @ (y @ Vm.T)


def cesaro_profile(coeffs: Sequence[float] | Tensor, s: Tensor, t: float, *, rate: float = 1.0) -> Tensor:
    r"""Solution of :math:`\partial_t m(t, s) = \frac{\text{rate}}{s}\int_0^s m(t, s')\,ds'` from a polynomial profile.

    The Cesàro (running-average) operator :math:`(\mathcal C m)(s) = \frac1s\int_0^s m` maps :math:`s^k` to
    :math:`s^k/(k+1)`, so from :math:`m(0, s) = \sum_k c_k s^k` the solution is

    .. math::

        m(t, s) = \sum_k c_k\, e^{\text{rate}\, t/(k+1)}\, s^k .

    In the chapter this is the mean profile of the invisible coordinate in the causal Gaussian closure.

    Parameters
    ----------
    coeffs : sequence of float or Tensor, shape (K,)
        :math:`c_0, \dots, c_{K-1}`.
    s : Tensor, shape (...)
        Positions in :math:`(0, 1]`.
    t : float
        Time (any real number; the formula is exact backwards too).
    rate : float
        The factor in front of the running average (an eigenvalue of the value matrix).

    Returns
    -------
    Tensor, shape like ``s``
        :math:`m(t, s)`.

    Examples
    --------
    >>> import math, torch
    >>> from flowlib.book.masked import cesaro_profile
    >>> s = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
    >>> cesaro_profile([1.0, 2.0], s, 0.0)  # t = 0: the initial profile 1 + 2 s
    tensor([1.5000, 2.0000, 3.0000], dtype=torch.float64)
    >>> m = cesaro_profile([1.0, 2.0], s, 1.0)
    >>> torch.allclose(m, math.e + 2 * math.exp(0.5) * s)  # s^k grows like exp(t / (k + 1))
    True
    >>> h = 1e-6  # the equation: dm/dt = (1/s) int_0^s m(t, s') ds' = e + e^(1/2) s at t = 1
    >>> dm = (cesaro_profile([1.0, 2.0], s, 1.0 + h) - cesaro_profile([1.0, 2.0], s, 1.0 - h)) / (2 * h)
    >>> torch.allclose(dm, math.e + math.exp(0.5) * s)
    True
    """
    s = _check_float(s, "s")
    t = check_real(t, "t")
    rate = check_real(rate, "rate")
    c = torch.as_tensor(coeffs, dtype=s.dtype, device=s.device)
    if c.ndim != 1 or c.numel() < 1:
        raise ValueError(f"coeffs must be a non-empty 1-D sequence; got shape {tuple(c.shape)}")
    k = torch.arange(c.numel(), dtype=s.dtype, device=s.device)
    growth = torch.exp(rate * t / (k + 1.0))
    return ((c * growth) * s.unsqueeze(-1) ** k).sum(dim=-1)


def binned_conditional_w1(
    s: Tensor,
    x: Tensor,
    ref_cdf: Callable[[Tensor, Tensor], Tensor],
    *,
    n_bins: int = 8,
    grid: Tensor | None = None,
    n_quad: int = 16,
) -> Tensor:
    r"""Bin-averaged conditional :math:`W_1` between one-dimensional features and a reference law.

    The positions :math:`[0, 1]` are cut into ``n_bins`` equal bins :math:`I_b`. In each bin the empirical law
    of the features of the tokens with :math:`s_i \in I_b` is compared with the bin average of the reference
    conditional laws, :math:`\bar\mu_b = \frac{1}{|I_b|}\int_{I_b}\mu_s\,ds`, through
    :math:`W_1 = \int |F_{\rm emp}(z) - F_{\bar\mu_b}(z)|\,dz`; the result is the mean over the bins.

    Parameters
    ----------
    s : Tensor, shape (n,)
        Positions in :math:`(0, 1]`.
    x : Tensor, shape (..., n)
        One feature per token; leading dimensions are independent sequences (the result is averaged over them).
    ref_cdf : callable
        ``ref_cdf(z, s)`` returns the CDF of :math:`\mu_s` at ``z``, broadcasting ``z`` of shape ``(G, 1)`` against
        ``s`` of shape ``(q,)`` to ``(G, q)``.
    n_bins : int
        Number of equal position bins.
    grid : Tensor, shape (G,), optional
        Increasing integration grid in :math:`z`; it must cover the samples and the bulk of the reference laws
        (default: 4001 points spanning the samples plus a margin of half their range).
    n_quad : int
        Midpoint-rule nodes per bin for the bin average of the reference CDF.

    Returns
    -------
    Tensor, scalar
        The mean over the bins (and over the leading dimensions of ``x``) of the bin's :math:`W_1`.

    Raises
    ------
    ValueError
        On mismatched shapes, a bin with no token, or a grid that is not increasing.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book.masked import binned_conditional_w1
    >>> n = 400
    >>> s = torch.arange(1, n + 1, dtype=torch.float64) / n
    >>> uniform_cdf = lambda z, q: z.clamp(0, 1) + 0 * q  # mu_s = Unif[0, 1] at every position
    >>> grid = torch.linspace(-1.0, 2.0, 3001, dtype=torch.float64)
    >>> half = torch.full((n,), 0.5, dtype=torch.float64)
    >>> round(binned_conditional_w1(s, half, uniform_cdf, n_bins=4, grid=grid).item(), 6)  # W1(delta_1/2, Unif) = 1/4
    0.25
    >>> g = torch.Generator().manual_seed(0)
    >>> u = torch.rand(n, generator=g, dtype=torch.float64)  # an i.i.d. sample of the reference law
    >>> binned_conditional_w1(s, u, uniform_cdf, n_bins=4, grid=grid).item() < 0.05  # 100 tokens per bin
    True
    """
    s = _check_float(s, "s", ndim=1)
    x = _check_float(x, "x")
    if x.shape[-1] != s.shape[0]:
        raise ValueError(f"x must have shape (..., n) with n = {s.shape[0]}; got {tuple(x.shape)}")
    n_bins = check_positive_int(n_bins, "n_bins")
    n_quad = check_positive_int(n_quad, "n_quad")
    xs = x.reshape(-1, s.shape[0])
    if grid is None:
        lo, hi = float(xs.min()), float(xs.max())
        pad = 0.5 * (hi - lo) + 1e-12
        grid = torch.linspace(lo - pad, hi + pad, 4001, dtype=x.dtype, device=x.device)
    grid = _check_float(grid, "grid", ndim=1).to(x)
    if grid.numel() < 2 or bool((grid[1:] <= grid[:-1]).any()):
        raise ValueError("grid must be a strictly increasing 1-D tensor with at least 2 points")
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=s.dtype, device=s.device)
    total = torch.zeros((), dtype=x.dtype, device=x.device)
    for b in range(n_bins):
        a, c = edges[b], edges[b + 1]
        inside = (s > a) & (s <= c) if b > 0 else (s >= a) & (s <= c)
        if not bool(inside.any()):
            raise ValueError(f"position bin {b} ({float(a):.3g}, {float(c):.3g}] holds no token; use fewer bins")
        nodes = a + (c - a) * (torch.arange(n_quad, dtype=s.dtype, device=s.device) + 0.5) / n_quad
        F_ref = ref_cdf(grid.unsqueeze(-1), nodes).mean(dim=-1)  # (G,)
        samples = xs[:, inside]  # (R, k)
        F_emp = (samples.unsqueeze(-1) <= grid).to(x.dtype).mean(dim=-2)  # (R, G)
        total = total + torch.trapezoid((F_emp - F_ref).abs(), grid, dim=-1).mean()
    return total / n_bins


def w1_dirac_normal(z: Tensor, mean: Tensor | float, std: Tensor | float) -> Tensor:
    r""":math:`W_1(\delta_z, \mathcal N(m, \sigma^2))` on the line, i.e. :math:`\mathbb E|z - m - \sigma Z|`.

    With :math:`c = z - m`: :math:`\ \sigma\sqrt{2/\pi}\,e^{-c^2/(2\sigma^2)} + c\,(1 - 2\Phi(-c/\sigma))`, a folded normal mean.
    Its minimum over :math:`z` is :math:`\sigma\sqrt{2/\pi}`, at :math:`z = m`: a single point never approximates a
    Gaussian law.

    Parameters
    ----------
    z : Tensor, shape (...)
        Positions of the Dirac masses.
    mean, std : Tensor or float, broadcastable to ``z``
        Mean :math:`m` and standard deviation :math:`\sigma` of the normal law, ``std > 0``.

    Returns
    -------
    Tensor, shape (...)
        :math:`W_1(\delta_z, \mathcal N(m, \sigma^2))`.

    Raises
    ------
    ValueError
        If some ``std <= 0``.

    Examples
    --------
    >>> import math, torch
    >>> from flowlib.book.masked import w1_dirac_normal
    >>> z = torch.tensor([1.0, 0.0, 11.0], dtype=torch.float64)
    >>> w = w1_dirac_normal(z, 1.0, 2.0)
    >>> math.isclose(w[0].item(), 2.0 * math.sqrt(2.0 / math.pi))  # the minimum sigma sqrt(2/pi), at z = m
    True
    >>> round(w[2].item(), 4)  # far from m it is about |z - m|
    10.0
    >>> g = torch.Generator().manual_seed(0)
    >>> Z = torch.randn(100_000, generator=g, dtype=torch.float64)
    >>> abs(w[1].item() - (0.0 - 1.0 - 2.0 * Z).abs().mean().item()) < 0.02  # Monte Carlo E|z - m - sigma Z|
    True
    """
    z = _check_float(z, "z")
    mean = torch.as_tensor(mean, dtype=z.dtype, device=z.device)
    std = torch.as_tensor(std, dtype=z.dtype, device=z.device)
    if bool((std <= 0).any()):
        raise ValueError("std must be positive")
    c = z - mean
    u = c / std
    Phi = 0.5 * torch.erfc(u / math.sqrt(2.0))  # Phi(-u)
    return std * math.sqrt(2.0 / math.pi) * torch.exp(-0.5 * u**2) + c * (1.0 - 2.0 * Phi)
