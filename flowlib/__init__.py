"""flowlib: deep transformers as dynamical systems, in PyTorch.

Tokens are tensors of shape ``(..., n, d)`` (leading dims are independent systems); attention
mechanisms are velocity fields ``field(x) -> v``; depth is time, and a residual network of ``L``
layers is forward Euler with step ``T / L``. See the book *Flowing Through Layers*.
"""

from . import convergence, diagnostics, init, stability, viz
from .convergence import ConvergenceStudy, convergence_study, fit_order, global_error
from .device import default_device, describe_device
from .diagnostics import cluster_count, equiangular_rhs, interaction_energy, pairwise_inner_products
from .fields import (
    BACKENDS,
    L2Attention,
    MultiHeadAttention,
    SigmoidAttention,
    SinkhornAttention,
    SoftmaxAttention,
    SphereAttention,
    VelocityField,
    alibi_bias,
    causal_mask,
    choose_backend,
    layer_norm_projection,
    logsumexp_rows,
    softmax_average,
    tangent_projection,
    unit_normalize,
    vaswani_beta,
)
from .init import gaussian_matrix, gaussian_tokens, random_orthonormal, uniform_sphere
from .integrate import STEPPERS, Stepper, Trajectory, residual_stack, simulate
from .stability import (
    contraction_step_limit,
    euler_step_factor,
    field_jacobian,
    lipschitz_estimate,
    log_norm,
    one_sided_lipschitz,
    perturbation_growth,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # device
    "default_device",
    "describe_device",
    # fields
    "VelocityField",
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
    "alibi_bias",
    "softmax_average",
    "logsumexp_rows",
    "choose_backend",
    "BACKENDS",
    "vaswani_beta",
    # integration
    "simulate",
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
    "uniform_sphere",
    "gaussian_tokens",
    "random_orthonormal",
    "gaussian_matrix",
    # submodules
    "convergence",
    "diagnostics",
    "init",
    "stability",
    "viz",
]
