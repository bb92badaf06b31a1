"""Sigmoid (unnormalised) self-attention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .._validation import check_real
from .base import VelocityField
from .reductions import Backend, _full_mask, attention_logits

__all__ = ["SigmoidAttention"]


@dataclass(frozen=True, eq=False)
class SigmoidAttention(VelocityField):
    r"""Sigmoid self-attention: each pair interacts through :math:`\sigma(\beta\langle Qx_i,Kx_j\rangle + b)`.

    .. math::

        v_i = \frac{1}{Z} \sum_j \sigma\big(\beta\langle Q x_i, K x_j\rangle + b\big)\, V x_j,
        \qquad Z = n \ (\text{``normalization="n"``}) \text{ or } 1 \ (\text{``"none"``}).

    The weights are not normalised across ``j``, so unlike softmax attention this field does not
    keep Gaussian token clouds Gaussian.

    Parameters
    ----------
    Q, K, V : Tensor, optional
        As in :class:`SoftmaxAttention`.
    beta : float
        Multiplies the score.
    bias : float
        Added inside the sigmoid (a negative bias makes attention sparse).
    normalization : {"n", "none"}
        Divide by the number of tokens ``n`` (mean-field scaling) or not.
    mask, causal
        As in :class:`SoftmaxAttention`; masked pairs have weight 0.
    chunk_size : int, optional
        Process this many queries at a time (memory O(chunk_size * n)); default: all at once.
    """

    Q: Tensor | None = None
    K: Tensor | None = None
    V: Tensor | None = None
    beta: float = 1.0
    bias: float = 0.0
    normalization: Literal["n", "none"] = "n"
    mask: Tensor | None = None
    causal: bool = False
    backend: Backend = "auto"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        self._common_checks()
        check_real(self.bias, "bias")
        if self.normalization not in ("n", "none"):
            raise ValueError(f"normalization must be 'n' or 'none'; got {self.normalization!r}")

    def _block_weights(self, q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
        w = torch.sigmoid(attention_logits(q, k, beta=float(self.beta)) + float(self.bias))
        if mask is not None:
            w = w * mask
        if self.normalization == "n":
            w = w / k.shape[-2]
        return w

    def velocity(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        q, k, v = self._qkv(x)
        n = x.shape[-2]
        mask = _full_mask(self._mask_for(x), self.causal, n, n, x.device)
        c = n if self.chunk_size is None else max(1, int(self.chunk_size))
        outs = []
        for i0 in range(0, n, c):
            i1 = min(n, i0 + c)
            blk = None if mask is None else (mask if mask.shape[-2] == 1 else mask[..., i0:i1, :])
            outs.append(self._block_weights(q[..., i0:i1, :], k, blk) @ v)
        return torch.cat(outs, dim=-2)

    def weights(self, x: Tensor) -> Tensor:
        q, k, _ = self._qkv(x)
        n = x.shape[-2]
        return self._block_weights(q, k, _full_mask(self._mask_for(x), self.causal, n, n, x.device))
