r"""Flow approximation: the constants of the Euler error bound, and residual networks with per-layer weights.

Chapter 3 of the book proves that ``L`` residual layers ``X^{l+1} = X^l + h F(X^l)`` (``h = T / L``)
stay within

.. math::

    \max_{0 \le \ell \le L} \|X^\ell - X(t_\ell)\| \le \frac{C h}{2\Lambda}\big(e^{\Lambda T} - 1\big)

of the exact flow (``C h T / 2`` when ``Lambda = 0``), in the max-over-tokens norm
``||X|| = max_i |x_i|``, as soon as ``h`` is small enough that the bound is at most the radius
``delta`` of a tube around the trajectory on which ``F`` is ``Lambda``-Lipschitz. This module
computes those constants (for softmax attention: invariant ball, Lipschitz bound on a ball, bound
on the second derivative) and runs residual networks whose weights change from layer to layer.

Conventions are flowlib's: tokens have shape ``(..., n, d)``, ``beta`` multiplies
``<Q x, K y>``, matrices act on column vectors, norms of matrices are spectral norms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_finite, check_positive_int, check_real, check_tokens
from ..stability import spectral_norm
from .regularity import invariant_radius, lipschitz_bound

__all__ = [
    "max_token_norm",
    "euler_error_bound",
    "euler_step_limit",
    "log10_euler_step_limit",
    "AttentionFlowConstants",
    "attention_flow_constants",
    "residual_network",
    "iid_layer_weights",
]


def _spectral_norm(m: Tensor | None, name: str, d: int | None = None) -> float:
    """Spectral norm of a (k, d) matrix; ``None`` means the identity (norm 1)."""
    if m is None:
        return 1.0
    if not isinstance(m, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None; got {type(m).__name__}")
    if m.ndim != 2:
        raise ValueError(f"{name} must be a matrix of shape (k, d); got {tuple(m.shape)}")
    if d is not None and m.shape[-1] != d:
        raise ValueError(f"{name} must have {d} columns; got shape {tuple(m.shape)}")
    check_finite(m, name)
    return spectral_norm(m, name=name)


def max_token_norm(x: Tensor) -> Tensor:
    r"""The max-over-tokens norm :math:`\|X\| = \max_i |x_i|` (Euclidean in :math:`\mathbb R^d`).

    Parameters
    ----------
    x : Tensor, shape (..., n, d)

    Returns
    -------
    Tensor, shape (...)
        One value per independent system.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.approximation import max_token_norm
    >>> max_token_norm(torch.tensor([[3.0, 4.0], [1.0, 0.0]]))
    tensor(5.)
    """
    x = check_tokens(x, "x")
    return torch.linalg.vector_norm(x, dim=-1).amax(dim=-1)


def _phi(lipschitz: float, t1: float) -> float:
    """(e^{Lambda T} - 1) / Lambda, continuous at Lambda = 0 (value T)."""
    if lipschitz == 0.0:
        return t1
    if lipschitz * t1 > 700.0:  # e^{700} is near the float64 limit
        return math.inf
    return math.expm1(lipschitz * t1) / lipschitz


def _log_phi(lipschitz: float, t1: float) -> float:
    """log of (e^{Lambda T} - 1) / Lambda, without overflow."""
    if lipschitz == 0.0 or lipschitz * t1 <= 700.0:
        return math.log(_phi(lipschitz, t1)) if t1 > 0 else -math.inf
    return lipschitz * t1 - math.log(lipschitz)  # log1p(-e^{-Lambda T}) is below 1e-300


def euler_error_bound(*, C: float, lipschitz: float, t1: float, h: float) -> float:
    r"""The flow approximation bound :math:`\tfrac{Ch}{2}\,\varphi(\Lambda, T)`, :math:`\varphi = (e^{\Lambda T}-1)/\Lambda`.

    With ``lipschitz = 0`` this is :math:`C h T / 2`.

    Parameters
    ----------
    C : float
        Bound on :math:`\|\ddot X\|` on ``[0, T]`` (or Lipschitz constant of :math:`\dot X`), ``C >= 0``.
    lipschitz : float
        :math:`\Lambda \ge 0`, Lipschitz constant of the field on the tube.
    t1 : float
        Horizon ``T >= 0``.
    h : float
        Step ``h > 0``.

    Raises
    ------
    ValueError
        If a constant is negative or not finite, or ``h <= 0``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.approximation import euler_error_bound
    >>> round(euler_error_bound(C=1.0, lipschitz=0.0, t1=1.0, h=0.1), 6)  # Lambda = 0: C h T / 2
    0.05
    """
    C = check_real(C, "C", nonnegative=True)
    lipschitz = check_real(lipschitz, "lipschitz", nonnegative=True)
    t1 = check_real(t1, "t1", nonnegative=True)
    h = check_real(h, "h", positive=True)
    return 0.5 * C * h * _phi(lipschitz, t1)


def euler_step_limit(*, C: float, lipschitz: float, t1: float, delta: float) -> float:
    r"""The largest step :math:`h_0` whose error bound stays inside the tube: :math:`\tfrac{C h_0}{2}\varphi(\Lambda,T) = \delta`.

    Returns ``inf`` when ``C = 0`` or ``t1 = 0`` (the bound is then 0 for every ``h``), and ``0.0``
    when :math:`h_0` underflows (use :func:`log10_euler_step_limit` to see how small it is).

    Raises
    ------
    ValueError
        If a constant is negative or not finite, or ``delta <= 0``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.approximation import euler_error_bound, euler_step_limit
    >>> h0 = euler_step_limit(C=1.0, lipschitz=1.0, t1=1.0, delta=0.01)
    >>> round(euler_error_bound(C=1.0, lipschitz=1.0, t1=1.0, h=h0), 12)  # the bound reaches the tube's width
    0.01
    """
    C = check_real(C, "C", nonnegative=True)
    lipschitz = check_real(lipschitz, "lipschitz", nonnegative=True)
    t1 = check_real(t1, "t1", nonnegative=True)
    delta = check_real(delta, "delta", positive=True)
    denom = 0.5 * C * _phi(lipschitz, t1)
    return math.inf if denom == 0.0 else delta / denom


def log10_euler_step_limit(*, C: float, lipschitz: float, t1: float, delta: float) -> float:
    r"""``log10`` of :func:`euler_step_limit`, computed without overflow (``inf`` when ``C = 0`` or ``t1 = 0``).

    Raises
    ------
    ValueError
        If a constant is negative or not finite, or ``delta <= 0``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.approximation import euler_step_limit, log10_euler_step_limit
    >>> euler_step_limit(C=1.0, lipschitz=1000.0, t1=1.0, delta=0.01)  # underflows
    0.0
    >>> round(log10_euler_step_limit(C=1.0, lipschitz=1000.0, t1=1.0, delta=0.01), 1)
    -433.0
    """
    C = check_real(C, "C", nonnegative=True)
    lipschitz = check_real(lipschitz, "lipschitz", nonnegative=True)
    t1 = check_real(t1, "t1", nonnegative=True)
    delta = check_real(delta, "delta", positive=True)
    if C == 0.0 or t1 == 0.0:
        return math.inf
    return (math.log(2.0 * delta / C) - _log_phi(lipschitz, t1)) / math.log(10.0)


@dataclass(frozen=True)
class AttentionFlowConstants:
    """Constants of the flow approximation theorem for a softmax-attention field (chapter 3).

    Attributes
    ----------
    radius0 : float
        :math:`R_0 = \\max_i |x_i(0)|`.
    radius_t : float
        :math:`R_T = R_0 e^{\\|V\\|T}`, radius of a ball containing the exact trajectory.
    delta : float
        Radius of the tube; the tube lies in the ball of radius ``radius_t + delta``.
    lipschitz : float
        :math:`\\Lambda = \\Lambda_{R_T+\\delta}`, Lipschitz constant on that ball (max-over-tokens norm).
    C : float
        :math:`C = \\Lambda_{R_T}\\,\\|V\\|\\,R_T`, a Lipschitz constant of :math:`\\dot X` on ``[0, T]``
        (hence also :math:`\\ge \\sup_{[0,T]}\\|\\ddot X\\|`).
    t1 : float
        Horizon ``T``.
    h_max : float
        Step limit :math:`h_0`: for ``h <= h_max`` the Euler iterates provably stay in the tube
        (``0.0`` if it underflows).
    log10_h_max : float
        :math:`\\log_{10} h_0`, finite even when ``h_max`` underflows.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.approximation import attention_flow_constants
    >>> c = attention_flow_constants(torch.eye(2, dtype=torch.float64), t1=1.0, delta=0.1)
    >>> type(c).__name__, c.radius0, round(c.radius_t, 6)
    ('AttentionFlowConstants', 1.0, 2.718282)
    """

    radius0: float
    radius_t: float
    delta: float
    lipschitz: float
    C: float
    t1: float
    h_max: float
    log10_h_max: float

    def bound(self, h: float) -> float:
        """Error bound for step ``h`` (valid when ``h <= h_max``)."""
        return euler_error_bound(C=self.C, lipschitz=self.lipschitz, t1=self.t1, h=h)


def attention_flow_constants(
    x0: Tensor,
    *,
    t1: float,
    delta: float,
    Q: Tensor | None = None,
    K: Tensor | None = None,
    V: Tensor | None = None,
    beta: float = 1.0,
) -> AttentionFlowConstants:
    r"""Instantiate the constants of the flow approximation theorem for softmax attention.

    Parameters
    ----------
    x0 : Tensor, shape (n, d) or (..., n, d)
        Initial tokens; :math:`R_0` is the largest token norm over all systems.
    t1 : float
        Horizon ``T >= 0``.
    delta : float
        Tube radius ``> 0``.
    Q, K, V, beta
        The attention field's parameters, as in :class:`flowlib.SoftmaxAttention` (unbatched).

    Returns
    -------
    AttentionFlowConstants

    Raises
    ------
    ValueError, TypeError
        On bad tokens or constants.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.approximation import attention_flow_constants
    >>> c = attention_flow_constants(torch.eye(2, dtype=torch.float64), t1=1.0, delta=0.1, beta=0.5)
    >>> c.h_max > 0, c.lipschitz > 0, c.C > 0
    (True, True, True)
    """
    x0 = check_tokens(x0, "x0")
    check_finite(x0, "x0")
    t1 = check_real(t1, "t1", nonnegative=True)
    delta = check_real(delta, "delta", positive=True)
    r0 = float(max_token_norm(x0).max())
    # chapter 2's invariant ball and Lipschitz bound (flowlib.book.regularity), in the max-over-tokens norm
    r_t = invariant_radius(r0, t1, V)
    lam_t = lipschitz_bound(r_t, beta, Q, K, V)
    lam = lipschitz_bound(r_t + delta, beta, Q, K, V)
    C = lam_t * _spectral_norm(V, "V") * r_t
    h_max = euler_step_limit(C=C, lipschitz=lam, t1=t1, delta=delta)
    log10_h = log10_euler_step_limit(C=C, lipschitz=lam, t1=t1, delta=delta)
    return AttentionFlowConstants(r0, r_t, delta, lam, C, t1, h_max, log10_h)


def residual_network(
    layer: Callable[[Tensor, int], Tensor],
    x0: Tensor,
    *,
    t1: float,
    n_layers: int,
) -> Tensor:
    r"""Run ``n_layers`` residual layers with per-layer maps: :math:`x^{\ell+1} = x^\ell + h\,\mathrm{layer}(x^\ell, \ell)`.

    ``h = t1 / n_layers``. Layer ``l`` may use its own weights (``layer`` receives the layer index),
    which is what a trained transformer does; with one map for every layer this is forward Euler.

    Parameters
    ----------
    layer : callable
        ``layer(x, l) -> v`` with ``x`` and ``v`` of shape ``(..., n, d)`` and ``l`` in ``0..n_layers-1``.
    x0 : Tensor, shape (..., n, d)
    t1 : float
        Depth of the network in continuous time, ``> 0``.
    n_layers : int
        ``L >= 1``.

    Returns
    -------
    Tensor, shape (n_layers + 1, ..., n, d)
        All hidden states, ``[x^0, ..., x^L]``.

    Raises
    ------
    TypeError
        If ``layer`` is not callable or ``x0`` is not a floating tensor.
    ValueError
        If ``n_layers < 1``, ``t1 <= 0``, or a layer returns a tensor of the wrong shape.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.approximation import residual_network
    >>> xs = residual_network(lambda x, layer: -x, torch.ones(1, 1, dtype=torch.float64), t1=1.0, n_layers=4)
    >>> xs.shape, xs[-1].item()  # (1 - 1/4)^4
    (torch.Size([5, 1, 1]), 0.31640625)
    """
    if not callable(layer):
        raise TypeError(f"layer must be callable, layer(x, l) -> v; got {type(layer).__name__}")
    x0 = check_tokens(x0, "x0")
    n_layers = check_positive_int(n_layers, "n_layers")
    t1 = check_real(t1, "t1", positive=True)
    h = t1 / n_layers
    out = torch.empty((n_layers + 1, *x0.shape), dtype=x0.dtype, device=x0.device)
    out[0] = x0
    x = x0
    for ell in range(n_layers):
        v = layer(x, ell)
        if not isinstance(v, Tensor) or v.shape != x.shape:
            got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"layer must return a tensor of shape {tuple(x.shape)}; got {got} at layer {ell}")
        x = x + h * v
        out[ell + 1] = x
    return out


def iid_layer_weights(
    mean: Tensor,
    std: float,
    n_layers: int,
    *,
    t1: float = 1.0,
    regime: str = "ode",
    gamma: float | None = None,
    batch_shape: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Independent per-layer weights :math:`\theta_\ell = \bar\theta + \sigma h^{-\gamma} Z_\ell`, :math:`Z_\ell` i.i.d. standard Gaussian.

    Used in a residual layer :math:`x + h F_{\theta_\ell}(x)` with ``h = t1 / n_layers``:

    - ``regime="ode"`` (:math:`\gamma = 0`): the fluctuations average out (law of large numbers) and the
      network converges to the ODE of the mean weights, with an error of order :math:`h^{1/2}`;
    - ``gamma`` in :math:`(0, \tfrac12)`: still an ODE limit, with an error of order :math:`h^{1/2-\gamma}`
      (chapter 3: the rates form a continuum);
    - ``regime="sde"`` (:math:`\gamma = \tfrac12`): the fluctuation of one layer is of order
      :math:`h^{1/2}` and the network converges in law to a stochastic differential equation.

    Parameters
    ----------
    mean : Tensor, shape (p, q)
        Mean weight matrix :math:`\bar\theta`.
    std : float
        :math:`\sigma \ge 0`.
    n_layers : int
        ``L >= 1``.
    t1 : float
        Depth ``T > 0`` (sets ``h``).
    regime : {"ode", "sde"}
        Shorthand for ``gamma = 0`` and ``gamma = 1/2``; ignored when ``gamma`` is given.
    gamma : float, optional
        Noise exponent :math:`\gamma \ge 0`: the fluctuations are scaled by :math:`h^{-\gamma}`.
    batch_shape : tuple of int
        Independent draws (e.g. several networks at once).
    generator : torch.Generator, optional

    Returns
    -------
    Tensor, shape (n_layers, *batch_shape, p, q)
        Same dtype and device as ``mean``.

    Raises
    ------
    ValueError
        If ``mean`` is not a matrix, ``std < 0``, ``t1 <= 0``, ``gamma < 0`` or ``regime`` is unknown.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.approximation import iid_layer_weights
    >>> W = iid_layer_weights(torch.eye(2, dtype=torch.float64), 0.1, 8, generator=torch.Generator().manual_seed(0))
    >>> W.shape, W.dtype
    (torch.Size([8, 2, 2]), torch.float64)
    >>> Z = torch.zeros(1, 1, dtype=torch.float64)  # gamma = 1/4 with h = 1/16: the noise is scaled by 16^{1/4} = 2
    >>> W = iid_layer_weights(Z, 1.0, 16, gamma=0.25, batch_shape=(4000,), generator=torch.Generator().manual_seed(0))
    >>> round(W.std().item(), 1)
    2.0
    """
    if not isinstance(mean, Tensor):
        raise TypeError(f"mean must be a torch.Tensor of shape (p, q); got {type(mean).__name__}")
    if mean.ndim != 2:
        raise ValueError(f"mean must be a matrix of shape (p, q); got {tuple(mean.shape)}")
    std = check_real(std, "std", nonnegative=True)
    n_layers = check_positive_int(n_layers, "n_layers")
    t1 = check_real(t1, "t1", positive=True)
    if regime not in ("ode", "sde"):
        raise ValueError(f"regime must be 'ode' or 'sde'; got {regime!r}")
    if gamma is None:
        gamma = 0.0 if regime == "ode" else 0.5
    gamma = check_real(gamma, "gamma", nonnegative=True)
    batch_shape = tuple(int(b) for b in batch_shape)
    scale = std * (t1 / n_layers) ** (-gamma)
    draw_on = generator.device if generator is not None else mean.device  # a CUDA generator draws on CUDA
    z = torch.randn((n_layers, *batch_shape, *mean.shape), generator=generator, dtype=mean.dtype, device=draw_on)
    return mean + scale * z.to(mean.device)
