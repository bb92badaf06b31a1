"""Input validation shared by every public function.

Every check raises ``ValueError`` (bad shape or value) or ``TypeError`` (wrong kind of object)
with the expected and the received shape or value in the message; nothing here uses ``assert``.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

__all__ = [
    "check_tokens",
    "check_matrix",
    "check_mask",
    "check_finite",
    "check_real",
    "check_positive_int",
    "check_on_sphere",
    "sphere_tolerance",
    "renamed_kwargs",
]


def check_tokens(x: object, name: str = "x") -> Tensor:
    """Check that ``x`` is a floating tensor of shape ``(..., n, d)`` and return it."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (..., n, d); got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (..., n, d); got {tuple(x.shape)}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must have a floating dtype; got {x.dtype}")
    if x.is_complex():
        raise TypeError(f"{name} must be real; got {x.dtype}")
    if x.shape[-1] < 1 or x.shape[-2] < 1:
        raise ValueError(f"{name} must have n >= 1 tokens of dimension d >= 1; got {tuple(x.shape)}")
    return x


def check_matrix(
    m: object,
    name: str,
    *,
    cols: int | None = None,
    rows: int | None = None,
    ndim: int = 2,
    like: Tensor | None = None,
) -> Tensor:
    """Check a parameter matrix (``ndim`` trailing dimensions are checked, leading ones broadcast).

    Parameters
    ----------
    m
        The parameter; a tensor, or anything ``torch.as_tensor`` accepts.
    name
        Its name, used in messages.
    cols, rows
        Required sizes of the last and second-to-last dimension, or ``None`` for any.
    ndim
        Minimum number of dimensions.
    like
        If given, the result is moved to this tensor's dtype and device.
    """
    if not isinstance(m, Tensor):
        try:
            m = torch.as_tensor(m)
        except Exception as exc:  # pragma: no cover - message only
            raise TypeError(f"{name} must be a tensor; got {type(m).__name__}") from exc
    if m.ndim < ndim:
        raise ValueError(f"{name} must have at least {ndim} dimensions; got shape {tuple(m.shape)}")
    if cols is not None and m.shape[-1] != cols:
        raise ValueError(
            f"{name} must have {cols} columns (the token dimension d = {cols}); got shape {tuple(m.shape)}"
        )
    if rows is not None and m.shape[-2] != rows:
        raise ValueError(f"{name} must have {rows} rows; got shape {tuple(m.shape)}")
    if like is not None:
        m = m.to(dtype=like.dtype, device=like.device)
    return m


def check_mask(mask: object, n: int, m: int | None = None, name: str = "mask") -> Tensor:
    """Check that ``mask`` is a boolean tensor broadcastable to ``(..., n, m)`` (True = attend)."""
    m = n if m is None else m
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a boolean torch.Tensor of shape (..., {n}, {m}); got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool (True = attend); got {mask.dtype}")
    if mask.ndim < 2:
        raise ValueError(f"{name} must have shape (..., {n}, {m}); got {tuple(mask.shape)}")
    if mask.shape[-2] not in (1, n) or mask.shape[-1] not in (1, m):
        raise ValueError(f"{name} must be broadcastable to (..., {n}, {m}); got {tuple(mask.shape)}")
    return mask


def check_finite(x: Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` if ``x`` contains NaN or inf (one device synchronisation)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN/inf")


def check_real(value: object, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    """Check that ``value`` is a finite real number and return it as a float."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a real number; got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return value


def check_positive_int(value: object, name: str) -> int:
    """Check that ``value`` is an integer >= 1 and return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1; got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return value


def sphere_tolerance(dtype: torch.dtype) -> float:
    """Tolerance on ``| ||x|| - 1 |`` used to decide whether tokens lie on the unit sphere."""
    return 1e-6 if dtype == torch.float64 else 1e-4


def check_on_sphere(x: Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` if some token of ``x`` is not of unit norm (to the dtype's tolerance)."""
    tol = sphere_tolerance(x.dtype)
    dev = (torch.linalg.vector_norm(x, dim=-1) - 1).abs().max()
    if not bool(dev <= tol):
        raise ValueError(
            f"{name} must lie on the unit sphere (| ||x_i|| - 1 | <= {tol:g}); got a deviation of "
            f"{float(dev):.3g}. Normalise it with flowlib.unit_normalize."
        )


def renamed_kwargs(since: str = "0.3", **renames: str):
    """Decorator: accept the old keyword ``old=`` for ``new=`` (``renamed_kwargs(old="new")``), with a
    ``DeprecationWarning``; passing both raises ``TypeError``. The signature shown is the new one."""
    import functools
    import warnings

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__name__}() got {new}= and its deprecated name {old}=; pass {new}= only")
                    warnings.warn(
                        f"{fn.__name__}({old}=...) is deprecated since flowlib {since}; use {new}=...",
                        DeprecationWarning,
                        stacklevel=2,
                    )
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return deco
