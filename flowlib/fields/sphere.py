"""Attention dynamics on the unit sphere (GLPR): layer normalisation as a projection."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_tokens
from .base import VelocityField
from .reductions import Backend, _full_mask, dense_weights, logsumexp_rows, softmax_average

__all__ = ["SphereAttention", "tangent_projection", "unit_normalize", "layer_norm_projection"]


def tangent_projection(x: Tensor, v: Tensor) -> Tensor:
    r"""Remove from each ``v_i`` its component along ``x_i``: :math:`v_i - \frac{\langle x_i, v_i\rangle}{\|x_i\|^2} x_i`.

    On the unit sphere this is GLPR's :math:`\mathbf P^\perp_{x}v = v - \langle x, v\rangle x`. Dividing by
    :math:`\|x_i\|^2` makes it an orthogonal projection everywhere, so the continuous flow preserves
    every norm exactly (and an integrator's drift off the sphere measures its own error).

    Parameters
    ----------
    x, v : Tensor, shape (..., n, d)

    Returns
    -------
    Tensor, shape (..., n, d)
    """
    coef = (x * v).sum(dim=-1, keepdim=True) / (x * x).sum(dim=-1, keepdim=True)
    return v - coef * x


def unit_normalize(x: Tensor, eps: float = 0.0) -> Tensor:
    """Retraction onto the unit sphere: ``x_i / ||x_i||`` (``eps`` is added to the norm).

    Use as ``simulate(..., retraction=unit_normalize)``: an Euler step followed by this map is
    exactly the GLPR/post-LN layer ``x <- (x + h v) / ||x + h v||``.
    """
    return x / (torch.linalg.vector_norm(x, dim=-1, keepdim=True) + eps)


def layer_norm_projection(x: Tensor, eps: float = 0.0) -> Tensor:
    r"""Layer normalisation without learned scale and shift: :math:`(x_i - \bar x_i)/\mathrm{std}(x_i)`.

    The result lies on the sphere of radius :math:`\sqrt d` inside the hyperplane of vectors whose
    coordinates sum to 0: it is **not** :func:`unit_normalize`; the two agree only up to centring
    and a factor :math:`\sqrt d`.
    """
    check_tokens(x)
    xc = x - x.mean(dim=-1, keepdim=True)
    std = torch.sqrt((xc * xc).mean(dim=-1, keepdim=True) + eps)
    return xc / std


@dataclass(frozen=True, eq=False)
class SphereAttention(VelocityField):
    r"""Self-attention dynamics on the sphere :math:`\mathbb S^{d-1}` (Geshkovski et al.).

    .. math::

        v_i = \mathbf P^\perp_{x_i}\Big(\sum_j w_{ij}\, V x_j\Big),\qquad
        w_{ij} = \begin{cases}
            e^{\beta\langle Qx_i,Kx_j\rangle} / \sum_l e^{\beta\langle Qx_i,Kx_l\rangle} & \text{SA, } \texttt{normalized=True}\\
            e^{\beta\langle Qx_i,Kx_j\rangle} / n & \text{USA, } \texttt{normalized=False}
        \end{cases}

    Parameters
    ----------
    beta : float
        Inverse temperature; default 1.0.
    Q, K : Tensor, shape (k, d), optional
    V : Tensor, shape (d, d), optional
        ``None`` = identity (the "SA"/"USA" models of GLPR).
    normalized : bool
        True for SA (softmax), False for USA (division by ``n``).
    mask, causal, backend, chunk_size
        As in :class:`SoftmaxAttention`.

    Notes
    -----
    Calling the field checks that every token has unit norm (1e-6 in float64, 1e-4 otherwise);
    :func:`flowlib.simulate` checks the initial state once and then evaluates without the check,
    since an ambient Runge-Kutta stage may legitimately leave the sphere by a little.

    Raises
    ------
    ValueError
        If the tokens are not on the unit sphere, or shapes disagree.
    """

    beta: float = 1.0
    Q: Tensor | None = None
    K: Tensor | None = None
    V: Tensor | None = None
    normalized: bool = True
    mask: Tensor | None = None
    causal: bool = False
    backend: Backend = "auto"
    chunk_size: int | None = None

    on_sphere = True

    def __post_init__(self) -> None:
        self._common_checks()

    def velocity(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        q, k, v = self._qkv(x)
        kw = dict(
            beta=float(self.beta),
            mask=self._mask_for(x),
            causal=self.causal,
            backend=self.backend,
            chunk_size=self.chunk_size,
        )
        avg = softmax_average(q, k, v, **kw)
        if not self.normalized:
            # (1/n) sum_j e^{s_ij} V x_j = exp(lse_i - log n) * softmax average, without overflow.
            lse = logsumexp_rows(q, k, **kw)
            scale = torch.exp(lse - math.log(x.shape[-2]))
            avg = avg * torch.where(torch.isfinite(lse), scale, torch.zeros_like(scale)).unsqueeze(-1)
        return tangent_projection(x, avg)

    def weights(self, x: Tensor) -> Tensor:
        q, k, _ = self._qkv(x)
        mask = self._mask_for(x)
        if self.normalized:
            return dense_weights(q, k, beta=float(self.beta), mask=mask, causal=self.causal)
        w = torch.exp(float(self.beta) * (q @ k.mT)) / x.shape[-2]
        n = x.shape[-2]
        full = _full_mask(mask, self.causal, n, n, x.device)
        return w if full is None else w * full
