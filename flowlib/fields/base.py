"""The abstract velocity field and the keyword-only base every attention field shares.

Fields are :class:`torch.nn.Module` objects: a matrix passed as :class:`torch.nn.Parameter` is
trainable and appears in ``.parameters()``; any other tensor (a fixed matrix, a mask) is a buffer,
so ``.to(device, dtype)`` moves everything once and ``state_dict()`` round-trips. ``beta`` may be a
Python float or a tensor (a learnable temperature gets its gradient).
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._validation import check_finite, check_mask, check_matrix, check_on_sphere, check_tokens
from .reductions import BACKENDS, Backend

__all__ = ["VelocityField", "AttentionField", "apply_linear"]


def apply_linear(M: Tensor | None, x: Tensor) -> Tensor:
    """``y = M x`` for each token (column-vector convention), i.e. ``x @ M^T``; ``None`` is the identity.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib.fields import apply_linear
    >>> M = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    >>> apply_linear(M, torch.tensor([[1.0, 0.0]]))  # M x for the column vector x
    tensor([[0., 1.]])
    >>> apply_linear(None, torch.tensor([[1.0, 0.0]]))
    tensor([[1., 0.]])
    """
    return x if M is None else x @ M.mT


class VelocityField(torch.nn.Module, abc.ABC):
    """A velocity field on token configurations: ``field(x)`` maps ``(..., n, d)`` to ``(..., n, d)``.

    Calling a field validates its input (shapes, dtype, and for fields on the sphere that the
    tokens have unit norm); :meth:`velocity` evaluates without the value checks and is what the
    integrators call at every stage, after :meth:`validate` has checked the initial state once.

    What a field knows about itself is a method of the field, so that a new field is one class:
    :meth:`mean_field_velocity` (its velocity against a weighted measure, used by the PDE solver)
    and :meth:`gaussian_closure` (its affine velocity on Gaussian measures, used by
    :mod:`flowlib.gaussian`). Fields without them raise ``TypeError`` naming the field.

    Attributes
    ----------
    perm_equivariant : bool
        Whether ``field(x[..., perm, :]) == field(x)[..., perm, :]`` for every permutation
        (False for causal or masked fields).
    on_sphere : bool
        Whether the field is tangent to the unit sphere and expects unit-norm tokens.
    time_dependent : bool
        False: fields here are autonomous (see :class:`flowlib.TimeDependent`).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> class Rotation(fl.VelocityField):  # v_i = (-x_i2, x_i1): every token turns about the origin
    ...     def velocity(self, x):
    ...         return torch.stack([-x[..., 1], x[..., 0]], dim=-1)
    ...
    ...     def weights(self, x):
    ...         return torch.eye(x.shape[-2], dtype=x.dtype)
    ...
    >>> x0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    >>> traj = fl.simulate(Rotation(), x0, t1=torch.pi / 2, n_steps=32, method="rk4")
    >>> torch.allclose(traj.final, torch.tensor([[0.0, 1.0]], dtype=torch.float64), atol=1e-6)  # a quarter turn
    True
    """

    on_sphere: ClassVar[bool] = False
    time_dependent: ClassVar[bool] = False

    @property
    def perm_equivariant(self) -> bool:
        return not (getattr(self, "causal", False) or getattr(self, "mask", None) is not None)

    def forward(self, x: Tensor) -> Tensor:
        x = check_tokens(x)
        if self.on_sphere:
            check_on_sphere(x)
        return self.velocity(x)

    def validate(self, x: Tensor) -> None:
        """Check ``x`` once, fully: shapes and parameters, finiteness, and the sphere if relevant."""
        x = check_tokens(x)
        check_finite(x)
        if self.on_sphere:
            check_on_sphere(x)
        with torch.no_grad():
            self.velocity(x[..., :1, :] if self.perm_equivariant else x)  # shape checks on parameters

    @abc.abstractmethod
    def velocity(self, x: Tensor) -> Tensor:
        """Evaluate the field without the value checks of :meth:`forward` (shape ``(..., n, d)``)."""

    @abc.abstractmethod
    def weights(self, x: Tensor) -> Tensor:
        """Dense attention weights ``(..., n, n)`` for plots and tests (small ``n`` only)."""

    def mean_field_velocity(self, queries: Tensor, points: Tensor, weights: Tensor | None = None) -> Tensor:
        r"""Velocity :math:`\Gamma_\mu(x)` of the measure :math:`\mu = \sum_j w_j\delta_{y_j}` at ``queries``.

        Parameters
        ----------
        queries : Tensor, shape (n, d)
        points : Tensor, shape (m, d)
        weights : Tensor, shape (m,), optional
            Non-negative masses (any total; uniform if omitted).

        Returns
        -------
        Tensor, shape (n, d)

        Raises
        ------
        TypeError
            If the field has no mean-field velocity (the default).
        """
        raise TypeError(f"{type(self).__name__} has no mean-field velocity against a general measure")

    def gaussian_closure(self) -> tuple[str, dict[str, Any]]:
        """``(kind, parameters)`` of the field's Gaussian closure, for :mod:`flowlib.gaussian`.

        Raises
        ------
        TypeError
            If the field has no Gaussian closure (the default).
        """
        raise TypeError(
            f"no Gaussian closure for {type(self).__name__}; expected one of SoftmaxAttention, MultiHeadAttention, "
            "L2Attention, SinkhornAttention, or a kind string"
        )


def _register(module: torch.nn.Module, name: str, value: object) -> None:
    """A Parameter stays a parameter, another tensor becomes a buffer, ``None`` stays ``None``."""
    if value is None or isinstance(value, Tensor):
        if isinstance(value, torch.nn.Parameter):
            module.register_parameter(name, value)
        else:
            module.register_buffer(name, value)
        return
    try:
        value = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a torch.Tensor or None; got {type(value).__name__}") from exc
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    module.register_buffer(name, value)


def _check_beta(beta: object, *, per_head: int | None = None) -> float | Tensor:
    """A finite real ``beta`` (returned as float) or a finite tensor (returned as it is, to keep its gradient)."""
    if isinstance(beta, Tensor):
        ok_shape = beta.numel() == 1 or (per_head is not None and beta.ndim == 1)
        if not ok_shape:
            allowed = "a scalar" if per_head is None else "a scalar or shape (H,)"
            raise ValueError(f"beta must be {allowed}; got a tensor of shape {tuple(beta.shape)}")
        if not beta.is_floating_point():
            raise TypeError(f"beta must be a floating tensor; got {beta.dtype}")
        if not bool(torch.isfinite(beta.detach()).all()):
            raise ValueError(f"beta must be finite; got {beta.detach()}")
        return beta
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"beta must be a real number or a tensor; got {type(beta).__name__}")
    beta = float(beta)
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite; got {beta}")
    return beta


class AttentionField(VelocityField):
    """The keyword-only base of the attention fields: ``Q, K, V, beta, mask, causal, backend, chunk_size``.

    Parameters
    ----------
    Q, K : Tensor, shape (k, d), optional
        Query and key matrices (``None`` = identity). A :class:`torch.nn.Parameter` is trainable.
    V : Tensor, shape (d, d), optional
        Value matrix (``None`` = identity).
    beta : float or Tensor
        Inverse temperature multiplying :math:`\\langle Qx, Ky\\rangle`; a tensor (for example a
        ``Parameter``) keeps its gradient.
    mask : Tensor of bool, broadcastable to (..., n, n), optional
        True where token ``i`` may attend to token ``j`` (a buffer: it moves with ``.to()``).
    causal : bool
        Token ``i`` attends to ``j <= i`` only.
    backend : {"auto", "dense", "chunked", "sdpa"}
        How the O(n^2) sum is computed; see :func:`flowlib.softmax_average`.
    chunk_size : int, optional
        Queries per block for the chunked backend (default: from a memory budget and the device).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> field = fl.SoftmaxAttention(Q=torch.nn.Parameter(torch.eye(2)), K=torch.eye(2), beta=2.0)
    >>> isinstance(field, fl.AttentionField) and isinstance(field, torch.nn.Module)
    True
    >>> [name for name, _ in field.named_parameters()]  # a Parameter trains; K is a buffer
    ['Q']
    >>> field.replace(beta=0.5).beta  # a copy with one argument changed
    0.5
    """

    #: Constructor arguments, in the order :meth:`replace` and ``repr`` list them.
    _init_names: ClassVar[tuple[str, ...]] = ("Q", "K", "V", "beta", "mask", "causal", "backend", "chunk_size")

    def __init__(
        self,
        *,
        Q: Tensor | None = None,
        K: Tensor | None = None,
        V: Tensor | None = None,
        beta: float | Tensor = 1.0,
        mask: Tensor | None = None,
        causal: bool = False,
        backend: Backend = "auto",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("Q", Q), ("K", K), ("V", V)):
            _register(self, name, value)
        self._set_beta(beta)
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise TypeError(f"mask must be a boolean torch.Tensor; got {type(mask).__name__}")
            if mask.dtype != torch.bool:
                raise TypeError(f"mask must have dtype torch.bool (True = attend); got {mask.dtype}")
        self.register_buffer("mask", mask)
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be a bool; got {type(causal).__name__}")
        self.causal = causal
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        self.backend = backend
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be an int >= 1 or None; got {chunk_size!r}")
        self.chunk_size = chunk_size

    def _set_beta(self, beta: object, per_head: int | None = None) -> None:
        beta = _check_beta(beta, per_head=per_head)
        if "beta" in self.__dict__ or "beta" in self._buffers or "beta" in self._parameters:
            delattr(self, "beta")  # replacing the value the base class set
        if isinstance(beta, Tensor):
            _register(self, "beta", beta)
        else:
            self.beta = beta

    # ----------------------------------------------------------------- conveniences
    def replace(self, **changes: Any) -> AttentionField:
        """A new field of the same class with some constructor arguments changed (tensors are shared).

        Examples
        --------
        >>> import flowlib
        >>> field = flowlib.SoftmaxAttention(beta=2.0)
        >>> field.replace(backend="dense").backend, field.replace(backend="dense").beta
        ('dense', 2.0)
        """
        unknown = set(changes) - set(self._init_names)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no argument(s) {sorted(unknown)}; expected {self._init_names}")
        kwargs = {name: getattr(self, name) for name in self._init_names}
        kwargs.update(changes)
        return type(self)(**kwargs)

    def extra_repr(self) -> str:
        parts = []
        for name in self._init_names:
            value = getattr(self, name)
            if isinstance(value, Tensor):
                kind = "Parameter" if isinstance(value, torch.nn.Parameter) else "tensor"
                value = f"{kind}{tuple(value.shape)}" if value.numel() != 1 else f"{kind}({float(value.detach()):g})"
            parts.append(f"{name}={value}")
        return ", ".join(parts)

    # ----------------------------------------------------------------- shared helpers
    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values ``(Q x_i, K x_j, V x_j)`` with every shape checked against ``x``."""
        d = x.shape[-1]
        Q = None if self.Q is None else check_matrix(self.Q, "Q", cols=d, like=x)
        K = None if self.K is None else check_matrix(self.K, "K", cols=d, like=x)
        V = None if self.V is None else check_matrix(self.V, "V", cols=d, rows=d, like=x)
        kq = d if Q is None else Q.shape[-2]
        kk = d if K is None else K.shape[-2]
        if kq != kk:
            qs = (d, d) if Q is None else tuple(Q.shape)
            ks = (d, d) if K is None else tuple(K.shape)
            raise ValueError(f"Q and K must have the same number of rows (k); got Q {qs} and K {ks}")
        return apply_linear(Q, x), apply_linear(K, x), apply_linear(V, x)

    def _beta_like(self, x: Tensor) -> float | Tensor:
        """``beta`` as a float, or as a tensor in ``x``'s dtype and device (a no-op when they match)."""
        b = self.beta
        return b.to(dtype=x.dtype, device=x.device).reshape(()) if isinstance(b, Tensor) else b

    def _mask_for(self, x: Tensor) -> Tensor | None:
        if self.mask is None:
            return None
        return check_mask(self.mask, x.shape[-2]).to(x.device)

    def _no_positions(self, what: str) -> None:
        if self.causal or self.mask is not None:
            raise ValueError(f"{what} is not defined for masked or causal fields here (the measure carries positions)")


def measure_bias(queries: Tensor, points: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Check ``(queries, points, weights)`` of a mean-field velocity; return ``points`` and the log-mass row bias.

    The bias ``log w_j`` (shape ``(1, m)``) turns the uniform average of :func:`flowlib.softmax_average`
    into the weighted one; a point of zero mass gets ``-inf`` and weight 0 (no boolean indexing, so
    no host synchronisation).
    """
    if queries.ndim != 2 or points.ndim != 2 or queries.shape[-1] != points.shape[-1]:
        raise ValueError(
            f"queries and points must have shapes (n, d) and (m, d); got {tuple(queries.shape)}, {tuple(points.shape)}"
        )
    if weights is None:
        return points, None
    if weights.shape != points.shape[:1]:
        raise ValueError(f"weights must have shape ({points.shape[0]},); got {tuple(weights.shape)}")
    return points, torch.log(weights).unsqueeze(0)
