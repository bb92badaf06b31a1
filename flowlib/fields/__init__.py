"""Velocity fields: attention mechanisms as maps from token configurations to velocities."""

from .base import AttentionField, VelocityField, apply_linear
from .l2 import L2Attention
from .reductions import BACKENDS, causal_mask, choose_backend, dense_weights, logsumexp_rows, softmax_average
from .sigmoid import SigmoidAttention
from .sinkhorn import SinkhornAttention
from .softmax import MultiHeadAttention, SoftmaxAttention, vaswani_beta
from .sphere import SphereAttention, layer_norm_projection, tangent_projection, unit_normalize

__all__ = [
    "VelocityField",
    "AttentionField",
    "apply_linear",
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
    "dense_weights",
    "choose_backend",
    "BACKENDS",
    "vaswani_beta",
]
