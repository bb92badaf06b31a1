"""Tools for the clustering chapter: hemispheres, Wendel's formula, the Gram ODE, the circle, decay rates.

Tokens are unit vectors of shape ``(..., n, d)``; ``Q = K = V = I`` throughout (the SA/USA models of
Geshkovski, Letrouit, Polyanskiy and Rigollet), with ``normalized=True`` for SA and ``False`` for USA.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from .._validation import check_positive_int, check_real, check_tokens
from ..convergence import fit_slope

__all__ = [
    "wendel_probability",
    "in_open_hemisphere",
    "hemisphere_margin",
    "gnomonic_chart",
    "weight_floor",
    "cone_collapse_rate",
    "gram_rhs",
    "circle_velocity",
    "decay_rate",
]


def wendel_probability(n: int, d: int) -> float:
    r"""Wendel's probability that ``n`` i.i.d. uniform points on :math:`\mathbb S^{d-1}` lie in an open hemisphere.

    .. math:: p(n, d) = 2^{-(n-1)} \sum_{k=0}^{d-1} \binom{n-1}{k}.

    Parameters
    ----------
    n, d : int
        Number of points (>= 1) and ambient dimension (>= 1).

    Returns
    -------
    float
        A probability in [0, 1]; equal to 1 when ``n <= d``.

    Examples
    --------
    >>> from flowlib.book.hemisphere import wendel_probability
    >>> wendel_probability(4, 2)  # on the circle p(n, 2) = n / 2^(n-1)
    0.5
    >>> wendel_probability(3, 3), wendel_probability(5, 3)  # n <= d: always; 11 / 16 in general
    (1.0, 0.6875)
    """
    n = check_positive_int(n, "n")
    d = check_positive_int(d, "d")
    return sum(math.comb(n - 1, k) for k in range(min(d, n))) / 2 ** (n - 1)


def _normals(points: Tensor) -> Tensor:
    """Normal vectors of the hyperplanes spanned by ``d - 1`` points: ``(..., d-1, d) -> (..., d)`` (cofactors)."""
    d = points.shape[-1]
    if d == 2:
        return torch.stack([points[..., 0, 1], -points[..., 0, 0]], dim=-1)
    if d == 3:
        return torch.linalg.cross(points[..., 0, :], points[..., 1, :], dim=-1)
    cols = []
    for k in range(d):
        minor = torch.cat([points[..., :k], points[..., k + 1 :]], dim=-1)  # (..., d-1, d-1)
        cols.append((-1) ** k * torch.linalg.det(minor))
    return torch.stack(cols, dim=-1)


def in_open_hemisphere(x: Tensor) -> Tensor:
    r"""Whether all tokens of each system lie in a common open hemisphere :math:`\{\langle x, w\rangle > 0\}`.

    Exact for points in general position (no ``d`` of them on a common hyperplane through 0), which
    holds with probability one for uniform points. If ``n >= d`` such points lie in an open hemisphere,
    the cone :math:`\{w : \langle x_i, w\rangle \ge 0\ \forall i\}` is non-zero and pointed, so it has
    an extreme ray, orthogonal to exactly ``d - 1`` of the points and positive on the others; conversely,
    such a normal can be tilted into a direction positive on all points. So it suffices to test the
    normals (both signs) of all ``(d-1)``-subsets.
    Cost: :math:`\binom{n}{d-1}` determinants per system; meant for small ``n`` and ``d``.

    Parameters
    ----------
    x : Tensor, shape (..., n, d)

    Returns
    -------
    Tensor of bool, shape (...)

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.hemisphere import in_open_hemisphere, wendel_probability
    >>> s = 2**-0.5
    >>> x = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [s, s]], [[1.0, 0.0], [0.0, 1.0], [-s, -s]]], dtype=torch.float64)
    >>> in_open_hemisphere(x)  # a quarter circle; three points around the origin
    tensor([ True, False])
    >>> g = torch.Generator().manual_seed(0)
    >>> u = torch.randn(4000, 4, 2, generator=g, dtype=torch.float64)
    >>> freq = in_open_hemisphere(u / u.norm(dim=-1, keepdim=True)).double().mean().item()
    >>> abs(freq - wendel_probability(4, 2)) < 0.03  # Monte Carlo against Wendel's 1/2
    True
    """
    x = check_tokens(x)
    n, d = x.shape[-2], x.shape[-1]
    if d < 2:
        raise ValueError(f"in_open_hemisphere needs d >= 2; got d = {d}")
    if n <= d:  # linearly independent points (general position): <x_i, w> = 1 is solvable
        return torch.ones(x.shape[:-2], dtype=torch.bool, device=x.device)
    found = torch.zeros(x.shape[:-2], dtype=torch.bool, device=x.device)
    for subset in itertools.combinations(range(n), d - 1):
        w = _normals(x[..., list(subset), :])  # (..., d)
        others = [i for i in range(n) if i not in subset]
        s = (x[..., others, :] * w[..., None, :]).sum(-1)  # (..., n - d + 1)
        found |= (s > 0).all(-1) | (s < 0).all(-1)
    return found


def hemisphere_margin(x: Tensor, w: Tensor) -> Tensor:
    r""":math:`r = \min_i \langle x_i, w\rangle`: positive iff every token lies in the open hemisphere of ``w``.

    Parameters
    ----------
    x : Tensor, shape (..., n, d)
    w : Tensor, shape (d,) or (..., d)

    Returns
    -------
    Tensor, shape (...)

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.hemisphere import hemisphere_margin
    >>> x = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    >>> hemisphere_margin(x, torch.tensor([1.0, 0.0], dtype=torch.float64))  # min(1, 0.6)
    tensor(0.6000, dtype=torch.float64)
    >>> hemisphere_margin(x, torch.tensor([0.0, -1.0], dtype=torch.float64))  # not in this hemisphere
    tensor(-0.8000, dtype=torch.float64)
    """
    x = check_tokens(x)
    if not isinstance(w, Tensor) or w.shape[-1] != x.shape[-1]:
        raise ValueError(f"w must be a tensor with last dimension d = {x.shape[-1]}")
    return (x * w[..., None, :]).sum(-1).amin(-1)


def gnomonic_chart(x: Tensor, w: Tensor) -> Tensor:
    r"""Central projection of the open hemisphere :math:`\{\langle x, w\rangle > 0\}` onto :math:`\{\langle y, w\rangle = 1\}`.

    :math:`y_i = x_i / \langle x_i, w\rangle`. In this chart the sphere dynamics become a consensus
    system :math:`\dot y_i = \sum_j b_{ij}(y_j - y_i)` with positive weights (see the chapter).

    Parameters
    ----------
    x : Tensor, shape (..., n, d)
    w : Tensor, shape (d,) or (..., d)
        The pole of the hemisphere.

    Returns
    -------
    Tensor, shape (..., n, d)
        The points :math:`y_i`, all with :math:`\langle y_i, w\rangle = 1`.

    Raises
    ------
    ValueError
        If a token is not in the open hemisphere.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.hemisphere import gnomonic_chart
    >>> x = torch.tensor([[0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
    >>> gnomonic_chart(x, torch.tensor([1.0, 0.0], dtype=torch.float64))  # (0.6, 0.8) / 0.6
    tensor([[1.0000, 1.3333],
            [1.0000, 0.0000]], dtype=torch.float64)
    """
    c = (x * w[..., None, :]).sum(-1, keepdim=True)
    if bool((c <= 0).any()):
        raise ValueError("every token must satisfy <x_i, w> > 0 for the chart to be defined")
    return x / c


def weight_floor(beta: float, n: int, *, normalized: bool = True) -> float:
    r"""Lower bound on the attention weights on the sphere for :math:`\beta \ge 0`, ``Q = K = V = I``.

    SA: :math:`e^{\beta\langle x_i,x_j\rangle}/Z_i \ge e^{-2\beta}/n`; USA: :math:`e^{\beta\langle x_i,x_j\rangle}/n \ge e^{-\beta}/n`.

    Parameters
    ----------
    beta : float
        Inverse temperature, ``>= 0``.
    n : int
        Number of tokens.
    normalized : bool
        ``True`` for SA (softmax), ``False`` for USA.

    Returns
    -------
    float

    Examples
    --------
    >>> import math, torch, flowlib as fl
    >>> from flowlib.book.hemisphere import weight_floor
    >>> weight_floor(1.0, 4) == math.exp(-2) / 4, weight_floor(1.0, 4, normalized=False) == math.exp(-1) / 4
    (True, True)
    >>> u = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> x = u / u.norm(dim=-1, keepdim=True)
    >>> bool(torch.softmax(x @ x.T, dim=-1).min() >= weight_floor(1.0, 4))  # the SA weights at beta = 1
    True
    """
    beta = check_real(beta, "beta")
    if beta < 0:
        raise ValueError(f"weight_floor needs beta >= 0; got {beta}")
    n = check_positive_int(n, "n")
    return math.exp(-2 * beta) / n if normalized else math.exp(-beta) / n


def cone_collapse_rate(beta: float, n: int, margin: float, *, normalized: bool = True) -> float:
    r"""Rate :math:`\lambda = 2 a r_0` of the cone-collapse lemma: :math:`\|x_i(t) - x^\star\| \le C e^{-\lambda t}`.

    ``a`` is :func:`weight_floor` and ``margin`` is :math:`r_0 = \min_i\langle x_i(0), w\rangle \in (0, 1]`.
    A guaranteed, conservative rate; the observed local rate is larger.

    Parameters
    ----------
    beta : float
        Inverse temperature, ``>= 0``.
    n : int
        Number of tokens.
    margin : float
        The initial margin :math:`r_0` (see :func:`hemisphere_margin`), in ``(0, 1]``.
    normalized : bool
        ``True`` for SA (softmax), ``False`` for USA.

    Returns
    -------
    float

    Examples
    --------
    >>> import math
    >>> from flowlib.book.hemisphere import cone_collapse_rate, weight_floor
    >>> cone_collapse_rate(1.0, 4, 0.5) == 2 * weight_floor(1.0, 4) * 0.5 == math.exp(-2) / 4
    True
    """
    margin = check_real(margin, "margin", positive=True)
    if margin > 1:
        raise ValueError(f"margin must lie in (0, 1]; got {margin}")
    return 2 * weight_floor(beta, n, normalized=normalized) * margin


def gram_rhs(G: Tensor, beta: float, *, normalized: bool = True) -> Tensor:
    r"""Right-hand side of the closed ODE of the Gram matrix :math:`G = XX^\top` under SA/USA.

    With :math:`A = \mathrm{softmax}_{\text{rows}}(\beta G)` (SA) or :math:`e^{\beta G}/n` (USA, entrywise)
    and :math:`D = \mathrm{diag}((A\odot G)\mathbf 1)`, :math:`\dot X = (A - D)X` and

    .. math:: \dot G = (A - D)G + G(A - D)^\top .

    Parameters
    ----------
    G : Tensor, shape (..., n, n)
        Symmetric, unit diagonal.
    beta : float
        Inverse temperature.
    normalized : bool
        ``True`` for SA (softmax), ``False`` for USA.

    Returns
    -------
    Tensor, shape (..., n, n)

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.hemisphere import gram_rhs
    >>> u = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> X = u / u.norm(dim=-1, keepdim=True)
    >>> G = X @ X.T
    >>> A = torch.softmax(2.0 * G, dim=-1)
    >>> Xdot = A @ X - (A * G).sum(-1, keepdim=True) * X  # the SA velocity, projected on the sphere
    >>> torch.allclose(gram_rhs(G, 2.0), Xdot @ X.T + X @ Xdot.T)
    True
    >>> bool(gram_rhs(G, 2.0).diagonal().abs().max() < 1e-12)  # the tokens stay on the sphere
    True
    """
    if not isinstance(G, Tensor) or G.ndim < 2 or G.shape[-1] != G.shape[-2]:
        raise ValueError(f"G must be a tensor of shape (..., n, n); got {getattr(G, 'shape', type(G))}")
    beta = check_real(beta, "beta")
    n = G.shape[-1]
    A = torch.softmax(beta * G, dim=-1) if normalized else torch.exp(beta * G) / n
    M = A - torch.diag_embed((A * G).sum(-1))
    return M @ G + G @ M.mT


def circle_velocity(theta: Tensor, beta: float, *, normalized: bool = True) -> Tensor:
    r"""Angular velocity of SA/USA on the circle :math:`\mathbb S^1` (``d = 2``), a Kuramoto-type system.

    .. math:: \dot\theta_i = -\frac{1}{Z_i}\sum_j e^{\beta\cos(\theta_i-\theta_j)}\sin(\theta_i - \theta_j),

    with :math:`Z_i = \sum_k e^{\beta\cos(\theta_i-\theta_k)}` (SA) or :math:`Z_i = n` (USA).

    Parameters
    ----------
    theta : Tensor, shape (..., n)
        Angles of the tokens :math:`x_i = (\cos\theta_i, \sin\theta_i)`.
    beta : float
        Inverse temperature.
    normalized : bool
        ``True`` for SA (softmax), ``False`` for USA.

    Returns
    -------
    Tensor, shape (..., n)

    Examples
    --------
    >>> import math, torch, flowlib as fl
    >>> from flowlib.book.hemisphere import circle_velocity
    >>> theta = torch.tensor([0.0, math.pi / 2], dtype=torch.float64)
    >>> circle_velocity(theta, 0.0)  # beta = 0: -(sin(-pi/2)) / 2 and -(sin(pi/2)) / 2, towards each other
    tensor([ 0.5000, -0.5000], dtype=torch.float64)
    >>> circle_velocity(theta, 1.0, normalized=False)  # e^{cos(pi/2)} = 1: the same for USA
    tensor([ 0.5000, -0.5000], dtype=torch.float64)
    """
    if not isinstance(theta, Tensor) or theta.ndim < 1 or not theta.is_floating_point():
        raise TypeError("theta must be a floating tensor of shape (..., n)")
    beta = check_real(beta, "beta")
    diff = theta[..., :, None] - theta[..., None, :]
    w = torch.exp(beta * torch.cos(diff))
    Z = w.sum(-1) if normalized else torch.full_like(theta, theta.shape[-1])
    return -(w * torch.sin(diff)).sum(-1) / Z


def decay_rate(t: Tensor, y: Tensor, *, lo: float = 1e-12, hi: float = 1e-2) -> float:
    r"""Exponential decay rate :math:`\lambda` of ``y(t)`` ~ :math:`C e^{-\lambda t}`: minus the least-squares slope of :math:`\log y` on ``t``.

    Only points with ``lo < y < hi`` enter the fit (the asymptotic window above round-off).

    Parameters
    ----------
    t, y : Tensor, shape (S,)
    lo, hi : float
        The window of values of ``y`` that enter the fit.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If shapes differ or fewer than three points lie in the window.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.hemisphere import decay_rate
    >>> t = torch.linspace(0.0, 10.0, 101, dtype=torch.float64)
    >>> round(decay_rate(t, 3.0 * torch.exp(-2.0 * t)), 10)  # y = 3 e^{-2t}
    2.0
    """
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    if t.shape != y.shape:
        raise ValueError(f"t and y must have the same length; got {tuple(t.shape)} and {tuple(y.shape)}")
    keep = (y > lo) & (y < hi)
    if int(keep.sum()) < 3:
        raise ValueError(f"need at least 3 points with {lo:g} < y < {hi:g}; got {int(keep.sum())}")
    return -fit_slope(t[keep].tolist(), y[keep].tolist(), log_x=False)  # flowlib's one slope fit
