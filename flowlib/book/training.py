r"""Training small residual attention networks and measuring whether they flow (book chapter 10).

A :class:`ResidualAttentionNet` of depth ``L`` is the residual stack

.. math::

    x^{\ell+1} = x^\ell + h\,F_{\theta_\ell}(x^\ell), \qquad h = T/L, \qquad \ell = 0, \dots, L-1,

with one :class:`flowlib.SoftmaxAttention` per layer whose matrices :math:`\theta_\ell = (Q_\ell, K_\ell, V_\ell)`
are :class:`torch.nn.Parameter` objects. Layer ``l`` sits at depth :math:`t_\ell = (\ell + \tfrac12)h`, the midpoint
of its step, so that the weights are samples of a *depth function* :math:`\theta(t)` on :math:`[0, T]`.

The helpers measure what chapter 10 asks of a trained network: the regularity of the weights in depth
(:func:`depth_increments`), the gap to a finer discretisation of the same depth function (:func:`refine`,
:func:`refinement_gap`), the geometry of the tokens per layer (:func:`effective_rank`, :func:`mean_pairwise_cosine`)
and the dependence on the input only through its empirical measure (:func:`permutation_gap`,
:func:`duplication_gap`). Tokens have shape ``(..., n, d)``; everything follows the device and dtype of the
network's parameters. No global state: randomness comes from explicit :class:`torch.Generator` objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._validation import check_positive_int, check_real, check_tokens
from ..fields import SoftmaxAttention

__all__ = [
    "ResidualAttentionNet",
    "smooth_weights",
    "iid_weights",
    "regression_task",
    "regression_loss",
    "train",
    "depth_increments",
    "refine",
    "refinement_gap",
    "effective_rank",
    "mean_pairwise_cosine",
    "permutation_gap",
    "duplication_gap",
    "fit_slope",
]


def _check_stack(W: object, name: str = "weights") -> Tensor:
    if not isinstance(W, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (L, 3, d, d); got {type(W).__name__}")
    if W.ndim != 4 or W.shape[1] != 3 or W.shape[2] != W.shape[3] or W.shape[0] < 1:
        raise ValueError(f"{name} must have shape (L, 3, d, d) (Q, K, V per layer); got {tuple(W.shape)}")
    if not W.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype; got {W.dtype}")
    return W


class ResidualAttentionNet(nn.Module):
    r"""A residual stack of ``L`` softmax-attention layers with step ``h = t1 / L`` and per-layer weights.

    Parameters
    ----------
    weights : Tensor, shape (L, 3, d, d)
        Initial ``(Q_l, K_l, V_l)`` of each layer (copied into :class:`torch.nn.Parameter` objects).
    t1 : float
        Depth ``T > 0`` of the network in continuous time; ``h = T / L``.
    beta : float
        Inverse temperature of every layer.
    causal : bool
        Use causal attention (token ``i`` attends to ``j <= i``): breaks permutation equivariance.
    positions : Tensor, shape (n, d), optional
        A fixed positional encoding added to the input tokens: breaks permutation equivariance.

    Attributes
    ----------
    layers : torch.nn.ModuleList of SoftmaxAttention
    h : float

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> W = training.smooth_weights(4, 3, generator=torch.Generator().manual_seed(0))
    >>> net = training.ResidualAttentionNet(W, t1=1.0)
    >>> net(torch.zeros(5, 3, dtype=torch.float64)).shape
    torch.Size([5, 3])
    >>> net.h, net.depths()  # h = T / L, layers at the midpoints (l + 1/2) h
    (0.25, tensor([0.1250, 0.3750, 0.6250, 0.8750], dtype=torch.float64))
    >>> x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    >>> torch.equal(training.ResidualAttentionNet(training.iid_weights(4, 3, scale=0.0))(x), x)  # V = 0: identity
    True
    """

    def __init__(
        self,
        weights: Tensor,
        *,
        t1: float = 1.0,
        beta: float = 1.0,
        causal: bool = False,
        positions: Tensor | None = None,
    ) -> None:
        super().__init__()
        W = _check_stack(weights).detach()
        self.t1 = check_real(t1, "t1", positive=True)
        self.n_layers = W.shape[0]
        self.h = self.t1 / self.n_layers
        self.beta = check_real(beta, "beta")
        self.causal = bool(causal)
        self.layers = nn.ModuleList(
            SoftmaxAttention(
                Q=nn.Parameter(W[i, 0].clone()),
                K=nn.Parameter(W[i, 1].clone()),
                V=nn.Parameter(W[i, 2].clone()),
                beta=self.beta,
                causal=self.causal,
                backend="dense",
            )
            for i in range(self.n_layers)
        )
        if positions is not None:
            positions = check_tokens(positions, "positions")
            if positions.ndim != 2 or positions.shape[-1] != W.shape[-1]:
                raise ValueError(f"positions must have shape (n, {W.shape[-1]}); got {tuple(positions.shape)}")
        self.register_buffer("positions", positions)

    @property
    def dim(self) -> int:
        return self.layers[0].Q.shape[-1]

    def weights(self) -> Tensor:
        """The per-layer weights as one detached tensor of shape ``(L, 3, d, d)`` (Q, K, V)."""
        return torch.stack([torch.stack([f.Q, f.K, f.V]) for f in self.layers]).detach()

    def depths(self) -> Tensor:
        r"""Depths :math:`t_\ell = (\ell + 1/2)h` of the layers, shape ``(L,)``."""
        return (torch.arange(self.n_layers, dtype=torch.float64) + 0.5) * self.h

    def _input(self, x: Tensor) -> Tensor:
        x = check_tokens(x)
        if x.shape[-1] != self.dim:
            raise ValueError(f"tokens must have dimension d = {self.dim}; got shape {tuple(x.shape)}")
        if self.positions is not None:
            if x.shape[-2] != self.positions.shape[0]:
                raise ValueError(f"positions are for n = {self.positions.shape[0]} tokens; got {x.shape[-2]}")
            x = x + self.positions
        return x

    def trajectory(self, x: Tensor) -> Tensor:
        """All hidden states ``[x^0, ..., x^L]``, shape ``(L + 1, ..., n, d)`` (``x^0`` includes positions)."""
        x = self._input(x)
        states = [x]
        for field in self.layers:
            x = x + self.h * field.velocity(x)
            states.append(x)
        return torch.stack(states)

    def forward(self, x: Tensor) -> Tensor:
        """The output tokens ``x^L``, shape ``(..., n, d)``."""
        x = self._input(x)
        for field in self.layers:
            x = x + self.h * field.velocity(x)
        return x


def smooth_weights(
    n_layers: int,
    dim: int,
    *,
    t1: float = 1.0,
    scale: float = 0.5,
    n_modes: int = 2,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Weights sampled from a smooth random depth function, :math:`\theta_\ell = \theta(t_\ell)`.

    :math:`\theta(t) = I_{QK} + \mathrm{scale}\sum_{m=0}^{M-1} A_m \cos(m\pi t/T)/(m+1)` with :math:`A_m` i.i.d.
    standard Gaussian ``(3, d, d)`` arrays and :math:`I_{QK}` the identity on Q and K (zero on V),
    sampled at :math:`t_\ell = (\ell + 1/2)T/L`. The random function does not depend on ``L``: the same
    generator seed gives samples of the same :math:`\theta` at every depth.

    Returns
    -------
    Tensor, shape (n_layers, 3, dim, dim)

    Raises
    ------
    ValueError
        If ``n_layers``, ``dim`` or ``n_modes`` is not a positive int, or ``t1 <= 0`` or ``scale < 0``.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> W = training.smooth_weights(8, 2, generator=torch.Generator().manual_seed(0))
    >>> W.shape
    torch.Size([8, 3, 2, 2])
    >>> W1 = training.smooth_weights(1, 2, generator=torch.Generator().manual_seed(0))
    >>> W3 = training.smooth_weights(3, 2, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(W1[0], W3[1])  # one depth function: both layers sit at t = T/2
    True
    """
    n_layers = check_positive_int(n_layers, "n_layers")
    dim = check_positive_int(dim, "dim")
    n_modes = check_positive_int(n_modes, "n_modes")
    t1 = check_real(t1, "t1", positive=True)
    scale = check_real(scale, "scale", nonnegative=True)
    A = torch.randn(n_modes, 3, dim, dim, generator=generator, dtype=dtype)
    t = (torch.arange(n_layers, dtype=dtype) + 0.5) / n_layers  # t / T
    m = torch.arange(n_modes, dtype=dtype)
    basis = torch.cos(math.pi * m[None, :] * t[:, None]) / (m + 1)  # (L, M)
    W = scale * torch.einsum("lm,mabc->labc", basis, A)
    W[:, :2] += torch.eye(dim, dtype=dtype)
    return W.to(device) if device is not None else W


def iid_weights(
    n_layers: int,
    dim: int,
    *,
    scale: float = 0.5,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Independent per-layer weights :math:`\theta_\ell = I_{QK} + \mathrm{scale}\,Z_\ell`, :math:`Z_\ell` i.i.d. standard Gaussian.

    Returns
    -------
    Tensor, shape (n_layers, 3, dim, dim)

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> training.iid_weights(4, 2, scale=0.0)[0, 0]  # scale 0: Q = K = I, V = 0
    tensor([[1., 0.],
            [0., 1.]], dtype=torch.float64)
    """
    n_layers = check_positive_int(n_layers, "n_layers")
    dim = check_positive_int(dim, "dim")
    scale = check_real(scale, "scale", nonnegative=True)
    W = scale * torch.randn(n_layers, 3, dim, dim, generator=generator, dtype=dtype)
    W[:, :2] += torch.eye(dim, dtype=dtype)
    return W.to(device) if device is not None else W


def regression_task(
    batch: int,
    n_context: int,
    dim_x: int,
    *,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    r"""In-context linear regression: ``n_context`` labelled examples and one query, as tokens.

    For each of ``batch`` independent prompts draw :math:`w \sim \mathcal N(0, I/d_x)`, inputs
    :math:`x_i \sim \mathcal N(0, I_{d_x})` and labels :math:`y_i = \langle w, x_i\rangle + \sigma\varepsilon_i`.
    The tokens are :math:`z_i = (x_i, y_i)` for the context and :math:`z_q = (x_q, 0)` for the query, placed
    last; the target is :math:`y_q = \langle w, x_q\rangle` (noise-free), with :math:`\mathbb E y_q^2 = 1`.

    Returns
    -------
    tokens : Tensor, shape (batch, n_context + 1, dim_x + 1)
    target : Tensor, shape (batch,)

    Raises
    ------
    ValueError
        If a size is not a positive int or ``noise < 0``.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> x, y = training.regression_task(5, 8, 2, generator=torch.Generator().manual_seed(0))
    >>> tuple(x.shape), tuple(y.shape), bool((x[:, -1, -1] == 0).all())
    ((5, 9, 3), (5,), True)
    >>> w = torch.linalg.lstsq(x[:, :-1, :2], x[:, :-1, 2:]).solution  # noise 0: w from the context
    >>> torch.allclose((x[:, -1:, :2] @ w)[:, 0, 0], y)  # the target is <w, x_q>
    True
    """
    batch = check_positive_int(batch, "batch")
    n_context = check_positive_int(n_context, "n_context")
    dim_x = check_positive_int(dim_x, "dim_x")
    noise = check_real(noise, "noise", nonnegative=True)
    w = torch.randn(batch, dim_x, generator=generator, dtype=dtype) / math.sqrt(dim_x)
    x = torch.randn(batch, n_context + 1, dim_x, generator=generator, dtype=dtype)
    y = (x @ w[:, :, None])[..., 0]
    eps = torch.randn(batch, n_context + 1, generator=generator, dtype=dtype)
    labels = y + noise * eps
    labels[:, -1] = 0.0
    tokens = torch.cat([x, labels[..., None]], dim=-1)
    target = y[:, -1].clone()
    if device is not None:
        tokens, target = tokens.to(device), target.to(device)
    return tokens, target


def regression_loss(net: nn.Module, tokens: Tensor, target: Tensor) -> Tensor:
    r"""Mean squared error of the prediction: the last coordinate of the last (query) output token.

    Parameters
    ----------
    net : callable
        Maps tokens ``(batch, n, d)`` to tokens of the same shape.
    tokens : Tensor, shape (batch, n, d)
    target : Tensor, shape (batch,)

    Returns
    -------
    Tensor, 0-dim
        :math:`\frac1B\sum_b (f(x_b)_{n,d} - y_b)^2`.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> net = torch.nn.Identity()  # predicts 0 for the query: the loss is the mean of y_q^2
    >>> x, y = training.regression_task(4, 3, 2, generator=torch.Generator().manual_seed(0))
    >>> bool(training.regression_loss(net, x, y) == y.pow(2).mean())
    True
    """
    out = net(tokens)
    return (out[..., -1, -1] - target).pow(2).mean()


def train(
    net: nn.Module,
    *,
    steps: int,
    task: Callable[[torch.Generator], tuple[Tensor, Tensor]],
    generator: torch.Generator,
    lr: float = 0.02,
    optimizer: str = "sgd",
    num_threads: int | None = 1,
    loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor] = regression_loss,
) -> Tensor:
    r"""Train ``net`` in place by gradient descent on fresh batches ``task(generator)``; return the loss history.

    Parameters
    ----------
    net : torch.nn.Module
        Its parameters are trained; batches are moved to the device and dtype of its first parameter.
    steps : int
        Number of optimiser steps (one fresh batch each).
    task : callable
        ``task(generator) -> (tokens, target)``, e.g. ``lambda g: regression_task(64, 8, 2, generator=g)``.
    generator : torch.Generator
        The only source of randomness (a CPU generator): two runs from equal generator states and equal
        networks give bitwise equal histories and weights on the same device.
    lr : float
        Learning rate.
    optimizer : {"sgd", "adam"}
        ``"sgd"``: plain gradient descent on the *depth function*: if ``net`` has a step ``h`` (as a
        :class:`ResidualAttentionNet` has), the step is ``lr / h`` times the gradient, which is the
        :math:`L^2(0, T)` gradient of the loss as a function of :math:`\theta(\cdot)`, so that one ``lr``
        suits every depth. ``"adam"``: :class:`torch.optim.Adam` with learning rate ``lr``.
    num_threads : int or None
        PyTorch intra-op threads on the CPU *during* training, restored afterwards (``None``: leave
        as is). The default 1 is fastest for these tiny tensors: on a loaded 2-core machine two
        threads were measured about ten times slower per step than one.
    loss_fn : callable
        ``loss_fn(net, tokens, target) -> scalar``.

    Returns
    -------
    Tensor, shape (steps,)
        The training loss at each step (before the step's update), on the CPU.

    Raises
    ------
    TypeError
        If ``generator`` is not a torch.Generator or ``net`` has no parameters.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> net = training.ResidualAttentionNet(training.smooth_weights(4, 3, generator=torch.Generator().manual_seed(0)))
    >>> task = lambda g: training.regression_task(16, 6, 2, generator=g)
    >>> hist = training.train(net, steps=5, task=task, generator=torch.Generator().manual_seed(1))
    >>> hist.shape
    torch.Size([5])
    >>> net2 = training.ResidualAttentionNet(training.smooth_weights(4, 3, generator=torch.Generator().manual_seed(0)))
    >>> hist2 = training.train(net2, steps=5, task=task, generator=torch.Generator().manual_seed(1))
    >>> torch.equal(hist, hist2), torch.equal(net.weights(), net2.weights())  # equal seeds: bitwise equal runs
    (True, True)
    """
    steps = check_positive_int(steps, "steps")
    lr = check_real(lr, "lr", positive=True)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise TypeError("net has no trainable parameters")
    like = params[0]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr / float(getattr(net, "h", 1.0)))
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam'; got {optimizer!r}")
    history = torch.empty(steps, dtype=torch.float64)
    losses = []
    saved = torch.get_num_threads()
    if num_threads is not None and like.device.type == "cpu":
        torch.set_num_threads(check_positive_int(num_threads, "num_threads"))
    try:
        _loop(net, opt, task, generator, like, loss_fn, steps, losses)
    finally:
        torch.set_num_threads(saved)
    history.copy_(torch.stack(losses).to("cpu", torch.float64))  # one host synchronisation
    return history


def _loop(net, opt, task, generator, like, loss_fn, steps, losses) -> None:
    for _ in range(steps):
        tokens, target = task(generator)
        tokens = tokens.to(device=like.device, dtype=like.dtype)
        target = target.to(device=like.device, dtype=like.dtype)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net, tokens, target)
        loss.backward()
        opt.step()
        losses.append(loss.detach())


def depth_increments(weights: Tensor) -> Tensor:
    r"""Increments :math:`\|\theta_{\ell+1} - \theta_\ell\|` of per-layer weights, shape ``(L - 1,)``.

    The norm is Frobenius over the three matrices, :math:`(\|\Delta Q\|_F^2 + \|\Delta K\|_F^2 +
    \|\Delta V\|_F^2)^{1/2}`. A depth function that is Lipschitz with constant :math:`c` in :math:`t`
    gives increments at most :math:`cT/L`; i.i.d. weights give increments of order one at every ``L``.

    Parameters
    ----------
    weights : Tensor, shape (L, 3, d, d)

    Raises
    ------
    ValueError
        If ``L < 2`` or the shape is not ``(L, 3, d, d)``.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> W = torch.zeros(3, 3, 1, 1, dtype=torch.float64)
    >>> W[:, 2, 0, 0] = torch.tensor([0.0, 1.0, 3.0])
    >>> training.depth_increments(W)
    tensor([1., 2.], dtype=torch.float64)
    """
    W = _check_stack(weights)
    if W.shape[0] < 2:
        raise ValueError(f"need at least 2 layers for an increment; got {W.shape[0]}")
    return (W[1:] - W[:-1]).flatten(1).norm(dim=1)


def refine(weights: Tensor) -> Tensor:
    r"""Weights of ``2L`` layers interpolated in depth from ``L`` layers (same depth ``T``).

    Layer ``l`` of ``L`` sits at :math:`t_\ell = (\ell + 1/2)T/L`; the new layers sit at
    :math:`s_k = (k + 1/2)T/(2L)`, i.e. at :math:`t_\ell \mp T/(4L)`. Each new weight is the linear
    interpolation of the two nearest old ones (constant extrapolation beyond the first and last layer):
    :math:`\theta'_{2\ell} = \tfrac34\theta_\ell + \tfrac14\theta_{\ell-1}` and
    :math:`\theta'_{2\ell+1} = \tfrac34\theta_\ell + \tfrac14\theta_{\ell+1}`. For weights sampled from a
    :math:`C^2` depth function the interpolation error is :math:`O(L^{-2})`.

    Parameters
    ----------
    weights : Tensor, shape (L, ...)

    Returns
    -------
    Tensor, shape (2L, ...)

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> training.refine(torch.tensor([0.0, 4.0]))
    tensor([0., 1., 3., 4.])
    """
    if not isinstance(weights, Tensor) or weights.ndim < 1 or weights.shape[0] < 1:
        raise TypeError("weights must be a tensor of shape (L, ...) with L >= 1")
    prev = torch.cat([weights[:1], weights[:-1]])
    nxt = torch.cat([weights[1:], weights[-1:]])
    out = torch.empty((2 * weights.shape[0], *weights.shape[1:]), dtype=weights.dtype, device=weights.device)
    out[0::2] = 0.75 * weights + 0.25 * prev
    out[1::2] = 0.75 * weights + 0.25 * nxt
    return out


def _like(net: ResidualAttentionNet, weights: Tensor) -> ResidualAttentionNet:
    return ResidualAttentionNet(weights, t1=net.t1, beta=net.beta, causal=net.causal, positions=net.positions)


def refinement_gap(net: ResidualAttentionNet, tokens: Tensor) -> Tensor:
    r"""Gap between ``net`` and the ``2L``-layer network with depth-interpolated weights (:func:`refine`).

    Returns the mean of :math:`|x_i^L - x_i'^{2L}|` over the prompts ``b`` and tokens ``i`` of ``tokens``
    (shape ``(..., n, d)``), a 0-dim tensor. If the weights are samples of a :math:`C^2` depth function,
    both networks are Euler schemes of one ODE and the gap is :math:`O(1/L)`.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> W = training.smooth_weights(1, 2, generator=torch.Generator().manual_seed(0)).expand(4, -1, -1, -1)
    >>> x = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    >>> gap = training.refinement_gap(training.ResidualAttentionNet(W), x)  # shared weights: Euler h vs h/2
    >>> bool(gap > 0)
    True
    """
    if not isinstance(net, ResidualAttentionNet):
        raise TypeError(f"net must be a ResidualAttentionNet; got {type(net).__name__}")
    fine = _like(net, refine(net.weights())).to(tokens.device)
    with torch.no_grad():
        return (net(tokens) - fine(tokens)).norm(dim=-1).mean()


def effective_rank(x: Tensor, *, center: bool = False) -> Tensor:
    r"""Effective rank :math:`\exp(-\sum_k p_k\log p_k)`, :math:`p_k = \sigma_k/\sum_j\sigma_j`, of token matrices.

    :math:`\sigma_k` are the singular values of the ``(n, d)`` matrix (of the centred one if ``center``);
    the value lies in :math:`[1, \min(n, d)]` and equals ``r`` for ``r`` equal non-zero singular values.

    Parameters
    ----------
    x : Tensor, shape (..., n, d)

    Returns
    -------
    Tensor, shape (...)

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> training.effective_rank(torch.eye(3, dtype=torch.float64))
    tensor(3.0000, dtype=torch.float64)
    """
    x = check_tokens(x)
    if center:
        x = x - x.mean(dim=-2, keepdim=True)
    s = torch.linalg.svdvals(x)
    p = s / s.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    ent = -(p * torch.log(p.clamp_min(torch.finfo(x.dtype).tiny))).sum(dim=-1)
    return torch.exp(ent)


def mean_pairwise_cosine(x: Tensor) -> Tensor:
    r"""Mean of :math:`\cos\angle(x_i, x_j)` over pairs ``i != j``, shape ``(...)`` for ``x`` of shape ``(..., n, d)``.

    It is 1 exactly when all tokens point the same way (one cluster on the sphere after normalisation).

    Raises
    ------
    ValueError
        If ``n < 2``.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> training.mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    tensor(1.)
    """
    x = check_tokens(x)
    n = x.shape[-2]
    if n < 2:
        raise ValueError(f"need n >= 2 tokens; got {n}")
    u = x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    G = u @ u.mT
    return (G.sum(dim=(-2, -1)) - G.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))


def permutation_gap(net: nn.Module, tokens: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    r""":math:`\max|f(Px) - Pf(x)|` for one random permutation ``P`` of the tokens (0 for an equivariant ``f``).

    Parameters
    ----------
    net : callable
        Maps tokens ``(..., n, d)`` to tokens of the same shape.
    tokens : Tensor, shape (..., n, d)
    generator : torch.Generator, optional
        Draws the permutation.

    Returns
    -------
    Tensor, 0-dim

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> net = training.ResidualAttentionNet(training.iid_weights(3, 2, generator=torch.Generator().manual_seed(0)))
    >>> x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    >>> bool(training.permutation_gap(net, x, generator=torch.Generator().manual_seed(2)) < 1e-12)
    True
    """
    tokens = check_tokens(tokens)
    perm = torch.randperm(tokens.shape[-2], generator=generator).to(tokens.device)
    with torch.no_grad():
        return (net(tokens[..., perm, :]) - net(tokens)[..., perm, :]).abs().max()


def duplication_gap(net: nn.Module, tokens: Tensor) -> Tensor:
    r""":math:`\max|f(x \sqcup x)_{i} - f(x)_i|`: the network on every token twice against the network on ``x``.

    A network that depends on the tokens only through their empirical measure
    :math:`\frac1n\sum_i\delta_{x_i}` maps each copy like the original, and the gap is 0.
    The positional encoding of a :class:`ResidualAttentionNet` is for ``n`` tokens, so such a network
    is rejected (``ValueError``) when it has one.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> net = training.ResidualAttentionNet(training.iid_weights(3, 2, generator=torch.Generator().manual_seed(0)))
    >>> x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    >>> bool(training.duplication_gap(net, x) < 1e-12)
    True
    """
    tokens = check_tokens(tokens)
    if getattr(net, "positions", None) is not None:
        raise ValueError("duplication is not defined for a network with positional encodings of fixed length")
    n = tokens.shape[-2]
    with torch.no_grad():
        both = net(torch.cat([tokens, tokens], dim=-2))
        once = net(tokens)
        return torch.maximum((both[..., :n, :] - once).abs().max(), (both[..., n:, :] - once).abs().max())


def fit_slope(x: object, y: object) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (the exponent ``p`` of ``y ~ C x^p``).

    Raises
    ------
    ValueError
        If fewer than two points are given or a value is not positive.

    Examples
    --------
    >>> from flowlib.book import training
    >>> round(training.fit_slope([1, 2, 4], [1.0, 0.5, 0.25]), 6)
    -1.0
    """
    xs = torch.as_tensor(x, dtype=torch.float64).flatten().cpu()
    ys = torch.as_tensor(y, dtype=torch.float64).flatten().cpu()
    if xs.numel() != ys.numel() or xs.numel() < 2:
        raise ValueError(f"need two sequences of equal length >= 2; got {xs.numel()} and {ys.numel()}")
    if bool((xs <= 0).any()) or bool((ys <= 0).any()):
        raise ValueError("x and y must be positive for a log-log fit")
    lx, ly = xs.log(), ys.log()
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())
