r"""Operator splitting of two velocity fields, and the scalar test problem of forward Euler.

A transformer block applies two residual sub-layers in turn, ``x -> x + h A(x)`` then
``x -> x + h M(x)``. Read as numerics, this is *Lie-Trotter splitting* of the flow of
:math:`\dot x = A(x) + M(x)` with Euler sub-steps. :func:`split_simulate` runs Lie-Trotter and
Strang splittings with any of flowlib's steppers inside; the helpers :func:`euler_test_error` and
:func:`euler_test_error_limit` give the exact global error of Euler on :math:`\dot x = \lambda x`
and its first-order limit, :func:`euler_spectral_radius` the growth factor
:math:`\rho(I + hM)` of Euler layers on a linear field, :func:`euler_error_coefficient` the
coefficient :math:`e(T)` of the first-order error expansion :math:`x^L - x(T) = h\,e(T) + O(h^2)`
(chapter 1 of the book). Intervals over seeds come from :mod:`flowlib.stats`.
"""

from __future__ import annotations

import cmath
from collections.abc import Callable

import torch
from torch import Tensor

from .._validation import check_finite, check_positive_int, check_real, check_tokens
from ..integrate.simulate import Trajectory, as_rhs
from ..integrate.steppers import STEPPERS

__all__ = [
    "SCHEMES",
    "split_simulate",
    "euler_test_error",
    "euler_test_error_limit",
    "euler_spectral_radius",
    "euler_error_coefficient",
]

#: Splitting schemes: ``"lie"`` (A for h, then B for h) and ``"strang"`` (A for h/2, B for h, A for h/2).
SCHEMES = ("lie", "strang")


def split_simulate(
    field_a: Callable[..., Tensor],
    field_b: Callable[..., Tensor],
    x0: Tensor,
    *,
    t1: float,
    n_steps: int,
    scheme: str = "lie",
    method: str = "euler",
    substeps: int = 1,
    t0: float = 0.0,
) -> Trajectory:
    r"""Integrate :math:`\dot x = A(x) + B(x)` by splitting, one layer per step of size ``h``.

    One layer of the ``"lie"`` scheme is :math:`\Phi_B^h \circ \Phi_A^h`; one layer of ``"strang"``
    is :math:`\Phi_A^{h/2} \circ \Phi_B^h \circ \Phi_A^{h/2}`. Each sub-flow :math:`\Phi_F^s` is
    approximated by ``substeps`` steps of ``method`` of size ``s / substeps``. With
    ``scheme="lie", method="euler", substeps=1`` a layer is exactly the pre-normalisation-free
    transformer block ``x + hA(x)`` followed by ``x + hB(x)``.

    Parameters
    ----------
    field_a, field_b : callable
        Velocity fields ``field(x) -> v`` with shapes ``(..., n, d) -> (..., n, d)`` (a field that
        declares ``time_dependent = True`` is called as ``field(x, t)``).
    x0 : Tensor, shape (..., n, d)
        Initial tokens.
    t1 : float
        Final time; the step is ``h = (t1 - t0) / n_steps``.
    n_steps : int
        Number of layers (splitting steps).
    scheme : {"lie", "strang"}
        Splitting scheme.
    method : {"euler", "heun", "rk4", "rk4_38"}
        Stepper used inside each sub-flow.
    substeps : int
        Steps of ``method`` per sub-flow (many RK4 sub-steps make the sub-flows nearly exact, which
        isolates the splitting error).
    t0 : float
        Initial time.

    Returns
    -------
    Trajectory
        ``t`` of shape ``(n_steps + 1,)`` and ``x`` of shape ``(n_steps + 1, ..., n, d)``, one saved
        state per layer; ``method`` is recorded as ``"<scheme>-<method>"``.

    Raises
    ------
    ValueError
        If ``scheme`` or ``method`` is unknown, ``n_steps`` or ``substeps`` is not a positive
        integer, a time is not finite, or ``x0`` is not finite.
    TypeError
        If a field is not callable or ``x0`` is not a floating tensor.

    Examples
    --------
    >>> import torch, flowlib.book.splitting as sp
    >>> x0 = torch.ones(1, 1, dtype=torch.float64)
    >>> traj = sp.split_simulate(lambda x: -x, lambda x: 2 * x, x0, t1=1.0, n_steps=2)
    >>> round(traj.final.item(), 12)   # ((1 - 1/2)(1 + 2/2))^2 = 1
    1.0
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}; got {scheme!r}")
    if method not in STEPPERS:
        raise ValueError(f"method must be one of {tuple(STEPPERS)}; got {method!r}")
    for name, fld in (("field_a", field_a), ("field_b", field_b)):
        if not callable(fld):
            raise TypeError(f"{name} must be callable, field(x) -> v; got {type(fld).__name__}")
    x0 = check_tokens(x0, "x0")
    check_finite(x0, "x0")
    n_steps = check_positive_int(n_steps, "n_steps")
    substeps = check_positive_int(substeps, "substeps")
    t0 = check_real(t0, "t0")
    t1 = check_real(t1, "t1")
    step = STEPPERS[method].step
    fa, fb = as_rhs(field_a), as_rhs(field_b)
    h = (t1 - t0) / n_steps

    def flow(f, t: float, x: Tensor, s: float) -> Tensor:
        k = s / substeps
        for j in range(substeps):
            x = step(f, t + j * k, x, k)
        return x

    out = torch.empty((n_steps + 1, *x0.shape), dtype=x0.dtype, device=x0.device)
    out[0] = x0
    x = x0
    for ell in range(n_steps):
        t = t0 + ell * h
        if scheme == "lie":
            x = flow(fb, t, flow(fa, t, x, h), h)
        else:
            x = flow(fa, t + 0.5 * h, flow(fb, t, flow(fa, t, x, 0.5 * h), h), 0.5 * h)
        out[ell + 1] = x
    times = torch.tensor([t0 + k * h for k in range(n_steps)] + [t1], dtype=torch.float64)
    return Trajectory(t=times, x=out, method=f"{scheme}-{method}", n_steps=n_steps)


def _complex(value: object, name: str) -> complex:
    if isinstance(value, bool) or not isinstance(value, (int, float, complex)):
        raise TypeError(f"{name} must be a real or complex number; got {type(value).__name__}")
    z = complex(value)
    if not (cmath.isfinite(z)):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return z


def euler_test_error(lam: complex, n_layers: int, *, t1: float = 1.0, x0: complex = 1.0) -> complex:
    r"""Exact global error :math:`e^{\lambda T}x_0 - (1 + \lambda T/L)^L x_0` of forward Euler on
    :math:`\dot x = \lambda x`, :math:`x(0) = x_0`, after ``L = n_layers`` steps of size ``T / L``.

    Parameters
    ----------
    lam : complex
        The rate :math:`\lambda` (a real number is allowed).
    n_layers : int
        Number of Euler steps :math:`L`.
    t1 : float
        Final time :math:`T`.
    x0 : complex
        Initial value.

    Returns
    -------
    complex
        Exact solution minus the Euler value at time ``t1`` (a Python complex).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.splitting import euler_test_error, euler_test_error_limit
    >>> e = euler_test_error(-1.0, 100)
    >>> round(e.real, 8), e.imag
    (0.0018471, 0.0)
    >>> round((100 * e).real, 3), round(euler_test_error_limit(-1.0).real, 3)  # L e_L tends to lambda^2 T^2 e^(lambda T) / 2
    (0.185, 0.184)
    """
    lam = _complex(lam, "lam")
    x0 = _complex(x0, "x0")
    n_layers = check_positive_int(n_layers, "n_layers")
    t1 = check_real(t1, "t1")
    z = lam * t1
    return cmath.exp(z) * x0 - (1.0 + z / n_layers) ** n_layers * x0


def euler_test_error_limit(lam: complex, *, t1: float = 1.0, x0: complex = 1.0) -> complex:
    r"""The limit :math:`\lim_{L\to\infty} L\,(e^{\lambda T}x_0 - x^L) = \tfrac12 \lambda^2 T^2 e^{\lambda T} x_0`
    of :func:`euler_test_error` times ``L``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.splitting import euler_test_error_limit
    >>> round(euler_test_error_limit(-1.0).real, 6)  # e^-1 / 2
    0.18394
    """
    lam = _complex(lam, "lam")
    x0 = _complex(x0, "x0")
    t1 = check_real(t1, "t1")
    z = lam * t1
    return 0.5 * z * z * cmath.exp(z) * x0


def euler_spectral_radius(M: Tensor, h: float) -> float:
    r"""Spectral radius :math:`\rho(I + hM) = \max_k |1 + h\lambda_k|` of one Euler layer on the
    linear field :math:`x \mapsto Mx`.

    The Euler iterates :math:`(I + hM)^\ell x_0` tend to zero for every :math:`x_0` if and only if
    this number is below one (no diagonalisability needed).

    Parameters
    ----------
    M : Tensor, shape (d, d)
        Real or complex square matrix.
    h : float
        Step size, ``h >= 0``.

    Returns
    -------
    float

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.splitting import euler_spectral_radius
    >>> M = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)  # a rotation: eigenvalues +-i
    >>> round(euler_spectral_radius(M, 0.1), 6)  # |1 + 0.1 i| > 1: Euler slowly spirals out
    1.004988
    """
    if not isinstance(M, Tensor):
        raise TypeError(f"M must be a torch.Tensor; got {type(M).__name__}")
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"M must be a square matrix of shape (d, d); got shape {tuple(M.shape)}")
    if not (M.is_floating_point() or M.is_complex()):
        raise TypeError(f"M must be a floating or complex tensor; got dtype {M.dtype}")
    check_finite(M, "M")
    h = check_real(h, "h", nonnegative=True)
    lam = torch.linalg.eigvals(M)
    return float((1.0 + h * lam).abs().max())


def euler_error_coefficient(
    field: Callable[[Tensor], Tensor], x0: Tensor, *, t1: float, n_steps: int = 256
) -> tuple[Tensor, Tensor]:
    r"""Solve the flow and its first-order Euler error coefficient together.

    For an autonomous :math:`C^2` field :math:`F` the Euler iterates with step :math:`h = T/L` satisfy
    :math:`x^\ell - x(t_\ell) = h\,e(t_\ell) + O(h^2)` (Hairer, Norsett and Wanner I, Thm II.8.1),
    where :math:`e` solves the linear variational equation

    .. math::

        \dot e = \mathrm DF(x)\,e - \tfrac12 \ddot x, \qquad \ddot x = \mathrm DF(x)\,F(x), \qquad e(0) = 0 .

    This function integrates the pair :math:`(x, e)` with ``n_steps`` classical RK4 steps; the
    Jacobian-vector products come from automatic differentiation (:func:`torch.func.jvp`), so
    ``field`` must be differentiable by torch.

    Parameters
    ----------
    field : callable
        Autonomous velocity field ``field(x) -> v`` with ``v.shape == x.shape``.
    x0 : Tensor, shape (..., n, d)
        Initial state (floating point).
    t1 : float
        Final time :math:`T > 0`.
    n_steps : int
        RK4 steps for the pair (the result is accurate to about ``(t1 / n_steps) ** 4``).

    Returns
    -------
    (Tensor, Tensor)
        :math:`x(T)` and :math:`e(T)`, both of the shape of ``x0``.

    Raises
    ------
    TypeError
        If ``field`` is not callable or ``x0`` is not a floating tensor.
    ValueError
        If ``t1`` is not positive and finite, ``n_steps`` is not a positive integer, or ``x0`` is
        not finite.

    Examples
    --------
    >>> import math, torch, flowlib as fl
    >>> from flowlib.book.splitting import euler_error_coefficient
    >>> x0 = torch.ones(1, 1, dtype=torch.float64)
    >>> xT, eT = euler_error_coefficient(lambda x: -x, x0, t1=1.0)  # e(T) = -T e^{-T} / 2 for x' = -x
    >>> round(eT.item(), 8), round(-0.5 * math.exp(-1.0), 8)
    (-0.18393972, -0.18393972)
    """
    if not callable(field):
        raise TypeError(f"field must be callable, field(x) -> v; got {type(field).__name__}")
    x0 = check_tokens(x0, "x0")
    check_finite(x0, "x0")
    t1 = check_real(t1, "t1", positive=True)
    n_steps = check_positive_int(n_steps, "n_steps")
    jvp = torch.func.jvp

    def rhs(x: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        v, dv_e = jvp(field, (x,), (e,))
        _, xdd = jvp(field, (x,), (v,))
        return v, dv_e - 0.5 * xdd

    h = t1 / n_steps
    x, e = x0, torch.zeros_like(x0)
    for _ in range(n_steps):
        k1 = rhs(x, e)
        k2 = rhs(x + 0.5 * h * k1[0], e + 0.5 * h * k1[1])
        k3 = rhs(x + 0.5 * h * k2[0], e + 0.5 * h * k2[1])
        k4 = rhs(x + h * k3[0], e + h * k3[1])
        x = x + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        e = e + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return x, e
