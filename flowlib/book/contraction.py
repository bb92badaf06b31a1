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
  constant of :func:`attention_lipschitz_bound`;
* damped attention :math:`F(X) = -aX + G(X)` contracts that ball in the max-over-tokens norm
  :math:`\|X\|_{\infty,2} = \max_i |x_i|`, with a rate and a step range independent of the number of
  tokens (:func:`max_norm_contraction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_positive_int, check_real
from ..stability import euler_step_factor
from .regularity import lipschitz_bound

__all__ = [
    "linear_euler_factor",
    "uniform_euler_error_bound",
    "attention_lipschitz_bound",
    "MaxNormCertificate",
    "max_norm_contraction",
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
        q = Q if Q is not None else torch.eye(K.shape[1], dtype=K.dtype, device=K.device)
        k = K if K is not None else torch.eye(Q.shape[1], dtype=Q.dtype, device=Q.device)
        if q.shape != k.shape:
            raise ValueError(f"Q and K must have the same shape (k, d); got {tuple(q.shape)} and {tuple(k.shape)}")
        qk = float(torch.linalg.matrix_norm(q.mT @ k, ord=2))
    v = 1.0 if V is None else float(torch.linalg.matrix_norm(V, ord=2))
    kappa = beta * qk
    c = min(float(n), math.exp(min(2.0 * kappa * R * R, 700.0)))
    return v * (math.sqrt(c) + math.sqrt(2.0 * (1.0 + c)) * kappa * R * R)


@dataclass(frozen=True)
class MaxNormCertificate:
    r"""Certified contraction of damped attention :math:`F(X) = -aX + G(X)` on the ball :math:`B_R` (chapter 4).

    In the max-over-tokens norm :math:`\|X\|_{\infty,2} = \max_i |x_i|`, with chapter 2's Lipschitz
    constant :math:`\Lambda_R = \|V\|(1 + 2|\beta|\,\|K^\top Q\|R^2)` of :math:`G` on :math:`B_R`, one Euler
    layer :math:`X \mapsto X + hF(X)` is Lipschitz on :math:`B_R` with constant
    :math:`|1 - ha| + h\Lambda_R` (:meth:`layer_factor`), and :math:`B_R` is invariant under the layer when
    :math:`0 < h \le 2/(a + \|V\|)`, and under the flow, when :math:`a \ge \|V\|`.

    Attributes
    ----------
    damping : float
        :math:`a > 0`.
    radius : float
        :math:`R > 0`.
    lipschitz : float
        :math:`\Lambda_R`; it does not depend on the number of tokens.
    value_norm : float
        :math:`\|V\|` (spectral norm).
    rate : float
        :math:`m = a - \Lambda_R`; the flow contracts at rate ``rate`` when it is positive.
    step_max : float
        :math:`1/a`: for :math:`0 < h \le 1/a` the layer factor is :math:`1 - hm`.
    step_max_extended : float
        :math:`2/(a + \Lambda_R)`: the layer factor is below 1 for every :math:`0 < h <` this value when
        ``rate > 0``.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book.contraction import max_norm_contraction
    >>> c = max_norm_contraction(2.0, 1.0, beta=0.5, V=0.5 * torch.eye(2, dtype=torch.float64))
    >>> c.lipschitz, c.rate, c.step_max, round(c.step_max_extended, 4), c.layer_factor(0.25)
    (1.0, 1.0, 0.5, 0.6667, 0.75)
    """

    damping: float
    radius: float
    lipschitz: float
    value_norm: float
    rate: float
    step_max: float
    step_max_extended: float

    @property
    def contracts(self) -> bool:
        """Whether the certificate proves contraction (``rate > 0``, which implies ``a > ||V||``)."""
        return self.rate > 0.0

    def layer_factor(self, h: float) -> float:
        r"""Certified Lipschitz constant :math:`|1 - ha| + h\Lambda_R` of one Euler layer on :math:`B_R`.

        Valid for :math:`0 \le h \le 2/(a + \|V\|)` (the layers then map :math:`B_R` into itself when
        :math:`a \ge \|V\|`); below 1 exactly when :math:`0 < h < 2/(a + \Lambda_R)` and ``rate > 0``.

        Raises
        ------
        ValueError
            If ``h < 0`` or ``h > 2 / (a + ||V||)``.
        """
        h = check_real(h, "h", nonnegative=True)
        h_inv = 2.0 / (self.damping + self.value_norm)
        if h > h_inv * (1 + 1e-12):
            raise ValueError(f"h must be <= 2/(a + ||V||) = {h_inv:.6g} for B_R to be invariant; got h={h}")
        return abs(1.0 - h * self.damping) + h * self.lipschitz


def max_norm_contraction(
    damping: float,
    radius: float,
    *,
    beta: float = 1.0,
    Q: Tensor | None = None,
    K: Tensor | None = None,
    V: Tensor | None = None,
) -> MaxNormCertificate:
    r"""Certificate of contraction for damped attention :math:`-aX + G(X)` in the max-over-tokens norm.

    Uses chapter 2's Lipschitz bound :func:`flowlib.book.regularity.lipschitz_bound` on the ball
    :math:`B_R = \{X : \max_i |x_i| \le R\}`; see :class:`MaxNormCertificate` for what is certified.
    Nothing depends on the number of tokens.

    Parameters
    ----------
    damping : float
        :math:`a > 0`.
    radius : float
        :math:`R > 0`.
    beta : float
        Inverse temperature (any real).
    Q, K : Tensor, shape (k, d), optional
        ``None`` = identity.
    V : Tensor, shape (d, d), optional
        ``None`` = identity.

    Returns
    -------
    MaxNormCertificate

    Raises
    ------
    ValueError
        If ``damping <= 0`` or ``radius <= 0``.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book.contraction import max_norm_contraction
    >>> c = max_norm_contraction(2.0, 1.0, beta=0.5, V=0.5 * torch.eye(2, dtype=torch.float64))
    >>> c.rate, c.step_max, c.contracts  # rate 1.0 for every h <= 0.5, whatever the number of tokens
    (1.0, 0.5, True)
    """
    a = check_real(damping, "damping", positive=True)
    R = check_real(radius, "radius", positive=True)
    beta = check_real(beta, "beta")
    lam = lipschitz_bound(R, beta, Q, K, V)
    v = 1.0 if V is None else float(torch.linalg.matrix_norm(V.to(torch.float64), ord=2))
    return MaxNormCertificate(a, R, lam, v, a - lam, 1.0 / a, 2.0 / (a + lam))


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
        Tokens at time 0 (real floating).
    t : Tensor, shape (S,)
        Times (any grid; it need not start at 0).

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
    eye = torch.eye(M.shape[0], dtype=cdt, device=M.device)
    shift = 1j * omega * eye - Mc
    if float(torch.linalg.svdvals(shift)[-1]) < 1e-12:
        raise ValueError("i*omega is an eigenvalue of M (resonance): no periodic solution")
    a = torch.linalg.solve(shift, c.to(cdt))  # p(t) = Re(a e^{i omega t})
    tt = t.to(x0.dtype)
    p = (a[None, :] * torch.exp(1j * omega * tt.to(cdt))[:, None]).real.to(x0.dtype)  # (S, d)
    expm = torch.linalg.matrix_exp(tt[:, None, None] * M.to(x0.dtype)[None])  # (S, d, d)
    z0 = x0 - a.real.to(x0.dtype)  # x0 - p(0): x0 is the state at time 0, whatever the grid's first time
    return torch.einsum("sab,nb->sna", expm, z0) + p[:, None, :]
