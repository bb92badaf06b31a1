"""Sigmoid (unnormalised) self-attention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from .._validation import check_real
from .base import VelocityField
from .reductions import (
    Backend,
    _batch_numel,
    _chunked,
    _full_mask,
    _mask_logits_,
    _product,
    choose_backend,
)

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
    backend : {"auto", "dense", "chunked"}
        ``"dense"`` forms the ``(..., n, n)`` weights at once; ``"chunked"`` loops over blocks of
        queries, so memory is O(c n) for a block of c queries (sigmoid weights need no normalisation
        across keys, so the blocks are independent and the result equals ``"dense"`` up to round-off).
        ``"auto"`` is ``"dense"`` while the weights fit in :data:`~flowlib.fields.reductions.DENSE_LIMIT_BYTES`
        and ``"chunked"`` beyond. There is no fused ``"sdpa"`` kernel for sigmoid weights.
    chunk_size : int, optional
        Queries per block for ``"chunked"`` (default: from a 32 MiB budget).
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
        if self.backend == "sdpa":
            raise ValueError(
                "SigmoidAttention has no fused SDPA kernel; backend must be 'auto', 'dense' or 'chunked'; got 'sdpa'"
            )

    def _block_weights(self, q: Tensor, k: Tensor, mask: Tensor | None, buf: Tensor | None = None) -> Tensor:
        """Unnormalised weights ``sigmoid(beta <q_i, k_j> + bias)`` of one block (0 where masked)."""
        # One (..., c, m) buffer per block, updated in place; masked pairs get logit -inf, so weight 0
        # (and gradient 0). sigmoid_ saves its own output for autograd, so nothing may touch it after.
        z = _product(q, k, buf).mul_(float(self.beta)).add_(float(self.bias))
        return _mask_logits_(z, mask).sigmoid_()

    def _scale(self, n_keys: int) -> float:
        return 1.0 / n_keys if self.normalization == "n" else 1.0

    def velocity(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        q, k, v = self._qkv(x)
        n = x.shape[-2]
        mask = self._mask_for(x)
        backend = self.backend
        if backend == "auto":
            batch = _batch_numel(q.shape[:-2], k.shape[:-2])
            backend = choose_backend(n, n, batch=batch, dtype=x.dtype, device=x.device, allow_fused=False)

        def block(q_blk, k, v, beta, blk_mask, bias, buf=None):  # the block signature of _chunked
            return self._block_weights(q_blk, k, blk_mask, buf) @ v

        if backend == "dense":
            out = block(q, k, v, None, _full_mask(mask, self.causal, n, n, x.device), None)
        else:  # the softmax path's query blocks, causal masks built per block, one reused scratch buffer
            out = _chunked(block, q, k, v, None, mask, self.causal, None, self.chunk_size)
        return out * self._scale(n)

    def weights(self, x: Tensor) -> Tensor:
        q, k, _ = self._qkv(x)
        n = x.shape[-2]
        return self._block_weights(q, k, _full_mask(self._mask_for(x), self.causal, n, n, x.device)) * self._scale(n)
