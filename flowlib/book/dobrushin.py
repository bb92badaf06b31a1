r"""Constants and sampling rates for the mean-field limit of softmax attention (Chapter 6).

The mean-field velocity of softmax attention is

.. math::

    \Gamma_\mu(x) = \frac{\int e^{\langle Ax, y\rangle} V y \, d\mu(y)}{\int e^{\langle Ax, y\rangle}\, d\mu(y)},
    \qquad A = \beta K^\top Q .

For measures supported in the closed ball :math:`B_R` (and queries :math:`|x| \le R`) Chapter 6 proves

* :math:`|\Gamma_\mu(x)| \le \|V\| R` (``speed``);
* :math:`\operatorname{Lip}(x \mapsto \Gamma_\mu(x)) \le \|V\|\,\|A\|\,R^2` on all of :math:`\mathbb R^d` (``lip_x``);
* :math:`|\Gamma_\mu(x) - \Gamma_\nu(x)| \le \|V\|(1 + 2\|A\|R^2)\,e^{2\|A\|R^2}\,W_1(\mu, \nu)` (``lip_mu``);

and, with :math:`R_T = R e^{\|V\| T}`, the Dobrushin estimate
:math:`W_1(\mu_t, \nu_t) \le e^{C t} W_1(\mu_0, \nu_0)` for :math:`t \le T` with
:math:`C = \mathrm{lip\_x}(R_T) + \mathrm{lip\_mu}(R_T)` (:func:`dobrushin_constant`). Norms are spectral norms.

The sampling side: :func:`w1_to_uniform_1d` is the exact :math:`W_1` between an empirical measure on the line and
the uniform law on :math:`[0, 1]`, :func:`two_sample_study` measures :math:`\mathbb E\,W_1` (exact, by POT) and the
sliced :math:`SW_1` between two independent samples of size :math:`N`, and :func:`cube_lower_bound` is the
deterministic lower bound :math:`W_1(\mu^N, \mathrm{Unif}[0,1]^d) \ge \frac12 (2N\omega_d)^{-1/d}` valid for every
:math:`N`-point measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_positive_int, check_real
from ..convergence import fit_slope
from ..gaussian import score_matrix
from ..stability import spectral_norm

__all__ = [
    "AttentionConstants",
    "attention_constants",
    "dobrushin_constant",
    "w1_to_uniform_1d",
    "cube_lower_bound",
    "TwoSampleStudy",
    "two_sample_study",
]


@dataclass(frozen=True)
class AttentionConstants:
    r"""Bounds for :math:`\Gamma_\mu` on measures supported in :math:`B_R` (see the module docstring).

    Returned by :func:`attention_constants`; norms are spectral norms and :math:`A = \beta K^\top Q`.

    Attributes
    ----------
    R : float
        Support radius.
    speed : float
        :math:`\|V\| R \ge |\Gamma_\mu(x)|`.
    lip_x : float
        :math:`\|V\|\,\|A\|\,R^2`, a Lipschitz constant of :math:`x \mapsto \Gamma_\mu(x)`.
    lip_mu : float
        :math:`\|V\|(1 + 2\|A\|R^2)\,e^{2\|A\|R^2}`, a Lipschitz constant of :math:`\mu \mapsto \Gamma_\mu(x)`
        for :math:`W_1` (``inf`` when the exponential overflows a float).

    Examples
    --------
    >>> from flowlib.book.dobrushin import attention_constants
    >>> c = attention_constants(1.0)  # Q = K = V = I, beta = 1
    >>> type(c).__name__, c.R, c.speed, c.lip_x, round(c.lip_mu, 6)  # lip_mu = 3 e^2
    ('AttentionConstants', 1.0, 1.0, 1.0, 22.167168)
    """

    R: float
    speed: float
    lip_x: float
    lip_mu: float


def _norm(M: Tensor | None, name: str) -> float:
    if isinstance(M, Tensor) and M.ndim != 2:
        raise ValueError(f"{name} must be a matrix; got shape {tuple(M.shape)}")
    return spectral_norm(M, name=name)


def _score_norm(Q: Tensor | None, K: Tensor | None, beta: float) -> float:
    if Q is None and K is None:
        return beta
    if Q is None or K is None:
        M = Q if K is None else K.T  # K^T Q with the other factor the identity
        return beta * _norm(M, "Q" if K is None else "K")
    for M, name in ((Q, "Q"), (K, "K")):
        if not isinstance(M, Tensor) or M.ndim != 2:
            raise TypeError(f"{name} must be a (k, d) torch.Tensor")
    if Q.shape != K.shape:
        raise ValueError(f"Q and K must have the same shape (k, d); got {tuple(Q.shape)} and {tuple(K.shape)}")
    return beta * _norm(score_matrix(Q.to(torch.float64), K.to(torch.float64)), "K^T Q")


def attention_constants(
    R: float, *, Q: Tensor | None = None, K: Tensor | None = None, V: Tensor | None = None, beta: float = 1.0
) -> AttentionConstants:
    r"""Speed and Lipschitz bounds of :math:`\Gamma_\mu` for measures supported in the ball :math:`B_R`.

    Parameters
    ----------
    R : float
        Support radius, > 0.
    Q, K : Tensor, shape (k, d), optional
        Query and key matrices (identity if ``None``); only :math:`\|A\| = \beta\|K^\top Q\|` enters.
    V : Tensor, shape (d, d), optional
        Value matrix (identity if ``None``).
    beta : float
        Inverse temperature, >= 0.

    Returns
    -------
    AttentionConstants
        ``speed`` :math:`= \|V\|R`, ``lip_x`` :math:`= \|V\|\|A\|R^2`,
        ``lip_mu`` :math:`= \|V\|(1 + 2\|A\|R^2)e^{2\|A\|R^2}` (for queries with :math:`|x| \le R`); ``inf``
        when the exponential overflows a float.

    Raises
    ------
    ValueError
        If ``R <= 0``, ``beta < 0`` or the shapes are not matrices.
    TypeError
        If a matrix is not a tensor.

    Examples
    --------
    >>> import math, torch
    >>> from flowlib.book.dobrushin import attention_constants
    >>> c = attention_constants(2.0, V=2 * torch.eye(2), beta=0.5)  # ||V|| = 2, ||A|| = 1/2
    >>> c.speed, c.lip_x  # ||V|| R and ||V|| ||A|| R^2
    (4.0, 4.0)
    >>> math.isclose(c.lip_mu, 2 * (1 + 4) * math.exp(4))  # ||V|| (1 + 2 ||A|| R^2) exp(2 ||A|| R^2)
    True
    >>> attention_constants(100.0).lip_mu  # exp(2 ||A|| R^2) overflows a float
    inf
    """
    R = check_real(R, "R", positive=True)
    beta = check_real(beta, "beta", nonnegative=True)
    a = _score_norm(Q, K, beta)
    v = _norm(V, "V")
    return AttentionConstants(
        R=R,
        speed=v * R,
        lip_x=v * a * R**2,
        lip_mu=v * (1 + 2 * a * R**2) * _exp(2 * a * R**2),
    )


def _exp(z: float) -> float:
    """``exp(z)``, or ``inf`` where it overflows a float (the bounds are astronomically large there anyway)."""
    return math.exp(z) if z < 709.0 else math.inf


def dobrushin_constant(
    R: float,
    T: float,
    *,
    Q: Tensor | None = None,
    K: Tensor | None = None,
    V: Tensor | None = None,
    beta: float = 1.0,
) -> tuple[float, float]:
    r"""Support radius :math:`R_T = R e^{\|V\|T}` and rate :math:`C` of :math:`W_1(\mu_t,\nu_t) \le e^{Ct}W_1(\mu_0,\nu_0)`.

    Parameters
    ----------
    R : float
        Radius of a ball containing both initial supports, > 0.
    T : float
        Time horizon, >= 0.
    Q, K, V, beta
        As in :func:`attention_constants`.

    Returns
    -------
    (R_T, C) : tuple of float
        ``C = lip_x(R_T) + lip_mu(R_T)``.

    Examples
    --------
    >>> import math
    >>> from flowlib.book.dobrushin import dobrushin_constant
    >>> RT, C = dobrushin_constant(1.0, 0.0)  # Q = K = V = I, beta = 1
    >>> RT, round(C, 6)  # lip_x + lip_mu = 1 + 3 e^2
    (1.0, 23.167168)
    >>> RT, C = dobrushin_constant(1.0, 2.0, beta=0.0)  # beta = 0: Gamma_mu = V (mean of mu), whatever x
    >>> math.isclose(RT, math.exp(2.0)), C  # R_T = R exp(||V|| T); C = lip_mu = ||V||
    (True, 1.0)
    """
    R = check_real(R, "R", positive=True)
    T = check_real(T, "T", nonnegative=True)
    RT = R * math.exp(_norm(V, "V") * T)
    c = attention_constants(RT, Q=Q, K=K, V=V, beta=beta)
    return RT, c.lip_x + c.lip_mu


def w1_to_uniform_1d(x: Tensor) -> Tensor:
    r"""Exact :math:`W_1(\frac1N\sum_i\delta_{x_i}, \mathrm{Unif}[0,1]) = \int_0^1 |F_N(t) - t|\,dt`.

    Parameters
    ----------
    x : Tensor, shape (..., N)
        Points on the line (any real values; batched over leading dimensions).

    Returns
    -------
    Tensor, shape (...)
        The distance, one per sample.

    Raises
    ------
    TypeError
        If ``x`` is not a tensor.
    ValueError
        If ``x`` is empty or not finite.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book.dobrushin import w1_to_uniform_1d
    >>> N = 10
    >>> mid = (torch.arange(N, dtype=torch.float64) + 0.5) / N  # the midpoints of N equal cells
    >>> round(w1_to_uniform_1d(mid).item(), 12)  # 1/(4N), the best any N points can do
    0.025
    >>> w1_to_uniform_1d(torch.tensor([2.0]))  # E|2 - U| = 3/2
    tensor(1.5000)
    >>> g = torch.Generator().manual_seed(0)
    >>> w = w1_to_uniform_1d(torch.rand(3, 1000, generator=g, dtype=torch.float64))  # three samples at once
    >>> w.shape, bool((w < 0.05).all())  # O(N^(-1/2)) for an i.i.d. sample
    (torch.Size([3]), True)
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must have shape (..., N) with N >= 1; got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite")
    n = x.shape[-1]
    xs, _ = torch.sort(x, dim=-1)
    # W1 on the line = int_0^1 |F_N^{-1}(s) - s| ds; F_N^{-1} = x_(i) on ((i-1)/N, i/N]
    lo = torch.arange(n, dtype=x.dtype, device=x.device) / n
    hi = lo + 1.0 / n

    def prim(c: Tensor, s: Tensor) -> Tensor:  # an antiderivative of |c - s| in s
        return 0.5 * (s - c) * (s - c).abs()

    return (prim(xs, hi) - prim(xs, lo)).sum(-1)


def cube_lower_bound(N: int, d: int) -> float:
    r"""Lower bound :math:`\frac12(2N\omega_d)^{-1/d}` on :math:`W_1(\nu, \mathrm{Unif}[0,1]^d)` for any ``N``-point :math:`\nu`.

    :math:`\omega_d = \pi^{d/2}/\Gamma(d/2+1)` is the volume of the unit ball.

    Parameters
    ----------
    N : int
        Number of points, >= 1.
    d : int
        Dimension, >= 1.

    Returns
    -------
    float

    Examples
    --------
    >>> import math
    >>> from flowlib.book.dobrushin import cube_lower_bound
    >>> round(cube_lower_bound(10, 1), 12)  # omega_1 = 2: 1/(8N), half of what the N midpoints reach
    0.0125
    >>> math.isclose(cube_lower_bound(100, 2), 0.5 / math.sqrt(200 * math.pi))  # omega_2 = pi
    True
    """
    N = check_positive_int(N, "N")
    d = check_positive_int(d, "d")
    omega = math.pi ** (d / 2) / math.gamma(d / 2 + 1)
    return 0.5 * (2 * N * omega) ** (-1.0 / d)


@dataclass(frozen=True)
class TwoSampleStudy:
    """Result of :func:`two_sample_study`: mean distances between two independent ``N``-samples.

    ``w1_slope`` and ``sliced_slope`` are least-squares slopes of log-distance against log ``N`` (negative).

    Attributes
    ----------
    sizes : tuple of int
        The sample sizes ``N``.
    w1 : tuple of float
        Mean exact :math:`W_1` for each size.
    sliced : tuple of float
        Mean sliced :math:`SW_1` for each size.
    w1_slope : float
        Fitted rate of ``w1``: it decays like ``N ** w1_slope``.
    sliced_slope : float
        Fitted rate of ``sliced``: it decays like ``N ** sliced_slope``.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book.dobrushin import two_sample_study
    >>> uniform = lambda N, gen: torch.rand(N, 1, generator=gen, dtype=torch.float64)
    >>> study = two_sample_study(uniform, [16, 64], n_reps=4, generator=torch.Generator().manual_seed(0))
    >>> type(study).__name__, study.sizes, len(study.w1), len(study.sliced), study.w1_slope < 0
    ('TwoSampleStudy', (16, 64), 2, 2, True)
    """

    sizes: tuple[int, ...]
    w1: tuple[float, ...]
    sliced: tuple[float, ...]
    w1_slope: float
    sliced_slope: float


def two_sample_study(
    sample: Callable[[int, torch.Generator], Tensor],
    sizes: Sequence[int],
    *,
    n_reps: int | Sequence[int],
    generator: torch.Generator,
    n_projections: int = 64,
    sliced_reps: int | Sequence[int] | None = None,
) -> TwoSampleStudy:
    r"""Mean exact :math:`W_1` and sliced :math:`SW_1` between two independent samples of each size.

    Since :math:`\mathbb E W_1(\mu^N,\mu) \le \mathbb E W_1(\mu^N,\nu^N) \le 2\,\mathbb E W_1(\mu^N,\mu)` for an
    independent copy :math:`\nu^N`, the two-sample distance has the rate of the one-sample distance, with no
    reference-sample bias.

    Parameters
    ----------
    sample : callable
        ``sample(N, generator)`` returns ``N`` i.i.d. points, shape ``(N, d)``.
    sizes : sequence of int
        Sample sizes ``N`` (at least two).
    n_reps : int or sequence of int
        Independent pairs averaged per size (one number, or one per size).
    generator : torch.Generator
        Source of all randomness (the samples and the projection directions).
    n_projections : int
        Directions of the sliced distance (the same directions for every pair).
    sliced_reps : int or sequence of int, optional
        Pairs averaged for the sliced distance (default: the same pairs as the exact one). The sliced distance
        is cheap, so more pairs can be afforded; if given, the sliced distance uses its own fresh pairs.

    Notes
    -----
    The exact :math:`W_1` is POT's linear program (:func:`flowlib.wasserstein_exact`), or the sorted coupling
    (:func:`flowlib.wasserstein_1d`) when ``d = 1``.

    Returns
    -------
    TwoSampleStudy

    Examples
    --------
    >>> import math, torch
    >>> from flowlib.book.dobrushin import two_sample_study
    >>> uniform = lambda N, gen: torch.rand(N, 1, generator=gen, dtype=torch.float64)
    >>> g = torch.Generator().manual_seed(0)
    >>> study = two_sample_study(uniform, [16, 64, 256], n_reps=20, generator=g)
    >>> -0.7 < study.w1_slope < -0.3  # the rate N^(-1/2) on the line
    True
    >>> all(math.isclose(a, b) for a, b in zip(study.w1, study.sliced))  # d = 1: slicing changes nothing
    True
    """
    from ..measures import random_directions, sliced_wasserstein, wasserstein_1d, wasserstein_exact

    if not isinstance(generator, torch.Generator):
        raise TypeError("generator must be a torch.Generator")
    sizes = tuple(check_positive_int(n, "sizes") for n in sizes)
    if len(sizes) < 2:
        raise ValueError(f"need at least two sizes; got {sizes}")
    reps = (n_reps,) * len(sizes) if isinstance(n_reps, int) else tuple(n_reps)
    if len(reps) != len(sizes):
        raise ValueError(f"n_reps must be an int or have one entry per size; got {n_reps}")
    reps = tuple(check_positive_int(r, "n_reps") for r in reps)
    if sliced_reps is None:
        sreps = reps
    else:
        sreps = (sliced_reps,) * len(sizes) if isinstance(sliced_reps, int) else tuple(sliced_reps)
        if len(sreps) != len(sizes):
            raise ValueError(f"sliced_reps must be an int or have one entry per size; got {sliced_reps}")
        sreps = tuple(check_positive_int(r, "sliced_reps") for r in sreps)
    w1, sl, P = [], [], None

    def draw(N: int) -> tuple[Tensor, Tensor]:
        x, y = sample(N, generator), sample(N, generator)
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape != y.shape or x.shape[0] != N:
            raise ValueError(f"sample(N, generator) must return a tensor of shape (N, d); got {getattr(x, 'shape', x)}")
        return x, y

    for N, r, rs in zip(sizes, reps, sreps):
        pairs = [draw(N) for _ in range(r)]
        # on the line the sorted (monotone) coupling is optimal: the LP's value, much faster
        exact = [
            wasserstein_1d(x[:, 0], y[:, 0], p=1) if x.shape[1] == 1 else wasserstein_exact(x, y, p=1) for x, y in pairs
        ]
        w1.append(float(sum(float(e) for e in exact)) / r)
        if sliced_reps is not None:
            pairs = [draw(N) for _ in range(rs)]
        X = torch.stack([x for x, _ in pairs])
        Y = torch.stack([y for _, y in pairs])
        if P is None:
            P = random_directions(X.shape[-1], n_projections, generator=generator, dtype=X.dtype)
        sl.append(float(sliced_wasserstein(X, Y, p=1, projections=P).mean()))  # batched over the pairs
    return TwoSampleStudy(sizes, tuple(w1), tuple(sl), fit_slope(sizes, w1), fit_slope(sizes, sl))
