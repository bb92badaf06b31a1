r"""Training small residual attention networks and measuring whether they flow (book chapter 10).

A :class:`ResidualAttentionNet` of depth ``L`` is the residual stack

.. math::

    x^{\ell+1} = x^\ell + h\,F_{\theta_\ell}(x^\ell), \qquad h = T/L, \qquad \ell = 0, \dots, L-1,

with one :class:`flowlib.SoftmaxAttention` per layer whose matrices :math:`\theta_\ell = (Q_\ell, K_\ell, V_\ell)`
are :class:`torch.nn.Parameter` objects. Layer ``l`` sits at depth :math:`t_\ell = (\ell + \tfrac12)h`, the midpoint
of its step, so that the weights are samples of a *depth function* :math:`\theta(t)` on :math:`[0, T]`.

The helpers measure what chapter 10 asks of a trained network: the regularity of the weights in depth
(:func:`depth_increments`), the gap to a finer discretisation of the same depth function (:func:`refine`,
:func:`refinement_gap`), the geometry of the tokens per layer (:func:`flowlib.diagnostics.effective_rank`, :func:`flowlib.diagnostics.mean_pairwise_cosine`)
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
    "permutation_gap",
    "duplication_gap",
    "fit_slope",
    "INIT_KINDS",
    "init_stack",
    "EnsembleNet",
    "ensemble_losses",
    "train_ensemble",
    "depth_statistics",
    "coarsen",
    "mean_ci",
    "regression_baselines",
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
    """Least-squares slope of ``log y`` against ``log x`` (the exponent ``p`` of ``y ~ C x^p``): :func:`flowlib.stats.fit_slope`.

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
    from .. import stats

    return stats.fit_slope(x, y)  # validates lengths and positivity


# --------------------------------------------------------------------------------------------------------------
# Many seeds at once: an ensemble of independent networks trained in one batched computation (chapter 10's study)
# --------------------------------------------------------------------------------------------------------------

INIT_KINDS = ("smooth", "iid", "smooth+noise")


def init_stack(
    kind: str,
    n_layers: int,
    dim: int,
    *,
    seed: int,
    scale: float = 0.3,
    noise: float = 0.05,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""Initial weights ``(L, 3, d, d)`` of one of chapter 10's three families, reproducible from ``seed``.

    ``"smooth"``: :func:`smooth_weights` (one random depth function, the same at every ``L`` for one seed);
    ``"iid"``: :func:`iid_weights` (independent layers); ``"smooth+noise"``: the smooth weights plus
    ``noise`` times independent standard Gaussian entries per layer (a rough perturbation of a smooth function).
    Each family draws from its own generator stream, so the families of one seed are independent of each other
    except that ``"smooth+noise"`` contains the ``"smooth"`` weights of the same seed.

    Raises
    ------
    ValueError
        If ``kind`` is not one of ``INIT_KINDS``.

    Examples
    --------
    >>> from flowlib.book import training
    >>> W = training.init_stack("smooth+noise", 8, 3, seed=0, noise=0.0)
    >>> bool((W == training.init_stack("smooth", 8, 3, seed=0)).all())
    True
    >>> training.init_stack("iid", 4, 3, seed=0).shape
    torch.Size([4, 3, 3, 3])
    """
    if kind not in INIT_KINDS:
        raise ValueError(f"kind must be one of {INIT_KINDS}; got {kind!r}")
    noise = check_real(noise, "noise", nonnegative=True)
    seed = int(seed)
    if kind == "iid":
        return iid_weights(
            n_layers, dim, scale=scale, generator=torch.Generator().manual_seed(10_000 + seed), dtype=dtype
        )
    W = smooth_weights(n_layers, dim, scale=scale, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    if kind == "smooth+noise":
        g = torch.Generator().manual_seed(20_000 + seed)
        W = W + noise * torch.randn(W.shape, generator=g, dtype=dtype)
    return W


class EnsembleNet(nn.Module):
    r"""``E`` independent residual attention networks of depth ``L``, evaluated as one batched computation.

    Member ``e`` is the :class:`ResidualAttentionNet` with weights ``weights[e]``; the tokens have a leading
    member axis, shape ``(E, batch, n, d)``. The weights are one :class:`torch.nn.Parameter` of shape
    ``(E, L, 3, d, d)``; the loss of the ensemble is the sum of the members' losses, so the gradient of member
    ``e`` is that of its own loss and gradient descent trains the members independently.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> W = torch.stack([training.init_stack(k, 4, 3, seed=1) for k in training.INIT_KINDS])
    >>> ens = training.EnsembleNet(W)
    >>> x, _ = training.regression_task(5, 8, 2, generator=torch.Generator().manual_seed(0))
    >>> out = ens(x.expand(3, -1, -1, -1))
    >>> single = training.ResidualAttentionNet(W[1])(x)  # member 1 is the i.i.d. network
    >>> torch.allclose(out[1], single, atol=1e-13)
    True
    """

    def __init__(self, weights: Tensor, *, t1: float = 1.0, beta: float = 1.0) -> None:
        super().__init__()
        if not isinstance(weights, Tensor) or weights.ndim != 5 or weights.shape[2] != 3:
            raise ValueError("weights must be a tensor of shape (E, L, 3, d, d)")
        _check_stack(weights[0])
        self.t1 = check_real(t1, "t1", positive=True)
        self.beta = check_real(beta, "beta")
        self.n_members, self.n_layers = weights.shape[0], weights.shape[1]
        self.h = self.t1 / self.n_layers
        self.W = nn.Parameter(weights.detach().clone())

    def weights(self) -> Tensor:
        """The detached weights, shape ``(E, L, 3, d, d)``."""
        return self.W.detach()

    def step(self, x: Tensor, layer: int) -> Tensor:
        """The velocity of layer ``layer`` for tokens ``(E, ..., n, d)``."""
        Q, K, V = (self.W[:, layer, i] for i in range(3))
        shape = (self.n_members,) + (1,) * (x.ndim - 3) + Q.shape[-2:]
        Q, K, V = Q.reshape(shape), K.reshape(shape), V.reshape(shape)
        P = torch.softmax(self.beta * (x @ Q.mT) @ (x @ K.mT).mT, dim=-1)
        return P @ (x @ V.mT)

    def trajectory(self, x: Tensor) -> Tensor:
        """Hidden states ``[x^0, ..., x^L]``, shape ``(L + 1, E, ..., n, d)``."""
        states = [x]
        for layer in range(self.n_layers):
            x = x + self.h * self.step(x, layer)
            states.append(x)
        return torch.stack(states)

    def forward(self, x: Tensor) -> Tensor:
        """Output tokens ``x^L``, shape ``(E, ..., n, d)``."""
        if x.ndim < 3 or x.shape[0] != self.n_members:
            raise ValueError(f"tokens must have shape ({self.n_members}, ..., n, d); got {tuple(x.shape)}")
        for layer in range(self.n_layers):
            x = x + self.h * self.step(x, layer)
        return x


def ensemble_losses(net: EnsembleNet, tokens: Tensor, target: Tensor) -> Tensor:
    r"""Per-member mean squared error of the query prediction, shape ``(E,)``.

    ``tokens`` has shape ``(E, batch, n, d)`` or ``(batch, n, d)`` (the same prompts for every member);
    ``target`` has shape ``(E, batch)`` or ``(batch,)``.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> W = torch.zeros(2, 3, 3, 3, 3, dtype=torch.float64)  # V = 0: the networks predict 0
    >>> x, y = training.regression_task(6, 4, 2, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(training.ensemble_losses(training.EnsembleNet(W), x, y), y.pow(2).mean().expand(2))
    True
    """
    if tokens.ndim == 3:
        tokens = tokens.expand(net.n_members, *tokens.shape)
    out = net(tokens)[..., -1, -1]
    return (out - target).pow(2).mean(dim=-1)


def train_ensemble(
    net: EnsembleNet,
    *,
    steps: int,
    data_seeds: list[int],
    batch: int = 64,
    n_context: int = 8,
    lr: float = 0.1,
    clip: float | None = None,
    checkpoints: tuple[int, ...] = (),
    on_checkpoint: Callable[[int, EnsembleNet], None] | None = None,
    num_threads: int | None = 1,
) -> Tensor:
    r"""Gradient descent on the depth function for every member, each on its own stream of fresh prompts.

    Member ``e`` draws its batches from ``torch.Generator().manual_seed(data_seeds[e % len(data_seeds)])``:
    members ``e`` and ``e + S`` (``S = len(data_seeds)``) see the same prompts, so that the families of one
    seed are compared on equal data. Each step moves member ``e``'s layer ``l`` by ``lr / h`` times its own
    gradient (as :func:`train` with ``optimizer="sgd"``). With ``clip``, a member whose depth-function
    gradient has :math:`L^2(0, T)` norm :math:`G = (\sum_\ell\|\partial_{\theta_\ell}\mathcal L\|^2/h)^{1/2}` above
    ``clip`` has it scaled by ``clip / G`` (one scalar per member and step, so the update keeps its shape in
    depth). ``on_checkpoint(step, net)`` is called before the
    first step if ``0`` is in ``checkpoints`` and after each step ``s`` in ``checkpoints``. The run is
    deterministic: equal inputs give bitwise equal weights on one machine and thread count.

    Returns
    -------
    Tensor, shape (steps, E)
        The training loss of every member at every step.

    Raises
    ------
    ValueError
        If ``E`` is not a multiple of ``len(data_seeds)``, or a loss becomes non-finite (training diverged).

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> W = torch.stack([training.init_stack(k, 4, 3, seed=s) for k in ("smooth", "iid") for s in (1, 2)])
    >>> net = training.EnsembleNet(W)
    >>> hist = training.train_ensemble(net, steps=30, data_seeds=[11, 12], lr=0.1)
    >>> hist.shape
    torch.Size([30, 4])
    >>> bool((hist[-10:].mean(0) < hist[:10].mean(0)).all())  # every member learns
    True
    """
    steps = check_positive_int(steps, "steps")
    lr = check_real(lr, "lr", positive=True)
    S = len(data_seeds)
    if S < 1 or net.n_members % S:
        raise ValueError(f"the {net.n_members} members must be a multiple of len(data_seeds) = {S}")
    gens = [torch.Generator().manual_seed(int(s)) for s in data_seeds]
    opt = torch.optim.SGD(net.parameters(), lr=lr / net.h)
    reps = net.n_members // S
    history = torch.empty(steps, net.n_members, dtype=torch.float64)
    saved = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(check_positive_int(num_threads, "num_threads"))
    try:
        if 0 in checkpoints and on_checkpoint is not None:
            on_checkpoint(0, net)
        for step in range(1, steps + 1):
            xs, ys = zip(*(regression_task(batch, n_context, net.W.shape[-1] - 1, generator=g) for g in gens))
            x = torch.stack(xs).repeat(reps, 1, 1, 1).to(net.W)
            y = torch.stack(ys).repeat(reps, 1).to(net.W)
            opt.zero_grad(set_to_none=True)
            losses = ensemble_losses(net, x, y)
            if not bool(torch.isfinite(losses).all()):
                bad = torch.nonzero(~torch.isfinite(losses)).flatten().tolist()
                raise ValueError(f"training diverged at step {step} for members {bad}: lower lr or set clip")
            losses.sum().backward()
            if clip is not None:
                G = net.W.grad.pow(2).sum(dim=(1, 2, 3, 4)).div(net.h).sqrt()
                net.W.grad.mul_((clip / G.clamp_min(1e-300)).clamp(max=1.0).reshape(-1, 1, 1, 1, 1))
            opt.step()
            history[step - 1] = losses.detach().cpu()
            if step in checkpoints and on_checkpoint is not None:
                on_checkpoint(step, net)
    finally:
        torch.set_num_threads(saved)
    return history


def depth_statistics(weights: Tensor) -> dict[str, Tensor]:
    r"""Robust regularity statistics in depth of weights ``(..., L, 3, d, d)``; each value has shape ``(...)``.

    With :math:`\delta_\ell = \theta_{\ell+1} - \theta_\ell` (Frobenius norm over Q, K, V together):

    - ``"max_jump"``: :math:`\max_\ell\|\delta_\ell\|` (the chapter's first, fragile statistic);
    - ``"rms_jump"``: :math:`(\frac1{L-1}\sum_\ell\|\delta_\ell\|^2)^{1/2}`;
    - ``"tv"``: the total variation :math:`\sum_\ell\|\delta_\ell\|` (bounded in ``L`` for a depth function of
      bounded variation, a step included; of order ``L`` for independent layers);
    - ``"rms_second"``: :math:`(\frac1{L-2}\sum_\ell\|\theta_{\ell+1} - 2\theta_\ell + \theta_{\ell-1}\|^2)^{1/2}`
      (NaN when ``L < 3``);
    - ``"tv_second"``: :math:`V_2 = \|\delta_0\| + \sum_{\ell=1}^{L-2}\|\delta_\ell - \delta_{\ell-1}\| + \|\delta_{L-2}\|`,
      the variation of the jumps with the two boundary jumps (the quantity of chapter 10's refinement bound;
      :math:`O(1)` for a piecewise :math:`C^2` depth function with finitely many jumps, :math:`O(L)` for
      independent layers);
    - ``"sum_sq_jump"``: :math:`\sum_\ell\|\delta_\ell\|^2`;
    - ``"rms_jump_Q"``, ``"rms_jump_K"``, ``"rms_jump_V"``: the RMS jump of each matrix alone.

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> W = torch.zeros(5, 3, 1, 1, dtype=torch.float64)
    >>> W[:, 2, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])  # V grows linearly: jumps 1, no curvature
    >>> s = training.depth_statistics(W)
    >>> s["tv"].item(), s["rms_jump"].item(), s["rms_second"].item(), s["rms_jump_Q"].item()
    (4.0, 1.0, 0.0, 0.0)
    >>> s["tv_second"].item(), s["sum_sq_jump"].item()  # only the two boundary jumps count in V_2
    (2.0, 4.0)
    """
    if not isinstance(weights, Tensor) or weights.ndim < 4 or weights.shape[-3] != 3 or weights.shape[-4] < 2:
        raise ValueError("weights must have shape (..., L, 3, d, d) with L >= 2")
    d1 = weights[..., 1:, :, :, :] - weights[..., :-1, :, :, :]
    per = d1.pow(2).sum(dim=(-2, -1))  # (..., L-1, 3)
    jump = per.sum(-1).sqrt()
    out = {
        "max_jump": jump.amax(-1),
        "rms_jump": jump.pow(2).mean(-1).sqrt(),
        "tv": jump.sum(-1),
        "sum_sq_jump": jump.pow(2).sum(-1),
    }
    bound = jump[..., 0] + jump[..., -1]
    if weights.shape[-4] >= 3:
        d2 = d1[..., 1:, :, :, :] - d1[..., :-1, :, :, :]
        second = d2.pow(2).sum(dim=(-3, -2, -1))
        out["rms_second"] = second.mean(-1).sqrt()
        out["tv_second"] = bound + second.sqrt().sum(-1)
    else:
        out["rms_second"] = torch.full(jump.shape[:-1], float("nan"), dtype=weights.dtype)
        out["tv_second"] = bound
    for i, name in enumerate("QKV"):
        out[f"rms_jump_{name}"] = per[..., i].mean(-1).sqrt()
    return out


def coarsen(weights: Tensor) -> Tensor:
    r"""Average consecutive pairs of layers: ``2L`` weights to ``L`` (depth ``(k + 1/2)T/L`` of the coarse layer).

    The inverse direction of :func:`refine`: for weights sampled from a :math:`C^2` depth function at the
    midpoints of ``2L`` steps, the pair average differs from the sample at the coarse midpoint by
    :math:`O(L^{-2})`. Acts on axis ``-4`` of ``(..., 2L, 3, d, d)`` (or axis 0 of a 1-d tensor).

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> training.coarsen(torch.tensor([0.0, 1.0, 3.0, 5.0]))
    tensor([0.5000, 4.0000])
    """
    if not isinstance(weights, Tensor):
        raise TypeError("weights must be a tensor")
    axis = 0 if weights.ndim == 1 else weights.ndim - 4
    n = weights.shape[axis]
    if n % 2:
        raise ValueError(f"need an even number of layers; got {n}")
    even = weights.narrow(axis, 0, n).unfold(axis, 2, 2)
    return even.mean(-1)


def mean_ci(values: object, level: float = 0.95) -> tuple[float, float, float]:
    r"""Mean and two-sided Student-t interval ``(mean, low, high)`` over seeds: :func:`flowlib.stats.mean_interval`.

    A thin alias kept for the chapter-10 code; new code should call :mod:`flowlib.stats` directly.

    Raises
    ------
    ValueError
        If fewer than two finite values are given.

    Examples
    --------
    >>> from flowlib.book import training
    >>> m, lo, hi = training.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    >>> m, round(lo, 3), round(hi, 3)  # t_{0.975, 4} = 2.776, s = 1.581
    (3.0, 1.037, 4.963)
    """
    from .. import stats

    ci = stats.mean_interval(values, level=level)
    return ci.mean, ci.low, ci.high


def regression_baselines(
    tokens: Tensor,
    target: Tensor,
    *,
    fit_tokens: Tensor,
    fit_target: Tensor,
    bandwidths: tuple[float, ...] = (0.2, 0.3, 0.5, 0.7, 1.0, 1.5),
    betas: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0),
    errors: dict | None = None,
) -> dict[str, float]:
    r"""Test losses of reference predictors of the query label, on the prompts of :func:`regression_task`.

    - ``"zero"``: predict 0 (loss :math:`\overline{y_q^2}`);
    - ``"least_squares"``: the minimum-norm least-squares fit of the context, :math:`\hat w = X^+y` (the
      optimum of the noise-free task: loss 0 up to round-off when ``n_context >= dim_x``);
    - ``"gd_one_step"``: one gradient-descent step from :math:`w = 0` on the in-context squared loss,
      :math:`\hat y = \eta\,\frac1{n_c}\sum_i y_i\langle x_i, x_q\rangle`, the predictor one linear-attention layer
      implements {cite}`vonoswald2023transformers`, with :math:`\eta` fitted by least squares on the fit prompts;
    - ``"kernel_smoother"``: Nadaraya--Watson, weights :math:`\propto e^{-|x_i - x_q|^2/2b^2}`, the bandwidth
      ``b`` chosen among ``bandwidths`` on the fit prompts;
    - ``"softmax_smoother"``: weights :math:`\propto e^{\beta\langle x_i, x_q\rangle}` (one softmax attention
      head reading the labels), ``beta`` chosen among ``betas`` on the fit prompts.

    Every tuned constant is fitted on ``fit_tokens``/``fit_target`` (other prompts), never on the test prompts.
    The dictionary also has ``"gd_eta"``, ``"bandwidth"`` and ``"beta"``. If ``errors`` is a dict, it receives
    the squared error of every test prompt for each predictor (tensors of shape ``(batch,)``, for a bootstrap).

    Examples
    --------
    >>> import torch
    >>> from flowlib.book import training
    >>> x, y = training.regression_task(512, 8, 2, generator=torch.Generator().manual_seed(0))
    >>> xf, yf = training.regression_task(512, 8, 2, generator=torch.Generator().manual_seed(1))
    >>> b = training.regression_baselines(x, y, fit_tokens=xf, fit_target=yf)
    >>> b["least_squares"] < 1e-20 < b["gd_one_step"] < b["zero"]
    True
    """

    def split(tok):
        tok = check_tokens(tok)
        return tok[..., :-1, :-1], tok[..., :-1, -1], tok[..., -1, :-1]

    X, Y, xq = split(tokens)
    Xf, Yf, xqf = split(fit_tokens)
    err = {"zero": target.pow(2)}
    w = torch.linalg.pinv(X) @ Y[..., None]
    err["least_squares"] = ((xq[..., None, :] @ w)[..., 0, 0] - target).pow(2)

    def gd(Xa, Ya, q):
        return (Ya * (Xa @ q[..., None])[..., 0]).mean(-1)

    pf = gd(Xf, Yf, xqf)
    eta = float((pf * fit_target).sum() / (pf * pf).sum())
    err["gd_one_step"] = (eta * gd(X, Y, xq) - target).pow(2)

    def nw(Xa, Ya, q, b):
        return (torch.softmax(-(Xa - q[..., None, :]).pow(2).sum(-1) / (2 * b * b), dim=-1) * Ya).sum(-1)

    b = min(bandwidths, key=lambda b: (nw(Xf, Yf, xqf, b) - fit_target).pow(2).mean().item())
    err["kernel_smoother"] = (nw(X, Y, xq, b) - target).pow(2)

    def sm(Xa, Ya, q, beta):
        return (torch.softmax(beta * (Xa @ q[..., None])[..., 0], dim=-1) * Ya).sum(-1)

    beta = min(betas, key=lambda c: (sm(Xf, Yf, xqf, c) - fit_target).pow(2).mean().item())
    err["softmax_smoother"] = (sm(X, Y, xq, beta) - target).pow(2)
    if errors is not None:
        errors.update(err)
    out: dict[str, float] = {k: v.mean().item() for k, v in err.items()}
    out["gd_eta"], out["bandwidth"] = eta, float(b)
    out["beta"] = float(beta)
    return out
