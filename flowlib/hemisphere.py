"""Tools for the clustering chapter: hemispheres, Wendel's formula, the Gram ODE, the circle, decay rates.

Tokens are unit vectors of shape ``(..., n, d)``; ``Q = K = V = I`` throughout (the SA/USA models of
Geshkovski, Letrouit, Polyanskiy and Rigollet), with ``normalized=True`` for SA and ``False`` for USA.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from ._validation import check_positive_int, check_real, check_tokens

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
    float in [0, 1]; equal to 1 when ``n <= d``.
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
    """
    x = check_tokens(x)
    if not isinstance(w, Tensor) or w.shape[-1] != x.shape[-1]:
        raise ValueError(f"w must be a tensor with last dimension d = {x.shape[-1]}")
    return (x * w[..., None, :]).sum(-1).amin(-1)


def gnomonic_chart(x: Tensor, w: Tensor) -> Tensor:
    r"""Central projection of the open hemisphere :math:`\{\langle x, w\rangle > 0\}` onto :math:`\{\langle y, w\rangle = 1\}`.

    :math:`y_i = x_i / \langle x_i, w\rangle`. In this chart the sphere dynamics become a consensus
    system :math:`\dot y_i = \sum_j b_{ij}(y_j - y_i)` with positive weights (see the chapter).

    Raises
    ------
    ValueError
        If a token is not in the open hemisphere.
    """
    c = (x * w[..., None, :]).sum(-1, keepdim=True)
    if bool((c <= 0).any()):
        raise ValueError("every token must satisfy <x_i, w> > 0 for the chart to be defined")
    return x / c


def weight_floor(beta: float, n: int, *, normalized: bool = True) -> float:
    r"""Lower bound on the attention weights on the sphere for :math:`\beta \ge 0`, ``Q = K = V = I``.

    SA: :math:`e^{\beta\langle x_i,x_j\rangle}/Z_i \ge e^{-2\beta}/n`; USA: :math:`e^{\beta\langle x_i,x_j\rangle}/n \ge e^{-\beta}/n`.
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

    Returns
    -------
    Tensor, shape (..., n, n)
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

    Returns
    -------
    Tensor, shape (..., n)
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

    Raises
    ------
    ValueError
        If shapes differ or fewer than three points lie in the window.
    """
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    if t.shape != y.shape:
        raise ValueError(f"t and y must have the same length; got {tuple(t.shape)} and {tuple(y.shape)}")
    keep = (y > lo) & (y < hi)
    if int(keep.sum()) < 3:
        raise ValueError(f"need at least 3 points with {lo:g} < y < {hi:g}; got {int(keep.sum())}")
    tk, ly = t[keep], torch.log(y[keep])
    tc = tk - tk.mean()
    slope = (tc * (ly - ly.mean())).sum() / (tc * tc).sum()
    return float(-slope)
