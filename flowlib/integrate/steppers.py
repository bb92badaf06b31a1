"""Explicit Runge-Kutta steppers. Every stage re-evaluates the whole field (attention included)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from torch import Tensor

__all__ = ["Stepper", "STEPPERS", "RHS"]

#: Right-hand side ``f(t, x) -> dx/dt`` as the steppers see it.
RHS = Callable[[float, Tensor], Tensor]


@dataclass(frozen=True)
class Stepper:
    """One explicit Runge-Kutta method.

    Attributes
    ----------
    name : str
    order : int
        Global order of accuracy: the error after ``L`` steps over a fixed horizon is O(L^-order).
    n_stages : int
        Evaluations of the right-hand side per step.
    step : callable
        ``step(f, t, x, h) -> x_next``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> rk4 = fl.integrate.STEPPERS["rk4"]
    >>> rk4.name, rk4.order, rk4.n_stages
    ('rk4', 4, 4)
    >>> x1 = rk4.step(lambda t, x: x, 0.0, torch.ones(1, dtype=torch.float64), 0.1)  # one step of x' = x
    >>> abs(x1.item() - torch.e ** 0.1) < 1e-7
    True
    """

    name: str
    order: int
    n_stages: int
    step: Callable[[RHS, float, Tensor, float], Tensor]


def _euler(f: RHS, t: float, x: Tensor, h: float) -> Tensor:
    return x + h * f(t, x)


def _heun(f: RHS, t: float, x: Tensor, h: float) -> Tensor:
    k1 = f(t, x)
    k2 = f(t + h, x + h * k1)
    return x + (0.5 * h) * (k1 + k2)


def _rk4(f: RHS, t: float, x: Tensor, h: float) -> Tensor:
    k1 = f(t, x)
    k2 = f(t + 0.5 * h, x + (0.5 * h) * k1)
    k3 = f(t + 0.5 * h, x + (0.5 * h) * k2)
    k4 = f(t + h, x + h * k3)
    return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _rk4_38(f: RHS, t: float, x: Tensor, h: float) -> Tensor:
    k1 = f(t, x)
    k2 = f(t + h / 3.0, x + (h / 3.0) * k1)
    k3 = f(t + 2.0 * h / 3.0, x + h * (k2 - k1 / 3.0))
    k4 = f(t + h, x + h * (k1 - k2 + k3))
    return x + (h / 8.0) * (k1 + 3.0 * k2 + 3.0 * k3 + k4)


#: The available methods, by name.
STEPPERS: Mapping[str, Stepper] = MappingProxyType(
    {
        "euler": Stepper("euler", 1, 1, _euler),
        "heun": Stepper("heun", 2, 2, _heun),
        "rk4": Stepper("rk4", 4, 4, _rk4),
        "rk4_38": Stepper("rk4_38", 4, 4, _rk4_38),
    }
)
