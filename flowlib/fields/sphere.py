"""Attention dynamics on the unit sphere (GLPR): layer normalisation as a projection."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_tokens
from .base import AttentionField, _masses_arg, measure_bias
from .reductions import Backend, _full_mask, attention_logits, dense_weights, logsumexp_rows, softmax_average

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

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> x = torch.tensor([[1.0, 0.0]]); v = torch.tensor([[2.0, 3.0]])
    >>> fl.tangent_projection(x, v)  # the component along x_1 is removed
    tensor([[0., 3.]])
    """
    coef = (x * v).sum(dim=-1, keepdim=True) / (x * x).sum(dim=-1, keepdim=True)
    return v - coef * x


def unit_normalize(x: Tensor, eps: float = 0.0) -> Tensor:
    """Retraction onto the unit sphere: ``x_i / ||x_i||`` (``eps`` is added to the norm).

    Use as ``simulate(..., retraction=unit_normalize)``: an Euler step followed by this map is
    exactly the GLPR/post-LN layer ``x <- (x + h v) / ||x + h v||``. A zero token has no direction
    and stays 0 (never NaN), as with :func:`torch.nn.functional.normalize`.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> fl.unit_normalize(torch.tensor([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]]))
    tensor([[0.6000, 0.8000],
            [0.0000, 1.0000],
            [0.0000, 0.0000]])
    """
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) + eps
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


def layer_norm_projection(x: Tensor, eps: float = 0.0) -> Tensor:
    r"""Layer normalisation without learned scale and shift: :math:`(x_i - \bar x_i)/\mathrm{std}(x_i)`.

    The result lies on the sphere of radius :math:`\sqrt d` inside the hyperplane of vectors whose
    coordinates sum to 0: it is **not** :func:`unit_normalize`; the two agree only up to centring
    and a factor :math:`\sqrt d`.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> y = fl.layer_norm_projection(torch.tensor([[1.0, 2.0, 3.0]]))
    >>> y
    tensor([[-1.2247,  0.0000,  1.2247]])
    >>> round(y.mean().item(), 6), round(y.pow(2).mean().item(), 6)  # zero mean, unit (biased) variance
    (0.0, 1.0)
    """
    check_tokens(x)
    xc = x - x.mean(dim=-1, keepdim=True)
    std = torch.sqrt((xc * xc).mean(dim=-1, keepdim=True) + eps)
    return xc / std


class SphereAttention(AttentionField):
    r"""Self-attention dynamics on the sphere :math:`\mathbb S^{d-1}` (Geshkovski et al.).

    .. math::

        v_i = \mathbf P^\perp_{x_i}\Big(\sum_j w_{ij}\, V x_j\Big),\qquad
        w_{ij} = \begin{cases}
            e^{\beta\langle Qx_i,Kx_j\rangle} / \sum_l e^{\beta\langle Qx_i,Kx_l\rangle} & \text{SA, } \texttt{normalized=True}\\
            e^{\beta\langle Qx_i,Kx_j\rangle} / n & \text{USA, } \texttt{normalized=False}
        \end{cases}

    Parameters
    ----------
    beta : float or Tensor
        Inverse temperature; default 1.0. All arguments are keyword-only (see
        :class:`~flowlib.fields.base.AttentionField`).
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
    since an ambient Runge-Kutta stage may legitimately leave the sphere by a little; with a
    ``retraction`` it also checks the state after the first step (a retraction onto another sphere,
    such as :func:`layer_norm_projection`, raises there). USA's velocity grows like :math:`e^\beta/n`:
    when that leaves the dtype's range (float32 from about :math:`\beta = 88 + \log n`), a direct
    call and :func:`flowlib.simulate` raise ``ValueError`` instead of returning inf or NaN.

    Raises
    ------
    ValueError
        If the tokens are not on the unit sphere, or shapes disagree.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> x = fl.uniform_sphere(5, 3, generator=g, dtype=torch.float64)
    >>> v = fl.SphereAttention(beta=1.0)(x)
    >>> (v * x).sum(-1).abs().max() < 1e-12  # tangent to the sphere
    tensor(True)
    >>> traj = fl.simulate(fl.SphereAttention(beta=1.0), x, t1=20.0, n_steps=200, retraction=fl.unit_normalize)
    >>> fl.cluster_count(traj.final).item()  # the tokens have gathered into one cluster
    1
    """

    _init_names = ("beta", "Q", "K", "V", "normalized", "mask", "causal", "backend", "chunk_size")
    on_sphere = True

    def __init__(
        self,
        *,
        beta: float | Tensor = 1.0,
        Q: Tensor | None = None,
        K: Tensor | None = None,
        V: Tensor | None = None,
        normalized: bool = True,
        mask: Tensor | None = None,
        causal: bool = False,
        backend: Backend = "auto",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(Q=Q, K=K, V=V, beta=beta, mask=mask, causal=causal, backend=backend, chunk_size=chunk_size)
        if not isinstance(normalized, bool):
            raise TypeError(f"normalized must be a bool; got {type(normalized).__name__}")
        self.normalized = normalized

    def _average(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, n: int, **kw) -> Tensor:
        """SA: the softmax average; USA: ``(1/n) sum_j e^{s_ij} V x_j``, computed without overflow as
        ``exp(lse_i - log n)`` times the softmax average."""
        avg = softmax_average(q, k, v, beta=self._beta_like(x), **kw)
        if not self.normalized:
            lse = logsumexp_rows(q, k, beta=self._beta_like(x), **kw)
            scale = torch.exp(lse - math.log(n))
            avg = avg * torch.where(torch.isfinite(lse), scale, torch.zeros_like(scale)).unsqueeze(-1)
        return avg

    def velocity(self, x: Tensor) -> Tensor:
        q, k, v = self._qkv(x)
        kw = dict(mask=self._mask_for(x), causal=self.causal, backend=self.backend, chunk_size=self.chunk_size)
        return tangent_projection(x, self._average(x, q, k, v, x.shape[-2], **kw))

    def _usa_range(self, x: Tensor) -> None:
        """Raise if USA's factor ``exp(lse_i - log n)`` leaves ``x``'s dtype (its velocity would be inf/NaN)."""
        if self.normalized:
            return
        q, k, _ = self._qkv(x)
        lse = logsumexp_rows(
            q, k, beta=self._beta_like(x), mask=self._mask_for(x), causal=self.causal, chunk_size=self.chunk_size
        )
        top = float(lse.detach().amax()) - math.log(x.shape[-2]) if lse.numel() else -math.inf
        if top > math.log(torch.finfo(x.dtype).max):
            raise ValueError(
                f"USA velocities (1/n) sum_j exp(beta <Qx_i, Kx_j>) V x_j reach exp({top:.1f}), beyond {x.dtype}'s "
                "range; use float64 tokens, a smaller beta, or the normalised (SA) field (normalized=True)"
            )

    def validate(self, x: Tensor) -> None:
        """As :meth:`VelocityField.validate`, and for USA that the velocity fits in ``x``'s dtype."""
        super().validate(x)
        with torch.no_grad():
            self._usa_range(x)

    def _checked_velocity(self, x: Tensor) -> Tensor:
        v = self.velocity(x)
        if not self.normalized and not bool(torch.isfinite(v).all()):
            with torch.no_grad():
                self._usa_range(x)
        return v

    def weights(self, x: Tensor) -> Tensor:
        """SA: the softmax weights; USA: :math:`e^{\\beta\\langle Qx_i, Kx_j\\rangle}/n`.

        Raises
        ------
        ValueError
            For USA weights too large for ``x``'s dtype (they grow like :math:`e^{\\beta}/n`, which
            exceeds float32's range from about :math:`\\beta = 88 + \\log n`); the message says to use
            float64 or the normalised (SA) weights.
        """
        q, k, _ = self._qkv(x)
        n = x.shape[-2]
        full = _full_mask(self._mask_for(x), self.causal, n, n, x.device)
        if self.normalized:
            return dense_weights(q, k, beta=self._beta_like(x), mask=full)
        logits = attention_logits(q, k, beta=self._beta_like(x)) - math.log(n)
        if full is not None:
            logits = logits.masked_fill(~full, float("-inf"))
        top = float(logits.detach().amax()) if logits.numel() else -math.inf
        if top > math.log(torch.finfo(x.dtype).max):
            raise ValueError(
                f"USA weights exp(beta <Qx_i, Kx_j>)/n reach exp({top:.1f}), beyond {x.dtype}'s range; "
                "use float64 tokens, a smaller beta, or the normalised weights (normalized=True)"
            )
        return torch.exp(logits)

    def mean_field_velocity(
        self, queries: Tensor, points: Tensor, masses: Tensor | None = None, *, check: bool = True, **old
    ) -> Tensor:
        r"""GLPR's mean-field velocity :math:`\mathbf P^\perp_x\big(\int w(x, y) Vy\,d\mu(y)\big)` of
        :math:`\mu \propto \sum_j w_j\delta_{y_j}` at unit-norm ``queries`` (SA: softmax weights;
        USA: :math:`e^{\beta\langle Qx,Ky\rangle}` against the probability measure). Shapes as in
        :meth:`~flowlib.fields.base.VelocityField.mean_field_velocity`."""
        masses = _masses_arg(masses, old, "mean_field_velocity")
        self._no_positions("the mean-field velocity")
        points, bias = measure_bias(queries, points, masses, check=check)
        if bias is not None:
            bias = bias - torch.logsumexp(bias, dim=-1, keepdim=True)  # a probability measure
        q, _, _ = self._qkv(queries)
        _, k, v = self._qkv(points)
        kw = dict(bias=bias, backend=self.backend, chunk_size=self.chunk_size)
        # with the log-masses as bias, (1/m) e^{lse} becomes the integral against the probability measure
        n = 1 if bias is not None else points.shape[0]
        return tangent_projection(queries, self._average(queries, q, k, v, n, **kw))
