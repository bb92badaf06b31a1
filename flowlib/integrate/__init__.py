"""Integrators over depth."""

from .simulate import Trajectory, as_rhs, residual_stack, simulate
from .steppers import STEPPERS, Stepper

__all__ = ["Trajectory", "simulate", "residual_stack", "as_rhs", "STEPPERS", "Stepper"]
