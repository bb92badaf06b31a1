"""Integrators over depth."""

from .simulate import TimeDependent, Trajectory, as_rhs, residual_stack, simulate
from .steppers import STEPPERS, Stepper

__all__ = ["Trajectory", "TimeDependent", "simulate", "residual_stack", "as_rhs", "STEPPERS", "Stepper"]
