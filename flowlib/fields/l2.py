"""L2 (distance-based) self-attention."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import AttentionField, _masses_arg, measure_bias
from .reductions import dense_weights, softmax_average

__all__ = ["L2Attention"]


def _augment(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Append one coordinate so that ``2 <q', k'> = 2<q, k> - |k|^2``: ``q' = [q, -1/2]``, ``k' = [k, |k|^2]``.

    Then ``-||q - k||^2 = 2 <q', k'> - |q|^2`` and the last term is constant along each row, so it
    cancels in the softmax. This keeps L2 attention on the single dot-product primitive (and on the
    fused SDPA kernels) without an ``(n, m)`` bias.

    Queries and keys are first shifted by one common vector, the mean of the keys: distances do not
    change, but the terms that cancel are then O(spread^2) instead of O(|x|^2), so a cloud far from the
    origin keeps its precision (in float32 a cloud at distance 1000 would otherwise lose 1e-1).
    """
    c = k.detach().mean(dim=-2, keepdim=True)
    q, k = q - c, k - c
    half = torch.full_like(q[..., :1], -0.5)
    q2 = torch.cat([q, half], dim=-1)
    k2 = torch.cat([k, (k * k).sum(dim=-1, keepdim=True)], dim=-1)
    return q2, k2


class L2Attention(AttentionField):
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
    beta : float or Tensor
        Multiplies the squared distance; default 1.0. All arguments are keyword-only (see
        :class:`~flowlib.fields.base.AttentionField`).
    mask, causal, backend, chunk_size
        As in :class:`SoftmaxAttention`.

    Notes
    -----
    The logits are computed as ``2 beta <Qx_i - c, Kx_j - c> - beta |Kx_j - c|^2`` with ``c`` the mean of
    the keys (the dropped term ``-beta |Qx_i - c|^2`` is constant along row ``i``), which avoids an
    ``(n, n, d)`` difference tensor and keeps float32 precise far from the origin.
    With ``Q = K`` and ``V = I`` the field is translation-equivariant: ``v(x + c) = v(x) + c``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(5, 2, generator=g, dtype=torch.float64)
    >>> field = fl.L2Attention(beta=1.0)
    >>> torch.allclose(field(x + 3.0), field(x) + 3.0)  # with Q = K and V = I: translation-equivariant
    True
    """

    def _augmented(self, q: Tensor, k: Tensor, x: Tensor) -> tuple[Tensor, Tensor, float | Tensor]:
        q2, k2 = _augment(q, k)
        return q2, k2, 2.0 * self._beta_like(x)

    def velocity(self, x: Tensor) -> Tensor:
        q, k, v = self._qkv(x)
        q2, k2, beta = self._augmented(q, k, x)
        return softmax_average(
            q2,
            k2,
            v,
            beta=beta,
            mask=self._mask_for(x),
            causal=self.causal,
            backend=self.backend,
            chunk_size=self.chunk_size,
        )

    def weights(self, x: Tensor) -> Tensor:
        q, k, _ = self._qkv(x)
        q2, k2, beta = self._augmented(q, k, x)
        return dense_weights(q2, k2, beta=beta, mask=self._mask_for(x), causal=self.causal)

    def mean_field_velocity(
        self, queries: Tensor, points: Tensor, masses: Tensor | None = None, *, check: bool = True, **old
    ) -> Tensor:
        """The L2 mean-field velocity of ``sum_j w_j delta_{y_j}``; arguments as in
        :meth:`~flowlib.fields.base.VelocityField.mean_field_velocity`."""
        masses = _masses_arg(masses, old, "mean_field_velocity")
        self._no_positions("the mean-field velocity")
        points, bias = measure_bias(queries, points, masses, check=check)
        q, _, _ = self._qkv(queries)
        _, k, v = self._qkv(points)
        q2, k2, beta = self._augmented(q, k, queries)
        return softmax_average(q2, k2, v, beta=beta, bias=bias, backend=self.backend, chunk_size=self.chunk_size)

    def gaussian_closure(self) -> tuple[str, dict[str, Any]]:
        self._no_positions("a Gaussian closure")
        return "l2", {"Q": self.Q, "K": self.K, "V": self.V, "beta": self.beta_value}
