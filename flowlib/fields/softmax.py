"""Softmax self-attention, single- and multi-head, as velocity fields on ``(..., n, d)``."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from .._validation import check_matrix
from .base import AttentionField, _like, _masses_arg, _register, measure_bias
from .reductions import Backend, dense_weights, softmax_average

__all__ = ["SoftmaxAttention", "MultiHeadAttention", "vaswani_beta"]


def vaswani_beta(k: int) -> float:
    """The inverse temperature ``1/sqrt(k)`` of Vaswani et al. for key dimension ``k``.

    flowlib never applies this factor implicitly: pass ``beta=vaswani_beta(k)`` to get it.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> fl.vaswani_beta(64)
    0.125
    """
    return 1.0 / math.sqrt(k)


class SoftmaxAttention(AttentionField):
    r"""Softmax self-attention as a velocity field.

    .. math::

        v_i = \sum_j P_{ij}\, V x_j, \qquad
        P_{ij} = \frac{e^{\beta\langle Q x_i, K x_j\rangle}}{\sum_l e^{\beta\langle Q x_i, K x_l\rangle}},

    with the sums restricted to admissible pairs when ``mask``/``causal`` are given.

    All arguments are keyword-only; the field is a :class:`torch.nn.Module` (see
    :class:`~flowlib.fields.base.AttentionField`): pass ``nn.Parameter`` matrices to train them.

    Parameters
    ----------
    Q, K : Tensor, shape (k, d), optional
        Query and key matrices (``None`` = identity). Leading batch dims broadcast against ``x``.
    V : Tensor, shape (d, d), optional
        Value matrix (``None`` = identity).
    beta : float or Tensor
        Inverse temperature multiplying the score; default 1.0. A tensor keeps its gradient.
    mask : Tensor of bool, broadcastable to (..., n, n), optional
        True where token ``i`` may attend to token ``j``. A token that may attend to nothing has
        velocity 0.
    causal : bool
        Token ``i`` attends to ``j <= i`` only.
    backend : {"auto", "dense", "chunked", "sdpa"}
        How the O(n^2) sum is computed; see :func:`flowlib.softmax_average`.
    chunk_size : int, optional
        Queries per block for the chunked backend.

    Notes
    -----
    Conventions: matrices act on column vectors (``V x`` is computed as ``x @ V.T``); ``beta``
    multiplies :math:`\langle Qx, Ky\rangle` and there is **no** implicit ``1/sqrt(k)``
    (use :func:`vaswani_beta`); in masks True means "attend".

    Raises
    ------
    ValueError
        If a parameter's shape does not match ``x`` (messages name both shapes), or ``beta`` is not finite.
    TypeError
        If ``x`` is not a floating tensor or ``mask`` is not boolean.

    Examples
    --------
    >>> import torch, flowlib
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> flowlib.SoftmaxAttention(beta=0.0)(x)   # beta = 0: every token moves to the mean
    tensor([[0.5000, 0.5000],
            [0.5000, 0.5000]])
    """

    def velocity(self, x: Tensor) -> Tensor:
        q, k, v = self._qkv(x)
        return softmax_average(
            q,
            k,
            v,
            beta=self._beta_like(x),
            mask=self._mask_for(x),
            causal=self.causal,
            backend=self.backend,
            chunk_size=self.chunk_size,
        )

    def weights(self, x: Tensor) -> Tensor:
        q, k, _ = self._qkv(x)
        return dense_weights(q, k, beta=self._beta_like(x), mask=self._mask_for(x), causal=self.causal)

    def _measure_qkv(self, queries: Tensor, points: Tensor) -> tuple[Tensor, Tensor, Tensor, float | Tensor]:
        """Queries from ``queries``, keys and values from ``points``, and the score's ``beta``."""
        q, _, _ = self._qkv(queries)
        _, k, v = self._qkv(points)
        return q, k, v, self._beta_like(queries)

    def mean_field_velocity(
        self, queries: Tensor, points: Tensor, masses: Tensor | None = None, *, check: bool = True, **old
    ) -> Tensor:
        r""":math:`\Gamma_\mu(x) = \int e^{\beta\langle Qx,Ky\rangle} Vy\,d\mu(y) / \int e^{\beta\langle Qx,Ky\rangle} d\mu(y)`
        for :math:`\mu = \sum_j w_j \delta_{y_j}`; arguments as in
        :meth:`~flowlib.fields.base.VelocityField.mean_field_velocity`."""
        masses = _masses_arg(masses, old, "mean_field_velocity")
        self._no_positions("the mean-field velocity")
        points, bias = measure_bias(queries, points, masses, check=check)
        q, k, v, beta = self._measure_qkv(queries, points)
        return softmax_average(q, k, v, beta=beta, bias=bias, backend=self.backend, chunk_size=self.chunk_size)

    def gaussian_closure(self) -> tuple[str, dict[str, Any]]:
        self._no_positions("a Gaussian closure")
        return "softmax", {"Q": self.Q, "K": self.K, "V": self.V, "beta": self.beta_value}


class MultiHeadAttention(AttentionField):
    r"""Multi-head softmax attention: a sum over heads of single-head attentions.

    .. math::

        v_i = \sum_{h=1}^H W_h \sum_j P^{(h)}_{ij} V_h x_j, \qquad
        P^{(h)}_{ij} \propto e^{\beta_h \langle Q_h x_i, K_h x_j\rangle}.

    Parameters
    ----------
    Q, K : Tensor, shape (H, k, d)
        Per-head query and key matrices.
    V : Tensor, shape (H, d_v, d)
        Per-head value matrices.
    W : Tensor, shape (H, d, d_v), optional
        Per-head output matrices. ``None`` concatenates the head outputs (head ``h`` fills
        coordinates ``h d_v, ..., (h+1) d_v - 1``), which requires ``H * d_v == d``.
    beta : float or Tensor of shape (H,)
        Inverse temperature, shared or per head (another shape raises ``ValueError`` at construction).
    mask, causal, backend, chunk_size
        As in :class:`SoftmaxAttention`.

    Raises
    ------
    ValueError
        If shapes disagree (e.g. ``W=None`` with ``H * d_v != d``), or ``beta`` is not finite.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> Q = torch.randn(2, 2, 4, generator=g); K = torch.randn(2, 2, 4, generator=g); V = torch.randn(2, 2, 4, generator=g)
    >>> field = fl.MultiHeadAttention(Q=Q, K=K, V=V)  # 2 heads of width 2, concatenated to d = 4
    >>> x = torch.randn(6, 4, generator=g)
    >>> field(x).shape
    torch.Size([6, 4])
    >>> heads = [fl.softmax_average(x @ Q[h].T, x @ K[h].T, x @ V[h].T) for h in range(2)]  # one head at a time
    >>> torch.allclose(field(x), torch.cat(heads, dim=-1), atol=1e-6)
    True
    """

    _init_names = ("Q", "K", "V", "W", "beta", "mask", "causal", "backend", "chunk_size")

    def __init__(
        self,
        *,
        Q: Tensor,
        K: Tensor,
        V: Tensor,
        W: Tensor | None = None,
        beta: float | Tensor = 1.0,
        mask: Tensor | None = None,
        causal: bool = False,
        backend: Backend = "auto",
        chunk_size: int | None = None,
    ) -> None:
        for name, m in (("Q", Q), ("K", K), ("V", V)):
            if not isinstance(m, Tensor) or m.ndim != 3:
                shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
                raise ValueError(f"{name} must be a tensor of shape (H, rows, d); got {shape}")
        super().__init__(Q=Q, K=K, V=V, mask=mask, causal=causal, backend=backend, chunk_size=chunk_size)
        self._set_beta(beta, per_head=Q.shape[0])
        _register(self, "W", W)

    @property
    def n_heads(self) -> int:
        return self.Q.shape[0]

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        d = x.shape[-1]
        H = self.n_heads
        Q = _like(check_matrix(self.Q, "Q", cols=d, ndim=3), "Q", x)
        K = _like(check_matrix(self.K, "K", cols=d, ndim=3), "K", x)
        V = _like(check_matrix(self.V, "V", cols=d, ndim=3), "V", x)
        if K.shape[:2] != Q.shape[:2] or V.shape[0] != H:
            raise ValueError(
                f"Q, K must share (H, k) and V must have H={H} heads; got Q {tuple(Q.shape)}, "
                f"K {tuple(K.shape)}, V {tuple(V.shape)}"
            )
        dv = V.shape[1]
        if self.W is None:
            if H * dv != d:
                raise ValueError(
                    f"with W=None the heads are concatenated, so H * d_v must equal d; got H={H}, d_v={dv}, d={d}"
                )
        else:
            check_matrix(self.W, "W", ndim=3, cols=dv, rows=d)
            if self.W.shape[0] != H:
                raise ValueError(f"W must have shape (H, d, d_v) = ({H}, {d}, {dv}); got {tuple(self.W.shape)}")
        xh = x.unsqueeze(-3)  # (..., 1, n, d)
        beta = self._beta_like(x)
        if isinstance(beta, Tensor):  # a scalar or one per head (checked at construction)
            beta = beta.reshape(-1)
            q = xh @ Q.mT * beta.expand(H)[:, None, None]  # (..., H, n, k); beta folded into the queries
        else:
            q = xh @ Q.mT * beta
        return q, xh @ K.mT, xh @ V.mT, beta

    def _combine(self, heads: Tensor, x: Tensor) -> Tensor:
        # heads: (..., H, n, d_v)
        if self.W is None:
            return heads.movedim(-3, -2).reshape(*heads.shape[:-3], heads.shape[-2], -1)
        W = _like(self.W, "W", x)
        return (heads @ W.mT).sum(dim=-3)

    def velocity(self, x: Tensor) -> Tensor:
        q, k, v, _ = self._heads(x)
        mask = self._mask_for(x)
        if mask is not None:
            mask = mask.unsqueeze(-3)
        heads = softmax_average(
            q, k, v, beta=1.0, mask=mask, causal=self.causal, backend=self.backend, chunk_size=self.chunk_size
        )
        return self._combine(heads, x)

    def weights(self, x: Tensor) -> Tensor:
        """Per-head weights, shape ``(..., H, n, n)``."""
        q, k, _, _ = self._heads(x)
        mask = self._mask_for(x)
        return dense_weights(q, k, beta=1.0, mask=None if mask is None else mask.unsqueeze(-3), causal=self.causal)

    def mean_field_velocity(
        self, queries: Tensor, points: Tensor, masses: Tensor | None = None, *, check: bool = True, **old
    ) -> Tensor:
        """The sum over heads of the heads' mean-field velocities; arguments as in
        :meth:`~flowlib.fields.base.VelocityField.mean_field_velocity`."""
        masses = _masses_arg(masses, old, "mean_field_velocity")
        self._no_positions("the mean-field velocity")
        points, bias = measure_bias(queries, points, masses, check=check)
        qh, _, _, _ = self._heads(queries)
        _, kh, vh, _ = self._heads(points)
        heads = softmax_average(
            qh,
            kh,
            vh,
            beta=1.0,
            bias=None if bias is None else bias.unsqueeze(0),
            backend=self.backend,
            chunk_size=self.chunk_size,
        )
        return self._combine(heads, queries)

    def gaussian_closure(self) -> tuple[str, dict[str, Any]]:
        self._no_positions("a Gaussian closure")
        return "multihead", {"Q": self.Q, "K": self.K, "V": self.V, "beta": self.beta_value, "W": self.W}
