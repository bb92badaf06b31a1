r"""Empirical measures and Wasserstein distances.

A token configuration ``x`` of shape ``(..., n, d)`` is read as the empirical measure
:math:`\mu^n = \frac1n\sum_i \delta_{x_i}` (or :math:`\sum_i w_i\delta_{x_i}` with weights). All distances
return :math:`W_p` itself (the root), not :math:`W_p^p`.

=================================  ==================================  =====================================
function                           cost                                use
=================================  ==================================  =====================================
:func:`wasserstein_1d`             O(n log n), batched                 exact on the line, any sizes and weights
:func:`sliced_wasserstein`         O(P n log n), batched               large clouds (10^5 tokens and more)
:func:`sliced_wasserstein_to_gaussian`  O(P n log n)                   a cloud against a Gaussian, exact per slice
:func:`wasserstein_exact`          O(n^3), one pair (POT ``emd2``)     small clouds (n up to ~2000)
:func:`bures_wasserstein`          O(d^3), batched                     two Gaussians, closed form
:func:`conditional_wasserstein`    per position                        masked attention (positions as labels)
=================================  ==================================  =====================================

Random projections come from ``generator`` when one is given (or are passed in as ``projections``);
without either they are drawn from PyTorch's global random state.

Masses (the weights of a weighted measure) are called ``masses`` everywhere (``x_masses``, ``u_masses``...);
``weights`` is reserved for attention weights, and the old ``*_weights`` keywords are deprecated aliases.

:func:`wasserstein_exact` and ``conditional_wasserstein(method="exact")`` need POT, an optional
dependency: ``pip install "tokens-in-motion[ot]"``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._validation import check_positive_int, check_real, check_tokens, renamed_kwargs
from .gaussian import symmetric_sqrt

__all__ = [
    "empirical_moments",
    "wasserstein_1d",
    "sliced_wasserstein",
    "sliced_wasserstein_to_gaussian",
    "random_directions",
    "wasserstein_exact",
    "bures_wasserstein",
    "conditional_wasserstein",
]


def _require_ot(what: str):
    """Import POT, or raise an ImportError that names the extra to install."""
    try:
        import ot
    except ImportError as exc:
        raise ImportError(
            f"{what} needs POT (the Python Optimal Transport library), an optional dependency of flowlib: "
            'pip install "tokens-in-motion[ot]" (or pip install pot)'
        ) from exc
    return ot


def _check_p(p: object) -> float:
    p = check_real(p, "p")
    if p < 1:
        raise ValueError(f"p must be >= 1 (W_p is a distance only for p >= 1); got {p}")
    return p


def _check_weights(w: Tensor | None, like: Tensor, name: str) -> Tensor | None:
    if w is None:
        return None
    w = torch.as_tensor(w).to(dtype=like.dtype, device=like.device)
    if w.shape[-1] != like.shape[-1]:
        raise ValueError(f"{name} must have one weight per point, shape (..., {like.shape[-1]}); got {tuple(w.shape)}")
    if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} must be finite and non-negative")
    total = w.sum(dim=-1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError(f"{name} must have a positive total mass")
    return w / total


@renamed_kwargs(weights="masses")
def empirical_moments(x: Tensor, masses: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean ``(..., d)`` and covariance ``(..., d, d)`` of the (weighted) empirical measure of ``x``.

    The covariance is the measure's own (normalised by the total mass, not ``n - 1``). ``masses``,
    shape ``(..., n)``, are non-negative point masses (any positive total); ``weights=`` is the
    deprecated name.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    >>> mean, cov = fl.empirical_moments(x)
    >>> mean, cov
    (tensor([1., 0.]), tensor([[1., 0.],
            [0., 0.]]))
    """
    x = check_tokens(x)
    w = _check_weights(masses, x[..., 0], "masses")
    if w is None:
        mean = x.mean(dim=-2)
        xc = x - mean.unsqueeze(-2)
        return mean, xc.mT @ xc / x.shape[-2]
    mean = (w.unsqueeze(-1) * x).sum(dim=-2)
    xc = x - mean.unsqueeze(-2)
    return mean, (xc * w.unsqueeze(-1)).mT @ xc


# ----------------------------------------------------------------------------- one dimension
def _w1d_power(u: Tensor, v: Tensor, p: float, uw: Tensor | None, vw: Tensor | None) -> Tensor:
    """``W_p^p`` between 1-D measures along the last dim (batched over the leading dims)."""
    if uw is None and vw is None and u.shape[-1] == v.shape[-1]:
        us, _ = torch.sort(u, dim=-1)
        vs, _ = torch.sort(v, dim=-1)
        return ((us - vs).abs() ** p).mean(dim=-1)
    # General case: integrate |F_u^{-1} - F_v^{-1}|^p over the merged quantile levels.
    n, m = u.shape[-1], v.shape[-1]
    batch = torch.broadcast_shapes(u.shape[:-1], v.shape[:-1])
    u = u.expand(*batch, n)
    v = v.expand(*batch, m)
    uw = torch.full_like(u, 1.0 / n) if uw is None else uw.expand(*batch, n)
    vw = torch.full_like(v, 1.0 / m) if vw is None else vw.expand(*batch, m)
    us, iu = torch.sort(u, dim=-1)
    vs, iv = torch.sort(v, dim=-1)
    cu = torch.cumsum(torch.gather(uw, -1, iu), dim=-1)
    cv = torch.cumsum(torch.gather(vw, -1, iv), dim=-1)
    qs, _ = torch.sort(torch.cat([cu, cv], dim=-1), dim=-1)
    qs = qs.clamp(max=1.0)
    du = torch.diff(qs, dim=-1, prepend=torch.zeros_like(qs[..., :1]))
    # quantile function at the left end of each level interval (the value on that interval)
    ju = torch.searchsorted(cu.contiguous(), (qs - du * 0.5).contiguous(), right=False).clamp(max=n - 1)
    jv = torch.searchsorted(cv.contiguous(), (qs - du * 0.5).contiguous(), right=False).clamp(max=m - 1)
    diff = torch.gather(us, -1, ju) - torch.gather(vs, -1, jv)
    return (diff.abs() ** p * du).sum(dim=-1)


@renamed_kwargs(u_weights="u_masses", v_weights="v_masses")
def wasserstein_1d(
    u: Tensor,
    v: Tensor,
    *,
    p: float = 2,
    u_masses: Tensor | None = None,
    v_masses: Tensor | None = None,
) -> Tensor:
    r""":math:`W_p` between measures on the real line, batched over leading dimensions.

    Parameters
    ----------
    u : Tensor, shape (..., n)
    v : Tensor, shape (..., m)
        Support points; leading dimensions broadcast.
    p : float
        Order, ``p >= 1``.
    u_masses, v_masses : Tensor, shapes (..., n) and (..., m), optional
        Non-negative masses (normalised to total 1); uniform by default. ``u_weights``/``v_weights``
        are the deprecated names.

    Returns
    -------
    Tensor, shape (...)

    Notes
    -----
    On the line the optimal plan is monotone, so :math:`W_p^p = \int_0^1 |F_u^{-1}(s) - F_v^{-1}(s)|^p\,ds`.
    For equal sizes and uniform weights this is the sorted matching.

    Examples
    --------
    >>> import torch
    >>> from flowlib.measures import wasserstein_1d
    >>> float(wasserstein_1d(torch.tensor([0.0, 1.0]), torch.tensor([3.0, 2.0]), p=1))
    2.0
    """
    for name, t in (("u", u), ("v", v)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.ndim < 1:
            raise TypeError(f"{name} must be a floating tensor of shape (..., n); got {type(t).__name__}")
    p = _check_p(p)
    uw = _check_weights(u_masses, u, "u_masses")
    vw = _check_weights(v_masses, v, "v_masses")
    return _w1d_power(u, v.to(u), p, uw, vw) ** (1.0 / p)


# ----------------------------------------------------------------------------- sliced
def random_directions(
    d: int, n_projections: int, *, generator: torch.Generator | None = None, dtype=None, device=None
) -> Tensor:
    """``n_projections`` i.i.d. uniform unit vectors of R^d, as the columns of a ``(d, n_projections)`` matrix.

    ``dtype`` defaults to :func:`torch.get_default_dtype`.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.measures import random_directions
    >>> theta = random_directions(3, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> theta.shape, torch.allclose(theta.norm(dim=0), torch.ones(10, dtype=torch.float64))
    (torch.Size([3, 10]), True)
    """
    d = check_positive_int(d, "d")
    n_projections = check_positive_int(n_projections, "n_projections")
    z = torch.randn(d, n_projections, generator=generator, dtype=dtype, device=device)
    return z / torch.linalg.vector_norm(z, dim=0, keepdim=True)


def _projections(x: Tensor, y: Tensor, n_projections, projections, generator) -> Tensor:
    d = x.shape[-1]
    if y.shape[-1] != d:
        raise ValueError(f"x and y must live in the same dimension; got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if projections is None:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        P = random_directions(d, n_projections, generator=generator, dtype=x.dtype, device=gen_device)
        return P.to(x.device)
    P = torch.as_tensor(projections).to(x)
    if P.ndim != 2 or P.shape[0] != d:
        raise ValueError(f"projections must have shape (d, n_projections) = ({d}, P); got {tuple(P.shape)}")
    return P


@renamed_kwargs(x_weights="x_masses", y_weights="y_masses")
def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    *,
    n_projections: int = 128,
    p: float = 2,
    projections: Tensor | None = None,
    generator: torch.Generator | None = None,
    x_masses: Tensor | None = None,
    y_masses: Tensor | None = None,
) -> Tensor:
    r"""Sliced Wasserstein distance :math:`SW_p = \big(\mathbb E_\theta W_p^p(\theta^\top_\#\mu, \theta^\top_\#\nu)\big)^{1/p}`.

    The expectation over uniform directions :math:`\theta \in \mathbb S^{d-1}` is estimated with
    ``n_projections`` directions drawn from ``generator`` (or given as ``projections``). Costs
    O(P n log n) and O(P n) memory, so it runs on clouds of 10^5-10^6 tokens. :math:`SW_p \le W_p`.

    Parameters
    ----------
    x : Tensor, shape (..., n, d)
    y : Tensor, shape (..., m, d)
    n_projections : int
    p : float
        Order, ``p >= 1``.
    projections : Tensor, shape (d, P), optional
        Unit directions to use instead of random ones.
    generator : torch.Generator, optional
        Source of the random directions (without one, the global RNG is used).
    x_masses, y_masses : Tensor, optional
        Masses of the points, shapes (..., n) and (..., m) (``x_weights``/``y_weights``: deprecated).

    Returns
    -------
    Tensor, shape (...)

    Raises
    ------
    ValueError
        If ``x`` and ``y`` have different dimensions ``d``, or ``p < 1``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    >>> sw = fl.sliced_wasserstein(x, x + torch.tensor([3.0, 0.0], dtype=torch.float64), n_projections=256, generator=g)
    >>> 1.8 < sw.item() < 2.4  # a shift by 3 along one axis: sqrt(E <theta, s>^2) = 3 / sqrt(2)
    True
    >>> fl.sliced_wasserstein(x, x, generator=g).item()
    0.0
    """
    x = check_tokens(x)
    y = check_tokens(y, "y").to(x)
    p = _check_p(p)
    P = _projections(x, y, n_projections, projections, generator)
    xp = (x @ P).mT  # (..., P, n)
    yp = (y @ P).mT
    xw = _check_weights(x_masses, x[..., 0], "x_masses")
    yw = _check_weights(y_masses, y[..., 0], "y_masses")
    xw = None if xw is None else xw.unsqueeze(-2)
    yw = None if yw is None else yw.unsqueeze(-2)
    return _w1d_power(xp, yp, p, xw, yw).mean(dim=-1) ** (1.0 / p)


def _normal_quantile_integrals(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    r""":math:`\int_a^b \Phi^{-1}(s)\,ds` and :math:`\int_a^b \Phi^{-1}(s)^2\,ds` for ``0 <= a < b <= 1``."""
    normal = torch.distributions.Normal(torch.zeros((), dtype=a.dtype), torch.ones((), dtype=a.dtype))
    za = normal.icdf(a.clamp(0, 1))
    zb = normal.icdf(b.clamp(0, 1))

    def pdf(z):
        out = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return torch.where(torch.isfinite(z), out, torch.zeros_like(out))

    def zpdf(z):
        out = z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        return torch.where(torch.isfinite(z), out, torch.zeros_like(out))

    first = pdf(za) - pdf(zb)
    second = (b - a) + zpdf(za) - zpdf(zb)
    return first, second


def sliced_wasserstein_to_gaussian(
    x: Tensor,
    mean: Tensor,
    cov: Tensor,
    *,
    n_projections: int = 128,
    projections: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Sliced :math:`SW_2` between the empirical measure of ``x`` and :math:`\mathcal N(\text{mean}, \text{cov})`.

    Each slice is exact: the projected Gaussian is :math:`\mathcal N(\theta^\top m, \theta^\top\Sigma\theta)`
    and the integral of :math:`(x_{(k)} - m_\theta - \sigma_\theta\Phi^{-1}(s))^2` over the quantile interval
    of the k-th order statistic has a closed form. Only the directions are random.

    Parameters
    ----------
    x : Tensor, shape (n, d)
    mean : Tensor, shape (d,)
    cov : Tensor, shape (d, d)

    Returns
    -------
    Tensor, scalar

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> mean = torch.zeros(2, dtype=torch.float64); cov = torch.eye(2, dtype=torch.float64)
    >>> x = fl.gaussian_tokens(2000, mean, cov, generator=g)
    >>> near = fl.sliced_wasserstein_to_gaussian(x, mean, cov, generator=g)
    >>> far = fl.sliced_wasserstein_to_gaussian(x, mean + 1.0, cov, generator=g)
    >>> near.item() < 0.1 < far.item()
    True
    """
    x = check_tokens(x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, d); got {tuple(x.shape)}")
    n, d = x.shape
    mean = torch.as_tensor(mean).to(x)
    cov = torch.as_tensor(cov).to(x)
    if mean.shape != (d,) or cov.shape != (d, d):
        raise ValueError(
            f"mean and cov must have shapes ({d},) and ({d}, {d}); got {tuple(mean.shape)}, {tuple(cov.shape)}"
        )
    P = _projections(x, x, n_projections, projections, generator)
    xs, _ = torch.sort(x @ P, dim=0)  # (n, P)
    m = mean @ P  # (P,)
    s = torch.sqrt(torch.clamp((P * (cov @ P)).sum(dim=0), min=0))  # (P,)
    levels = torch.arange(n + 1, dtype=torch.float64) / n
    a, b = levels[:-1], levels[1:]
    i1, i2 = _normal_quantile_integrals(a, b)  # (n,)
    i1, i2 = i1.to(x).unsqueeze(-1), i2.to(x).unsqueeze(-1)
    c = xs - m  # (n, P)
    w2 = (c * c / n - 2 * c * s * i1 + s * s * i2).sum(dim=0)
    return w2.clamp_min(0).mean().sqrt()


# ----------------------------------------------------------------------------- exact and Gaussian
@renamed_kwargs(x_weights="x_masses", y_weights="y_masses")
def wasserstein_exact(
    x: Tensor,
    y: Tensor,
    *,
    p: float = 2,
    x_masses: Tensor | None = None,
    y_masses: Tensor | None = None,
) -> Tensor:
    r"""Exact :math:`W_p` between two point clouds by linear programming (POT's ``emd2``).

    Parameters
    ----------
    x : Tensor, shape (n, d)
    y : Tensor, shape (m, d)
    p : float
        Ground cost :math:`\|x - y\|^p`, ``p >= 1``.
    x_masses, y_masses : Tensor, optional
        Masses (uniform by default; ``x_weights``/``y_weights``: deprecated).

    Returns
    -------
    Tensor, scalar (differentiable through POT's torch backend).

    Raises
    ------
    ImportError
        Without POT, naming the extra to install: ``pip install "tokens-in-motion[ot]"``.

    Notes
    -----
    O(n^3) time and O(n m) memory; meant for n up to a few thousand. Use :func:`sliced_wasserstein`
    beyond that.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x = torch.tensor([[0.0], [1.0]], dtype=torch.float64); y = torch.tensor([[2.0], [3.0]], dtype=torch.float64)
    >>> fl.wasserstein_exact(x, y).item()  # every token moves by 2
    2.0
    >>> fl.wasserstein_exact(x, y, p=1).item()
    2.0
    """
    ot = _require_ot("wasserstein_exact")
    x = check_tokens(x)
    y = check_tokens(y, "y").to(x)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(
            f"wasserstein_exact takes two clouds (n, d) and (m, d); got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must live in the same dimension; got x {tuple(x.shape)} and y {tuple(y.shape)}")
    p = _check_p(p)
    n, m = x.shape[0], y.shape[0]
    a = _check_weights(x_masses, x[..., 0], "x_masses")
    b = _check_weights(y_masses, y[..., 0], "y_masses")
    a = torch.full((n,), 1.0 / n, dtype=x.dtype, device=x.device) if a is None else a
    b = torch.full((m,), 1.0 / m, dtype=x.dtype, device=x.device) if b is None else b
    M = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist") ** p
    return ot.emd2(a, b, M, numItermax=1_000_000) ** (1.0 / p)


def bures_wasserstein(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> Tensor:
    r""":math:`W_2` between Gaussians :math:`\mathcal N(m_1, \Sigma_1)` and :math:`\mathcal N(m_2, \Sigma_2)` (batched).

    .. math::

        W_2^2 = \|m_1 - m_2\|^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
        - 2\operatorname{tr}\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}.

    The square is clamped at 0 before the root (round-off can make it slightly negative). Differentiable,
    also at repeated eigenvalues and at distance 0 (where the gradient is 0).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> m1 = torch.zeros(2, dtype=torch.float64); m2 = torch.tensor([3.0, 4.0], dtype=torch.float64)
    >>> I = torch.eye(2, dtype=torch.float64)
    >>> fl.bures_wasserstein(m1, I, m2, I).item()  # equal covariances: the distance of the means
    5.0
    >>> round(fl.bures_wasserstein(m1, I, m1, 4 * I).item(), 10)  # sqrt(tr(I + 4I - 2 * 2I)) = sqrt(2)
    1.4142135624
    """

    cov1 = torch.as_tensor(cov1)
    cov2 = torch.as_tensor(cov2).to(cov1)
    mean1 = torch.as_tensor(mean1).to(cov1)
    mean2 = torch.as_tensor(mean2).to(cov1)
    d = cov1.shape[-1]
    for name, c in (("cov1", cov1), ("cov2", cov2)):
        if c.ndim < 2 or c.shape[-2:] != (d, d):
            raise ValueError(f"{name} must have shape (..., {d}, {d}); got {tuple(c.shape)}")
    for name, m in (("mean1", mean1), ("mean2", mean2)):
        if m.shape[-1:] != (d,):
            raise ValueError(f"{name} must have shape (..., {d}); got {tuple(m.shape)}")
    R = symmetric_sqrt(cov1)
    cross = symmetric_sqrt(R @ cov2 @ R).diagonal(dim1=-2, dim2=-1).sum(-1)
    tr = cov1.diagonal(dim1=-2, dim2=-1).sum(-1) + cov2.diagonal(dim1=-2, dim2=-1).sum(-1)
    sq = ((mean1 - mean2) ** 2).sum(-1) + tr - 2 * cross
    pos = sq > 0  # the root of 0 gets gradient 0 (a subgradient), not inf * 0 = NaN
    return torch.where(pos, torch.sqrt(torch.where(pos, sq, torch.ones_like(sq))), torch.zeros_like(sq))


def conditional_wasserstein(
    x: Tensor,
    y: Tensor,
    *,
    p: float = 2,
    method: str = "exact",
    n_projections: int = 128,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Conditional Wasserstein distance between sequence measures, position by position.

    For masked (causal) attention a token carries its position :math:`s`, and measures live on
    :math:`[0,1]\times\mathbb R^d` with the same law of positions. Given ``M`` independent sequences
    of each measure, the conditional law at position ``i`` is the cloud ``x[:, i, :]``, and

    .. math::

        W_{p,c}(\mu, \nu) = \Big(\frac1n \sum_{i=1}^n W_p(\mu_i, \nu_i)^p\Big)^{1/p}.

    Parameters
    ----------
    x, y : Tensor, shape (M, n, d)
        ``M`` sequences of ``n`` tokens each (``M`` may differ between ``x`` and ``y``).
    method : {"exact", "sliced"}
        Distance used within each position.

    Returns
    -------
    Tensor, scalar

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(50, 4, 2, generator=g, dtype=torch.float64)  # 50 sequences of 4 tokens
    >>> fl.measures.conditional_wasserstein(x, x).item()
    0.0
    >>> round(fl.measures.conditional_wasserstein(x, x + 1.0).item(), 6)  # every position shifted by (1, 1): sqrt(2)
    1.414214
    """
    x = check_tokens(x)
    y = check_tokens(y, "y").to(x)
    if x.ndim != 3 or y.ndim != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"x and y must have shapes (M, n, d) with the same n and d; got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if method not in ("exact", "sliced"):
        raise ValueError(f"method must be 'exact' or 'sliced'; got {method!r}")
    p = _check_p(p)
    if method == "exact":
        _require_ot('conditional_wasserstein(method="exact")')
    xs, ys = x.transpose(0, 1), y.transpose(0, 1)  # (n, M, d)
    if method == "sliced":
        P = _projections(x, y, n_projections, None, generator)
        per = sliced_wasserstein(xs, ys, p=p, projections=P)
    else:
        per = torch.stack([wasserstein_exact(a, b, p=p) for a, b in zip(xs, ys)])
    return (per**p).mean() ** (1.0 / p)
