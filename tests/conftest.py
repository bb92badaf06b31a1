"""Shared fixtures. No global seeds or dtypes: every test makes its own generator."""

from __future__ import annotations

import os

import pytest
import torch

# Keep the default suite fast and deterministic on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded per test."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=[torch.float64, torch.float32], ids=["f64", "f32"])
def dtype(request) -> torch.dtype:
    return request.param


def randn(*shape, gen, dtype=torch.float64, device="cpu", scale=1.0):
    return (scale * torch.randn(*shape, generator=gen, dtype=dtype)).to(device)
