"""Sinkhorn (doubly stochastic) self-attention in the log domain."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor

from .._validation import check_positive_int, check_real
from .base import AttentionField
from .reductions import Backend, _transformed, attention_logits, logsumexp_rows, softmax_average

__all__ = ["SinkhornAttention"]


class SinkhornAttention(AttentionField):
    r"""Sinkhorn attention: the softmax kernel made (approximately) doubly stochastic.

    Starting from :math:`C_{ij} = \beta \langle Qx_i, Kx_j\rangle`, the weights are
    :math:`P_{ij} = \exp(C_{ij} + f_i + g_j)`, where the potentials ``f`` (rows) and ``g`` (columns)
    are updated by ``n_half_steps`` alternating half-steps of Sinkhorn's algorithm in the log domain:
    a row step sets :math:`f_i = -\log\sum_j e^{C_{ij}+g_j}` (rows sum to 1), a column step sets
    :math:`g_j = -\log\sum_i e^{C_{ij}+f_i}` (columns sum to 1). Then :math:`v_i = \sum_j P_{ij} V x_j`.
    One iteration of Sinkhorn's algorithm in POT's sense (``numItermax``) is two half-steps.

    Parameters
    ----------
    Q, K : Tensor, shape (k, d), optional
        Query and key matrices (``None`` = identity).
    V : Tensor, shape (d, d), optional
        Value matrix (``None`` = identity).
    beta : float or Tensor
        Inverse temperature (``1/epsilon`` of entropic optimal transport); a tensor keeps its gradient.
    n_half_steps : int
        Number of half-steps (``n_iter``, its name before flowlib 0.3, is a deprecated alias). The
        sequence alternates and **ends** with ``last_step``; with ``n_half_steps=1`` and
        ``last_step="rows"`` this is exactly softmax attention.
    tol : float, "auto" or None
        Tolerance on the marginal that the last half-step does not fix. A float also stops early once
        it is reached, checked every :attr:`check_every` half-steps (each check costs a device
        synchronisation). ``"auto"`` (the default) does not stop early. Either way, a checked call
        (``field(x)``, and :func:`flowlib.simulate`'s check of the initial state) warns
        (``RuntimeWarning``) when the error after ``n_half_steps`` exceeds the tolerance, ``"auto"``
        meaning 1e-6 in float64, 1e-3 in float32 and 1e-2 in half precision. ``None``: no check, no
        warning (e.g. to study deliberately few half-steps).
    last_step : {"rows", "cols"}
        Which marginal is exact. ``"rows"``: every ``v_i`` is a proper weighted average.
        ``"cols"``: the mean law ``mean(v) = V mean(x)`` holds exactly, even before convergence.
    backend : {"auto", "dense", "chunked", "sdpa"}
        Backend of the log-sum-exp passes and of the final average.

    Notes
    -----
    The potentials need O(n) memory, so the chunked backend runs Sinkhorn attention without
    ever forming the ``n x n`` plan. :meth:`marginal_error` reports ``max_i |sum_j P_ij - 1|`` and
    ``max_j |sum_i P_ij - 1|``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    >>> P = fl.SinkhornAttention(beta=1.0, n_half_steps=200).weights(x)
    >>> torch.allclose(P.sum(-1), torch.ones(6, dtype=torch.float64))  # rows sum to 1 (the last step)
    True
    >>> torch.allclose(P.sum(-2), torch.ones(6, dtype=torch.float64), atol=1e-6)  # and, after many steps, columns too
    True
    >>> one = fl.SinkhornAttention(n_half_steps=1, tol=None)  # one half-step is softmax (no convergence check)
    >>> torch.allclose(one(x), fl.SoftmaxAttention()(x))
    True
    """

    _init_names = ("Q", "K", "V", "beta", "n_half_steps", "tol", "last_step", "backend", "chunk_size")
    #: Half-steps between two convergence checks when ``tol`` is a number.
    check_every: int = 4

    def __init__(
        self,
        *,
        Q: Tensor | None = None,
        K: Tensor | None = None,
        V: Tensor | None = None,
        beta: float | Tensor = 1.0,
        n_half_steps: int | None = None,
        tol: float | str | None = "auto",
        last_step: Literal["rows", "cols"] = "rows",
        backend: Backend = "auto",
        chunk_size: int | None = None,
        n_iter: int | None = None,
    ) -> None:
        super().__init__(Q=Q, K=K, V=V, beta=beta, backend=backend, chunk_size=chunk_size)
        if n_iter is not None:
            if n_half_steps is not None:
                raise TypeError("pass n_half_steps only (n_iter is its deprecated name)")
            warnings.warn(
                "SinkhornAttention(n_iter=...) is deprecated since flowlib 0.3; use n_half_steps=... "
                "(the same number: half-steps, two per Sinkhorn iteration)",
                DeprecationWarning,
                stacklevel=2,
            )
            n_half_steps = n_iter
        self.n_half_steps = check_positive_int(50 if n_half_steps is None else n_half_steps, "n_half_steps")
        if tol is None or tol == "auto":
            self.tol = tol
        else:
            self.tol = check_real(tol, "tol", positive=True)
        if last_step not in ("rows", "cols"):
            raise ValueError(f"last_step must be 'rows' or 'cols'; got {last_step!r}")
        self.last_step = last_step

    @property
    def n_iter(self) -> int:
        """Deprecated alias of :attr:`n_half_steps`."""
        return self.n_half_steps

    def _tolerance(self, dtype: torch.dtype) -> float | None:
        if self.tol != "auto":
            return self.tol
        return {torch.float64: 1e-6, torch.float32: 1e-3}.get(dtype, 1e-2)

    # ------------------------------------------------------------------ potentials
    def _lse(self, a: Tensor, b: Tensor, bias: Tensor | None) -> Tensor:
        beta = self._beta_like(a)
        return logsumexp_rows(a, b, beta=beta, bias=bias, backend=self.backend, chunk_size=self.chunk_size)

    def potentials(self, x: Tensor, *, check: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Run the half-steps; return ``(q, k, v, f, g)`` with ``f: (..., n)`` and ``g: (..., n)``.

        With a numeric ``tol`` the loop may stop early (host synchronisations); with ``check`` (a checked
        call) a ``RuntimeWarning`` reports a marginal error above the tolerance.
        """
        q, k, v = self._qkv(x)
        f = torch.zeros(q.shape[:-1], dtype=x.dtype, device=x.device)
        g = torch.zeros(k.shape[:-1], dtype=x.dtype, device=x.device)
        steps = ["rows" if (self.n_half_steps - 1 - s) % 2 == 0 else "cols" for s in range(self.n_half_steps)]
        if self.last_step == "cols":
            steps = ["cols" if s == "rows" else "rows" for s in steps]
        early = isinstance(self.tol, float) and not _transformed(x)
        for s, kind in enumerate(steps):
            if kind == "rows":
                f = -self._lse(q, k, g.unsqueeze(-2))
            else:
                g = -self._lse(k, q, f.unsqueeze(-2))
            if early and s >= 1 and (s + 1) % self.check_every == 0 and s + 1 < len(steps):
                row_err, col_err = self._errors(q, k, f, g)
                other = col_err if kind == "rows" else row_err
                if bool((other <= self.tol).all()):
                    return q, k, v, f, g
        tol = self._tolerance(x.dtype)
        if (check or early) and tol is not None and not _transformed(x):
            row_err, col_err = self._errors(q, k, f, g)
            worst = float(torch.maximum(row_err, col_err).max())
            if worst > tol:
                warnings.warn(
                    f"Sinkhorn attention did not reach tol={tol:g} in n_half_steps={self.n_half_steps} half-steps "
                    f"(marginal error {worst:.3g}); raise n_half_steps, or pass tol=None to skip this check",
                    RuntimeWarning,
                    stacklevel=4,
                )
        return q, k, v, f, g

    def _errors(self, q, k, f, g) -> tuple[Tensor, Tensor]:
        rows = torch.exp(f + self._lse(q, k, g.unsqueeze(-2)))
        cols = torch.exp(g + self._lse(k, q, f.unsqueeze(-2)))
        return (rows - 1).abs().amax(dim=-1), (cols - 1).abs().amax(dim=-1)

    # ------------------------------------------------------------------ public API
    def velocity(self, x: Tensor) -> Tensor:
        return self._velocity(x, check=False)

    def _checked_velocity(self, x: Tensor) -> Tensor:
        return self._velocity(x, check=True)

    def validate(self, x: Tensor) -> None:
        """As :meth:`VelocityField.validate`, and warn if Sinkhorn has not converged on ``x``."""
        super().validate(x)
        with torch.no_grad():
            self.potentials(x, check=True)

    def _velocity(self, x: Tensor, check: bool) -> Tensor:
        q, k, v, f, g = self.potentials(x, check=check)
        avg = softmax_average(
            q, k, v, beta=self._beta_like(x), bias=g.unsqueeze(-2), backend=self.backend, chunk_size=self.chunk_size
        )
        if self.last_step == "rows":
            return avg  # after a row step, P_ij = softmax_j(C_ij + g_j) exactly
        # After a column step the row sums r_i = exp(f_i + lse_j(C_ij + g_j)) are not 1.
        r = torch.exp(f + self._lse(q, k, g.unsqueeze(-2)))
        return r.unsqueeze(-1) * avg

    def weights(self, x: Tensor) -> Tensor:
        q, k, _, f, g = self.potentials(x)
        return torch.exp(attention_logits(q, k, beta=self._beta_like(x)) + f.unsqueeze(-1) + g.unsqueeze(-2))

    def marginal_error(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(row_err, col_err)``, each of shape ``(...)``: max deviation of row / column sums from 1."""
        q, k, _, f, g = self.potentials(x)
        return self._errors(q, k, f, g)

    def gaussian_closure(self) -> tuple[str, dict[str, Any]]:
        return "sinkhorn", {"Q": self.Q, "K": self.K, "V": self.V, "beta": self.beta_value}
