"""``simulate``: integrate a velocity field over depth; ``residual_stack``: the transformer reading."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_finite, check_positive_int, check_real, check_tokens, sphere_tolerance
from ..fields.base import VelocityField
from .steppers import RHS, STEPPERS, Stepper

__all__ = ["Trajectory", "TimeDependent", "simulate", "residual_stack", "as_rhs"]


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Saved states of a simulation.

    Attributes
    ----------
    t : Tensor, shape (S,)
        Saved times (float64 on the CPU), from ``t0`` to ``t1`` inclusive.
    x : Tensor, shape (S, ..., n, d)
        Saved token configurations; ``x[0]`` is the initial state and ``x[-1]`` the final one.
    method : str
        Name of the stepper.
    n_steps : int
        Number of steps (layers) taken.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> traj = fl.simulate(fl.SoftmaxAttention(), torch.eye(3, dtype=torch.float64), t1=1.0, n_steps=10, save_every=5)
    >>> traj.t
    tensor([0.0000, 0.5000, 1.0000], dtype=torch.float64)
    >>> traj.x.shape, traj.method, traj.n_steps
    (torch.Size([3, 3, 3]), 'euler', 10)
    >>> traj.at(0.5).equal(traj.x[1])  # the state saved at t = 0.5
    True
    """

    t: Tensor
    x: Tensor
    method: str
    n_steps: int

    @property
    def final(self) -> Tensor:
        """The final state ``x[-1]``, shape ``(..., n, d)``."""
        return self.x[-1]

    @property
    def step_size(self) -> float:
        """``h = (t1 - t0) / n_steps``."""
        return float(self.t[-1] - self.t[0]) / self.n_steps

    def __len__(self) -> int:
        return self.x.shape[0]

    def at(self, time: float) -> Tensor:
        """The saved state whose time is nearest to ``time`` (no interpolation)."""
        i = int(torch.argmin((self.t - float(time)).abs()))
        return self.x[i]

    def detach(self) -> Trajectory:
        """A copy detached from the autograd graph."""
        return Trajectory(self.t, self.x.detach(), self.method, self.n_steps)

    def cpu(self) -> Trajectory:
        """A copy with ``x`` on the CPU (for plotting)."""
        return Trajectory(self.t, self.x.detach().cpu(), self.method, self.n_steps)


class TimeDependent(torch.nn.Module):
    r"""Declare a depth-dependent velocity field :math:`v = f(x, t)`.

    :func:`simulate` calls every field and callable as ``field(x)``; it never inspects a signature.
    A field that depends on depth (time) says so with the class attribute ``time_dependent = True``
    and is then called as ``field(x, t)``. ``TimeDependent(fn)`` is that declaration for a plain
    function or module ``fn(x, t)``; a module passed as ``fn`` is registered, so its parameters
    appear in ``.parameters()`` and move with ``.to()``.

    Parameters
    ----------
    fn : callable
        ``fn(x, t) -> v`` with ``x`` of shape ``(..., n, d)``, ``t`` a Python float, and ``v`` of
        the shape of ``x``.

    Examples
    --------
    >>> import torch, flowlib
    >>> field = flowlib.TimeDependent(lambda x, t: t * torch.ones_like(x))   # v = t
    >>> traj = flowlib.simulate(field, torch.zeros(1, 1, dtype=torch.float64), t1=1.0, n_steps=4, method="heun")
    >>> round(traj.final.item(), 12)   # x(1) = 1/2, exact for Heun on a linear-in-t field
    0.5
    """

    time_dependent = True

    def __init__(self, fn: Callable[[Tensor, float], Tensor]) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"TimeDependent needs a callable fn(x, t) -> v; got {type(fn).__name__}")
        self.fn = fn

    def forward(self, x: Tensor, t: float) -> Tensor:
        return self.fn(x, t)


def as_rhs(field: Callable) -> RHS:
    """Wrap ``field`` as ``f(t, x)`` for the steppers.

    Every field is called as ``field(x)``, except one that declares ``time_dependent = True`` (for
    example :class:`TimeDependent`), which is called as ``field(x, t)``. A
    :class:`~flowlib.fields.base.VelocityField` is called as ``field(x, check=False)``: through
    ``__call__``, so forward hooks and pre-hooks run at every stage, without the per-call value checks
    (the integrators check the initial state once). Nothing is guessed from a signature.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.integrate import as_rhs
    >>> f = as_rhs(fl.SoftmaxAttention(beta=0.0))
    >>> f(0.0, torch.tensor([[1.0], [3.0]]))  # f(t, x) = field(x); with beta = 0, the mean of the tokens
    tensor([[2.],
            [2.]])
    """
    if not callable(field):
        raise TypeError(f"field must be callable, field(x) -> v; got {type(field).__name__}")
    if getattr(field, "time_dependent", False):
        return lambda t, x: field(x, t)
    if isinstance(field, VelocityField):
        if type(field).forward is VelocityField.forward:
            return lambda t, x: field(x, check=False)
        return lambda t, x: field(x)  # a subclass with its own forward(x)

    def rhs(t: float, x: Tensor) -> Tensor:
        try:
            return field(x)
        except TypeError as err:
            if "positional argument" in str(err) and "missing" in str(err):
                raise TypeError(
                    f"simulate calls a field as field(x); {err}. A field that depends on depth (time) must "
                    "declare it: wrap it as flowlib.TimeDependent(lambda x, t: ...) or give its class "
                    "the attribute time_dependent = True."
                ) from err
            raise

    return rhs


def simulate(
    field: Callable[..., Tensor] | VelocityField,
    x0: Tensor,
    *,
    t1: float,
    n_steps: int,
    t0: float = 0.0,
    method: str | Stepper = "euler",
    save_every: int = 1,
    retraction: Callable[[Tensor], Tensor] | None = None,
    callback: Callable[[int, float, Tensor], None] | None = None,
) -> Trajectory:
    r"""Integrate :math:`\dot x = \text{field}(x)` from ``t0`` to ``t1`` with ``n_steps`` equal steps.

    Parameters
    ----------
    field : VelocityField or callable
        ``field(x) -> v``, shapes ``(..., n, d) -> (..., n, d)``. A field that depends on depth is
        declared with :class:`TimeDependent` (or ``time_dependent = True`` on its class) and is
        then called as ``field(x, t)``; signatures are never inspected.
    x0 : Tensor, shape (..., n, d)
        Initial tokens; leading dims are independent systems. dtype and device are followed.
    t1 : float
        Final time (the depth of the network in continuous time).
    n_steps : int
        Number of steps; the step is exactly ``h = (t1 - t0) / n_steps`` and the last saved time
        is exactly ``t1``.
    t0 : float
        Initial time.
    method : {"euler", "heun", "rk4", "rk4_38"} or Stepper
        Explicit Runge-Kutta method; every stage re-evaluates the field. A custom
        :class:`~flowlib.integrate.Stepper` may be passed (e.g. to study a layer of your own design).
    save_every : int
        Save every ``save_every``-th state (the initial and the final state are always saved).
    retraction : callable, optional
        Applied to the state after every step (not every stage), e.g. :func:`flowlib.unit_normalize`.
        For a field on the sphere, the state after the first retraction is checked to be on the unit
        sphere (a retraction onto another set, such as :func:`flowlib.layer_norm_projection`, raises).
    callback : callable, optional
        ``callback(k, t_k, x_k)`` after each step ``k = 1..n_steps``.

    Returns
    -------
    Trajectory
        ``t`` of shape ``(S,)`` and ``x`` of shape ``(S, ..., n, d)``.

    Raises
    ------
    ValueError
        If ``x0`` contains NaN/inf (checked once), ``n_steps < 1``, ``save_every < 1``, ``method`` is
        unknown, a time is not finite, the field rejects ``x0`` (e.g. off the sphere), or a
        retraction leaves the sphere of a sphere field.
    TypeError
        If ``x0`` is not a floating tensor or ``field`` is not callable.

    Notes
    -----
    The loop over steps makes no host synchronisation (the only checks are on ``x0`` and, with a
    retraction and a sphere field, on the first step), so ``torch.compile`` can capture it and
    CUDA kernels are queued without waiting.

    Examples
    --------
    >>> import torch, flowlib
    >>> x0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> traj = flowlib.simulate(flowlib.SoftmaxAttention(), x0, t1=1.0, n_steps=4, method="rk4")
    >>> traj.x.shape, traj.t[-1].item()
    (torch.Size([5, 2, 2]), 1.0)
    """
    x0 = check_tokens(x0, "x0")
    n_steps = check_positive_int(n_steps, "n_steps")
    save_every = check_positive_int(save_every, "save_every")
    t0 = check_real(t0, "t0")
    t1 = check_real(t1, "t1")
    if isinstance(method, Stepper):
        stepper = method
    elif method in STEPPERS:
        stepper = STEPPERS[method]
    else:
        raise ValueError(f"method must be one of {tuple(STEPPERS)} or a Stepper; got {method!r}")
    if retraction is not None and not callable(retraction):
        raise TypeError(f"retraction must be callable; got {type(retraction).__name__}")
    check_finite(x0, "x0")
    if isinstance(field, VelocityField):
        field.validate(x0)
    f = as_rhs(field)
    h = (t1 - t0) / n_steps

    def _time(k: int) -> float:  # the last time is t1 exactly
        return t1 if k == n_steps else t0 + k * h

    saved = [k for k in range(0, n_steps + 1, save_every)]
    if saved[-1] != n_steps:
        saved.append(n_steps)
    out = torch.empty((len(saved), *x0.shape), dtype=x0.dtype, device=x0.device)
    out[0] = x0
    x = x0
    s = 1
    for k in range(1, n_steps + 1):
        x = stepper.step(f, _time(k - 1), x, h)
        if retraction is not None:
            x = retraction(x)
            if k == 1 and getattr(field, "on_sphere", False):
                _check_retraction(x, retraction)
        if callback is not None:
            callback(k, _time(k), x)
        if s < len(saved) and saved[s] == k:
            out[s] = x
            s += 1
    t = torch.tensor([_time(k) for k in saved], dtype=torch.float64)
    return Trajectory(t=t, x=out, method=stepper.name, n_steps=n_steps)


def _check_retraction(x: Tensor, retraction: Callable) -> None:
    tol = sphere_tolerance(x.dtype)
    dev = float((torch.linalg.vector_norm(x.detach(), dim=-1) - 1).abs().max())
    if not dev <= tol:
        name = getattr(retraction, "__name__", type(retraction).__name__)
        raise ValueError(
            f"the retraction {name} leaves the unit sphere that this field lives on (| ||x_i|| - 1 | = {dev:.3g} "
            f"after the first step); use flowlib.unit_normalize (layer_norm_projection maps to the sphere of "
            "radius sqrt(d) in the hyperplane of zero-mean vectors)"
        )


def residual_stack(
    field: Callable[..., Tensor] | VelocityField,
    x0: Tensor,
    n_layers: int,
    *,
    t1: float = 1.0,
    retraction: Callable[[Tensor], Tensor] | None = None,
    save_every: int = 1,
) -> Trajectory:
    r"""A residual network of ``n_layers`` identical layers: :math:`x^{\ell+1} = x^\ell + h\,\text{field}(x^\ell)`.

    This is forward Euler with ``h = t1 / n_layers``, i.e. ``simulate(field, x0, t1=t1,
    n_steps=n_layers, method="euler")``; with ``retraction=unit_normalize`` each layer is followed by a
    (post-)normalisation. See :func:`simulate` for shapes and errors.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> traj = fl.residual_stack(fl.SoftmaxAttention(beta=0.0), x0, n_layers=2)  # beta = 0: v_i = mean of the tokens
    >>> traj.x.shape, traj.step_size
    (torch.Size([3, 2, 2]), 0.5)
    >>> traj.final  # x <- x + h mean(x), twice, with h = 1/2
    tensor([[1.6250, 0.6250],
            [0.6250, 1.6250]], dtype=torch.float64)
    """
    return simulate(field, x0, t1=t1, n_steps=n_layers, method="euler", save_every=save_every, retraction=retraction)
