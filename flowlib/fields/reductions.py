r"""The one O(n^2) primitive behind every attention field, with interchangeable backends.

:func:`softmax_average` computes, for queries :math:`q_i`, keys :math:`k_j` and values :math:`v_j`,

.. math::

    \mathrm{out}_i = \sum_j P_{ij} v_j, \qquad
    P_{ij} = \frac{\exp(\beta \langle q_i, k_j\rangle + b_{ij})\,[\text{$j$ allowed for $i$}]}
                  {\sum_l \exp(\beta \langle q_i, k_l\rangle + b_{il})\,[\text{$l$ allowed for $i$}]},

always with a max-shift (log-sum-exp), so large logits never overflow, and with the convention
that a query which may attend to no key gets ``out_i = 0`` (never NaN).

Backends
--------
``"dense"``
    Materialises the ``(..., n, m)`` logits. Exact reference; O(n m) memory.
``"chunked"``
    Loops over blocks of queries; each block's softmax is complete, so the result equals
    ``dense`` up to round-off, with O(c m) memory for a block of c queries. Any dtype, any device.
``"sdpa"``
    :func:`torch.nn.functional.scaled_dot_product_attention` with an explicit ``scale=beta``
    (its default ``1/sqrt(E)`` is never used) and ``is_causal`` for causal masks. The inputs are laid
    out as ``(B, 1, n, E)`` so that the fused (flash) kernels, whose memory is linear in n, are eligible
    on the CPU as well as on CUDA.
``"auto"``
    See :func:`choose_backend`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Backend",
    "BACKENDS",
    "DENSE_LIMIT_BYTES",
    "choose_backend",
    "softmax_average",
    "logsumexp_rows",
    "attention_logits",
    "causal_mask",
]

Backend = Literal["auto", "dense", "chunked", "sdpa"]
BACKENDS: tuple[str, ...] = ("auto", "dense", "chunked", "sdpa")

#: Largest logits tensor (in bytes, summed over the batch) that ``auto`` materialises densely.
DENSE_LIMIT_BYTES = 64 * 2**20
#: Memory budget (bytes) for one block of logits in the ``chunked`` backend on the CPU.
CHUNK_BUDGET_BYTES = 32 * 2**20
#: The same on CUDA, larger: with 10^6 keys the CPU budget gives one query row per block, and a GPU
#: running one kernel launch per row is launch-bound (512 MiB gives about 20 rows per block).
CHUNK_BUDGET_BYTES_CUDA = 512 * 2**20


def causal_mask(n: int, m: int | None = None, *, include_self: bool = True, device=None) -> Tensor:
    """Boolean causal mask of shape ``(n, m)``: entry ``(i, j)`` is True (attend) when ``j <= i``.

    Parameters
    ----------
    n, m
        Number of queries and keys (``m`` defaults to ``n``).
    include_self
        If False, token ``i`` attends to ``j < i`` only; the first token then attends to nothing
        and its velocity is defined to be 0.
    device
        Device of the result.

    Returns
    -------
    Tensor
        ``(n, m)`` boolean tensor.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> fl.causal_mask(3)
    tensor([[ True, False, False],
            [ True,  True, False],
            [ True,  True,  True]])
    """
    m = n if m is None else m
    return torch.ones(n, m, dtype=torch.bool, device=device).tril(0 if include_self else -1)


def _batch_numel(*shapes: torch.Size) -> int:
    return math.prod(torch.broadcast_shapes(*shapes)) if shapes else 1


def choose_backend(
    n: int,
    m: int,
    *,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    has_bias: bool = False,
    allow_fused: bool = True,
) -> str:
    """The rule behind ``backend="auto"``, deterministic and unit-tested.

    1. ``sdpa`` when PyTorch's fused kernels apply: on the CPU for float32/float64/bfloat16, on CUDA
       for float32/float16/bfloat16 (float64 on CUDA only has the O(n^2) math kernel), and only
       without a full ``(n, m)`` bias (``has_bias``) and when the caller allows it (``allow_fused``:
       :func:`softmax_average` forbids it inside :mod:`torch.func` transforms, for which the fused
       kernels have no forward-mode rule; sigmoid attention has no fused kernel). Measured on the CPU (``benchmarks/``), the fused kernel is
       as fast as ``dense`` for a few tokens and 2-5x faster from about a thousand, with O(n) memory;
    2. else ``dense`` when the logits of the whole batch fit in :data:`DENSE_LIMIT_BYTES` (64 MiB);
    3. else ``chunked``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> fl.choose_backend(1000, 1000)  # PyTorch's fused attention wherever it applies
    'sdpa'
    >>> fl.choose_backend(1000, 1000, has_bias=True)  # a bias rules the fused kernel out
    'dense'
    >>> fl.choose_backend(100_000, 100_000, has_bias=True)  # too large for an n x m matrix
    'chunked'
    """
    device = torch.device(device)
    if allow_fused and not has_bias:
        if device.type == "cpu" and dtype in (torch.float32, torch.float64, torch.bfloat16):
            return "sdpa"
        if device.type == "cuda" and dtype in (torch.float32, torch.float16, torch.bfloat16):
            return "sdpa"
    itemsize = torch.empty((), dtype=dtype).element_size()
    if batch * n * m * itemsize <= DENSE_LIMIT_BYTES:
        return "dense"
    return "chunked"


def _is_compiling() -> bool:
    fn = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if fn is None:  # torch < 2.3
        fn = getattr(getattr(torch, "_dynamo", None), "is_compiling", lambda: False)
    return bool(fn())


def _transformed(t: Tensor) -> bool:
    """True inside :mod:`torch.func` transforms (``jvp``, ``vmap``, ``jacrev``...) or with forward-mode
    tangents: the fused SDPA kernels lack forward-mode rules, so ``auto`` avoids them there.

    Under :func:`torch.compile` the question is answered False without looking (the functorch probes
    are opaque to Dynamo and would break the graph at every call)."""
    if _is_compiling():
        return False
    is_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    if is_wrapped is not None and is_wrapped(t):
        return True
    try:
        return torch.autograd.forward_ad.unpack_dual(t).tangent is not None
    except RuntimeError:
        return False


def _any_transformed(*tensors: Tensor | None) -> bool:
    """True when any of ``tensors`` is seen through a :mod:`torch.func` transform or carries a tangent.

    The blocked paths then use out-of-place operations only and no reused scratch buffer: ``matmul(out=)``
    has no forward-mode or batching rule, and an in-place update of an unbatched block by a batched
    bias (``vmap`` over masses, say) is not allowed.
    """
    return any(t is not None and _transformed(t) for t in tensors)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which sums over keys are accumulated: float32 for float16/bfloat16 (whose largest
    value, 65 504 for float16, a sum over more keys than that would exceed), else ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _full_mask(mask: Tensor | None, causal: bool, n: int, m: int, device) -> Tensor | None:
    """Combine a user mask and the causal flag into one boolean mask (or None)."""
    if causal:
        cm = causal_mask(n, m, device=device)
        return cm if mask is None else (mask & cm)
    return mask


def attention_logits(q: Tensor, k: Tensor, *, beta: float | Tensor = 1.0, bias: Tensor | None = None) -> Tensor:
    """Dense logits ``beta * q @ k^T + bias`` of shape ``(..., n, m)``."""
    logits = beta * (q @ k.mT)
    if bias is not None:
        logits = logits + bias
    return logits


def _product(q: Tensor, k: Tensor, buf: Tensor | None) -> Tensor:
    """``q @ k^T``, written into the flat scratch buffer ``buf`` when one is given (no autograd then)."""
    if buf is None:
        return q @ k.mT
    shape = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
    return torch.matmul(q, k.mT, out=buf[: math.prod(shape)].view(shape))


def _needs_grad(*tensors: Tensor | None) -> bool:
    """True when autograd records operations on any of ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _scratch(q: Tensor, k: Tensor, rows: int, *others: Tensor | None) -> Tensor | None:
    """A reusable flat buffer for ``rows`` query rows of logits, or None when autograd must see the ops.

    Reusing one buffer for every block keeps the peak memory of the blocked paths at one block: with
    a fresh allocation per block, glibc's malloc can keep hundreds of freed blocks resident. Autograd
    saves each block's weights for the backward pass (the gradient with respect to the values, or a
    bias, needs them), so no buffer is reused when any input (``q``, ``k`` or ``others``: values, bias)
    requires a gradient; nor inside :mod:`torch.func` transforms (``jvp``, ``vmap``, ...), which have no
    rule for ``matmul(out=)``.
    """
    if _needs_grad(q, k, *others) or _any_transformed(q, k, *others):
        return None
    batch = _batch_numel(q.shape[:-2], k.shape[:-2])
    return torch.empty(batch * rows * k.shape[-2], dtype=torch.result_type(q, k), device=q.device)


def _mask_logits_(logits: Tensor, mask: Tensor | None, inplace: bool = True) -> Tensor:
    """Set the logits of forbidden pairs (``mask`` False) to -inf, in place when shapes allow."""
    if mask is None:
        return logits
    fill = ~mask
    if inplace and torch.broadcast_shapes(logits.shape, fill.shape) == logits.shape:
        return logits.masked_fill_(fill, float("-inf"))
    return logits.masked_fill(fill, float("-inf"))


def _shifted_exp(
    q: Tensor,
    k: Tensor,
    beta: float,
    mask: Tensor | None,
    bias: Tensor | None,
    buf: Tensor | None = None,
    inplace: bool = True,
) -> tuple[Tensor, Tensor]:
    """``(exp(logits - rowmax), rowmax)`` for one block, with a single ``(..., c, m)`` allocation.

    The updates are in place on the fresh product ``q k^T``, so a block costs one buffer instead of
    four (fewer, larger allocations also keep the C allocator from fragmenting across blocks).
    Autograd sees only safe in-place ops: the product's backward needs ``q`` and ``k``, not its
    output, and ``exp_`` saves its own result. With ``inplace=False`` (inside :mod:`torch.func`
    transforms) every update is out of place.
    """
    logits = _product(q, k, buf)
    shape = logits.shape
    if inplace:
        logits.mul_(beta)
        if bias is not None:
            logits = logits.add_(bias) if torch.broadcast_shapes(shape, bias.shape) == shape else logits + bias
    else:
        logits = logits * beta
        if bias is not None:
            logits = logits + bias
    logits = _mask_logits_(logits, mask, inplace)
    mx = logits.detach().amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    if inplace:
        return logits.sub_(mx).exp_(), mx
    return torch.exp(logits - mx), mx


def _normalise_rows(w: Tensor, v: Tensor | None) -> Tensor:
    """``(w @ v) / w.sum(-1)`` (or ``w / w.sum(-1)`` when ``v`` is None), rows of zero sum giving 0.

    Sums over keys are accumulated in float32 for half-precision inputs (see :func:`_acc_dtype`).
    """
    acc = _acc_dtype(w.dtype)
    denom = w.sum(dim=-1, keepdim=True, dtype=acc)
    denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    if v is None:
        return (w.to(acc) / denom).to(w.dtype) if acc != w.dtype else w / denom
    if acc != w.dtype or _acc_dtype(v.dtype) != v.dtype:
        out_dtype = torch.result_type(w, v)
        return ((w.to(acc) @ v.to(acc)) / denom).to(out_dtype)
    return (w @ v) / denom


def _dense_average(q, k, v, beta, mask, bias, buf=None, inplace=True) -> Tensor:
    w, _ = _shifted_exp(q, k, beta, mask, bias, buf, inplace)
    return _normalise_rows(w, v)


def _dense_lse(q, k, beta, mask, bias, buf=None, inplace=True) -> Tensor:
    w, mx = _shifted_exp(q, k, beta, mask, bias, buf, inplace)
    acc = _acc_dtype(w.dtype)
    return (torch.log(w.sum(dim=-1, dtype=acc)) + mx.squeeze(-1).to(acc)).to(w.dtype)


def dense_weights(
    q: Tensor,
    k: Tensor,
    *,
    beta: float | Tensor = 1.0,
    mask: Tensor | None = None,
    causal: bool = False,
    bias: Tensor | None = None,
) -> Tensor:
    """Dense attention matrix ``P`` of shape ``(..., n, m)`` (rows sum to 1, empty rows are 0).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.fields import dense_weights
    >>> dense_weights(torch.zeros(3, 1), torch.zeros(3, 1), causal=True)
    tensor([[1.0000, 0.0000, 0.0000],
            [0.5000, 0.5000, 0.0000],
            [0.3333, 0.3333, 0.3333]])
    """
    q, beta = _fold_beta(q, beta)
    n, m = q.shape[-2], k.shape[-2]
    mask = _full_mask(mask, causal, n, m, q.device)
    w, _ = _shifted_exp(q, k, beta, mask, bias, inplace=not _any_transformed(q, k, bias))
    return _normalise_rows(w, None)


def _row_slice(t: Tensor | None, i0: int, i1: int) -> Tensor | None:
    if t is None or t.shape[-2] == 1:
        return t
    return t[..., i0:i1, :]


def _chunk_rows(q: Tensor, k: Tensor, v: Tensor | None, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return max(1, int(chunk_size))
    batch = _batch_numel(q.shape[:-2], k.shape[:-2])
    width = k.shape[-2] * (1 + (0 if v is None else 1))
    budget = CHUNK_BUDGET_BYTES_CUDA if q.device.type == "cuda" else CHUNK_BUDGET_BYTES
    return max(1, budget // max(1, batch * width * q.element_size() * 3))


def _chunked(fn, q, k, v, beta, mask, causal, bias, chunk_size) -> Tensor:
    """Apply the block function ``fn(q_blk, k, [v,] beta, mask_blk, bias_blk, buf, inplace)`` to blocks of
    query rows and concatenate. Inside :mod:`torch.func` transforms there is no scratch buffer and
    ``inplace`` is False, so every blocked path is safe under ``jvp``, ``vmap`` and ``jacrev``."""
    n, m = q.shape[-2], k.shape[-2]
    c = _chunk_rows(q, k, v, chunk_size)
    functional = _any_transformed(q, k, v, bias, mask)
    buf = _scratch(q, k, min(c, n), v, bias) if n > c and not functional else None
    outs = []
    for i0 in range(0, n, c):
        i1 = min(n, i0 + c)
        blk_mask = _row_slice(mask, i0, i1)
        if causal:
            cm = torch.arange(i0, i1, device=q.device)[:, None] >= torch.arange(m, device=q.device)[None, :]
            blk_mask = cm if blk_mask is None else (blk_mask & cm)
        args = (q[..., i0:i1, :], k) + ((v,) if v is not None else ())
        outs.append(fn(*args, beta, blk_mask, _row_slice(bias, i0, i1), buf, not functional))
    return torch.cat(outs, dim=-1 if v is None else -2)


def _to4d(t: Tensor, batch_shape: torch.Size) -> Tensor:
    t = t.expand(*batch_shape, *t.shape[-2:])
    return t.reshape(-1, 1, *t.shape[-2:])


def _pad_last(t: Tensor, width: int) -> Tensor:
    extra = width - t.shape[-1]
    return F.pad(t, (0, extra)) if extra > 0 else t


def _sdpa_average(q, k, v, beta, mask, causal, bias) -> Tensor:
    n, m = q.shape[-2], k.shape[-2]
    batch_shape = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    # Every admissible pair, causal included: rows with none are 0 by convention, set with torch.where
    # below (SDPA before torch 2.5 returns NaN on such rows, and NaN * 0 would stay NaN).
    full = _full_mask(mask, causal, n, m, q.device) if mask is not None else None
    attn_mask = None
    if bias is not None:
        attn_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        attn_mask = mask
    if attn_mask is not None:
        # SDPA takes (B, 1, n or 1, m); bring every leading dim of the mask into B.
        am = attn_mask.expand(*batch_shape, *attn_mask.shape[-2:]) if attn_mask.ndim > 2 else attn_mask
        attn_mask = am.reshape(-1, 1, *am.shape[-2:]) if am.ndim > 2 else am
        if causal:
            # is_causal cannot be combined with attn_mask: fold it in.
            cm = causal_mask(n, m, device=q.device)
            attn_mask = (attn_mask & cm) if attn_mask.dtype == torch.bool else attn_mask.masked_fill(~cm, float("-inf"))
            causal = False
    q4, k4, v4 = _to4d(q, batch_shape), _to4d(k, batch_shape), _to4d(v, batch_shape)
    f = v.shape[-1]
    # The fused kernels want one head dim for q, k and v (on CUDA also a multiple of 8); otherwise SDPA
    # silently falls back to the O(n^2)-memory math kernel (e.g. L2 attention's augmented q, k have
    # d + 1 columns and v has d). Zero columns change neither <q, k> (the scale is explicit) nor the
    # first f output columns.
    width = max(q.shape[-1], f)
    if q.device.type == "cuda":
        width += -width % 8
    q4, k4, v4 = _pad_last(q4, width), _pad_last(k4, width), _pad_last(v4, width)
    out = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=attn_mask, is_causal=causal, scale=float(beta))
    out = out[..., :f].reshape(*batch_shape, n, f)
    if full is not None:
        out = torch.where(full.any(dim=-1, keepdim=True), out, torch.zeros((), dtype=out.dtype, device=out.device))
    return out


def _fold_beta(q: Tensor, beta: float | Tensor) -> tuple[Tensor, float]:
    """A tensor ``beta`` is folded into the queries (``beta <q, k> = <beta q, k>``), so its gradient flows.

    A tensor with one element is a scalar; a tensor of another shape is a batch of inverse temperatures
    broadcast against the leading (batch) dimensions of ``q``: ``beta[...]`` multiplies system ``...``.
    """
    if isinstance(beta, Tensor):
        b = beta.to(dtype=q.dtype, device=q.device)
        if b.numel() == 1 and b.ndim <= 1:
            return q * b.reshape(()), 1.0
        try:
            torch.broadcast_shapes(b.shape, q.shape[:-2])
        except RuntimeError:
            raise ValueError(
                f"a batched beta must broadcast against the batch dimensions {tuple(q.shape[:-2])} of the "
                f"tokens (one beta per system); got shape {tuple(b.shape)}"
            ) from None
        return q * b.reshape(*b.shape, 1, 1), 1.0
    return q, float(beta)


def _empty_average(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The average for n = 0 queries or m = 0 keys: an empty result, or zeros (no admissible key)."""
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    return torch.zeros(*batch, q.shape[-2], v.shape[-1], dtype=torch.result_type(q, v), device=q.device)


def softmax_average(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    beta: float | Tensor = 1.0,
    mask: Tensor | None = None,
    causal: bool = False,
    bias: Tensor | None = None,
    backend: Backend = "auto",
    chunk_size: int | None = None,
) -> Tensor:
    r"""Softmax-weighted average of values: the one O(n^2) primitive of flowlib.

    Parameters
    ----------
    q : Tensor, shape (..., n, e)
        Queries.
    k : Tensor, shape (..., m, e)
        Keys.
    v : Tensor, shape (..., m, f)
        Values.
    beta : float or Tensor
        Inverse temperature multiplying :math:`\langle q_i, k_j\rangle` (no implicit ``1/sqrt(e)``); a
        tensor keeps its gradient. A tensor of one element is a scalar; one of shape ``B`` broadcastable
        to the batch dims ``...`` gives each system its own inverse temperature (a sweep in one call).
    mask : Tensor of bool, broadcastable to (..., n, m), optional
        True where query ``i`` may attend to key ``j``.
    causal : bool
        Restrict query ``i`` to keys ``j <= i``.
    bias : Tensor, broadcastable to (..., n, m), optional
        Added to the logits (after the multiplication by ``beta``).
    backend : {"auto", "dense", "chunked", "sdpa"}
        See the module docstring and :func:`choose_backend`.
    chunk_size : int, optional
        Queries per block for ``"chunked"`` (default: from a 32 MiB budget).

    Returns
    -------
    Tensor, shape (..., n, f)
        ``out_i = sum_j P_ij v_j``; rows with no admissible key are 0 (so are all rows when ``m = 0``).
        Sums over keys are accumulated in float32 for float16 and bfloat16 inputs.

    Raises
    ------
    ValueError
        If ``backend`` is unknown.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> q, k, v = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    >>> out = fl.softmax_average(q, k, v, beta=0.5)
    >>> P = torch.softmax(0.5 * q @ k.T, dim=-1)
    >>> torch.allclose(out, P @ v)  # the same average as forming the softmax matrix
    True
    >>> torch.allclose(out, fl.softmax_average(q, k, v, beta=0.5, backend="chunked", chunk_size=2))
    True
    >>> fl.softmax_average(q, k, v, causal=True)[0].equal(v[0])  # the first token sees only itself
    True
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    q, beta = _fold_beta(q, beta)
    n, m = q.shape[-2], k.shape[-2]
    if n == 0 or m == 0:
        return _empty_average(q, k, v)
    functional = _any_transformed(q, k, v, bias, mask)
    if backend == "auto":
        batch = _batch_numel(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        has_full_bias = bias is not None and bias.shape[-2] != 1
        backend = choose_backend(
            n, m, batch=batch, dtype=q.dtype, device=q.device, has_bias=has_full_bias, allow_fused=not functional
        )
    if backend == "dense":
        return _dense_average(q, k, v, beta, _full_mask(mask, causal, n, m, q.device), bias, None, not functional)
    if backend == "chunked":
        return _chunked(_dense_average, q, k, v, beta, mask, causal, bias, chunk_size)
    if backend == "sdpa":
        return _sdpa_average(q, k, v, beta, mask, causal, bias)
    raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")


def logsumexp_rows(
    q: Tensor,
    k: Tensor,
    *,
    beta: float | Tensor = 1.0,
    mask: Tensor | None = None,
    causal: bool = False,
    bias: Tensor | None = None,
    backend: Backend = "auto",
    chunk_size: int | None = None,
) -> Tensor:
    r"""Row log-sum-exp :math:`\log \sum_j \exp(\beta\langle q_i,k_j\rangle + b_{ij})` over admissible ``j``.

    Shapes as in :func:`softmax_average`; returns ``(..., n)``. Rows with no admissible key give
    ``-inf``. The ``sdpa`` backend has no public log-sum-exp, so it uses ``chunked`` here.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> q = torch.zeros(2, 1); k = torch.zeros(3, 1)
    >>> fl.fields.logsumexp_rows(q, k)  # log(3): three keys of logit 0
    tensor([1.0986, 1.0986])
    >>> fl.fields.logsumexp_rows(q, k, causal=True)  # query i sees keys 0..i
    tensor([0.0000, 0.6931])
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    q, beta = _fold_beta(q, beta)
    n, m = q.shape[-2], k.shape[-2]
    if n == 0 or m == 0:
        batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
        return torch.full((*batch, n), float("-inf"), dtype=torch.result_type(q, k), device=q.device)
    if backend == "auto":
        batch = _batch_numel(q.shape[:-2], k.shape[:-2])
        backend = choose_backend(n, m, batch=batch, dtype=q.dtype, device=q.device, has_bias=True)
    if backend == "dense":
        inplace = not _any_transformed(q, k, bias, mask)
        return _dense_lse(q, k, beta, _full_mask(mask, causal, n, m, q.device), bias, None, inplace)
    if backend in ("chunked", "sdpa"):
        return _chunked(_dense_lse, q, k, None, beta, mask, causal, bias, chunk_size)
    raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
