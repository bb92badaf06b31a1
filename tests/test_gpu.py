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


@pytest.mark.parametrize("d", [2, 3, 16])
def test_sdpa_on_cuda_is_memory_linear_for_small_head_dims(d):
    """Head dims that are not multiples of 8 are padded, so the fused kernels (not the math one) run."""
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(100_000, d, generator=g, device="cuda")
    stats = fl.measure_call(lambda: fl.SoftmaxAttention(beta=1.0, backend="sdpa")(x), device="cuda")
    assert stats.peak_bytes < 256 * 2**20, stats.peak_bytes  # the math kernel would need 40 GB
    ref = fl.SoftmaxAttention(beta=1.0, backend="chunked")(x[:5000])
    assert float((fl.SoftmaxAttention(beta=1.0, backend="sdpa")(x[:5000]) - ref).abs().max()) < 1e-4


@pytest.mark.parametrize("name", ["sigmoid", "sinkhorn"])
def test_chunked_fields_on_cuda(name):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(50_000, 3, generator=g, device="cuda")
    field = fl.SigmoidAttention(bias=-1.0) if name == "sigmoid" else fl.SinkhornAttention(n_iter=3)
    stats = fl.measure_call(lambda: field(x), device="cuda")
    assert torch.isfinite(stats.result).all() and stats.peak_bytes < 512 * 2**20  # dense: 10 GB
