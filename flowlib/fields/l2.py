"""L2 (distance-based) self-attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import VelocityField
from .reductions import Backend, dense_weights, softmax_average

__all__ = ["L2Attention"]


def _augment(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Append one coordinate so that ``2 <q', k'> = 2<q, k> - |k|^2``: ``q' = [q, -1/2]``, ``k' = [k, |k|^2]``.

    Then ``-||q - k||^2 = 2 <q', k'> - |q|^2`` and the last term is constant along each row, so it
    cancels in the softmax. This keeps L2 attention on the single dot-product primitive (and on the
    fused SDPA kernels) without an ``(n, m)`` bias.
    """
    half = torch.full_like(q[..., :1], -0.5)
    q2 = torch.cat([q, half], dim=-1)
    k2 = torch.cat([k, (k * k).sum(dim=-1, keepdim=True)], dim=-1)
    return q2, k2


@dataclass(frozen=True, eq=False)
class L2Attention(VelocityField):
    r"""L2 self-attention: softmax of negative squared distances.

    .. math::

        v_i = \sum_j P_{ij} V x_j, \qquad
        P_{ij} = \frac{e^{-\beta \|Q x_i - K x_j\|^2}}{\sum_l e^{-\beta \|Q x_i - K x_l\|^2}}.

    Parameters
    ----------
    Q, K : Tensor, shape (k, d), optional
        Query and key matrices (``None`` = identity).
    V : Tensor, shape (d, d), optional
        Value matrix (``None`` = identity).
    beta : float
        Multiplies the squared distance; default 1.0.
    mask, causal, backend, chunk_size
        As in :class:`SoftmaxAttention`.

    Notes
    -----
    The logits are computed as ``2 beta <Qx_i, Kx_j> - beta |Kx_j|^2`` (the dropped term
    ``-beta |Qx_i|^2`` is constant along row ``i``), which avoids an ``(n, n, d)`` difference tensor.
    With ``Q = K`` and ``V = I`` the field is translation-equivariant: ``v(x + c) = v(x) + c``.
    """

    Q: Tensor | None = None
    K: Tensor | None = None
    V: Tensor | None = None
    beta: float = 1.0
    mask: Tensor | None = None
    causal: bool = False
    backend: Backend = "auto"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        self._common_checks()

    def velocity(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        q, k, v = self._qkv(x)
        q2, k2 = _augment(q, k)
        return softmax_average(
            q2,
            k2,
            v,
            beta=2.0 * float(self.beta),
            mask=self._mask_for(x),
            causal=self.causal,
            backend=self.backend,
            chunk_size=self.chunk_size,
        )

    def weights(self, x: Tensor) -> Tensor:
        q, k, _ = self._qkv(x)
        q2, k2 = _augment(q, k)
        return dense_weights(q2, k2, beta=2.0 * float(self.beta), mask=self._mask_for(x), causal=self.causal)
