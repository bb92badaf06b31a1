"""The abstract velocity field and the keyword-only base every attention field shares.

Fields are :class:`torch.nn.Module` objects: a matrix passed as :class:`torch.nn.Parameter` is
trainable and appears in ``.parameters()``; any other tensor (a fixed matrix, a mask) is a buffer,
so ``.to(device, dtype)`` moves everything once and ``state_dict()`` round-trips. ``beta`` may be a
Python float or a tensor (a learnable temperature gets its gradient); either way it is in ``state_dict()``
under the key ``"beta"``, so the keys of a field do not depend on how it was built.

A trainable matrix (an ``nn.Parameter``) must have the input's dtype and device: a mismatch raises an
error naming ``.to()``, as ``torch.nn`` layers do, instead of a silent copy at every call. A fixed matrix
(a buffer) must be on the input's device and is used in the input's dtype.
"""

from __future__ import annotations

import abc
import math
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._validation import check_finite, check_mask, check_matrix, check_on_sphere, check_tokens
from .reductions import BACKENDS, Backend, _transformed

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

    Subclasses implement :meth:`velocity`, the computation. Calling a field runs ``forward``, which
    checks the input's shape and dtype and, with ``check=True`` (the default for a direct call), its
    values too (for fields on the sphere, that the tokens have unit norm; one host synchronisation).
    The integrators call every field through ``__call__`` (so module hooks run) with
    ``check=False`` at every stage, after :meth:`validate` has checked the initial state once. Inside
    :mod:`torch.func` transforms the value checks are skipped (they would need the values).

    What a field knows about itself is a method of the field, so that a new field is one class:
    :meth:`mean_field_velocity` (its velocity against a weighted measure, used by the PDE solver)
    and :meth:`gaussian_closure` (its affine velocity on Gaussian measures, used by
    :mod:`flowlib.gaussian`). Fields without them raise ``TypeError`` naming the field. Attention
    weights (``weights(x)``) belong to :class:`AttentionField` only.

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

    def forward(self, x: Tensor, *, check: bool = True) -> Tensor:
        """The velocity at ``x``; ``check=False`` skips the value checks (the integrators' per-step path)."""
        x = check_tokens(x)
        if check and not _transformed(x):
            self._check_values(x)
            return self._checked_velocity(x)
        return self.velocity(x)

    def validate(self, x: Tensor) -> None:
        """Check ``x`` once, fully: shapes and parameters, finiteness, and the sphere if relevant."""
        x = check_tokens(x)
        check_finite(x)
        self._check_values(x)
        with torch.no_grad():
            self.velocity(x[..., :1, :] if self.perm_equivariant else x)  # shape checks on parameters

    def _check_values(self, x: Tensor) -> None:
        """Value checks on the input (host synchronisations): the sphere for ``on_sphere`` fields."""
        if self.on_sphere:
            check_on_sphere(x)

    def _checked_velocity(self, x: Tensor) -> Tensor:
        """:meth:`velocity` with checks on the result, for a direct call (fields override as needed)."""
        return self.velocity(x)

    @abc.abstractmethod
    def velocity(self, x: Tensor) -> Tensor:
        """Evaluate the field without the value checks of ``forward`` (shape ``(..., n, d)``)."""

    def mean_field_velocity(
        self, queries: Tensor, points: Tensor, masses: Tensor | None = None, *, check: bool = True, **old: Any
    ) -> Tensor:
        r"""Velocity :math:`\Gamma_\mu(x)` of the measure :math:`\mu = \sum_j w_j\delta_{y_j}` at ``queries``.

        Parameters
        ----------
        queries : Tensor, shape (n, d)
        points : Tensor, shape (m, d)
        masses : Tensor, shape (m,), optional
            Non-negative masses (any positive total; uniform if omitted). ``weights=`` is the deprecated
            name.
        check : bool
            Check the masses' values (non-negative, finite, positive total; one host synchronisation).

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


def _masses_arg(masses: Tensor | None, old: dict[str, Any], where: str) -> Tensor | None:
    """Accept the deprecated keyword ``weights=`` for ``masses=`` (with a DeprecationWarning)."""
    if not old:
        return masses
    unknown = set(old) - {"weights"}
    if unknown:
        raise TypeError(f"{where} got unexpected keyword argument(s) {sorted(unknown)}")
    if masses is not None:
        raise TypeError(f"{where}: pass masses= only (weights= is its deprecated name)")
    warnings.warn(
        f"{where}(weights=...) is deprecated since flowlib 0.3; use masses=... (weights means attention weights)",
        DeprecationWarning,
        stacklevel=3,
    )
    return old["weights"]


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


def _check_beta(beta: object, *, per_head: int | None = None, name: str = "beta") -> float | Tensor:
    """A finite real ``beta`` (returned as float) or a finite floating tensor (returned as it is, to keep its
    gradient). A tensor of one element is a scalar; another shape is a batch (one ``beta`` per system,
    broadcast against the leading dims of the tokens), or with ``per_head`` one ``beta`` per head."""
    if isinstance(beta, Tensor):
        if per_head is not None and not (beta.numel() == 1 or beta.shape == (per_head,)):
            raise ValueError(
                f"{name} must be a scalar or have shape (H,) = ({per_head},), one per head; got shape {tuple(beta.shape)}"
            )
        if not beta.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor; got {beta.dtype}")
        if not _transformed(beta) and not bool(torch.isfinite(beta.detach()).all()):
            raise ValueError(f"{name} must be finite; got {beta.detach()}")
        return beta
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"{name} must be a real number or a tensor; got {type(beta).__name__}")
    beta = float(beta)
    if not math.isfinite(beta):
        raise ValueError(f"{name} must be finite; got {beta}")
    return beta


def _like(M: Tensor, name: str, x: Tensor) -> Tensor:
    """A field's tensor ready to meet the input ``x``: same device required, and for a trainable
    ``Parameter`` the same dtype too (as ``torch.nn`` layers require); a fixed tensor takes ``x``'s dtype."""
    if M.device != x.device:
        raise ValueError(
            f"{name} is on {M.device} but the input is on {x.device}; move the field with field.to({str(x.device)!r})"
        )
    if M.dtype != x.dtype:
        if isinstance(M, torch.nn.Parameter):
            raise TypeError(
                f"{name} is a {M.dtype} Parameter but the input is {x.dtype}; convert the field with "
                f"field.to({x.dtype}) (or the input with x.to({M.dtype}))"
            )
        return M.to(x.dtype)
    return M


class AttentionField(VelocityField):
    """The keyword-only base of the attention fields: ``Q, K, V, beta, mask, causal, backend, chunk_size``.

    Parameters
    ----------
    Q, K : Tensor, shape (k, d), optional
        Query and key matrices (``None`` = identity, which has no ``state_dict`` key: a checkpoint with
        a ``Q`` loads into a field built with a ``Q`` tensor). A :class:`torch.nn.Parameter` is trainable.
    V : Tensor, shape (d, d), optional
        Value matrix (``None`` = identity).
    beta : float or Tensor
        Inverse temperature multiplying :math:`\\langle Qx, Ky\\rangle`; a tensor (for example a
        ``Parameter``) keeps its gradient. A tensor of shape ``B`` broadcastable to the leading
        dims of the tokens gives each system its own ``beta`` (a sweep in one call; ``torch.func.vmap``
        over ``beta`` works too). A number is kept as a Python float for the computation and mirrored
        in a float64 buffer, so ``"beta"`` is always a key of ``state_dict()``.
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
    >>> float(field.replace(beta=0.5).beta)  # a copy with one argument changed
    0.5
    >>> sorted(field.state_dict())  # beta is a key whatever its type (V=None is no tensor at all)
    ['K', 'Q', 'beta']
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

    #: Scalar arguments that may be a number or a tensor (sigmoid attention adds its ``bias``).
    _scalar_names: ClassVar[tuple[str, ...]] = ("beta",)

    def _set_beta(self, beta: object, per_head: int | None = None) -> None:
        self._set_scalar("beta", _check_beta(beta, per_head=per_head))

    def _set_scalar(self, name: str, value: float | Tensor) -> None:
        """Store a checked scalar argument so that ``name`` is always a key of ``state_dict()``.

        A tensor is registered as it is (a Parameter trains, another tensor is a buffer). A number is
        computed with as a Python float (exact, no host synchronisation) and mirrored in a float64 CPU
        buffer for ``state_dict`` (kept out of ``.to()``, see :meth:`_apply`; ``load_state_dict`` updates
        the float). :func:`torch.func.functional_call` swaps the buffer for another tensor, which is
        then used instead.
        """
        floats = self.__dict__.setdefault("_scalar_floats", {})
        mirrors = self.__dict__.setdefault("_scalar_mirrors", {})
        for store in (self._buffers, self._parameters):
            store.pop(name, None)  # replacing a value set before
        if isinstance(value, Tensor):
            floats.pop(name, None)
            mirrors.pop(name, None)
            _register(self, name, value)
        else:
            floats[name] = value
            mirrors[name] = torch.tensor(value, dtype=torch.float64)
            self.register_buffer(name, mirrors[name])

    def _plain(self, name: str) -> bool:
        """True while ``name`` is a number whose mirror buffer has not been swapped (functional_call)."""
        mirror = self.__dict__.get("_scalar_mirrors", {}).get(name)
        return mirror is not None and self._buffers.get(name) is mirror

    def _scalar(self, name: str) -> float | Tensor:
        """The scalar argument ``name``: its Python float, or the tensor in use."""
        return self.__dict__["_scalar_floats"][name] if self._plain(name) else getattr(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._scalar_names and "_scalar_floats" in self.__dict__:
            self._set_scalar(name, _check_beta(value, name=name))
            return
        super().__setattr__(name, value)

    def _apply(self, fn, *args, **kwargs):
        plain = {name: self._buffers.pop(name) for name in self._scalar_names if self._plain(name)}
        try:
            return super()._apply(fn, *args, **kwargs)
        finally:
            self._buffers.update(plain)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        error_msgs = args[-1] if args else kwargs.get("error_msgs")
        for name in ("Q", "K", "V", "W", "mask"):
            if prefix + name in state_dict and name in self._buffers and self._buffers[name] is None:
                if isinstance(error_msgs, list):
                    shape = tuple(state_dict[prefix + name].shape)
                    error_msgs.append(
                        f"the checkpoint has {name} of shape {shape}, but this field was built with {name}=None "
                        f"(the identity, which has no state_dict key); build it with a {name} tensor of that "
                        "shape (e.g. torch.eye) to load the checkpoint"
                    )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        for name in self._scalar_names:
            if self._plain(name) and prefix + name in state_dict:
                self.__dict__["_scalar_floats"][name] = _check_beta(float(self._buffers[name]), name=name)

    @property
    def beta_value(self) -> float | Tensor:
        """``beta`` as the constructor took it: a Python float, or the tensor (with its gradient)."""
        return self._scalar("beta")

    @abc.abstractmethod
    def weights(self, x: Tensor) -> Tensor:
        """Dense attention weights ``(..., n, n)`` for plots and tests (small ``n`` only)."""

    # ----------------------------------------------------------------- conveniences
    def replace(self, **changes: Any) -> AttentionField:
        """A new field of the same class with some constructor arguments changed (tensors are shared).

        Examples
        --------
        >>> import flowlib
        >>> field = flowlib.SoftmaxAttention(beta=2.0)
        >>> field.replace(backend="dense").backend, field.replace(backend="dense").beta_value
        ('dense', 2.0)
        """
        unknown = set(changes) - set(self._init_names)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no argument(s) {sorted(unknown)}; expected {self._init_names}")
        kwargs = {name: getattr(self, name) for name in self._init_names}
        kwargs.update({name: self._scalar(name) for name in self._scalar_names})
        kwargs.update(changes)
        return type(self)(**kwargs)

    def extra_repr(self) -> str:
        parts = []
        for name in self._init_names:
            value = self._scalar(name) if name in self._scalar_names else getattr(self, name)
            if isinstance(value, Tensor):
                kind = "Parameter" if isinstance(value, torch.nn.Parameter) else "tensor"
                value = f"{kind}{tuple(value.shape)}" if value.numel() != 1 else f"{kind}({float(value.detach()):g})"
            parts.append(f"{name}={value}")
        return ", ".join(parts)

    # ----------------------------------------------------------------- shared helpers
    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values ``(Q x_i, K x_j, V x_j)`` with every shape checked against ``x``."""
        d = x.shape[-1]
        Q = None if self.Q is None else _like(check_matrix(self.Q, "Q", cols=d), "Q", x)
        K = None if self.K is None else _like(check_matrix(self.K, "K", cols=d), "K", x)
        V = None if self.V is None else _like(check_matrix(self.V, "V", cols=d, rows=d), "V", x)
        kq = d if Q is None else Q.shape[-2]
        kk = d if K is None else K.shape[-2]
        if kq != kk:
            qs = (d, d) if Q is None else tuple(Q.shape)
            ks = (d, d) if K is None else tuple(K.shape)
            raise ValueError(f"Q and K must have the same number of rows (k); got Q {qs} and K {ks}")
        return apply_linear(Q, x), apply_linear(K, x), apply_linear(V, x)

    def _beta_like(self, x: Tensor) -> float | Tensor:
        """``beta`` as a float, or as a tensor in ``x``'s dtype (any shape: a batched beta stays batched)."""
        if self._plain("beta"):
            return self._scalar("beta")
        b = self.beta
        if isinstance(b, torch.nn.Parameter):
            b = _like(b, "beta", x)
        return b.to(dtype=x.dtype, device=x.device)

    def _mask_for(self, x: Tensor) -> Tensor | None:
        if self.mask is None:
            return None
        mask = check_mask(self.mask, x.shape[-2])
        if mask.device != x.device:
            raise ValueError(
                f"mask is on {mask.device} but the input is on {x.device}; move the field with field.to({str(x.device)!r})"
            )
        return mask

    def _no_positions(self, what: str) -> None:
        if self.causal or self.mask is not None:
            raise ValueError(f"{what} is not defined for masked or causal fields here (the measure carries positions)")


def measure_bias(
    queries: Tensor, points: Tensor, masses: Tensor | None, *, check: bool = True
) -> tuple[Tensor, Tensor | None]:
    """Check ``(queries, points, masses)`` of a mean-field velocity; return ``points`` and the log-mass row bias.

    The bias ``log w_j`` (shape ``(1, m)``) turns the uniform average of :func:`flowlib.softmax_average`
    into the weighted one; a point of zero mass gets ``-inf`` and weight 0 (no boolean indexing, so
    no host synchronisation). The masses must be a floating tensor on the points' device (they are
    used in the points' dtype); with ``check`` their values are checked too (non-negative, finite,
    positive total: one host synchronisation), unless inside a :mod:`torch.func` transform.
    """
    if queries.ndim != 2 or points.ndim != 2 or queries.shape[-1] != points.shape[-1]:
        raise ValueError(
            f"queries and points must have shapes (n, d) and (m, d); got {tuple(queries.shape)}, {tuple(points.shape)}"
        )
    if masses is None:
        return points, None
    if not isinstance(masses, Tensor):
        masses = torch.as_tensor(masses, dtype=points.dtype, device=points.device)
    if not masses.is_floating_point():
        raise TypeError(f"masses must be a floating tensor; got {masses.dtype}")
    if masses.shape != points.shape[:1]:
        raise ValueError(f"masses must have shape ({points.shape[0]},), one per point; got {tuple(masses.shape)}")
    if masses.device != points.device:
        raise ValueError(f"masses are on {masses.device} but the points are on {points.device}")
    masses = masses.to(points.dtype)
    if check and not _transformed(masses):
        bad = ~torch.isfinite(masses) | (masses < 0)
        if bool(bad.any()):
            raise ValueError("masses must be finite and non-negative (a negative mass has no meaning here)")
        if not bool(masses.sum() > 0):
            raise ValueError("masses must have a positive total")
    return points, torch.log(masses).unsqueeze(0)
