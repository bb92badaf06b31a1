"""Masks for masked (e.g. causal) attention. Convention: True = may attend."""

from __future__ import annotations

import torch
from torch import Tensor

from .reductions import causal_mask

__all__ = ["causal_mask", "alibi_bias", "positions"]


def alibi_bias(n: int, slope: float, *, device=None, dtype=None) -> Tensor:
    """ALiBi-style additive bias ``-slope * |i - j|`` of shape ``(n, n)`` (a linear penalty on distance)."""
    i = torch.arange(n, device=device, dtype=dtype or torch.get_default_dtype())
    return -slope * (i[:, None] - i[None, :]).abs()


def positions(n: int, *, device=None, dtype=None) -> Tensor:
    """Positions ``s_i = (i + 1) / n`` in ``(0, 1]`` of ``n`` tokens, for the conditional (masked) view."""
    return torch.arange(1, n + 1, device=device, dtype=dtype or torch.get_default_dtype()) / n
