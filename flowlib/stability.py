r"""Stability of flows and of their discretisations: Jacobians, one-sided Lipschitz constants,
Lipschitz estimates and the growth of perturbations.

For a field :math:`F` the one-sided Lipschitz (logarithmic-norm) constant at ``x`` is
:math:`\mu(x) = \lambda_{\max}\big(\tfrac12 (J + J^\top)\big)` with :math:`J = DF(x)`. If
:math:`\mu \le -m < 0` along the segment between two states, their distance decays like
:math:`e^{-mt}` under the flow; one Euler step of size ``h`` multiplies it by at most
:math:`\sqrt{1 - 2mh + \mathrm{Lip}^2 h^2}`, which is below 1 only for :math:`h < 2m/\mathrm{Lip}^2`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import jacrev, jvp, vjp, vmap

from ._validation import check_positive_int, check_real, check_tokens, renamed_kwargs
from .integrate.simulate import as_rhs, simulate

__all__ = [
    "field_jacobian",
    "log_norm",
    "one_sided_lipschitz",
    "lipschitz_estimate",
    "perturbation_growth",
    "euler_step_factor",
    "contraction_step_limit",
    "spectral_norm",
]


def spectral_norm(M: Tensor | None, *, name: str = "M") -> float:
    """Spectral norm (largest singular value) of a matrix, computed in float64; ``None`` is the identity.

    flowlib's one implementation (the book's bounds use it). A stack of matrices ``(..., k, d)`` gives the
    largest of their norms.

    Parameters
    ----------
    M : Tensor of shape (..., k, d), or None
        The matrix; ``None`` stands for the identity (norm 1).
    name : str
        Name used in error messages.

    Returns
    -------
    float

    Raises
    ------
    TypeError
        If ``M`` is neither a tensor nor ``None``.
    ValueError
        If ``M`` has fewer than two dimensions or a non-finite entry.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> fl.stability.spectral_norm(torch.tensor([[3.0, 0.0], [4.0, 0.0]]))
    5.0
    >>> fl.stability.spectral_norm(None)
    1.0
    """
    if M is None:
        return 1.0
    if not isinstance(M, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None; got {type(M).__name__}")
    if M.ndim < 2:
        raise ValueError(f"{name} must be a matrix of shape (..., k, d); got shape {tuple(M.shape)}")
    if not bool(torch.isfinite(M).all()):
        raise ValueError(f"{name} has a non-finite entry")
    return float(torch.linalg.matrix_norm(M.detach().to(torch.float64), ord=2).max())


def field_jacobian(field: Callable, x: Tensor, *, t: float = 0.0) -> Tensor:
    """Jacobian of ``field`` at ``x``, one system at a time, via :func:`torch.func.jacrev`.

    Parameters
    ----------
    field : VelocityField or callable
        ``(..., n, d) -> (..., n, d)``.
    x : Tensor, shape (..., n, d)
    t : float
        The time (depth) at which a time-dependent field (:class:`flowlib.TimeDependent`) is evaluated;
        ignored by autonomous fields.

    Returns
    -------
    Tensor, shape (..., n, d, n, d)
        ``J[..., i, a, j, b] = d field(x)[..., i, a] / d x[..., j, b]``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(3, 2, generator=g, dtype=torch.float64)
    >>> J = fl.field_jacobian(fl.SoftmaxAttention(beta=0.0), x)
    >>> J.shape
    torch.Size([3, 2, 3, 2])
    >>> J[0, :, 0, :]  # beta = 0: v_i is the mean of the 3 tokens, so dv_0/dx_0 = I / 3
    tensor([[0.3333, 0.0000],
            [0.0000, 0.3333]], dtype=torch.float64)
    """
    x = check_tokens(x)
    t = check_real(t, "t")
    f = as_rhs(field)
    single = jacrev(lambda y: f(t, y))
    n, d = x.shape[-2:]
    flat = x.reshape(-1, n, d)
    jac = vmap(single)(flat) if flat.shape[0] > 1 else single(flat[0]).unsqueeze(0)
    return jac.reshape(*x.shape[:-2], n, d, n, d)


def log_norm(J: Tensor) -> Tensor:
    r"""Logarithmic 2-norm :math:`\lambda_{\max}((J + J^\top)/2)` of square matrices ``(..., N, N)``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> fl.log_norm(torch.tensor([[-1.0, 5.0], [-5.0, -1.0]]))  # a damped rotation: mu = -1 whatever the 5
    tensor(-1.)
    """
    if J.ndim < 2 or J.shape[-1] != J.shape[-2]:
        raise ValueError(f"J must have shape (..., N, N); got {tuple(J.shape)}")
    return torch.linalg.eigvalsh(0.5 * (J + J.mT))[..., -1]


def one_sided_lipschitz(field: Callable, x: Tensor, *, t: float = 0.0) -> Tensor:
    """Local one-sided Lipschitz constant (log-norm of the Jacobian) at each configuration.

    Parameters
    ----------
    field : VelocityField or callable
    x : Tensor, shape (..., n, d)
        One configuration, a batch, or a whole ``Trajectory.x`` of shape ``(S, ..., n, d)``.
    t : float
        Time at which a time-dependent field is evaluated (see :func:`field_jacobian`).

    Returns
    -------
    Tensor, shape (...)
        ``mu(x)``; negative values mean the flow contracts nearby configurations.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x = torch.eye(3, dtype=torch.float64)
    >>> fl.one_sided_lipschitz(fl.SoftmaxAttention(beta=0.0), x)  # v_i = mean: J = (1/n) 1 1^T (x) I, log-norm 1
    tensor(1.0000, dtype=torch.float64)
    """
    n, d = x.shape[-2:]
    J = field_jacobian(field, x, t=t).reshape(*x.shape[:-2], n * d, n * d)
    return log_norm(J)


def lipschitz_estimate(
    field: Callable,
    x: Tensor,
    *,
    n_iter: int = 100,
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
    t: float = 0.0,
) -> Tensor:
    """Spectral norm of the Jacobian of ``field`` at ``x`` by power iteration on ``J^T J``.

    Uses Jacobian-vector and vector-Jacobian products (never the full Jacobian), so it scales to
    large ``n``. The whole tensor ``x`` is one vector; for a batch the result is the largest norm.

    Parameters
    ----------
    field : VelocityField or callable
    x : Tensor, shape (..., n, d)
    n_iter : int
        Maximum number of iterations.
    tol : float
        Stop when the relative change of the estimate over one iteration is below ``tol`` (checked
        every 5 iterations, so that the loop synchronises with the device rarely).
    generator : torch.Generator, optional
        For the random start vector (the global RNG is not touched when given).
    t : float
        Time at which a time-dependent field is evaluated (see :func:`field_jacobian`).

    Returns
    -------
    Tensor
        A 0-d tensor: the estimate of ``||DF(x)||_2``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4, 2, generator=g, dtype=torch.float64)
    >>> est = fl.lipschitz_estimate(fl.SoftmaxAttention(beta=0.0), x, generator=torch.Generator().manual_seed(1))
    >>> round(est.item(), 6)  # v_i = mean: J = (1/n) 1 1^T (x) I has norm 1
    1.0
    """
    x = check_tokens(x)
    n_iter = check_positive_int(n_iter, "n_iter")
    tol = check_real(tol, "tol", positive=True)
    t = check_real(t, "t")
    f = as_rhs(field)
    g = lambda y: f(t, y)  # noqa: E731
    u = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    u = u / torch.linalg.vector_norm(u)
    _, pullback = vjp(g, x)
    sigma = torch.zeros((), dtype=x.dtype, device=x.device)
    tiny = torch.finfo(x.dtype).tiny
    for it in range(1, n_iter + 1):
        _, Ju = jvp(g, (x,), (u,))
        (JtJu,) = pullback(Ju)
        nrm = torch.linalg.vector_norm(JtJu)  # ||J^T J u|| -> sigma_max^2
        u = JtJu / nrm.clamp_min(tiny)  # a zero Jacobian gives u = 0 and the estimate 0, without a branch
        new_sigma = torch.sqrt(nrm)
        # One host synchronisation every `check_every` iterations (not one per iteration).
        if it % _CHECK_EVERY == 0 and bool((new_sigma - sigma).abs() <= tol * new_sigma):
            break
        sigma = new_sigma
    _, Ju = jvp(g, (x,), (u,))
    return torch.linalg.vector_norm(Ju)


#: Power iterations between two convergence checks in :func:`lipschitz_estimate`.
_CHECK_EVERY = 5


def perturbation_growth(
    field: Callable,
    x0: Tensor,
    delta: Tensor,
    *,
    t1: float,
    n_steps: int,
    method: str = "euler",
    save_every: int = 1,
    retraction: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Ratio ``||y(t) - x(t)|| / ||y(0) - x(0)||`` for ``y(0) = x0 + delta``, along both trajectories.

    Both runs use the same integrator, so the ratio measures how the **discrete** layers act on
    perturbations (which may differ from the continuous flow when the step is large).

    Parameters
    ----------
    field, t1, n_steps, method, save_every, retraction
        As in :func:`flowlib.simulate`.
    x0, delta : Tensor, shape (..., n, d)

    Returns
    -------
    t : Tensor, shape (S,)
    ratio : Tensor, shape (S, ...)
        Frobenius norm over ``(n, d)``, one value per system and saved time.

    Raises
    ------
    ValueError
        If ``delta`` has another shape than ``x0`` or is zero for some system.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x0 = torch.eye(3, dtype=torch.float64); delta = 1e-3 * torch.ones(3, 3, dtype=torch.float64)
    >>> t, ratio = fl.perturbation_growth(fl.SoftmaxAttention(beta=0.0), x0, delta, t1=1.0, n_steps=10, save_every=5)
    >>> t
    tensor([0.0000, 0.5000, 1.0000], dtype=torch.float64)
    >>> ratio  # v_i = mean moves a common shift c as c' = c: Euler gives (1 + h)^k = 1.1^5, 1.1^10
    tensor([1.0000, 1.6105, 2.5937], dtype=torch.float64)
    """
    if delta.shape != x0.shape:
        raise ValueError(f"delta must have the shape of x0 {tuple(x0.shape)}; got {tuple(delta.shape)}")
    size = torch.linalg.vector_norm(delta, dim=(-2, -1))
    if not bool((size > 0).all()):
        raise ValueError(
            "delta must be a non-zero perturbation of every system (the ratio divides by ||delta||); "
            f"got ||delta|| = 0 for {int((size == 0).sum())} of {size.numel()} system(s)"
        )
    kw = dict(t1=t1, n_steps=n_steps, method=method, save_every=save_every, retraction=retraction)
    a = simulate(field, x0, **kw)
    b = simulate(field, x0 + delta, **kw)
    diff = torch.linalg.vector_norm(b.x - a.x, dim=(-2, -1))
    return a.t, diff / diff[0]


@renamed_kwargs(lip="lipschitz")
def euler_step_factor(m: float, lipschitz: float, h: float) -> float:
    r"""Bound :math:`\sqrt{1 - 2mh + \mathrm{Lip}^2 h^2}` on the factor by which one Euler step of size ``h``
    multiplies the distance between two states, for a field with one-sided Lipschitz constant ``-m``
    and Lipschitz constant ``lipschitz`` (``lip=`` is its deprecated name). For a linear field ``F(x) = Mx``
    it is attained when ``M + M^T = -2m I`` and ``M^T M = lipschitz^2 I`` (e.g. ``M = [[-1, 2], [-2, -1]]``); for other fields,
    even normal ones such as ``diag(-1, -10)``, it can be far from the true factor ``||I + hM||_2``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> round(fl.euler_step_factor(1.0, 1.0, 0.5), 6)  # sqrt(1 - 1 + 0.25)
    0.5
    """
    m = check_real(m, "m")
    lip = check_real(lipschitz, "lipschitz", nonnegative=True)
    h = check_real(h, "h", nonnegative=True)
    return math.sqrt(max(0.0, 1.0 - 2.0 * m * h + lip * lip * h * h))


@renamed_kwargs(lip="lipschitz")
def contraction_step_limit(m: float, lipschitz: float) -> float:
    r"""Largest step :math:`2m/\mathrm{Lip}^2` for which the Euler bound :func:`euler_step_factor` is below 1.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> fl.contraction_step_limit(1.0, 2.0)  # 2m / Lip^2
    0.5
    >>> fl.euler_step_factor(1.0, 2.0, 0.5)  # the Euler bound equals 1 at that step
    1.0
    """
    m = check_real(m, "m", positive=True)
    lip = check_real(lipschitz, "lipschitz", positive=True)
    return 2.0 * m / (lip * lip)
