r"""Mean-field couplings: particles against independent copies driven by the exact mean field.

Chapter 9 of the book proves propagation of chaos by *coupling*: each token :math:`x_i` of the
:math:`N`-particle system is paired with a copy :math:`\bar x_i` that starts at the same point but moves in
the velocity field of the mean-field law :math:`\mu_t` instead of the empirical measure. The copies are
i.i.d. with law :math:`\mu_t`, and for compactly supported data :math:`\mathbb E|x_i - \bar x_i| = O(N^{-1/2})`. This module builds the
copies where the mean field is known exactly (Gaussian data, through the closure of
:mod:`flowlib.gaussian`), runs forward Euler on a weighted measure (a residual stack is Euler on the
empirical measure), and evaluates the chapter's criterion for the normaliser of softmax attention to have
finite variance on Gaussian data.

Conventions are flowlib's: tokens ``(..., n, d)``, ``beta`` multiplies :math:`\langle Qx, Ky\rangle`, and
:math:`A = \beta K^\top Q`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_positive_int, check_real
from ..gaussian import affine_velocity, score_matrix, solve_gaussian
from ..pde import measure_velocity
from .gaussian_analysis import criterion_values

__all__ = [
    "gaussian_layer_maps",
    "gaussian_flow_map",
    "mean_field_copies",
    "coupling_distance",
    "euler_on_measure",
    "normaliser_variance_index",
]


def _check_pair(mean0: Tensor, cov0: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(mean0, Tensor) or not isinstance(cov0, Tensor):
        raise TypeError(f"mean0 and cov0 must be tensors; got {type(mean0).__name__}, {type(cov0).__name__}")
    if mean0.ndim != 1 or cov0.shape != (mean0.shape[0], mean0.shape[0]):
        raise ValueError(
            f"mean0 must have shape (d,) and cov0 shape (d, d); got {tuple(mean0.shape)} and {tuple(cov0.shape)}"
        )
    return mean0, cov0


def gaussian_layer_maps(field, mean0: Tensor, cov0: Tensor, *, t1: float, n_layers: int) -> tuple[Tensor, Tensor]:
    r"""The velocities :math:`\Gamma_{\mu^\ell}(x) = b_\ell + J_\ell x` of the mean-field law at every layer.

    The law :math:`\mu^\ell` is the exact mean-field law of a residual network of ``n_layers`` layers
    (:func:`flowlib.solve_gaussian` with ``method="layers"``), started from
    :math:`\mu^0 = \mathcal N(\text{mean0}, \text{cov0})`.

    Parameters
    ----------
    field : SoftmaxAttention, MultiHeadAttention, L2Attention or SinkhornAttention
        A field with a Gaussian closure.
    mean0 : Tensor, shape (d,)
    cov0 : Tensor, shape (d, d)
    t1 : float
        Depth (final time); the step is ``h = t1 / n_layers``.
    n_layers : int

    Returns
    -------
    b : Tensor, shape (n_layers, d)
    J : Tensor, shape (n_layers, d, d)
        Layer ``l`` maps ``x`` to ``x + h (b[l] + J[l] @ x)``.

    Raises
    ------
    TypeError, ValueError
        For non-tensor or mis-shaped moments, a non-positive ``t1`` or ``n_layers``, or a field without a
        Gaussian closure; ``ValueError`` also if the closure blows up before ``t1``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.coupling import gaussian_layer_maps
    >>> mean0, cov0 = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    >>> b, J = gaussian_layer_maps(fl.SoftmaxAttention(beta=0.5), mean0, cov0, t1=1.0, n_layers=4)
    >>> b.shape, J.shape
    (torch.Size([4, 2]), torch.Size([4, 2, 2]))
    >>> J[0]  # Q = K = V = I, mean 0: J = beta Sigma
    tensor([[0.5000, 0.0000],
            [0.0000, 0.5000]], dtype=torch.float64)
    >>> torch.allclose(J[1], 0.5 * (1 + 0.25 * 0.5) ** 2 * cov0)  # Sigma_1 = (1 + h beta)^2 Sigma_0, h = 1/4
    True
    """
    mean0, cov0 = _check_pair(mean0, cov0)
    t1 = check_real(t1, "t1", positive=True)
    n_layers = check_positive_int(n_layers, "n_layers")
    law = solve_gaussian(field, mean0, cov0, t1=t1, n_steps=n_layers, method="layers")
    if law.status != "ok":
        raise ValueError(f"the Gaussian closure did not reach t1 = {t1} (status {law.status!r})")
    return affine_velocity(field, law.mean[:-1], law.cov[:-1])


def gaussian_flow_map(field, mean0: Tensor, cov0: Tensor, *, t1: float, n_layers: int) -> tuple[Tensor, Tensor]:
    r"""The composed affine map :math:`x \mapsto Mx + c` of ``n_layers`` mean-field layers.

    A copy :math:`\bar x` that starts at :math:`x` and moves through the layers of
    :func:`gaussian_layer_maps` ends at :math:`Mx + c`. As ``n_layers`` grows this converges, with error
    :math:`O(1/\text{n\_layers})`, to the flow map :math:`\Phi_{t_1}` of the mean-field ODE.

    Parameters
    ----------
    field, mean0, cov0, t1, n_layers
        As in :func:`gaussian_layer_maps`.

    Returns
    -------
    M : Tensor, shape (d, d)
    c : Tensor, shape (d,)

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.coupling import gaussian_flow_map
    >>> mean0, cov0 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    >>> M, c = gaussian_flow_map(fl.SoftmaxAttention(beta=0.0), mean0, cov0, t1=1.0, n_layers=2)
    >>> M, c  # beta = 0: every point moves by the mean, which grows like (1 + h)^l: c = (1 + h)^2 - 1
    (tensor([[1., 0.],
            [0., 1.]], dtype=torch.float64), tensor([1.2500, 0.0000], dtype=torch.float64))
    """
    b, J = gaussian_layer_maps(field, mean0, cov0, t1=t1, n_layers=n_layers)
    h = t1 / b.shape[0]
    d = b.shape[-1]
    M = torch.eye(d, dtype=J.dtype, device=J.device)
    c = torch.zeros(d, dtype=b.dtype, device=b.device)
    for bl, Jl in zip(b, J):
        step = torch.eye(d, dtype=J.dtype, device=J.device) + h * Jl
        M, c = step @ M, step @ c + h * bl
    return M, c


def mean_field_copies(
    field, x0: Tensor, mean0: Tensor, cov0: Tensor, *, t1: float, n_layers: int, save_every: int = 1
) -> Tensor:
    r"""Independent copies of the tokens ``x0``, each moved by the mean-field velocity, layer by layer.

    The particle system moves token :math:`i` by :math:`h\,\Gamma_{\mu^N}(x_i)` (the empirical measure);
    the copy moves by :math:`h\,\Gamma_{\mu^\ell}(\bar x_i)` with the mean-field law :math:`\mu^\ell` of
    :func:`gaussian_layer_maps`. The copies never interact: if ``x0`` holds i.i.d. samples of
    :math:`\mathcal N(\text{mean0}, \text{cov0})`, the copies after layer :math:`\ell` are i.i.d. samples
    of :math:`\mu^\ell`.

    Parameters
    ----------
    field, mean0, cov0, t1, n_layers
        As in :func:`gaussian_layer_maps`.
    x0 : Tensor, shape (..., N, d)
        Initial tokens (any leading dimensions), in the dtype and on the device of ``mean0``.
    save_every : int
        Keep every ``save_every``-th layer (the last is always kept).

    Returns
    -------
    Tensor, shape (S, ..., N, d)
        The copies at layers ``0, save_every, ..., n_layers``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.coupling import gaussian_flow_map, mean_field_copies
    >>> field = fl.SoftmaxAttention(beta=0.5)
    >>> mean0, cov0 = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    >>> x0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> copies = mean_field_copies(field, x0, mean0, cov0, t1=1.0, n_layers=4, save_every=2)
    >>> copies.shape  # layers 0, 2 and 4
    torch.Size([3, 3, 2])
    >>> M, c = gaussian_flow_map(field, mean0, cov0, t1=1.0, n_layers=4)
    >>> torch.allclose(copies[-1], x0 @ M.T + c)  # the copies move by the composed affine map
    True
    """
    if not isinstance(x0, Tensor):
        raise TypeError(f"x0 must be a tensor; got {type(x0).__name__}")
    if x0.ndim < 2 or x0.shape[-1] != mean0.shape[-1]:
        raise ValueError(f"x0 must have shape (..., N, {mean0.shape[-1]}); got {tuple(x0.shape)}")
    save_every = check_positive_int(save_every, "save_every")
    b, J = gaussian_layer_maps(field, mean0, cov0, t1=t1, n_layers=n_layers)
    h = t1 / b.shape[0]
    x = x0.to(b.dtype)
    saved = [x]
    for ell, (bl, Jl) in enumerate(zip(b, J), start=1):
        x = x + h * (x @ Jl.mT + bl)
        if ell % save_every == 0 or ell == b.shape[0]:
            saved.append(x)
    return torch.stack(saved)


def coupling_distance(x: Tensor, y: Tensor) -> Tensor:
    r"""Mean distance :math:`\frac1N\sum_i |x_i - y_i|` between paired tokens.

    It bounds :math:`W_1` between the two empirical measures (the pairing is one coupling), and for
    particles against their copies it estimates :math:`\mathbb E|x_i - \bar x_i|` (all tokens have the same
    law, by exchangeability).

    Parameters
    ----------
    x, y : Tensor, shape (..., N, d)

    Returns
    -------
    Tensor, shape (...)

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.coupling import coupling_distance
    >>> x = torch.zeros(2, 2, dtype=torch.float64)
    >>> coupling_distance(x, torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64))  # (5 + 0) / 2
    tensor(2.5000, dtype=torch.float64)
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be tensors")
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(f"x and y must have the same shape (..., N, d); got {tuple(x.shape)} and {tuple(y.shape)}")
    return (x - y).norm(dim=-1).mean(dim=-1)


def euler_on_measure(field, points: Tensor, weights: Tensor | None = None, *, t1: float = 1.0, n_layers: int) -> Tensor:
    r"""Forward Euler on a weighted measure: :math:`\mu^{\ell+1} = (\mathrm{id} + h\,\Gamma_{\mu^\ell})_\#\mu^\ell`.

    The measure :math:`\mu^0 = \sum_j w_j\delta_{y_j}` keeps its weights; each atom moves by
    :math:`h\,\Gamma_{\mu^\ell}(y_j)`, the velocity of the whole weighted measure
    (:func:`flowlib.pde.measure_velocity`). With equal weights this is exactly a residual stack
    (:func:`flowlib.residual_stack`): a transformer of depth ``n_layers`` is Euler on its empirical measure.

    Parameters
    ----------
    field : SoftmaxAttention, L2Attention or MultiHeadAttention
        Without masks.
    points : Tensor, shape (m, d)
    weights : Tensor, shape (m,), optional
        Non-negative masses (normalised internally); uniform if omitted.
    t1 : float
    n_layers : int

    Returns
    -------
    Tensor, shape (n_layers + 1, m, d)
        The atoms after every layer (the weights never change).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.coupling import euler_on_measure
    >>> points = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    >>> weights = torch.tensor([0.25, 0.75], dtype=torch.float64)
    >>> euler_on_measure(fl.SoftmaxAttention(beta=0.0), points, weights, n_layers=1)[-1]  # both move by the mean 1/2
    tensor([[-0.5000],
            [ 1.5000]], dtype=torch.float64)
    >>> field = fl.SoftmaxAttention(beta=1.0)
    >>> x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> ys = euler_on_measure(field, x, n_layers=3)
    >>> torch.allclose(ys, fl.residual_stack(field, x, 3).x)  # equal weights: a residual stack
    True
    """
    if not isinstance(points, Tensor):
        raise TypeError(f"points must be a tensor; got {type(points).__name__}")
    if points.ndim != 2:
        raise ValueError(f"points must have shape (m, d); got {tuple(points.shape)}")
    t1 = check_real(t1, "t1", positive=True)
    n_layers = check_positive_int(n_layers, "n_layers")
    if weights is not None:
        if not isinstance(weights, Tensor) or weights.shape != points.shape[:1]:
            raise ValueError(f"weights must be a tensor of shape ({points.shape[0]},)")
        if bool((weights < 0).any()) or not bool(weights.sum() > 0):
            raise ValueError("weights must be non-negative with a positive sum")
    h = t1 / n_layers
    y = points
    saved = [y]
    for _ in range(n_layers):
        y = y + h * measure_velocity(field, y, y, weights)
        saved.append(y)
    return torch.stack(saved)


def normaliser_variance_index(
    cov: Tensor, Q: Tensor | None = None, K: Tensor | None = None, *, beta: float = 1.0
) -> Tensor:
    r"""The number :math:`\lambda_{\max}(\Sigma^{1/2}A^\top\Sigma A\,\Sigma^{1/2})`, :math:`A = \beta K^\top Q`.

    For :math:`y \sim \mathcal N(\alpha, \Sigma)` the normaliser of softmax attention at a query :math:`x` is
    :math:`Z(x) = \mathbb E\,e^{\langle Ax, y\rangle}`; its relative second moment is
    :math:`\mathbb E\,e^{2\langle Ax, y\rangle}/Z(x)^2 = e^{x^\top A^\top\Sigma A x}`, and its average over
    queries :math:`x \sim \mathcal N(\alpha, \Sigma)` is finite exactly when this index is below ``1/2``.
    Below ``1/2`` the asymptotic (central-limit) variance of the Monte Carlo velocity at a query, averaged over
    queries drawn from the same Gaussian, is finite; above it, it is infinite and rare far-out queries dominate
    (chapter 7, proposition ``ch7-normaliser-variance``).

    Parameters
    ----------
    cov : Tensor, shape (..., d, d)
        Symmetric positive semi-definite.
    Q, K : Tensor, shape (k, d), optional
        ``None`` is the identity.
    beta : float

    Returns
    -------
    Tensor, shape (...)

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.book.coupling import normaliser_variance_index
    >>> I = torch.eye(2, dtype=torch.float64)
    >>> normaliser_variance_index(2.0 * I, beta=0.5)  # Sigma = s I, A = beta I: (beta s)^2 = 1 > 1/2
    tensor(1.0000, dtype=torch.float64)
    >>> normaliser_variance_index(0.5 * I, beta=1.0)  # 1/4 < 1/2: finite variance
    tensor(0.2500, dtype=torch.float64)
    """
    if not isinstance(cov, Tensor):
        raise TypeError(f"cov must be a tensor; got {type(cov).__name__}")
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"cov must have shape (..., d, d); got {tuple(cov.shape)}")
    d = cov.shape[-1]
    A = score_matrix(Q, K, beta=check_real(beta, "beta"), d=d).to(cov.dtype).to(cov.device)
    if A.shape != (d, d):
        raise ValueError(f"Q and K must have d = {d} columns; got A of shape {tuple(A.shape)}")
    return criterion_values(cov, A)  # chapter 7's criterion, batched
