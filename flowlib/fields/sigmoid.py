"""Sigmoid (unnormalised) self-attention."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .base import AttentionField, _check_beta, _masses_arg, measure_bias
from .reductions import (
    Backend,
    _acc_dtype,
    _any_transformed,
    _batch_numel,
    _chunked,
    _fold_beta,
    _full_mask,
    _mask_logits_,
    _product,
    choose_backend,
)

__all__ = ["SigmoidAttention"]


class SigmoidAttention(AttentionField):
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
    beta : float or Tensor
        Multiplies the score (a tensor keeps its gradient).
    bias : float or Tensor
        Added inside the sigmoid (a negative bias makes attention sparse); a tensor keeps its gradient.
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

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> fl.SigmoidAttention(beta=0.0)(x)  # sigma(0) = 1/2 for every pair, divided by n = 2
    tensor([[0.2500, 0.2500],
            [0.2500, 0.2500]])
    """

    _init_names = ("Q", "K", "V", "beta", "bias", "normalization", "mask", "causal", "backend", "chunk_size")
    _scalar_names = ("beta", "bias")

    def __init__(
        self,
        *,
        Q: Tensor | None = None,
        K: Tensor | None = None,
        V: Tensor | None = None,
        beta: float | Tensor = 1.0,
        bias: float | Tensor = 0.0,
        normalization: Literal["n", "none"] = "n",
        mask: Tensor | None = None,
        causal: bool = False,
        backend: Backend = "auto",
        chunk_size: int | None = None,
    ) -> None:
        if backend == "sdpa":
            raise ValueError(
                "SigmoidAttention has no fused SDPA kernel; backend must be 'auto', 'dense' or 'chunked'; got 'sdpa'"
            )
        super().__init__(Q=Q, K=K, V=V, beta=beta, mask=mask, causal=causal, backend=backend, chunk_size=chunk_size)
        bias = _check_beta(bias, name="bias")  # same rule as beta: a finite float, or a tensor kept as it is
        if isinstance(bias, Tensor) and bias.numel() != 1:
            raise ValueError(f"bias must be a scalar; got a tensor of shape {tuple(bias.shape)}")
        self._set_scalar("bias", bias)  # in state_dict whatever its type
        if normalization not in ("n", "none"):
            raise ValueError(f"normalization must be 'n' or 'none'; got {normalization!r}")
        self.normalization = normalization

    def _block_weights(
        self,
        q: Tensor,
        k: Tensor,
        mask: Tensor | None,
        bias: Tensor | None = None,
        buf: Tensor | None = None,
        inplace: bool = True,
    ) -> Tensor:
        """Unnormalised weights ``sigmoid(<q_i, k_j> + bias)`` of one block (0 where masked).

        ``q`` already carries ``beta`` (see :meth:`_scores_q`); ``bias`` is the tensor bias reshaped to
        ``(1, 1)`` (None for a float bias, which is read from the field). One ``(..., c, m)`` buffer
        per block, updated in place (out of place inside :mod:`torch.func` transforms, ``inplace=False``);
        masked pairs get logit -inf, so weight 0 (and gradient 0). ``sigmoid_`` saves its own output for
        autograd, so nothing may touch it after.
        """
        z = _product(q, k, buf)
        b = self._scalar("bias") if bias is None else bias
        if inplace:
            return _mask_logits_(z.add_(b), mask).sigmoid_()
        return torch.sigmoid(_mask_logits_(z + b, mask, inplace=False))

    @staticmethod
    def _apply_weights(w: Tensor, v: Tensor) -> Tensor:
        """``w @ v``, accumulated in float32 for half-precision inputs (a sum of more than 65 504 weights
        of order 1 overflows float16)."""
        acc = _acc_dtype(w.dtype)
        if acc != w.dtype or _acc_dtype(v.dtype) != v.dtype:
            return (w.to(acc) @ v.to(acc)).to(torch.result_type(w, v))
        return w @ v

    def _scores_q(self, q: Tensor, x: Tensor) -> Tensor:
        """The queries times ``beta`` (so a tensor ``beta`` gets its gradient through them)."""
        q, scale = _fold_beta(q, self._beta_like(x))  # a tensor is folded in, a number comes back
        return q * scale

    def _bias_like(self, x: Tensor) -> Tensor | None:
        """A tensor bias as a ``(1, 1)`` tensor in ``x``'s dtype and device (it rides along the blocks as
        the ``bias`` of :func:`~flowlib.fields.reductions._chunked`, so it also disables buffer reuse
        when it needs a gradient); None for a float bias."""
        b = self._scalar("bias")
        return b.to(dtype=x.dtype, device=x.device).reshape(1, 1) if isinstance(b, Tensor) else None

    def _scale(self, n_keys: int) -> float:
        return 1.0 / n_keys if self.normalization == "n" else 1.0

    def velocity(self, x: Tensor) -> Tensor:
        q, k, v = self._qkv(x)
        q = self._scores_q(q, x)
        n = x.shape[-2]
        mask = self._mask_for(x)
        bias = self._bias_like(x)
        backend = self.backend
        if backend == "auto":
            batch = _batch_numel(q.shape[:-2], k.shape[:-2])
            backend = choose_backend(n, n, batch=batch, dtype=x.dtype, device=x.device, allow_fused=False)

        def block(q_blk, k, v, beta, blk_mask, bias, buf=None, inplace=True):  # the block signature of _chunked
            return self._apply_weights(self._block_weights(q_blk, k, blk_mask, bias, buf, inplace), v)

        if backend == "dense":
            inplace = not _any_transformed(q, k, v, bias, mask)
            out = block(q, k, v, None, _full_mask(mask, self.causal, n, n, x.device), bias, None, inplace)
        else:  # the softmax path's query blocks, causal masks built per block, one reused scratch buffer
            out = _chunked(block, q, k, v, None, mask, self.causal, bias, self.chunk_size)
        return out * self._scale(n)

    def weights(self, x: Tensor) -> Tensor:
        q, k, _ = self._qkv(x)
        n = x.shape[-2]
        full = _full_mask(self._mask_for(x), self.causal, n, n, x.device)
        q = self._scores_q(q, x)
        bias = self._bias_like(x)
        inplace = not _any_transformed(q, k, bias)
        return self._block_weights(q, k, full, bias, None, inplace) * self._scale(n)

    def mean_field_velocity(
        self, queries: Tensor, points: Tensor, masses: Tensor | None = None, *, check: bool = True, **old
    ) -> Tensor:
        r""":math:`\int \sigma(\beta\langle Qx,Ky\rangle + b)\,Vy\,d\mu(y)` for the probability measure
        :math:`\mu \propto \sum_j w_j\delta_{y_j}` (the limit of ``normalization="n"``). Shapes as in
        :meth:`~flowlib.fields.base.VelocityField.mean_field_velocity`.

        Raises
        ------
        ValueError
            With ``normalization="none"``, whose sum over ``n`` tokens has no limit as ``n`` grows.
        """
        masses = _masses_arg(masses, old, "mean_field_velocity")
        self._no_positions("the mean-field velocity")
        if self.normalization != "n":
            raise ValueError("the mean-field velocity needs normalization='n' (a sum over n tokens has no limit)")
        points, logw = measure_bias(queries, points, masses, check=check)
        q, _, _ = self._qkv(queries)
        _, k, v = self._qkv(points)
        if logw is None:
            w = torch.full((points.shape[0], 1), 1.0 / points.shape[0], dtype=v.dtype, device=v.device)
        else:
            w = logw.exp().mT
            w = w / w.sum()
        q = self._scores_q(q, queries)
        bias = self._bias_like(queries)
        w_qk = self._block_weights(q, k, None, bias, None, not _any_transformed(q, k, v, bias, w))
        return self._apply_weights(w_qk, w * v)

    def gaussian_closure(self):
        """Sigmoid attention has none.

        Raises
        ------
        ValueError
            Always: the un-normalised kernel gives a velocity that is not affine in ``x``.
        """
        raise ValueError(
            "sigmoid attention has no Gaussian closure: its un-normalised kernel gives a velocity that is "
            "not affine in x, so Gaussians do not stay Gaussian; use particles instead"
        )
