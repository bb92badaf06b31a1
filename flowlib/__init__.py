"""flowlib: deep transformers as dynamical systems, in PyTorch.

Tokens are tensors of shape ``(..., n, d)`` (leading dims are independent systems); attention
mechanisms are velocity fields ``field(x) -> v``; depth is time, and a residual network of ``L``
layers is forward Euler with step ``T / L``. See the book *Tokens in Motion*.
"""

from . import (
    approximation,
    contraction,
    convergence,
    coupling,
    diagnostics,
    dobrushin,
    gaussian,
    gaussian_analysis,
    hemisphere,
    init,
    masked,
    measures,
    pde,
    regularity,
    splitting,
    stability,
    training,
    viz,
)
from .convergence import ConvergenceStudy, convergence_study, fit_order, global_error
from .device import CallStats, default_device, describe_device, measure_call
from .diagnostics import (
    cluster_count,
    clustered_fraction,
    equiangular_rhs,
    equiangular_solution,
    hitting_time,
    interaction_energy,
    pairwise_inner_products,
    phase_diagram,
)
from .fields import (
    BACKENDS,
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
    logsumexp_rows,
    softmax_average,
    tangent_projection,
    unit_normalize,
    vaswani_beta,
)
from .gaussian import GaussianSolution, affine_velocity, covariance_rhs, solve_gaussian
from .init import gaussian_matrix, gaussian_tokens, random_orthonormal, uniform_sphere
from .integrate import STEPPERS, Stepper, TimeDependent, Trajectory, residual_stack, simulate
from .measures import (
    bures_wasserstein,
    conditional_wasserstein,
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

__version__ = "0.2.0"

__all__ = [
    "__version__",
    # device
    "default_device",
    "describe_device",
    "measure_call",
    "CallStats",
    # fields
    "VelocityField",
    "AttentionField",
    "SoftmaxAttention",
    "MultiHeadAttention",
    "L2Attention",
    "SinkhornAttention",
    "SigmoidAttention",
    "SphereAttention",
    "tangent_projection",
    "unit_normalize",
    "layer_norm_projection",
    "causal_mask",
    "softmax_average",
    "logsumexp_rows",
    "choose_backend",
    "BACKENDS",
    "vaswani_beta",
    # integration
    "simulate",
    "TimeDependent",
    "residual_stack",
    "Trajectory",
    "STEPPERS",
    "Stepper",
    # stability
    "field_jacobian",
    "log_norm",
    "one_sided_lipschitz",
    "lipschitz_estimate",
    "perturbation_growth",
    "euler_step_factor",
    "contraction_step_limit",
    # convergence
    "global_error",
    "fit_order",
    "convergence_study",
    "ConvergenceStudy",
    # diagnostics and initial data
    "interaction_energy",
    "pairwise_inner_products",
    "equiangular_rhs",
    "cluster_count",
    "clustered_fraction",
    "equiangular_solution",
    "hitting_time",
    "phase_diagram",
    # Gaussian closures
    "affine_velocity",
    "covariance_rhs",
    "solve_gaussian",
    "GaussianSolution",
    # measures
    "empirical_moments",
    "wasserstein_1d",
    "sliced_wasserstein",
    "sliced_wasserstein_to_gaussian",
    "wasserstein_exact",
    "bures_wasserstein",
    "conditional_wasserstein",
    # PDE
    "make_grid",
    "measure_velocity",
    "solve_transformer_pde",
    "PDESolution",
    "uniform_sphere",
    "gaussian_tokens",
    "random_orthonormal",
    "gaussian_matrix",
    # submodules (the last group: the tested logic behind individual chapters)
    "convergence",
    "diagnostics",
    "gaussian",
    "init",
    "measures",
    "pde",
    "stability",
    "viz",
    "splitting",
    "regularity",
    "approximation",
    "contraction",
    "gaussian_analysis",
    "hemisphere",
    "dobrushin",
    "masked",
    "coupling",
    "training",
]
