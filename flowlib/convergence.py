"""Convergence studies: the error of L-layer discretisations against a fine reference, and its order."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .integrate.simulate import Trajectory, simulate
from .integrate.steppers import Stepper

__all__ = ["global_error", "fit_slope", "fit_order", "ConvergenceStudy", "convergence_study"]


def global_error(traj: Trajectory, reference: Trajectory, *, atol_time: float = 1e-9) -> Tensor:
    r"""Worst error over saved times and tokens: :math:`\max_k \max_i \|x_i(t_k) - x^{\rm ref}_i(t_k)\|`.

    Every time of ``traj`` must also be a saved time of ``reference`` (within ``atol_time``).

    Returns
    -------
    Tensor, shape (...)
        One value per independent system (leading dims of the token tensor).

    Raises
    ------
    ValueError
        If a time of ``traj`` is missing from ``reference`` or the token shapes differ.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x0 = torch.eye(2, dtype=torch.float64); field = fl.SoftmaxAttention()
    >>> coarse = fl.simulate(field, x0, t1=1.0, n_steps=4)
    >>> fine = fl.simulate(field, x0, t1=1.0, n_steps=400, method="rk4")
    >>> err = fl.global_error(coarse, fine)
    >>> err.shape, round(err.item(), 4)  # one system: a 0-d tensor
    (torch.Size([]), 0.273)
    """
    if traj.x.shape[1:] != reference.x.shape[1:]:
        raise ValueError(
            f"token shapes differ: trajectory {tuple(traj.x.shape[1:])}, reference {tuple(reference.x.shape[1:])}"
        )
    gap = (traj.t[:, None] - reference.t[None, :]).abs()
    best, idx = gap.min(dim=1)
    if bool((best > atol_time).any()):
        missing = traj.t[best > atol_time][:3].tolist()
        raise ValueError(f"reference has no saved state at times {missing}; save it on a grid containing them")
    diff = traj.x - reference.x[idx.to(reference.x.device)]
    return torch.linalg.vector_norm(diff, dim=-1).amax(dim=-1).amax(dim=0)


def fit_slope(
    x: Sequence[float] | Tensor | np.ndarray,
    y: Sequence[float] | Tensor | np.ndarray,
    *,
    log_x: bool = True,
    log_y: bool = True,
) -> float:
    """Least-squares slope of ``y`` against ``x``, in log-log coordinates by default (a power law's exponent).

    flowlib's one slope fit: :func:`fit_order` is ``-fit_slope`` on errors above a floor; a semi-log
    fit (``log_x=False``) gives an exponential rate.

    Raises
    ------
    ValueError
        If the lengths differ, fewer than two points are given, or a logarithm meets a value <= 0.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> round(fl.convergence.fit_slope([1, 10, 100], [3.0, 0.3, 0.03]), 6)  # y ~ x^-1
    -1.0
    >>> round(fl.convergence.fit_slope([0.0, 1.0, 2.0], [1.0, 0.5, 0.25], log_x=False), 6)  # y ~ 2^-t: log(1/2)
    -0.693147
    """
    xs = np.asarray([float(v) for v in x], dtype=float)
    ys = np.asarray([float(v) for v in y], dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length; got {xs.shape} and {ys.shape}")
    if xs.size < 2:
        raise ValueError(f"need at least two points to fit a slope; got {xs.size}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError(f"x and y must be finite; got {xs.tolist()} and {ys.tolist()}")
    for flag, v, name in ((log_x, xs, "x"), (log_y, ys, "y")):
        if flag and not bool((v > 0).all()):
            raise ValueError(
                f"{name} must be > 0 on a logarithmic axis (positive for a log-log slope); got {v.tolist()}"
            )
    u = np.log(xs) if log_x else xs
    w = np.log(ys) if log_y else ys
    uc = u - u.mean()
    denom = float(uc @ uc)
    if denom == 0.0:
        raise ValueError(f"the abscissae are all equal: no slope; got x = {xs.tolist()}")
    return float(uc @ (w - w.mean())) / denom


def fit_order(n_steps: Sequence[int], errors: Sequence[float], *, floor: float = 1e-13) -> float:
    """Empirical order: minus the least-squares slope of ``log(error)`` against ``log(n_steps)``.

    Points with ``error <= floor`` (round-off) are dropped, as in diffrax's convergence tests.

    Raises
    ------
    ValueError
        If fewer than two points remain above the floor or the lengths differ.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> round(fl.fit_order([10, 20, 40], [1e-2, 2.5e-3, 6.25e-4]), 6)  # errors fall like L^-2
    2.0
    """
    n = np.asarray(n_steps, dtype=float)
    e = np.asarray([float(v) for v in errors], dtype=float)
    if n.shape != e.shape:
        raise ValueError(f"n_steps and errors must have the same length; got {n.shape} and {e.shape}")
    if not bool((n > 0).all()):
        raise ValueError(f"every step count must be positive; got {n.tolist()}")
    keep = e > floor
    if keep.sum() < 2:
        raise ValueError(f"need at least two errors above floor={floor:g}; got {e.tolist()}")
    return -fit_slope(n[keep], e[keep])


@dataclass(frozen=True)
class ConvergenceStudy:
    """Result of :func:`convergence_study`: ``errors[i]`` is the worst error with ``layers[i]`` steps.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> study = fl.convergence_study(fl.SoftmaxAttention(), torch.eye(3, dtype=torch.float64), t1=1.0, layers=[4, 8, 16], method="heun")
    >>> type(study).__name__, len(study.errors), round(study.order)
    ('ConvergenceStudy', 3, 2)
    """

    layers: tuple[int, ...]
    errors: tuple[float, ...]
    order: float
    method: str


def convergence_study(
    field: Callable,
    x0: Tensor,
    *,
    t1: float,
    layers: Sequence[int],
    method: str | Stepper = "euler",
    reference_steps: int | None = None,
    reference_method: str = "rk4",
    floor: float = 1e-13,
) -> ConvergenceStudy:
    """Error of ``method`` with each number of ``layers`` against a fine reference, uniformly in time and tokens.

    Parameters
    ----------
    field : VelocityField or callable
    x0 : Tensor, shape (..., n, d)
        Use float64 to see orders above 2 (float32 round-off floors near 1e-7).
    t1 : float
        Horizon.
    layers : sequence of int
        Numbers of steps, e.g. ``[4, 8, 16, 32, 64]``.
    method : str or Stepper
        The stepper under study.
    reference_steps : int, optional
        Steps of the reference solution; must be a multiple of every entry of ``layers``
        (default: the least common multiple of ``layers`` times enough to reach at least 2048).
    reference_method : str
        Stepper of the reference (default RK4).
    floor : float
        Errors at or below this are ignored by the order fit.

    Returns
    -------
    ConvergenceStudy
        For batched ``x0`` the worst system is reported.

    Raises
    ------
    ValueError
        If ``layers`` has fewer than two entries or an entry that is not an int >= 1, or
        ``reference_steps`` is not a multiple of every entry.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> x0 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    >>> study = fl.convergence_study(fl.SoftmaxAttention(beta=1.0), x0, t1=1.0, layers=[16, 32, 64, 128])
    >>> study.layers, study.method
    ((16, 32, 64, 128), 'euler')
    >>> round(study.order, 1)  # forward Euler: first order
    0.9
    """
    layers = tuple(layers)
    if len(layers) < 2:
        raise ValueError(f"layers needs at least two layer counts to fit an order; got {layers}")
    for v in layers:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"every entry of layers must be an int >= 1 (a number of layers); got {layers}")
    lcm = math.lcm(*layers)
    if reference_steps is None:
        reference_steps = lcm * max(1, math.ceil(2048 / lcm))
    if reference_steps % lcm:
        raise ValueError(
            f"reference_steps must be a multiple of every entry of layers (lcm {lcm}); got {reference_steps}"
        )
    ref = simulate(
        field, x0, t1=t1, n_steps=reference_steps, method=reference_method, save_every=reference_steps // lcm
    )
    errors = []
    for L in layers:
        traj = simulate(field, x0, t1=t1, n_steps=L, method=method)
        errors.append(float(global_error(traj, ref).max()))
    name = method.name if isinstance(method, Stepper) else method
    return ConvergenceStudy(layers, tuple(errors), fit_order(layers, errors, floor=floor), name)
