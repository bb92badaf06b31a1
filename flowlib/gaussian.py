r"""Gaussian closures of the Transformer PDE.

For softmax, multi-head, L2 and Sinkhorn attention the velocity field of a Gaussian measure
:math:`\mu = \mathcal N(\alpha, \Sigma)` is **affine**, :math:`\Gamma_\mu(x) = b + Jx`, so the flow keeps
Gaussians Gaussian and the Transformer PDE reduces to two ODEs,

.. math::

    \dot\alpha = b + J\alpha, \qquad \dot\Sigma = J\Sigma + \Sigma J^\top .

In every case :math:`J` depends on :math:`\Sigma` only, so the covariance equation is autonomous.

Conventions are those of the fields (no implicit ``1/sqrt(k)``): with ``beta`` multiplying
:math:`\langle Qx, Ky\rangle`, the bilinear form of the score is :math:`\langle Ax, y\rangle` with
:math:`A = \beta K^\top Q`. The formulas, for each ``kind``:

``"softmax"``
    :math:`J = V\Sigma A`, :math:`b = V\alpha`.
``"multihead"``
    :math:`J = \sum_h C_h \Sigma A_h`, :math:`b = \sum_h C_h \alpha`, where :math:`A_h = \beta_h K_h^\top Q_h`
    and :math:`C_h = W_h V_h` (``W=None`` concatenates the heads, as in :class:`flowlib.MultiHeadAttention`).
``"l2"``
    Score :math:`-\beta\|Qx - Ky\|^2`; with :math:`G = 2\beta K^\top K`,
    :math:`J = 2\beta V (I + \Sigma G)^{-1}\Sigma K^\top Q` and :math:`b = V(I + \Sigma G)^{-1}\alpha`.
``"sinkhorn"``
    The limit of infinitely many Sinkhorn iterations: the entropic self-coupling of :math:`\mu` with
    :math:`B = \beta Q^\top K`. With :math:`N = \Sigma^{1/2}B^\top\Sigma B\Sigma^{1/2}` and
    :math:`S = \Sigma^{1/2}\, 2\big(I + (I + 4N)^{1/2}\big)^{-1}\Sigma^{1/2}`, one has
    :math:`\mathbb E_\pi[y\mid x] = \alpha + S B^\top (x - \alpha)`, so :math:`J = V S B^\top`,
    :math:`b = V(\alpha - SB^\top\alpha)`, and the mean obeys :math:`\dot\alpha = V\alpha`.

Sigmoid and other un-normalised kernels, and masked attention, do not keep Gaussians Gaussian; asking
for them raises a ``ValueError`` that says so.

References
----------
Castin, Ablin, Carrillo and Peyré, *A unified perspective on the dynamics of deep transformers* (2025).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ._validation import check_positive_int, check_real
from .integrate.steppers import STEPPERS

__all__ = [
    "GaussianKind",
    "KINDS",
    "GaussianSolution",
    "score_matrix",
    "affine_velocity",
    "mean_rhs",
    "covariance_rhs",
    "solve_gaussian",
    "softmax_covariance_closed_form",
    "blowup_time",
    "limit_covariance",
    "sinkhorn_coupling",
    "symmetric_sqrt",
    "trace_normalized_coordinates",
]

GaussianKind = Literal["softmax", "multihead", "l2", "sinkhorn"]
KINDS: tuple[str, ...] = ("softmax", "multihead", "l2", "sinkhorn")


#: Steps between two checks (host synchronisations) of whether any system is still alive in solve_gaussian.
_ALIVE_CHECK = 16


# ----------------------------------------------------------------------------- helpers
class _SymmetricSqrt(torch.autograd.Function):
    """``S^(1/2)`` of a symmetric matrix with the gradient of the Sylvester equation ``R X + X R = G``.

    In the eigenbasis of ``S`` the solution is ``G_ij / (r_i + r_j)``: it divides by sums of square roots,
    never by differences of eigenvalues, so repeated eigenvalues (``S = I``) have a finite gradient,
    unlike the backward of :func:`torch.linalg.eigh`. Pairs with ``r_i + r_j = 0`` (a zero eigenvalue on
    both sides, where the square root is not differentiable) get gradient 0.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(S: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        w, U = torch.linalg.eigh(S)
        r = w.clamp_min(0).sqrt()
        return (U * r.unsqueeze(-2)) @ U.mT, U, r

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, U, r = output
        ctx.mark_non_differentiable(U, r)
        ctx.save_for_backward(U, r)

    @staticmethod
    def backward(ctx, grad_R: Tensor, grad_U: Tensor, grad_r: Tensor) -> Tensor:
        U, r = ctx.saved_tensors
        G = U.mT @ (0.5 * (grad_R + grad_R.mT)) @ U
        den = r.unsqueeze(-1) + r.unsqueeze(-2)
        ok = den > 0
        X = torch.where(ok, G / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(G))
        return U @ X @ U.mT


def symmetric_sqrt(S: Tensor) -> Tensor:
    """Square root of symmetric positive semi-definite matrices ``(..., d, d)`` (eigenvalues clamped at 0).

    Differentiable also at repeated eigenvalues (its backward solves a Sylvester equation instead of
    dividing by eigenvalue gaps), so distances built on it, such as
    :func:`flowlib.bures_wasserstein`, have finite gradients at identity covariances.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.gaussian import symmetric_sqrt
    >>> S = torch.tensor([[4.0, 0.0], [0.0, 9.0]], dtype=torch.float64)
    >>> symmetric_sqrt(S)
    tensor([[2., 0.],
            [0., 3.]], dtype=torch.float64)
    >>> R = symmetric_sqrt(torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64))
    >>> torch.allclose(R @ R, torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64))
    True
    >>> I = torch.eye(2, dtype=torch.float64, requires_grad=True)
    >>> symmetric_sqrt(I).trace().backward(); I.grad  # d tr(S^1/2) = S^-1/2 / 2, finite at S = I
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]], dtype=torch.float64)
    """
    return _SymmetricSqrt.apply(0.5 * (S + S.mT))[0]


def trace_normalized_coordinates(S: Tensor) -> Tensor:
    r"""Coordinates ``(u, w)`` of :math:`S/\operatorname{tr}S` for 2x2 covariances, shape ``(..., 2)``.

    With :math:`S = \begin{pmatrix} a & c\\ c & b\end{pmatrix}`, :math:`u = (a-b)/(a+b)` and
    :math:`w = 2c/(a+b)`. Positive semi-definite matrices map into the closed unit disc and rank-one
    matrices onto the unit circle.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.gaussian import trace_normalized_coordinates
    >>> trace_normalized_coordinates(torch.eye(2))  # isotropic: the centre of the disc
    tensor([0., 0.])
    >>> trace_normalized_coordinates(torch.tensor([[1.0, 0.0], [0.0, 0.0]])).norm().item()  # rank one: on the circle
    1.0
    """
    if S.shape[-2:] != (2, 2):
        raise ValueError(f"trace_normalized_coordinates needs 2x2 matrices; got shape {tuple(S.shape)}")
    a, b, c = S[..., 0, 0], S[..., 1, 1], S[..., 0, 1]
    tr = a + b
    return torch.stack([(a - b) / tr, 2 * c / tr], dim=-1)


def _as_matrix(M, d: int, name: str, like: Tensor, *, rows: int | None = None, ndim: int = 2) -> Tensor:
    if M is None:
        return torch.eye(d, dtype=like.dtype, device=like.device)
    if not isinstance(M, Tensor):
        M = torch.as_tensor(M)
    if M.ndim != ndim or M.shape[-1] != d or (rows is not None and M.shape[-2] != rows):
        want = ("H, " if ndim == 3 else "") + (f"{rows}" if rows is not None else "k") + f", {d}"
        raise ValueError(f"{name} must have shape ({want}) for d = {d}; got {tuple(M.shape)}")
    return M.to(dtype=like.dtype, device=like.device)


def _check_cov(cov: Tensor, name: str = "cov") -> Tensor:
    if not isinstance(cov, Tensor):
        cov = torch.as_tensor(cov, dtype=torch.float64)
    if not cov.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype; got {cov.dtype}")
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"{name} must have shape (..., d, d); got {tuple(cov.shape)}")
    if not bool(torch.isfinite(cov).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return cov


def _check_kind(kind: str) -> str:
    if kind == "sigmoid":
        raise ValueError(
            "sigmoid attention has no Gaussian closure: its un-normalised kernel gives a velocity that is "
            "not affine in x, so Gaussians do not stay Gaussian; use particles instead"
        )
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    return kind


def _from_field(field) -> tuple[str, dict]:
    """Translate a flowlib field into ``(kind, parameters)`` through its own :meth:`gaussian_closure`."""
    closure = getattr(field, "gaussian_closure", None)
    if closure is None:
        raise TypeError(
            f"kind must be one of {KINDS} or a flowlib field with a Gaussian closure; got {type(field).__name__}"
        )
    kind, params = closure()
    return _check_kind(kind), params


def _resolve(kind, Q, K, V, beta, W):
    if isinstance(kind, str):
        return _check_kind(kind), Q, K, V, 1.0 if beta is None else beta, W
    given = [name for name, value in (("Q", Q), ("K", K), ("V", V), ("beta", beta), ("W", W)) if value is not None]
    if given:
        raise TypeError(
            f"{type(kind).__name__} supplies its own Q, K, V, beta and W; got also {', '.join(given)}. Pass "
            "either a field, or a kind string with the matrices (or change the field: field.replace(beta=...))"
        )
    k, p = _from_field(kind)
    return k, p["Q"], p["K"], p["V"], p["beta"], p.get("W")


_MATRIX_NAMES = ("Q", "K", "V")


def _positional_matrices(args: tuple, given: dict[str, Any], where: str) -> dict[str, Any]:
    """Map the deprecated positional ``Q, K, V`` (flowlib 0.2) onto the keywords, with a warning."""
    if not args:
        return given
    if len(args) > 3:
        raise TypeError(f"{where} takes at most 3 positional matrices (Q, K, V; deprecated); got {len(args)}")
    warnings.warn(
        f"passing Q, K, V positionally to {where} is deprecated since flowlib 0.3; pass them as keywords "
        "(Q=..., K=..., V=...)",
        DeprecationWarning,
        stacklevel=3,
    )
    out = dict(given)
    for name, value in zip(_MATRIX_NAMES, args):
        if out[name] is not None:
            raise TypeError(f"{where} got {name} both positionally and as a keyword")
        out[name] = value
    return out


def _beta_scalar(beta, like: Tensor) -> float | Tensor:
    """A number as a float; a one-element tensor as a 0-d tensor in ``like``'s dtype (its gradient kept)."""
    if isinstance(beta, Tensor):
        if beta.numel() != 1:
            raise ValueError(f"beta must be a scalar here; got a tensor of shape {tuple(beta.shape)}")
        if not beta.is_floating_point():
            raise TypeError(f"beta must be a floating tensor; got {beta.dtype}")
        return beta.to(dtype=like.dtype, device=like.device).reshape(())
    return check_real(beta, "beta")


def score_matrix(Q: Tensor | None, K: Tensor | None, *, beta: float | Tensor = 1.0, d: int | None = None) -> Tensor:
    r"""The matrix :math:`A = \beta K^\top Q` with :math:`\beta\langle Qx, Ky\rangle = \langle Ax, y\rangle`.

    flowlib's one implementation of this product (the Gaussian closures use it). ``None`` is the
    identity; with both ``None`` the result is ``beta * I`` in float64 on the CPU (``d`` required).
    A tensor ``beta`` keeps its gradient.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.gaussian import score_matrix
    >>> Q = torch.tensor([[1.0, 2.0], [0.0, 1.0]]); K = torch.eye(2)
    >>> score_matrix(Q, K, beta=2.0)  # beta K^T Q
    tensor([[2., 4.],
            [0., 2.]])
    >>> score_matrix(None, None, d=2)
    tensor([[1., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    if Q is None and K is None:
        if d is None:
            raise ValueError("score_matrix needs d when Q and K are both None")
        return beta * torch.eye(d, dtype=torch.float64)
    ref = Q if Q is not None else K
    d = ref.shape[-1]
    Qm = torch.eye(d, dtype=ref.dtype, device=ref.device) if Q is None else Q
    Km = torch.eye(d, dtype=ref.dtype, device=ref.device) if K is None else K
    if Qm.shape != Km.shape:
        raise ValueError(f"Q and K must have the same shape (k, d); got {tuple(Qm.shape)} and {tuple(Km.shape)}")
    return beta * Km.mT @ Qm


# ----------------------------------------------------------------------------- the affine field
def sinkhorn_coupling(cov: Tensor, B: Tensor) -> Tensor:
    r"""The regression matrix :math:`S B^\top` of the entropic self-coupling of :math:`\mathcal N(\alpha, \Sigma)`.

    The coupling :math:`\pi(dx, dy) \propto e^{f(x) + g(y) + x^\top B y}\mu(dx)\mu(dy)` with both marginals
    :math:`\mu` is Gaussian, and :math:`\mathbb E_\pi[y \mid x] = \alpha + S B^\top(x - \alpha)`. Returns
    ``S @ B.T``, shape ``(..., d, d)``. Works for singular ``B`` and ``cov``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.gaussian import sinkhorn_coupling
    >>> C = sinkhorn_coupling(torch.eye(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    >>> C.shape, torch.allclose(C, C.T)
    (torch.Size([2, 2]), True)
    """
    R = symmetric_sqrt(cov)
    N = R @ B.mT @ cov @ B @ R
    w, U = torch.linalg.eigh(0.5 * (N + N.mT))
    f = 2.0 / (1.0 + torch.sqrt(1.0 + 4.0 * w.clamp_min(0)))
    X = (U * f.unsqueeze(-2)) @ U.mT
    return R @ X @ R @ B.mT


def affine_velocity(
    kind: GaussianKind | object,
    mean: Tensor,
    cov: Tensor,
    *args: Tensor | None,
    Q: Tensor | None = None,
    K: Tensor | None = None,
    V: Tensor | None = None,
    beta: float | Tensor | None = None,
    W: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The affine velocity :math:`\Gamma_\mu(x) = b + Jx` of :math:`\mu = \mathcal N(\text{mean}, \text{cov})`.

    Parameters
    ----------
    kind : {"softmax", "multihead", "l2", "sinkhorn"} or a field
        The attention variant; a :class:`flowlib.SoftmaxAttention`, :class:`flowlib.MultiHeadAttention`,
        :class:`flowlib.L2Attention` or :class:`flowlib.SinkhornAttention` instance supplies its own
        ``Q, K, V, beta`` (and ``W``), and passing any of them as well raises ``TypeError``.
    mean : Tensor, shape (..., d)
    cov : Tensor, shape (..., d, d)
        Symmetric positive semi-definite.
    Q, K : Tensor, shape (k, d) (``(H, k, d)`` for multihead), optional, keyword-only
        ``None`` is the identity (not allowed for multihead). Passing ``Q, K, V`` positionally is
        deprecated (flowlib 0.2).
    V : Tensor, shape (d, d) (``(H, d_v, d)`` for multihead), optional, keyword-only
    beta : float or Tensor (or ``(H,)`` tensor for multihead)
        Inverse temperature, as in the fields (default 1.0 with a kind string); a tensor keeps its
        gradient.
    W : Tensor, shape (H, d, d_v), optional
        Multi-head output matrices; ``None`` concatenates the heads.

    Returns
    -------
    b : Tensor, shape (..., d)
    J : Tensor, shape (..., d, d)

    Raises
    ------
    ValueError
        Unknown kind, a kind without a Gaussian closure (sigmoid, masked), or shapes that do not match.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> mean = torch.zeros(2, dtype=torch.float64); cov = torch.eye(2, dtype=torch.float64)
    >>> b, J = fl.affine_velocity("softmax", mean, cov, beta=0.5)
    >>> b, J  # Q = K = V = I and Sigma = I: b = 0, J = beta I
    (tensor([0., 0.], dtype=torch.float64), tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]], dtype=torch.float64))
    """
    m = _positional_matrices(args, {"Q": Q, "K": K, "V": V}, "affine_velocity")
    kind, Q, K, V, beta, W = _resolve(kind, m["Q"], m["K"], m["V"], beta, W)
    cov = _check_cov(cov)
    mean = torch.as_tensor(mean, dtype=cov.dtype, device=cov.device)
    d = cov.shape[-1]
    if mean.shape[-1:] != (d,):
        raise ValueError(f"mean must have shape (..., {d}) to match cov {tuple(cov.shape)}; got {tuple(mean.shape)}")
    return _affine(kind, _prepare(kind, Q, K, V, beta, W, d, cov), mean, cov)


def _prepare(kind: str, Q, K, V, beta, W, d: int, like: Tensor) -> dict[str, Tensor]:
    """Check the parameters once and form the constant matrices of ``kind``'s affine field."""
    eye = torch.eye(d, dtype=like.dtype, device=like.device)
    if kind == "multihead":
        if Q is None or K is None or V is None:
            raise ValueError("multihead needs Q, K of shape (H, k, d) and V of shape (H, d_v, d)")
        Qh = _as_matrix(Q, d, "Q", like, ndim=3)
        Kh = _as_matrix(K, d, "K", like, ndim=3)
        Vh = _as_matrix(V, d, "V", like, ndim=3)
        H, dv = Vh.shape[0], Vh.shape[1]
        if Qh.shape != Kh.shape or Qh.shape[0] != H:
            raise ValueError(f"Q, K must share shape (H, k, d) with H = {H}; got {tuple(Qh.shape)}, {tuple(Kh.shape)}")
        if W is None:
            if H * dv != d:
                raise ValueError(
                    f"with W=None the heads are concatenated, so H * d_v must equal d; got {H} * {dv} != {d}"
                )
            Wh = torch.zeros(H, d, dv, dtype=like.dtype, device=like.device)
            for h in range(H):
                Wh[h, h * dv : (h + 1) * dv] = torch.eye(dv, dtype=like.dtype, device=like.device)
        else:
            Wh = torch.as_tensor(W).to(like)
            if Wh.shape != (H, d, dv):
                raise ValueError(f"W must have shape (H, d, d_v) = ({H}, {d}, {dv}); got {tuple(Wh.shape)}")
        betas = torch.as_tensor(beta, dtype=like.dtype, device=like.device).reshape(-1).expand(H)
        return {"A": betas[:, None, None] * Kh.mT @ Qh, "C": Wh @ Vh}  # (H, d, d) each
    beta = _beta_scalar(beta, like)
    Qm = eye if Q is None else _as_matrix(Q, d, "Q", like)
    Km = eye if K is None else _as_matrix(K, d, "K", like)
    Vm = _as_matrix(V, d, "V", like, rows=d)
    if Qm.shape != Km.shape:
        raise ValueError(f"Q and K must have the same shape (k, d); got {tuple(Qm.shape)} and {tuple(Km.shape)}")
    if kind == "softmax":
        return {"V": Vm, "A": score_matrix(Qm, Km, beta=beta)}
    if kind == "l2":
        return {
            "V": Vm,
            "eye": eye,
            "G": score_matrix(Km, Km, beta=2 * beta),
            "KQ": score_matrix(Qm, Km, beta=2 * beta),
        }
    return {"V": Vm, "eye": eye, "B": score_matrix(Qm, Km, beta=beta).mT}  # sinkhorn: B = beta Q^T K = A^T


def _affine(kind: str, m: dict[str, Tensor], mean: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
    """``(b, J)`` from the prepared matrices ``m`` (no checks: the callers have made them)."""
    if kind == "multihead":
        J = (m["C"] @ cov.unsqueeze(-3) @ m["A"]).sum(dim=-3)
        b = (mean.unsqueeze(-2) @ m["C"].sum(dim=0).mT).squeeze(-2)
        return b, J
    V = m["V"]
    if kind == "softmax":
        return mean @ V.mT, V @ cov @ m["A"]
    if kind == "l2":
        M = m["eye"] + cov @ m["G"]  # (I + Sigma G); its inverse is applied, never formed
        J = V @ torch.linalg.solve(M, cov @ m["KQ"])
        b = torch.linalg.solve(M, mean.unsqueeze(-1)).squeeze(-1) @ V.mT
        return b, J
    P = sinkhorn_coupling(cov, m["B"])
    return ((m["eye"] - P) @ mean.unsqueeze(-1)).squeeze(-1) @ V.mT, V @ P


def mean_rhs(kind, mean, cov, *args, Q=None, K=None, V=None, beta=None, W=None) -> Tensor:
    r""":math:`\dot\alpha = b + J\alpha` (shape ``(..., d)``); arguments as in :func:`affine_velocity`.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.gaussian import mean_rhs
    >>> mean = torch.tensor([1.0, 0.0], dtype=torch.float64); cov = torch.eye(2, dtype=torch.float64)
    >>> mean_rhs("softmax", mean, cov, beta=0.5)  # V = I: the mean moves by b + J mean
    tensor([1.5000, 0.0000], dtype=torch.float64)
    """
    m = _positional_matrices(args, {"Q": Q, "K": K, "V": V}, "mean_rhs")
    b, J = affine_velocity(kind, mean, cov, **m, beta=beta, W=W)
    return b + (J @ torch.as_tensor(mean).to(J).unsqueeze(-1)).squeeze(-1)


def covariance_rhs(kind, cov, *args, Q=None, K=None, V=None, beta=None, W=None) -> Tensor:
    r""":math:`\dot\Sigma = J\Sigma + \Sigma J^\top` (shape ``(..., d, d)``); arguments as in :func:`affine_velocity`.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> cov = torch.eye(2, dtype=torch.float64)
    >>> fl.covariance_rhs("softmax", cov, beta=0.5)  # J Sigma + Sigma J^T
    tensor([[1., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    cov = _check_cov(cov)
    zero = torch.zeros(cov.shape[:-1], dtype=cov.dtype, device=cov.device)
    m = _positional_matrices(args, {"Q": Q, "K": K, "V": V}, "covariance_rhs")
    _, J = affine_velocity(kind, zero, cov, **m, beta=beta, W=W)
    JS = J @ cov
    return JS + JS.mT


# ----------------------------------------------------------------------------- closed forms
def softmax_covariance_closed_form(cov0: Tensor, A: Tensor, t: float | Tensor) -> Tensor:
    r"""Exact covariance for softmax attention with :math:`V = I`: :math:`\Sigma(t) = (\Sigma_0^{-1} - t(A + A^\top))^{-1}`.

    Valid for ``t`` below :func:`blowup_time`. ``t`` may be a tensor of shape ``(S,)``, giving ``(S, d, d)``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.gaussian import softmax_covariance_closed_form
    >>> softmax_covariance_closed_form(torch.eye(2, dtype=torch.float64), 0.5 * torch.eye(2, dtype=torch.float64), 0.25)  # (1 - 0.25)^-1 I
    tensor([[1.3333, 0.0000],
            [0.0000, 1.3333]], dtype=torch.float64)
    """
    cov0 = _check_cov(cov0, "cov0")
    A = torch.as_tensor(A).to(cov0)
    M = A + A.mT
    t = torch.as_tensor(t, dtype=cov0.dtype, device=cov0.device)
    P0 = torch.linalg.inv(cov0)
    P = P0 - t.reshape(*t.shape, *([1] * cov0.ndim)) * M
    return torch.linalg.inv(P)


def blowup_time(cov0: Tensor, A: Tensor) -> float:
    r"""Blow-up time :math:`t^* = 1/\lambda_{\max}(\Sigma_0^{1/2}(A + A^\top)\Sigma_0^{1/2})` of the softmax
    covariance with :math:`V = I`, or ``inf`` if :math:`A + A^\top` has no positive eigenvalue.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.gaussian import blowup_time
    >>> blowup_time(torch.eye(2, dtype=torch.float64), 0.5 * torch.eye(2, dtype=torch.float64))  # 1 / lambda_max(A + A^T)
    1.0
    >>> blowup_time(torch.eye(2, dtype=torch.float64), -torch.eye(2, dtype=torch.float64))  # contracting: never
    inf
    """
    cov0 = _check_cov(cov0, "cov0")
    if cov0.ndim != 2:
        raise ValueError(f"blowup_time takes one covariance (d, d); got {tuple(cov0.shape)}")
    A = torch.as_tensor(A).to(cov0)
    R = symmetric_sqrt(cov0)
    eig = torch.linalg.eigvalsh(R @ (A + A.mT) @ R)
    lam = float(eig.max())
    # eigenvalues within round-off of 0 (e.g. K = -Q, where A + A^T <= 0 exactly) do not blow up
    return math.inf if lam <= 1e-12 * max(1.0, float(eig.abs().max())) else 1.0 / lam


def limit_covariance(cov0: Tensor, Q: Tensor, *, tol: float = 1e-10) -> Tensor:
    r"""Limit :math:`\Sigma_\infty = Z(Z^\top\Sigma_0^{-1}Z)^{-1}Z^\top` of the softmax covariance with
    :math:`V = I` and :math:`K = -Q` (so :math:`A + A^\top = -2\beta Q^\top Q \preceq 0`), where the
    columns of :math:`Z` are an orthonormal basis of :math:`\ker Q`. Its rank is :math:`d - \operatorname{rank} Q`.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.gaussian import limit_covariance
    >>> Q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)  # ker Q = span(e_2)
    >>> limit_covariance(torch.eye(2, dtype=torch.float64), Q)  # all the variance left is along e_2
    tensor([[0., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    cov0 = _check_cov(cov0, "cov0")
    Q = torch.as_tensor(Q).to(cov0)
    d = cov0.shape[-1]
    if Q.ndim != 2 or Q.shape[-1] != d:
        raise ValueError(f"Q must have shape (k, {d}); got {tuple(Q.shape)}")
    _, s, Vh = torch.linalg.svd(Q, full_matrices=True)
    rank = int((s > tol * max(1.0, float(s.max()) if s.numel() else 1.0)).sum())
    Z = Vh[rank:].mT  # (d, d - rank)
    if Z.shape[-1] == 0:
        return torch.zeros_like(cov0)
    P0 = torch.linalg.inv(cov0)
    return Z @ torch.linalg.inv(Z.mT @ P0 @ Z) @ Z.mT


# ----------------------------------------------------------------------------- the solver
@dataclass(frozen=True, eq=False)
class GaussianSolution:
    """Solution of the Gaussian closure.

    Attributes
    ----------
    t : Tensor, shape (S,)
        Saved times.
    mean : Tensor, shape (S, ..., d)
    cov : Tensor, shape (S, ..., d, d)
        After a system blows up, its saved states stay frozen at its last admissible state.
    status : {"ok", "blowup", "unstable"}
        ``"blowup"`` if any system's covariance trace exceeded ``blowup_trace`` or stopped being finite;
        ``"unstable"`` if instead a step made a covariance indefinite, which the exact flow never does
        (a congruence keeps it positive semi-definite): the step is too large for a fast-decaying
        direction, so increase ``n_steps``.
    stop_time : Tensor, shape (...)
        Time of each system's last admissible state (``t1`` if it never blew up).
    kind : str

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> sol = fl.solve_gaussian("softmax", torch.zeros(1, dtype=torch.float64), torch.eye(1, dtype=torch.float64), t1=2.0, n_steps=200)
    >>> sol.status, round(sol.stop_time.item(), 2)  # Sigma(t) = 1 / (1 - 2t) blows up at t = 1/2
    ('blowup', 0.5)
    """

    t: Tensor
    mean: Tensor
    cov: Tensor
    status: Literal["ok", "blowup", "unstable"]
    stop_time: Tensor
    kind: str

    @property
    def final_cov(self) -> Tensor:
        return self.cov[-1]

    @property
    def final_mean(self) -> Tensor:
        return self.mean[-1]


def solve_gaussian(
    kind: GaussianKind | object,
    mean0: Tensor,
    cov0: Tensor,
    *args: Tensor | None,
    Q: Tensor | None = None,
    K: Tensor | None = None,
    V: Tensor | None = None,
    t1: float,
    n_steps: int,
    method: str = "rk4",
    beta: float | Tensor | None = None,
    W: Tensor | None = None,
    save_every: int = 1,
    blowup_trace: float = 1e6,
) -> GaussianSolution:
    r"""Integrate the mean and covariance ODEs of the Gaussian closure from ``t = 0`` to ``t1``.

    Parameters
    ----------
    kind, Q, K, V, beta, W
        As in :func:`affine_velocity` (the matrices keyword-only; a field excludes them). A tensor
        ``beta`` keeps its gradient through the whole solve.
    mean0 : Tensor, shape (..., d)
    cov0 : Tensor, shape (..., d, d)
        Leading dimensions are independent systems (e.g. a grid of initial covariances).
    t1 : float
        Final time (> 0).
    n_steps : int
        Number of fixed steps of ``method``.
    method : {"rk4", "euler", "heun", "rk4_38", "layers"}
        An ODE stepper of :data:`flowlib.integrate.STEPPERS`, or ``"layers"``: the exact law after ``n_steps``
        residual layers :math:`x \mapsto x + h\,(b + Jx)` with ``h = t1 / n_steps``, i.e.
        :math:`\alpha \mapsto \alpha + h(b + J\alpha)` and :math:`\Sigma \mapsto (I + hJ)\Sigma(I + hJ)^\top`.
        An affine map sends a Gaussian to a Gaussian, so this is what the token cloud of a depth-``n_steps``
        transformer (:func:`flowlib.residual_stack`) follows in the mean-field limit, with no
        time-discretisation error to compare against; it differs from ``"euler"`` by
        :math:`h^2 J\Sigma J^\top` per step and always keeps :math:`\Sigma` positive semi-definite.
    save_every : int
        Save every ``save_every`` steps (the final state is always saved).
    blowup_trace : float
        A system whose covariance trace exceeds this or becomes non-finite is declared blown up; one
        that becomes indefinite beyond round-off is declared unstable. Either is frozen at its last
        admissible state, and ``stop_time`` records when.

    Returns
    -------
    GaussianSolution

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> mean0 = torch.zeros(2, dtype=torch.float64); cov0 = torch.eye(2, dtype=torch.float64)
    >>> sol = fl.solve_gaussian("softmax", mean0, cov0, t1=0.4, n_steps=40, beta=0.5)
    >>> sol.status, sol.t.shape, sol.cov.shape
    ('ok', torch.Size([41]), torch.Size([41, 2, 2]))
    >>> A = 0.5 * torch.eye(2, dtype=torch.float64)
    >>> exact = fl.gaussian.softmax_covariance_closed_form(cov0, A, 0.4)
    >>> torch.allclose(sol.cov[-1], exact)  # the closed form (Sigma_0^-1 - t (A + A^T))^-1
    True
    """
    m = _positional_matrices(args, {"Q": Q, "K": K, "V": V}, "solve_gaussian")
    kind, Q, K, V, beta, W = _resolve(kind, m["Q"], m["K"], m["V"], beta, W)
    cov0 = _check_cov(cov0, "cov0")
    mean0 = torch.as_tensor(mean0, dtype=cov0.dtype, device=cov0.device)
    d = cov0.shape[-1]
    if mean0.shape[-1:] != (d,):
        raise ValueError(
            f"mean0 must have shape (..., {d}) to match cov0 {tuple(cov0.shape)}; got {tuple(mean0.shape)}"
        )
    t1 = check_real(t1, "t1", positive=True)
    n_steps = check_positive_int(n_steps, "n_steps")
    save_every = check_positive_int(save_every, "save_every")
    if method not in STEPPERS and method != "layers":
        raise ValueError(f"method must be one of {tuple(STEPPERS) + ('layers',)}; got {method!r}")
    batch = torch.broadcast_shapes(mean0.shape[:-1], cov0.shape[:-2])
    state = torch.cat([mean0.expand(*batch, d).unsqueeze(-2), cov0.expand(*batch, d, d)], dim=-2)  # (..., d+1, d)

    mats = _prepare(kind, Q, K, V, beta, W, d, cov0)  # once, not at every stage

    def rhs(t: float, s: Tensor) -> Tensor:
        m, S = s[..., 0, :], s[..., 1:, :]
        b, J = _affine(kind, mats, m, S)
        JS = J @ S
        dm = b + (J @ m.unsqueeze(-1)).squeeze(-1)
        return torch.cat([dm.unsqueeze(-2), JS + JS.mT], dim=-2)

    def layer(f, t: float, s: Tensor, h: float) -> Tensor:  # a stepper's signature; f is not needed
        m, S = s[..., 0, :], s[..., 1:, :]
        b, J = _affine(kind, mats, m, S)
        M = torch.eye(d, dtype=S.dtype, device=S.device) + h * J
        m_new = m + h * (b + (J @ m.unsqueeze(-1)).squeeze(-1))
        return torch.cat([m_new.unsqueeze(-2), M @ S @ M.mT], dim=-2)

    step = layer if method == "layers" else STEPPERS[method].step

    def classify(s: Tensor) -> Tensor:
        """0: admissible; 1: blown up (trace too large or not finite); 2: lost positive semi-definiteness."""
        S = s[..., 1:, :]
        finite = torch.isfinite(s).flatten(-2).all(dim=-1)
        Sf = torch.where(finite[..., None, None], S, torch.zeros_like(S))
        tr = Sf.diagonal(dim1=-2, dim2=-1).sum(-1)
        lam_min = torch.linalg.eigvalsh(0.5 * (Sf + Sf.mT))[..., 0]
        big = ~finite | (tr > blowup_trace)
        indefinite = lam_min < -1e-8 * tr.abs().clamp_min(1.0)
        code = torch.where(indefinite, 2, 0)
        return torch.where(big, 1, code)

    h = t1 / n_steps
    if bool((classify(state) != 0).any()):
        raise ValueError("cov0 must be symmetric positive semi-definite with trace below blowup_trace")
    # Bookkeeping stays on the device: no host synchronisation per step, only one every
    # _ALIVE_CHECK steps to stop early once every system has blown up or lost definiteness.
    dev = state.device
    reason = torch.zeros(batch, dtype=torch.int64, device=dev)
    alive = torch.ones(batch, dtype=torch.bool, device=dev)
    stop = torch.full(batch, t1, dtype=state.dtype, device=dev)
    times, saved, steps = [0.0], [state], [0]
    for i in range(n_steps):
        t = i * h
        new = step(rhs, t, state, h)
        code = classify(new)
        newly_dead = alive & (code != 0)
        stop = stop.masked_fill(newly_dead, t)
        reason = torch.where(newly_dead, code, reason)
        alive = alive & (code == 0)
        state = torch.where(alive[..., None, None], new, state)
        if (i + 1) % save_every == 0 or i + 1 == n_steps:
            times.append((i + 1) * h if i + 1 < n_steps else t1)
            saved.append(state)
            steps.append(i + 1)
        if (i + 1) % _ALIVE_CHECK == 0 and not bool(alive.any()):
            break
    alive, reason, stop = alive.cpu(), reason.cpu(), stop.to("cpu", torch.float64)
    if not bool(alive.any()):
        # Keep the frames up to the step at which the last system stopped (as a per-step check would).
        last = round(float(stop.max()) / h) + 1
        keep = sum(1 for k in steps if k <= last)
        times, saved = times[:keep], saved[:keep]
    X = torch.stack(saved)
    status = "ok" if bool(alive.all()) else ("blowup" if bool((reason == 1).any()) else "unstable")
    return GaussianSolution(
        t=torch.tensor(times, dtype=torch.float64),
        mean=X[..., 0, :],
        cov=X[..., 1:, :],
        status=status,
        stop_time=stop,
        kind=kind,
    )
