"""The abstract velocity field and the helpers every attention field shares."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

from .._validation import check_finite, check_mask, check_matrix, check_on_sphere, check_real, check_tokens
from .reductions import BACKENDS

__all__ = ["VelocityField", "apply_linear"]


def apply_linear(M: Tensor | None, x: Tensor) -> Tensor:
    """``y = M x`` for each token (column-vector convention), i.e. ``x @ M^T``; ``None`` is the identity."""
    return x if M is None else x @ M.mT


class VelocityField(abc.ABC):
    """A velocity field on token configurations: ``field(x)`` maps ``(..., n, d)`` to ``(..., n, d)``.

    Subclasses are frozen dataclasses. Calling a field validates its input (shapes, dtype, and for
    fields on the sphere that the tokens have unit norm); :meth:`velocity` evaluates without the
    value checks and is what the integrators call at every stage, after :meth:`validate` has
    checked the initial state once.

    Attributes
    ----------
    perm_equivariant : bool
        Whether ``field(x[..., perm, :]) == field(x)[..., perm, :]`` for every permutation
        (False for causal or masked fields).
    on_sphere : bool
        Whether the field is tangent to the unit sphere and expects unit-norm tokens.
    """

    on_sphere: ClassVar[bool] = False

    @property
    def perm_equivariant(self) -> bool:
        return not (getattr(self, "causal", False) or getattr(self, "mask", None) is not None)

    def __call__(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        x = check_tokens(x)
        if self.on_sphere:
            check_on_sphere(x)
        return self.velocity(x, t)

    def validate(self, x: Tensor) -> None:
        """Check ``x`` once, fully: shapes and parameters, finiteness, and the sphere if relevant."""
        x = check_tokens(x)
        check_finite(x)
        if self.on_sphere:
            check_on_sphere(x)
        self.velocity(x[..., :1, :] if self.perm_equivariant else x, None)  # shape checks on parameters

    @abc.abstractmethod
    def velocity(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        """Evaluate the field without the value checks of :meth:`__call__` (shape ``(..., n, d)``)."""

    @abc.abstractmethod
    def weights(self, x: Tensor) -> Tensor:
        """Dense attention weights ``(..., n, n)`` for plots and tests (small ``n`` only)."""

    # ----------------------------------------------------------------- shared helpers
    def _common_checks(self, *, scalar_beta: bool = True) -> None:
        if scalar_beta:
            check_real(self.beta, "beta")
        backend = getattr(self, "backend", "auto")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        mask = getattr(self, "mask", None)
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise TypeError(f"mask must be a boolean torch.Tensor; got {type(mask).__name__}")
            if mask.dtype != torch.bool:
                raise TypeError(f"mask must have dtype torch.bool (True = attend); got {mask.dtype}")

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

    def _mask_for(self, x: Tensor) -> Tensor | None:
        mask = getattr(self, "mask", None)
        if mask is None:
            return None
        n = x.shape[-2]
        return check_mask(mask, n).to(x.device)
