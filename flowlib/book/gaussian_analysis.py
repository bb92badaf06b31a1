r"""Closed-form diagnostics of the Gaussian closure of softmax attention (Chapter 7).

With :math:`\mu = \mathcal N(\alpha, \Sigma)` and the score :math:`\beta\langle Qx, Ky\rangle = \langle Ax, y\rangle`,
:math:`A = \beta K^\top Q` (the book's convention, no hidden ``1/sqrt(d)``), this module gives

* the shape of the covariance at blow-up when :math:`V = I`: the limit of :math:`\Sigma(t)/\operatorname{tr}\Sigma(t)`
  as :math:`t \uparrow t^*`, which has the rank of the multiplicity of the top eigenvalue of
  :math:`R = \Sigma_0^{1/2}(A + A^\top)\Sigma_0^{1/2}` (:func:`blowup_limit_shape`);
* the Monte Carlo difficulty of the attention normaliser :math:`Z(x) = \mathbb E_{y\sim\mu} e^{\langle Ax, y\rangle}`:
  its relative variance :math:`e^{(Ax)^\top\Sigma(Ax)} - 1` (:func:`normaliser_relative_variance`), the
  criterion :math:`\lambda_{\max}(\Sigma^{1/2}A^\top\Sigma A\Sigma^{1/2}) < 1/2` under which it is integrable in
  :math:`x \sim \mu` (:func:`normaliser_criterion`), its mean (:func:`expected_relative_variance`) and the
  asymptotic variance of the self-normalised velocity estimate (:func:`snis_asymptotic_variance`);
* the standardised mean :math:`(\alpha^\top\Sigma^{-1}\alpha)^{1/2}`, which grows exactly like :math:`e^{vt}` along the
  closure when :math:`V = vI` (:func:`standardized_mean`), and the effective number of keys of an attention
  matrix (:func:`effective_keys`), which is near one when attention selects single tokens.

Intervals over seeds (the book's seed standard) come from :mod:`flowlib.stats`.

All functions take float tensors, batch over no leading dimensions unless stated, and run on the device
of their input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..gaussian import symmetric_sqrt

__all__ = [
    "blowup_limit_shape",
    "normaliser_criterion",
    "normaliser_relative_variance",
    "expected_relative_variance",
    "snis_asymptotic_variance",
    "standardized_mean",
    "effective_keys",
]


def _matrix(M, name: str, d: int | None = None, like: Tensor | None = None) -> Tensor:
    if not isinstance(M, Tensor):
        M = torch.as_tensor(M, dtype=torch.float64 if like is None else like.dtype)
    if not M.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype; got {M.dtype}")
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be a square matrix (d, d); got shape {tuple(M.shape)}")
    if d is not None and M.shape[0] != d:
        raise ValueError(f"{name} must have shape ({d}, {d}); got {tuple(M.shape)}")
    if not bool(torch.isfinite(M).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return M if like is None else M.to(like)


def _cov(cov) -> Tensor:
    cov = _matrix(cov, "cov")
    if not torch.allclose(cov, cov.mT, atol=1e-10, rtol=1e-8):
        raise ValueError("cov must be symmetric")
    lam_min = float(torch.linalg.eigvalsh(cov)[0])
    if lam_min <= 0:
        raise ValueError(f"cov must be positive definite; its smallest eigenvalue is {lam_min:.3g}")
    return cov


def _points(x, d: int, like: Tensor, name: str = "x") -> Tensor:
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype; got {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != d:
        raise ValueError(f"{name} must have shape (..., {d}); got {tuple(x.shape)}")
    return x.to(like)


def blowup_limit_shape(cov0: Tensor, A: Tensor, *, rtol: float = 1e-8) -> tuple[Tensor, int]:
    r"""Limit of :math:`\Sigma(t)/\operatorname{tr}\Sigma(t)` at the blow-up time of :math:`\dot\Sigma = \Sigma M\Sigma`.

    For softmax attention with :math:`V = I`, :math:`\Sigma(t) = (\Sigma_0^{-1} - tM)^{-1}` with
    :math:`M = A + A^\top`. If :math:`R = \Sigma_0^{1/2}M\Sigma_0^{1/2}` has a positive top eigenvalue
    :math:`\lambda` with eigenspace :math:`E` (orthogonal projection :math:`P_E`), then
    :math:`(1 - t\lambda)\Sigma(t) \to \Sigma_0^{1/2}P_E\Sigma_0^{1/2}` as :math:`t \uparrow 1/\lambda`.

    Parameters
    ----------
    cov0 : Tensor, shape (d, d)
        Symmetric positive definite initial covariance.
    A : Tensor, shape (d, d)
        Score matrix :math:`A = \beta K^\top Q`.
    rtol : float
        Eigenvalues within ``rtol * max|eig|`` of the top one count as equal (the multiplicity).

    Returns
    -------
    shape : Tensor, shape (d, d)
        :math:`\Sigma_0^{1/2}P_E\Sigma_0^{1/2}` divided by its trace (trace one, rank ``m``).
    m : int
        Multiplicity of :math:`\lambda_{\max}(R)`, the rank of the limit.

    Raises
    ------
    ValueError
        If ``cov0`` is not symmetric positive definite, shapes differ, or :math:`\lambda_{\max}(R) \le 0`
        (then there is no blow-up).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.gaussian_analysis import blowup_limit_shape
    >>> shape, m = blowup_limit_shape(torch.eye(2, dtype=torch.float64), torch.diag(torch.tensor([1.0, 0.5], dtype=torch.float64)))
    >>> shape, m  # the covariance collapses onto the most unstable direction
    (tensor([[1., 0.],
            [0., 0.]], dtype=torch.float64), 1)
    """
    cov0 = _cov(cov0)
    A = _matrix(A, "A", cov0.shape[0], cov0)
    if not rtol > 0:
        raise ValueError(f"rtol must be positive; got {rtol}")
    S = symmetric_sqrt(cov0)
    R = S @ (A + A.mT) @ S
    w, U = torch.linalg.eigh(0.5 * (R + R.mT))
    scale = float(w.abs().max())
    if float(w[-1]) <= rtol * max(scale, 1e-300):
        raise ValueError("A + A^T has no positive eigenvalue: the covariance does not blow up")
    top = w >= w[-1] - rtol * scale
    E = U[:, top]
    shape = S @ E @ E.mT @ S
    return shape / shape.diagonal().sum(), int(top.sum())


def normaliser_criterion(cov: Tensor, A: Tensor) -> float:
    r""":math:`\lambda_{\max}(\Sigma^{1/2}A^\top\Sigma A\Sigma^{1/2}) = \|\Sigma^{1/2}A\Sigma^{1/2}\|_2^2`.

    The relative variance of the attention normaliser is integrable in :math:`x \sim \mathcal N(\alpha, \Sigma)`
    if and only if this number is below ``1/2``.

    Parameters
    ----------
    cov : Tensor, shape (d, d)
        Symmetric positive definite.
    A : Tensor, shape (d, d)

    Returns
    -------
    float

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.gaussian_analysis import normaliser_criterion
    >>> normaliser_criterion(torch.eye(2, dtype=torch.float64), 0.5 * torch.eye(2, dtype=torch.float64))
    0.25
    """
    cov = _cov(cov)
    A = _matrix(A, "A", cov.shape[0], cov)
    return float(criterion_values(cov, A))


def criterion_values(cov: Tensor, A: Tensor) -> Tensor:
    """:func:`normaliser_criterion` for a batch of covariances ``(..., d, d)``, without checks: shape ``(...)``.

    Shared with :func:`flowlib.book.coupling.normaliser_variance_index`, which checks its inputs and forms ``A``.
    """
    S = symmetric_sqrt(cov)
    return torch.linalg.matrix_norm(S @ A @ S, ord=2) ** 2


def normaliser_relative_variance(x: Tensor, cov: Tensor, A: Tensor) -> Tensor:
    r"""Relative variance :math:`\operatorname{Var}_y(e^{\langle Ax, y\rangle})/Z(x)^2 = e^{(Ax)^\top\Sigma(Ax)} - 1`.

    It does not depend on the mean of :math:`\mu`.

    Parameters
    ----------
    x : Tensor, shape (..., d)
        Query points.
    cov : Tensor, shape (d, d)
    A : Tensor, shape (d, d)

    Returns
    -------
    Tensor, shape (...)

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.gaussian_analysis import normaliser_relative_variance
    >>> x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    >>> torch.allclose(normaliser_relative_variance(x, torch.eye(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)), torch.tensor([torch.e - 1], dtype=torch.float64))
    True
    """
    cov = _cov(cov)
    A = _matrix(A, "A", cov.shape[0], cov)
    x = _points(x, cov.shape[0], cov)
    Ax = x @ A.mT
    return torch.expm1(((Ax @ cov) * Ax).sum(-1))


def expected_relative_variance(mean: Tensor, cov: Tensor, A: Tensor) -> float:
    r"""Mean of :math:`e^{(Ax)^\top\Sigma(Ax)} - 1` over :math:`x \sim \mathcal N(\alpha, \Sigma)`, or ``inf``.

    With :math:`B = A^\top\Sigma A`, :math:`C = \Sigma^{1/2}B\Sigma^{1/2}` and :math:`h = 2\Sigma^{1/2}B\alpha`,
    the mean is :math:`\det(I - 2C)^{-1/2}\exp\big(\alpha^\top B\alpha + \tfrac12 h^\top(I - 2C)^{-1}h\big) - 1`
    when :math:`\lambda_{\max}(C) < 1/2`, and infinite otherwise.

    Parameters
    ----------
    mean : Tensor, shape (d,)
    cov : Tensor, shape (d, d)
    A : Tensor, shape (d, d)

    Returns
    -------
    float

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.gaussian_analysis import expected_relative_variance
    >>> I = torch.eye(2, dtype=torch.float64)
    >>> expected_relative_variance(torch.zeros(2, dtype=torch.float64), I, 0.1 * I) < 0.1
    True
    >>> expected_relative_variance(torch.zeros(2, dtype=torch.float64), I, I)  # heavy-tailed: infinite
    inf
    """
    cov = _cov(cov)
    d = cov.shape[0]
    A = _matrix(A, "A", d, cov)
    mean = _points(mean, d, cov, "mean")
    if mean.ndim != 1:
        raise ValueError(f"mean must have shape ({d},); got {tuple(mean.shape)}")
    S = symmetric_sqrt(cov)
    B = A.mT @ cov @ A
    C = S @ B @ S
    C = 0.5 * (C + C.mT)
    if float(torch.linalg.eigvalsh(C)[-1]) >= 0.5:
        return math.inf
    I2C = torch.eye(d, dtype=cov.dtype, device=cov.device) - 2 * C
    h = 2 * S @ B @ mean
    expo = mean @ B @ mean + 0.5 * h @ torch.linalg.solve(I2C, h)
    return float(torch.exp(expo - 0.5 * torch.logdet(I2C)) - 1)


def snis_asymptotic_variance(x: Tensor, cov: Tensor, A: Tensor, V: Tensor | None = None) -> Tensor:
    r"""Asymptotic variance of the self-normalised estimate of the softmax velocity at ``x``.

    With :math:`y_1, \dots, y_N` i.i.d. from :math:`\mathcal N(\alpha, \Sigma)` and weights
    :math:`w_j = e^{\langle Ax, y_j\rangle}`, the estimate :math:`\sum_j w_jVy_j/\sum_j w_j` of
    :math:`\Gamma_\mu(x) = V(\alpha + \Sigma Ax)` has, by the delta method, :math:`N` times its mean squared
    error tending to

    .. math:: \sigma^2(x) = e^{(Ax)^\top\Sigma(Ax)}\big(\operatorname{tr}(V\Sigma V^\top) + \|V\Sigma Ax\|^2\big).

    It does not depend on the mean of :math:`\mu`.

    Parameters
    ----------
    x : Tensor, shape (..., d)
    cov : Tensor, shape (d, d)
    A : Tensor, shape (d, d)
    V : Tensor, shape (d, d), optional
        Value matrix; ``None`` is the identity.

    Returns
    -------
    Tensor, shape (...)

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.gaussian_analysis import snis_asymptotic_variance
    >>> I = torch.eye(2, dtype=torch.float64)
    >>> v = snis_asymptotic_variance(torch.zeros(1, 2, dtype=torch.float64), I, 0.1 * I)
    >>> v.shape, bool(v.item() > 0)
    (torch.Size([1]), True)
    """
    cov = _cov(cov)
    d = cov.shape[0]
    A = _matrix(A, "A", d, cov)
    V = torch.eye(d, dtype=cov.dtype, device=cov.device) if V is None else _matrix(V, "V", d, cov)
    x = _points(x, d, cov)
    Ax = x @ A.mT
    q = ((Ax @ cov) * Ax).sum(-1)
    shift = Ax @ cov @ V.mT  # V Sigma A x, as rows
    return torch.exp(q) * (torch.trace(V @ cov @ V.mT) + (shift**2).sum(-1))


def standardized_mean(mean: Tensor, cov: Tensor) -> Tensor:
    r"""The standardised mean :math:`\sqrt{\alpha^\top\Sigma^{-1}\alpha}`: the distance of the origin to the mean in
    units of the cloud's own spread.

    Along the Gaussian closure of softmax attention with :math:`V = vI` it equals
    :math:`e^{vt}` times its initial value, for every score matrix :math:`A` (Chapter 7, the mean law).

    Parameters
    ----------
    mean : Tensor, shape (..., d)
    cov : Tensor, shape (..., d, d)
        Symmetric positive definite (batched like ``mean``).

    Returns
    -------
    Tensor, shape (...)

    Raises
    ------
    ValueError
        If the shapes do not match or a covariance is not positive definite.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book.gaussian_analysis import standardized_mean
    >>> float(standardized_mean(torch.tensor([2.0, 0.0]), torch.diag(torch.tensor([4.0, 1.0]))))
    1.0
    """
    mean, cov = torch.as_tensor(mean), torch.as_tensor(cov)
    if not (mean.is_floating_point() and cov.is_floating_point()):
        raise TypeError("mean and cov must have floating dtypes")
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2] or mean.shape[-1] != cov.shape[-1]:
        raise ValueError(f"mean (..., d) and cov (..., d, d) do not match: {tuple(mean.shape)}, {tuple(cov.shape)}")
    L, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError("cov must be positive definite")
    z = torch.linalg.solve_triangular(L, mean.unsqueeze(-1).to(cov.dtype), upper=False)
    return z.squeeze(-1).norm(dim=-1)


def effective_keys(weights: Tensor) -> Tensor:
    r"""Effective number of keys :math:`1/\sum_jP_{ij}^2` of each row of an attention matrix.

    It is ``n`` for uniform rows and ``1`` when a row puts all its weight on a single key.

    Parameters
    ----------
    weights : Tensor, shape (..., n, n)
        Rows are probability vectors (non-negative, summing to one).

    Returns
    -------
    Tensor, shape (..., n)

    Raises
    ------
    ValueError
        If a row has a negative entry or does not sum to one (to 1e-6).

    Examples
    --------
    >>> import torch
    >>> from flowlib.book.gaussian_analysis import effective_keys
    >>> effective_keys(torch.tensor([[0.5, 0.5], [1.0, 0.0]])).tolist()
    [2.0, 1.0]
    """
    P = torch.as_tensor(weights)
    if not P.is_floating_point() or P.ndim < 2:
        raise TypeError("weights must be a floating tensor of shape (..., n, n)")
    if bool((P < 0).any()) or not torch.allclose(P.sum(-1), torch.ones((), dtype=P.dtype), atol=1e-6):
        raise ValueError("every row of weights must be a probability vector")
    return 1.0 / (P**2).sum(-1)
