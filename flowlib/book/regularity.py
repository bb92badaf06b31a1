r"""Regularity of softmax self-attention: its Jacobian in closed form, Lipschitz bounds on balls,
and the invariant ball of the attention flow (book chapter 2).

Conventions are the book's: tokens ``x`` have shape ``(..., n, d)``; the field is
:math:`F_i(x) = V \sum_j P_{ij} x_j` with
:math:`P_{ij} = \operatorname{softmax}_j(\beta \langle Q x_i, K x_j\rangle)`; matrices act on
column vectors and ``None`` means the identity. Write :math:`A = K^\top Q`, so that
:math:`\langle Q x, K y\rangle = \langle A x, y\rangle`.

The mixed norm used throughout is :math:`\|X\|_{\infty,2} = \max_i |x_i|` (Euclidean in
:math:`\mathbb R^d`, maximum over tokens). On the ball :math:`\{\|X\|_{\infty,2} \le R\}` the field is
Lipschitz in that norm with constant at most :math:`\|V\|\,(1 + 2|\beta|\,\|A\|\,R^2)`, a bound that
does not depend on ``n`` (:func:`lipschitz_bound`); the proof bounds the block-row sums of the
Jacobian, which :func:`max_block_row_norm` computes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_matrix, check_positive_int, check_real, check_tokens
from ..gaussian import score_matrix
from ..stability import spectral_norm

__all__ = [
    "score_operator",
    "attention_jacobian",
    "max_block_row_norm",
    "lipschitz_bound",
    "invariant_radius",
    "two_token_lipschitz",
]


def _matrix(M: object, name: str, d: int | None, like: Tensor | None) -> Tensor | None:
    if M is None:
        return None
    M = check_matrix(M, name, cols=d, like=like)
    return M


def score_operator(Q: Tensor | None = None, K: Tensor | None = None) -> Tensor | None:
    r"""The matrix :math:`A = K^\top Q` with :math:`\langle Qx, Ky\rangle = \langle Ax, y\rangle`.

    Parameters
    ----------
    Q, K : Tensor of shape (k, d), or None (identity)

    Returns
    -------
    Tensor of shape (d, d), or None when both are None (then :math:`A = I`).

    Raises
    ------
    ValueError
        If ``Q`` and ``K`` do not have the same shape.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.regularity import score_operator
    >>> score_operator(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.eye(2))
    tensor([[1., 2.],
            [0., 1.]])
    >>> score_operator() is None
    True
    """
    if Q is None and K is None:
        return None
    if Q is None:
        K = check_matrix(K, "K")
        return K.mT
    if K is None:
        return check_matrix(Q, "Q")
    Q = check_matrix(Q, "Q")
    K = check_matrix(K, "K", like=Q)
    if Q.shape[-2:] != K.shape[-2:]:
        raise ValueError(f"Q and K must have the same shape (k, d); got {tuple(Q.shape)} and {tuple(K.shape)}")
    return score_matrix(Q, K)  # flowlib's one A = beta K^T Q, here with beta = 1


def attention_jacobian(
    x: Tensor,
    Q: Tensor | None = None,
    K: Tensor | None = None,
    V: Tensor | None = None,
    *,
    beta: float = 1.0,
) -> Tensor:
    r"""Jacobian of softmax self-attention in closed form.

    With :math:`p_i = P_{i\cdot}`, :math:`m_i = \sum_j P_{ij} x_j` and
    :math:`C_i = \sum_j P_{ij}(x_j - m_i)(x_j - m_i)^\top`,

    .. math::

        \frac{\partial F_i}{\partial x_j}
        = V\Big(P_{ij}\, I + \beta\,\delta_{ij}\, C_i A + \beta\, P_{ij}\,(x_j - m_i)(A x_i)^\top\Big).

    Parameters
    ----------
    x : Tensor, shape (..., n, d)
        Tokens (floating point).
    Q, K : Tensor, shape (..., k, d), optional
        Query and key matrices (``None`` = identity). Leading dimensions broadcast against those of
        ``x``, so one call can evaluate several independent draws of the matrices.
    V : Tensor, shape (..., d, d), optional
        Value matrix (``None`` = identity); leading dimensions broadcast as for ``Q``.
    beta : float
        Inverse temperature; any real number.

    Returns
    -------
    Tensor, shape (..., n, d, n, d)
        ``J[..., i, a, j, b] = dF_i^a / dx_j^b`` (the layout of :func:`flowlib.field_jacobian`).

    Raises
    ------
    TypeError
        If ``x`` is not a floating tensor or ``beta`` is not a real number.
    ValueError
        If a matrix does not match the token dimension, or ``beta`` is not finite.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> from flowlib.book.regularity import attention_jacobian
    >>> x = torch.randn(4, 2, generator=g, dtype=torch.float64)
    >>> J = attention_jacobian(x, beta=0.7)
    >>> torch.allclose(J, fl.field_jacobian(fl.SoftmaxAttention(beta=0.7), x))  # the closed form equals autograd
    True
    >>> Qs = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)  # three draws of Q at once
    >>> Js = attention_jacobian(x.expand(3, 4, 2), Qs, beta=0.7)
    >>> torch.allclose(Js[1], attention_jacobian(x, Qs[1], beta=0.7))
    True
    """
    x = check_tokens(x)
    beta = check_real(beta, "beta")
    n, d = x.shape[-2:]
    Qm = _matrix(Q, "Q", d, x)
    Km = _matrix(K, "K", d, x)
    Vm = _matrix(V, "V", d, x)
    if Vm is not None and Vm.shape[-2] != d:
        raise ValueError(f"V must have shape (d, d) = ({d}, {d}); got {tuple(Vm.shape)}")
    A = score_operator(Qm, Km)
    Ax = x if A is None else x @ A.mT  # rows: A x_i
    scores = beta * Ax @ x.mT  # s_ij = beta <A x_i, x_j>
    P = torch.softmax(scores, dim=-1)  # (..., n, n)
    m = P @ x  # (..., n, d)
    dev = x.unsqueeze(-3) - m.unsqueeze(-2)  # (..., i, j, d): x_j - m_i
    C = torch.einsum("...ij,...ija,...ijb->...iab", P, dev, dev)  # (..., n, d, d)
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    CA = C if A is None else C @ A.unsqueeze(-3)  # A may carry leading (batch) dimensions
    # inner[..., i, a, j, b] before V
    inner = P[..., :, None, :, None] * eye[:, None, :]  # P_ij delta_ab
    inner = inner + beta * torch.einsum("...ij,...ija,...ib->...iajb", P, dev, Ax)
    eye_n = torch.eye(n, dtype=x.dtype, device=x.device)
    inner = inner + beta * torch.einsum("ij,...iab->...iajb", eye_n, CA)  # delta_ij C_i A
    if Vm is None:
        return inner
    return torch.einsum("...ac,...icjb->...iajb", Vm, inner)


def max_block_row_norm(J: Tensor) -> Tensor:
    r"""The quantity :math:`\max_i \sum_j \|J_{ij}\|_2` of a block Jacobian.

    It is an upper bound for the operator norm of ``J`` from :math:`\|\cdot\|_{\infty,2}` to
    itself (:math:`\|X\|_{\infty,2} = \max_i |x_i|`), and equals it when ``d = 1``.

    Parameters
    ----------
    J : Tensor, shape (..., n, d, n, d)

    Returns
    -------
    Tensor, shape (...)

    Raises
    ------
    ValueError
        If ``J`` does not have the block shape ``(..., n, d, n, d)``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.regularity import max_block_row_norm
    >>> J = torch.zeros(2, 2, 2, 2); J[0, :, 0, :] = torch.eye(2); J[0, :, 1, :] = 2 * torch.eye(2)
    >>> max_block_row_norm(J)  # row 0: 1 + 2
    tensor(3.)
    """
    if not isinstance(J, Tensor):
        raise TypeError(f"J must be a torch.Tensor of shape (..., n, d, n, d); got {type(J).__name__}")
    if J.ndim < 4 or J.shape[-4:-2] != J.shape[-2:]:
        raise ValueError(f"J must have shape (..., n, d, n, d); got {tuple(J.shape)}")
    blocks = J.movedim(-3, -2)  # (..., n, n, d, d): blocks[i, j] = J_ij
    norms = torch.linalg.matrix_norm(blocks, ord=2)  # (..., n, n)
    return norms.sum(-1).amax(-1)


def _op_norm(M: Tensor | None) -> float:
    return spectral_norm(M)


def lipschitz_bound(
    radius: float,
    beta: float,
    Q: Tensor | None = None,
    K: Tensor | None = None,
    V: Tensor | None = None,
    *,
    n: int | None = None,
    norm: str = "max",
) -> float:
    r"""Lipschitz constant bound of softmax attention on the ball :math:`\{\max_i |x_i| \le R\}`.

    .. math::

        \mathrm{Lip}_{\infty,2} \le \|V\|\,\big(1 + 2|\beta|\,\|K^\top Q\|\,R^2\big),

    independent of the number of tokens; in the Euclidean norm of :math:`\mathbb R^{nd}`
    (``norm="euclidean"``) the bound is multiplied by :math:`\sqrt n`.

    Parameters
    ----------
    radius : float
        ``R >= 0``.
    beta : float
        Inverse temperature (any real; the bound uses ``|beta|``).
    Q, K : Tensor, shape (k, d), optional
        ``None`` = identity.
    V : Tensor, shape (d, d), optional
        ``None`` = identity.
    n : int, optional
        Number of tokens; required for ``norm="euclidean"``.
    norm : {"max", "euclidean"}

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``radius < 0``, ``norm`` is unknown, or ``n`` is missing for the Euclidean norm.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.regularity import lipschitz_bound
    >>> lipschitz_bound(1.0, 0.5)  # ||V|| (1 + 2 |beta| ||K^T Q|| R^2) with identities
    2.0
    """
    radius = check_real(radius, "radius", nonnegative=True)
    beta = check_real(beta, "beta")
    if norm not in ("max", "euclidean"):
        raise ValueError(f"norm must be 'max' or 'euclidean'; got {norm!r}")
    A = score_operator(Q, K)
    bound = _op_norm(V) * (1.0 + 2.0 * abs(beta) * _op_norm(A) * radius**2)
    if norm == "euclidean":
        if n is None:
            raise ValueError("norm='euclidean' needs the number of tokens n")
        bound *= math.sqrt(check_positive_int(n, "n"))
    return bound


def invariant_radius(radius0: float, t: float, V: Tensor | None = None) -> float:
    r"""Radius :math:`R_0 e^{\|V\| t}` of the ball that contains every token at time ``t >= 0``.

    If :math:`\max_i |x_i(0)| \le R_0`, the attention flow (any ``Q, K, beta``, masked or not)
    satisfies :math:`\max_i |x_i(t)| \le R_0 e^{\|V\| t}`.

    Parameters
    ----------
    radius0 : float
        ``R_0 >= 0``.
    t : float
        Time (depth), ``t >= 0``.
    V : Tensor, shape (d, d), optional
        Value matrix (``None`` = identity, ``||V|| = 1``).

    Returns
    -------
    float

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.regularity import invariant_radius
    >>> round(invariant_radius(1.0, 2.0), 6)  # V = I: e^t
    7.389056
    """
    radius0 = check_real(radius0, "radius0", nonnegative=True)
    t = check_real(t, "t", nonnegative=True)
    return radius0 * math.exp(_op_norm(V) * t)


def two_token_lipschitz(radius: float, beta: float, *, n_grid: int = 201, dtype=torch.float64) -> float:
    r"""Largest Jacobian norm of scalar attention with two tokens over a grid of the ball.

    The field is :math:`F_i(x) = \sum_j \operatorname{softmax}_j(\beta x_i x_j)\, x_j` on
    :math:`\mathbb R^2` (``n = 2``, ``d = 1``, ``Q = K = V = 1``). The result is
    :math:`\max \|DF(x)\|_{\infty}` over the ``n_grid x n_grid`` grid of :math:`[-R, R]^2`: a lower
    estimate of the local Lipschitz constant on the ball (in the max norm, where the operator norm
    is the largest absolute row sum).

    Parameters
    ----------
    radius : float
        ``R > 0``.
    beta : float
    n_grid : int
        Grid points per axis (odd, so that 0 is on the grid).
    dtype : torch.dtype

    Returns
    -------
    float

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.regularity import lipschitz_bound, two_token_lipschitz
    >>> seen = two_token_lipschitz(1.0, 1.0, n_grid=41)
    >>> 1.0 <= seen <= lipschitz_bound(1.0, 1.0)  # below the bound of the theorem
    True
    """
    radius = check_real(radius, "radius", positive=True)
    beta = check_real(beta, "beta")
    n_grid = check_positive_int(n_grid, "n_grid")
    if n_grid % 2 == 0:
        raise ValueError(f"n_grid must be odd so that 0 is a grid point; got {n_grid}")
    s = torch.linspace(-radius, radius, n_grid, dtype=dtype)
    a, b = torch.meshgrid(s, s, indexing="ij")
    x = torch.stack([a.reshape(-1), b.reshape(-1)], dim=-1).unsqueeze(-1)  # (G, 2, 1)
    J = attention_jacobian(x, beta=beta)
    return float(max_block_row_norm(J).max())
