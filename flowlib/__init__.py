"""flowlib: deep transformers as dynamical systems, in PyTorch.

Tokens are tensors of shape ``(..., n, d)`` (leading dims are independent systems); attention
mechanisms are velocity fields ``field(x) -> v``; depth is time, and a residual network of ``L``
layers is forward Euler with step ``T / L``. See the book *Tokens in Motion*.

The top level is the stable core (fields, integration, stability, convergence, the Gaussian closure,
measures, the PDE solver, initial data, devices). Submodules load on first use (PEP 562), so
``import flowlib`` costs torch and little else; :mod:`flowlib.viz` (matplotlib) loads when used.
:mod:`flowlib.book` holds the chapters' supporting code, which follows the text and carries no
stability promise.
"""

# ruff: noqa: F401  (the TYPE_CHECKING imports at the end exist for static analysers only)
from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from .book import _MODULES as _BOOK_MODULES  # the book layer's modules (their 0.2 top-level names)

__version__ = "0.3.0"

# name -> submodule that defines it (the curated, stable top level)
_CORE: dict[str, str] = {
    # fields
    "VelocityField": "fields",
    "AttentionField": "fields",
    "SoftmaxAttention": "fields",
    "MultiHeadAttention": "fields",
    "L2Attention": "fields",
    "SinkhornAttention": "fields",
    "SigmoidAttention": "fields",
    "SphereAttention": "fields",
    "causal_mask": "fields",
    "softmax_average": "fields",
    "choose_backend": "fields",
    "vaswani_beta": "fields",
    "layer_norm_projection": "fields",
    "tangent_projection": "fields",
    "unit_normalize": "fields",
    # integration
    "simulate": "integrate",
    "TimeDependent": "integrate",
    "Trajectory": "integrate",
    "residual_stack": "integrate",
    # stability
    "field_jacobian": "stability",
    "log_norm": "stability",
    "one_sided_lipschitz": "stability",
    "lipschitz_estimate": "stability",
    "perturbation_growth": "stability",
    "euler_step_factor": "stability",
    "contraction_step_limit": "stability",
    # convergence
    "global_error": "convergence",
    "fit_order": "convergence",
    "convergence_study": "convergence",
    "ConvergenceStudy": "convergence",
    # diagnostics
    "cluster_count": "diagnostics",
    "interaction_energy": "diagnostics",
    "pairwise_inner_products": "diagnostics",
    "hitting_time": "diagnostics",
    # the Gaussian closure
    "solve_gaussian": "gaussian",
    "GaussianSolution": "gaussian",
    "affine_velocity": "gaussian",
    "covariance_rhs": "gaussian",
    # measures
    "empirical_moments": "measures",
    "wasserstein_1d": "measures",
    "wasserstein_exact": "measures",
    "sliced_wasserstein": "measures",
    "sliced_wasserstein_to_gaussian": "measures",
    "bures_wasserstein": "measures",
    # the Transformer PDE
    "solve_transformer_pde": "pde",
    "PDESolution": "pde",
    "make_grid": "pde",
    "measure_velocity": "pde",
    # initial data
    "gaussian_tokens": "init",
    "uniform_sphere": "init",
    "gaussian_matrix": "init",
    "random_orthonormal": "init",
    # devices
    "default_device": "device",
    "describe_device": "device",
    "measure_call": "device",
}

_SUBMODULES = (
    "book",
    "convergence",
    "device",
    "diagnostics",
    "fields",
    "gaussian",
    "init",
    "integrate",
    "measures",
    "pde",
    "stability",
    "stats",
    "viz",
)

# Names that left the top level in 0.3: still reachable, with a DeprecationWarning, until 0.4.
_MOVED_NAMES: dict[str, str] = {
    "CallStats": "device",
    "BACKENDS": "fields",
    "logsumexp_rows": "fields",
    "STEPPERS": "integrate",
    "Stepper": "integrate",
    "clustered_fraction": "diagnostics",
    "equiangular_rhs": "diagnostics",
    "equiangular_solution": "diagnostics",
    "phase_diagram": "diagnostics",
    "conditional_wasserstein": "measures",
}

__all__ = ["__version__", *_CORE, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _CORE:
        value = getattr(importlib.import_module(f".{_CORE[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _MOVED_NAMES:
        where = _MOVED_NAMES[name]
        warnings.warn(
            f"flowlib.{name} left the top level in flowlib 0.3; use flowlib.{where}.{name} "
            "(the old name will be removed in 0.4)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(f".{where}", __name__), name)
    elif name in _BOOK_MODULES:
        warnings.warn(
            f"flowlib.{name} moved to flowlib.book.{name} in flowlib 0.3 (the old name will be removed in 0.4)",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(f".book.{name}", __name__)
    else:
        raise AttributeError(f"module 'flowlib' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from . import (
        book,
        convergence,
        device,
        diagnostics,
        fields,
        gaussian,
        init,
        integrate,
        measures,
        pde,
        stability,
        stats,
        viz,
    )
    from .convergence import ConvergenceStudy, convergence_study, fit_order, global_error
    from .device import default_device, describe_device, measure_call
    from .diagnostics import cluster_count, hitting_time, interaction_energy, pairwise_inner_products
    from .fields import (
        AttentionField,
        L2Attention,
        MultiHeadAttention,
        SigmoidAttention,
        SinkhornAttention,
        SoftmaxAttention,
        SphereAttention,
        VelocityField,
        causal_mask,
        choose_backend,
        layer_norm_projection,
        softmax_average,
        tangent_projection,
        unit_normalize,
        vaswani_beta,
    )
    from .gaussian import GaussianSolution, affine_velocity, covariance_rhs, solve_gaussian
    from .init import gaussian_matrix, gaussian_tokens, random_orthonormal, uniform_sphere
    from .integrate import TimeDependent, Trajectory, residual_stack, simulate
    from .measures import (
        bures_wasserstein,
        empirical_moments,
        sliced_wasserstein,
        sliced_wasserstein_to_gaussian,
        wasserstein_1d,
        wasserstein_exact,
    )
    from .pde import PDESolution, make_grid, measure_velocity, solve_transformer_pde
    from .stability import (
        contraction_step_limit,
        euler_step_factor,
        field_jacobian,
        lipschitz_estimate,
        log_norm,
        one_sided_lipschitz,
        perturbation_growth,
    )
