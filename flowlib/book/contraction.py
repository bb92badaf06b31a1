r"""Contraction of flows and of their Euler layers: exact factors for linear layers, the uniform-in-time
Euler error bound, and a certified Lipschitz bound for softmax attention on a ball.

Chapter 4 of the book proves the statements these functions evaluate:

* for a linear field :math:`F(x) = Mx` one Euler layer multiplies distances by at most
  :math:`\|I + hM\|_2`, and this worst case is attained (:func:`linear_euler_factor`);
* if :math:`F` has one-sided Lipschitz constant :math:`-m < 0` and Lipschitz constant :math:`\Lambda`
  on a set containing both the exact and the Euler trajectory, and :math:`\|\ddot X\| \le C`, then
  for :math:`0 < h < 2m/\Lambda^2` the Euler error obeys
  :math:`\|X^\ell - X(t_\ell)\| \le \tfrac{Ch^2/2}{1 - \rho(h)}` for every :math:`\ell`, with
  :math:`\rho(h) = \sqrt{1 - 2mh + \Lambda^2h^2}` (:func:`uniform_euler_error_bound`);
* softmax attention :math:`G(X)_i = \sum_j P_{ij}(X) V x_j` is Lipschitz on
  :math:`\{X : \|x_i\| \le R\ \forall i\}` in the Euclidean norm of :math:`\mathbb R^{nd}` with the
  constant of :func:`attention_lipschitz_bound`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive_int, check_real
from ..stability import euler_step_factor

__all__ = [
    "linear_euler_factor",
    "uniform_euler_error_bound",
    "attention_lipschitz_bound",
    "forced_linear_solution",
]


def _square(M: object, name: str = "M") -> Tensor:
    if not isinstance(M, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(M).__name__}")
    if not M.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor; got dtype {M.dtype}")
    if M.ndim < 2 or M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{name} must have shape (..., N, N); got {tuple(M.shape)}")
    return M


def linear_euler_factor(M: Tensor, h: float) -> Tensor:
    r"""Exact worst-case factor :math:`\|I + hM\|_2` of one Euler layer of the linear field :math:`F(x) = Mx`.

    Parameters
    ----------
    M : Tensor, shape (..., N, N)
        The matrix of the field (acting on column vectors).
    h : float
        Step size, ``h >= 0``.

    Returns
    -------
    Tensor, shape (...)
        The spectral norm of ``I + h M``: the layer contracts every perturbation iff it is below 1.

    Examples
    --------
    >>> import torch
    >>> M = torch.diag(torch.tensor([-1.0, -10.0], dtype=torch.float64))
    >>> round(linear_euler_factor(M, 0.1).item(), 12)   # contracts although h > 2m/Lip^2 = 0.02
    0.9
    """
    M = _square(M)
    h = check_real(h, "h", nonnegative=True)
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    return torch.linalg.matrix_norm(eye + h * M, ord=2)


def uniform_euler_error_bound(m: float, lip: float, C: float, h: float, *, simplified: bool = False) -> float:
    r"""Bound on :math:`\sup_\ell \|X^\ell - X(t_\ell)\|` for Euler layers of a contracting field.

    With :math:`\rho = \sqrt{1 - 2mh + \Lambda^2 h^2} < 1` the bound is :math:`(Ch^2/2)/(1-\rho)`,
    independent of the depth :math:`T`. Since :math:`\rho \le 1 - m'h` with :math:`m' = m - \Lambda^2h/2`,
    it is at most the simplified bound :math:`Ch/(2m')`.

    Parameters
    ----------
    m : float
        Contraction rate, ``m > 0`` (one-sided Lipschitz constant ``-m``).
    lip : float
        Lipschitz constant ``lip >= m``.
    C : float
        Bound on ``||X''(t)||`` along the exact solution, ``C >= 0``.
    h : float
        Step size with ``0 < h < 2 m / lip**2``.
    simplified : bool
        Return ``C h / (2 m')`` instead of the sharper ``(C h^2 / 2) / (1 - rho)``.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``m <= 0``, ``lip < m``, ``C < 0`` or ``h`` is not in ``(0, 2m/lip^2)``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.contraction import uniform_euler_error_bound
    >>> b = uniform_euler_error_bound(1.0, 1.0, 1.0, 0.1)
    >>> 0 < b < 1, b > uniform_euler_error_bound(1.0, 1.0, 1.0, 0.05)  # O(h), uniformly in depth
    (True, True)
    """
    m = check_real(m, "m", positive=True)
    lip = check_real(lip, "lip", positive=True)
    C = check_real(C, "C", nonnegative=True)
    h = check_real(h, "h", positive=True)
    if lip < m * (1 - 1e-12):
        raise ValueError(f"lip must be >= m; got lip={lip}, m={m}")
    if h >= 2.0 * m / lip**2:
        raise ValueError(f"h must be < 2m/lip^2 = {2.0 * m / lip**2:.6g} for the layers to contract; got h={h}")
    if simplified:
        return C * h / (2.0 * (m - 0.5 * lip * lip * h))
    rho = euler_step_factor(m, lip, h)
    return 0.5 * C * h * h / (1.0 - rho)


def attention_lipschitz_bound(
    radius: float,
    n: int,
    *,
    beta: float = 1.0,
    Q: Tensor | None = None,
    K: Tensor | None = None,
    V: Tensor | None = None,
) -> float:
    r"""Certified Lipschitz constant of softmax attention on the product of balls :math:`\|x_i\| \le R`.

    For :math:`G(X)_i = \sum_j P_{ij} V x_j`, :math:`P_{ij} \propto e^{\beta\langle Qx_i, Kx_j\rangle}`,
    and :math:`\kappa = |\beta|\,\|Q^\top K\|_2`, every Jacobian on the set satisfies (Chapter 4)

    .. math::

        \|DG(X)\|_2 \le \|V\|_2\big(\sqrt{c} + \sqrt{2(1 + c)}\,\kappa R^2\big),
        \qquad c = \min(n, e^{2\kappa R^2}),

    in the Euclidean norm of :math:`\mathbb R^{nd}`; ``c`` bounds the column sums of ``P``. The set is
    convex, so this is a Lipschitz constant of ``G`` on it.

    Parameters
    ----------
    radius : float
        ``R > 0``.
    n : int
        Number of tokens.
    beta : float
        Inverse temperature (any real; only ``|beta|`` enters).
    Q, K : Tensor, shape (k, d), optional
        Query and key matrices (``None`` = identity).
    V : Tensor, shape (d, d), optional
        Value matrix (``None`` = identity).

    Returns
    -------
    float

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.contraction import attention_lipschitz_bound
    >>> attention_lipschitz_bound(1.0, 4) > 0
    True
    """
    R = check_real(radius, "radius", positive=True)
    n = check_positive_int(n, "n")
    beta = abs(check_real(beta, "beta"))
    for name, M in (("Q", Q), ("K", K), ("V", V)):
        if M is not None and (not isinstance(M, Tensor) or M.ndim != 2):
            raise TypeError(f"{name} must be a 2-D tensor or None; got {type(M).__name__}")
    if V is not None and V.shape[0] != V.shape[1]:
        raise ValueError(f"V must be square (d, d); got {tuple(V.shape)}")
    if Q is None and K is None:
        qk = 1.0
    else:
        q = Q if Q is not None else torch.eye(K.shape[1], dtype=K.dtype)
        k = K if K is not None else torch.eye(Q.shape[1], dtype=Q.dtype)
        if q.shape != k.shape:
            raise ValueError(f"Q and K must have the same shape (k, d); got {tuple(q.shape)} and {tuple(k.shape)}")
        qk = float(torch.linalg.matrix_norm(q.mT @ k, ord=2))
    v = 1.0 if V is None else float(torch.linalg.matrix_norm(V, ord=2))
    kappa = beta * qk
    c = min(float(n), math.exp(min(2.0 * kappa * R * R, 700.0)))
    return v * (math.sqrt(c) + math.sqrt(2.0 * (1.0 + c)) * kappa * R * R)


def forced_linear_solution(M: Tensor, c: Tensor, omega: float, x0: Tensor, t: Tensor) -> Tensor:
    r"""Exact solution of :math:`\dot x_i = M x_i + \operatorname{Re}(c\, e^{i\omega t})` for every token.

    Written as :math:`x(t) = e^{tM}(x_0 - p(0)) + p(t)` with the periodic solution
    :math:`p(t) = \operatorname{Re}\big((i\omega I - M)^{-1} c\, e^{i\omega t}\big)`.

    Parameters
    ----------
    M : Tensor, shape (d, d)
        Real matrix; ``i omega`` must not be an eigenvalue.
    c : Tensor, shape (d,)
        Complex (or real) forcing amplitude.
    omega : float
        Forcing frequency.
    x0 : Tensor, shape (n, d)
        Initial tokens (real floating).
    t : Tensor, shape (S,)
        Times.

    Returns
    -------
    Tensor, shape (S, n, d)
        The tokens at each time, dtype of ``x0``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.contraction import forced_linear_solution
    >>> M = -torch.eye(1, dtype=torch.float64); c = torch.zeros(1, dtype=torch.complex128)
    >>> x = forced_linear_solution(M, c, 1.0, torch.ones(1, 1, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))
    >>> x.shape, round(x[-1].item(), 6)  # no forcing: x(t) = e^-t
    (torch.Size([2, 1, 1]), 0.367879)
    """
    M = _square(M)
    if M.ndim != 2:
        raise ValueError(f"M must have shape (d, d); got {tuple(M.shape)}")
    omega = check_real(omega, "omega")
    if not isinstance(x0, Tensor) or x0.ndim != 2 or x0.shape[-1] != M.shape[0] or not x0.is_floating_point():
        raise ValueError(f"x0 must be a floating tensor of shape (n, {M.shape[0]}); got {getattr(x0, 'shape', x0)}")
    if not isinstance(c, Tensor) or c.shape != (M.shape[0],):
        raise ValueError(f"c must be a tensor of shape ({M.shape[0]},)")
    if not isinstance(t, Tensor) or t.ndim != 1:
        raise ValueError("t must be a 1-D tensor of times")
    cdt = torch.complex128 if x0.dtype == torch.float64 else torch.complex64
    Mc = M.to(cdt)
    eye = torch.eye(M.shape[0], dtype=cdt)
    shift = 1j * omega * eye - Mc
    if float(torch.linalg.svdvals(shift)[-1]) < 1e-12:
        raise ValueError("i*omega is an eigenvalue of M (resonance): no periodic solution")
    a = torch.linalg.solve(shift, c.to(cdt))  # p(t) = Re(a e^{i omega t})
    tt = t.to(x0.dtype)
    p = (a[None, :] * torch.exp(1j * omega * tt.to(cdt))[:, None]).real.to(x0.dtype)  # (S, d)
    expm = torch.linalg.matrix_exp(tt[:, None, None] * M.to(x0.dtype)[None])  # (S, d, d)
    z0 = x0 - p[0]  # (n, d)
    return torch.einsum("sab,nb->sna", expm, z0) + p[:, None, :]
