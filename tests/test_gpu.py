"""GPU checks (marker ``gpu``): skipped without CUDA; run on a GPU machine with ``pytest -m gpu``."""

from __future__ import annotations

import pytest
import torch

import flowlib as fl

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_default_device_is_cuda():
    assert fl.default_device().type == "cuda"


def test_tf32_is_off():
    assert not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("backend", ["dense", "chunked", "sdpa"])
def test_cuda_matches_cpu(backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g)
    cpu = fl.SoftmaxAttention(beta=2.0, backend="dense")(x.double())
    gpu = fl.SoftmaxAttention(beta=2.0, backend=backend)(x.cuda())
    assert gpu.device.type == "cuda"
    assert float((gpu.double().cpu() - cpu).abs().max()) < 1e-4


def test_large_n_on_gpu_is_memory_linear():
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(200_000, 4, generator=g, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    v = fl.SoftmaxAttention(beta=1.0)(x)
    assert torch.isfinite(v).all()
    assert torch.cuda.max_memory_allocated() < 2 * 2**30  # dense would need 160 GB
