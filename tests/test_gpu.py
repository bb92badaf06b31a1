"""GPU checks (marker ``gpu``), run by ``make test-gpu`` on a CUDA machine, where a skip is a failure.

Every field and backend is compared with the CPU (values and gradients), in float32 and, where the
kernels exist, float16/bfloat16; ``simulate``, ``gaussian``, ``pde`` and ``measures`` run on the device
of their input. ``FLOWLIB_GPU_TEST_DEVICE`` (default ``cuda``) lets the test code itself be exercised on
another device (e.g. ``cpu``) on a machine without a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import flowlib as fl

DEVICE = torch.device(os.environ.get("FLOWLIB_GPU_TEST_DEVICE", "cuda"))
AVAILABLE = torch.cuda.is_available() if DEVICE.type == "cuda" else True
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not AVAILABLE, reason=f"needs {DEVICE.type}")]
F64 = torch.float64


def _fields(d: int) -> dict[str, fl.VelocityField]:
    g = torch.Generator().manual_seed(0)

    def m(*shape):
        return nn.Parameter(0.5 * torch.randn(*shape, generator=g, dtype=F64))

    return {
        "softmax": fl.SoftmaxAttention(Q=m(d, d), K=m(d, d), V=m(d, d), beta=0.8),
        "causal": fl.SoftmaxAttention(Q=m(d, d), K=m(d, d), V=m(d, d), beta=0.8, causal=True),
        "l2": fl.L2Attention(Q=m(d, d), K=m(d, d), V=m(d, d), beta=0.5),
        "sinkhorn": fl.SinkhornAttention(Q=m(d, d), K=m(d, d), V=m(d, d), beta=0.7, n_half_steps=5),
        "sigmoid": fl.SigmoidAttention(Q=m(d, d), K=m(d, d), V=m(d, d), beta=0.6, bias=-0.2),
        "multihead": fl.MultiHeadAttention(Q=m(2, 2, d), K=m(2, 2, d), V=m(2, d, d), W=m(2, d, d), beta=0.9),
        "sphere": fl.SphereAttention(Q=m(d, d), K=m(d, d), V=m(d, d), beta=2.0),
        "usa": fl.SphereAttention(beta=2.0, normalized=False),
    }


NAMES = list(_fields(2))
CASES = [(n, b) for n in NAMES for b in ("dense", "chunked", "sdpa") if not (n == "sigmoid" and b == "sdpa")]


def test_default_device_is_cuda():
    if DEVICE.type != "cuda":
        pytest.skip("only meaningful on CUDA (a failure under make test-gpu)")
    assert fl.default_device().type == "cuda"


def test_flowlib_leaves_tf32_off():
    """flowlib never switches TF32 on behind the user's back (float32 results would lose digits)."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    fl.simulate(fl.SoftmaxAttention(beta=1.0), x, t1=1.0, n_steps=4)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize(("name", "backend"), CASES)
def test_every_field_and_backend_matches_the_cpu_with_gradients(name, backend):
    """float32 on the device against float64 dense on the CPU: values and gradients in x and parameters."""
    x = fl.uniform_sphere(300, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    ref_field = _fields(3)[name].replace(backend="dense")
    xr = x.clone().requires_grad_(True)
    ref = ref_field(xr)
    ref.pow(2).sum().backward()
    field = _fields(3)[name].replace(backend=backend, chunk_size=64).to(device=DEVICE, dtype=torch.float32)
    assert all(p.device.type == DEVICE.type for p in field.parameters())
    xd = x.to(DEVICE, torch.float32).requires_grad_(True)
    out = field(xd)
    assert out.device.type == DEVICE.type and out.dtype == torch.float32
    out.pow(2).sum().backward()
    scale = ref.abs().max().item()
    assert (out.detach().double().cpu() - ref.detach()).abs().max().item() < 1e-4 * (1 + scale)
    grads_ref = [xr.grad] + [p.grad for p in ref_field.parameters()]
    grads = [xd.grad] + [p.grad for p in field.parameters()]
    for gr, gd in zip(grads_ref, grads):
        assert (gd.double().cpu() - gr).abs().max().item() < 1e-3 * (1 + gr.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["dense", "chunked", "sdpa"])
def test_half_precision_softmax(dtype, backend):
    if DEVICE.type == "cpu" and dtype == torch.float16 and backend == "sdpa":
        pytest.skip("no float16 fused attention on the CPU")
    x = torch.randn(2000, 16, generator=torch.Generator().manual_seed(2))
    ref = fl.SoftmaxAttention(beta=0.5, backend="dense")(x.double())
    out = fl.SoftmaxAttention(beta=0.5, backend=backend, chunk_size=256)(x.to(DEVICE, dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3
    assert (out.double().cpu() - ref).abs().max().item() < tol * (1 + ref.abs().max().item())


def test_large_n_on_the_device_is_memory_linear():
    if DEVICE.type != "cuda":
        pytest.skip("CUDA memory statistics")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(200_000, 4, generator=g, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    v = fl.SoftmaxAttention(beta=1.0)(x)
    assert torch.isfinite(v).all()
    assert torch.cuda.max_memory_allocated() < 2 * 2**30  # dense would need 160 GB


@pytest.mark.parametrize("d", [2, 3, 16])
def test_sdpa_on_cuda_is_memory_linear_for_small_head_dims(d):
    """Head dims that are not multiples of 8 are padded, so the fused kernels (not the math one) run."""
    if DEVICE.type != "cuda":
        pytest.skip("CUDA memory statistics")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(100_000, d, generator=g, device="cuda")
    stats = fl.measure_call(lambda: fl.SoftmaxAttention(beta=1.0, backend="sdpa")(x), device="cuda")
    assert stats.peak_bytes < 256 * 2**20, stats.peak_bytes  # the math kernel would need 40 GB
    ref = fl.SoftmaxAttention(beta=1.0, backend="chunked")(x[:5000])
    assert float((fl.SoftmaxAttention(beta=1.0, backend="sdpa")(x[:5000]) - ref).abs().max()) < 1e-4


@pytest.mark.parametrize("name", ["sigmoid", "sinkhorn"])
def test_chunked_fields_on_cuda_are_memory_linear(name):
    if DEVICE.type != "cuda":
        pytest.skip("CUDA memory statistics")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(50_000, 3, generator=g, device="cuda")
    field = fl.SigmoidAttention(bias=-1.0) if name == "sigmoid" else fl.SinkhornAttention(n_half_steps=3)
    stats = fl.measure_call(lambda: field(x), device="cuda")
    assert torch.isfinite(stats.result).all() and stats.peak_bytes < 512 * 2**20  # dense: 10 GB


def test_chunk_blocks_are_wide_on_cuda():
    from flowlib.fields.reductions import _chunk_rows

    q = torch.empty(10**6, 4, device=DEVICE)
    rows = _chunk_rows(q, q, q, None)
    assert rows >= (16 if DEVICE.type == "cuda" else 1)  # one row per block is launch-bound on a GPU


def test_simulate_and_training_on_the_device():
    x0 = fl.uniform_sphere(64, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    field = _fields(3)["softmax"]
    ref = fl.simulate(field, x0, t1=1.0, n_steps=20, method="rk4").final
    dev_field = _fields(3)["softmax"].to(DEVICE, torch.float32)
    out = fl.simulate(dev_field, x0.to(DEVICE, torch.float32), t1=1.0, n_steps=20, method="rk4")
    assert out.x.device.type == DEVICE.type
    assert (out.final.double().cpu() - ref.detach()).abs().max().item() < 1e-4
    out.final.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.device.type == DEVICE.type for p in dev_field.parameters())


def test_gaussian_solver_on_the_device():
    eye = torch.eye(2, dtype=torch.float32)
    Q = torch.tensor([[0.5, 0.2], [0.0, 0.4]])
    args = ("softmax", torch.tensor([0.3, -0.1]), eye, Q, -Q)
    cpu = fl.solve_gaussian(*args, t1=2.0, n_steps=100)
    dev = fl.solve_gaussian(*(a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args), t1=2.0, n_steps=100)
    assert dev.cov.device.type == DEVICE.type and dev.status == cpu.status == "ok"
    assert (dev.cov.cpu() - cpu.cov).abs().max().item() < 1e-5
    blow = fl.solve_gaussian("softmax", torch.zeros(2, device=DEVICE), eye.to(DEVICE), t1=2.0, n_steps=400)
    assert blow.status == "blowup" and abs(float(blow.stop_time) - 0.5) < 0.01  # t* = 1/2 for Q = K = V = I


def test_pde_solver_on_the_device():
    grid = fl.make_grid(-3.0, 3.0, 60, device=DEVICE)
    rho0 = fl.pde.density_on_grid(grid, lambda x: torch.exp(-0.5 * (x[..., 0] / 0.7) ** 2))
    assert rho0.device.type == DEVICE.type
    field = fl.SoftmaxAttention(V=torch.tensor([[-0.5]], dtype=F64), beta=1.0)
    dev = fl.solve_transformer_pde(field.to(DEVICE), rho0, grid, t1=0.5, n_save=2)
    cpu_grid = fl.make_grid(-3.0, 3.0, 60)
    cpu = fl.solve_transformer_pde(field, rho0.cpu(), cpu_grid, t1=0.5, n_save=2)
    assert dev.density.device.type == DEVICE.type
    assert (dev.density.cpu() - cpu.density).abs().max().item() < 1e-10


def test_pde_solver_follows_the_density_not_the_grid():
    """B4: a CUDA density with a default (CPU) grid ran the whole solve on the CPU."""
    grid = fl.make_grid(-3.0, 3.0, 60)  # on the CPU
    rho0 = fl.pde.density_on_grid(grid, lambda x: torch.exp(-0.5 * (x[..., 0] / 0.7) ** 2))
    field = fl.SoftmaxAttention(V=torch.tensor([[-0.5]], dtype=F64), beta=1.0)
    dev = fl.solve_transformer_pde(field.to(DEVICE), rho0.to(DEVICE), grid, t1=0.5, n_save=2)
    cpu = fl.solve_transformer_pde(field, rho0, grid, t1=0.5, n_save=2)
    assert dev.density.device.type == DEVICE.type and dev.points().device.type == DEVICE.type
    assert (dev.density.cpu() - cpu.density).abs().max().item() < 1e-10


def test_measures_on_the_device():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(3000, 3, generator=g, dtype=F64), torch.randn(3000, 3, generator=g, dtype=F64) + 0.5
    P = fl.measures.random_directions(3, 64, generator=g, dtype=F64)
    cpu = fl.sliced_wasserstein(x, y, projections=P)
    dev = fl.sliced_wasserstein(x.to(DEVICE), y.to(DEVICE), projections=P.to(DEVICE))
    assert dev.device.type == DEVICE.type and abs(dev.item() - cpu.item()) < 1e-10
    w1 = fl.wasserstein_1d(x[:, 0].to(DEVICE), y[:, 0].to(DEVICE), p=1)
    assert abs(w1.item() - fl.wasserstein_1d(x[:, 0], y[:, 0], p=1).item()) < 1e-10
    # a CPU generator drives random directions for device tensors (drawn on the CPU, then moved)
    s1 = fl.sliced_wasserstein(x.to(DEVICE), y.to(DEVICE), generator=torch.Generator().manual_seed(5))
    s2 = fl.sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(5))
    assert abs(s1.item() - s2.item()) < 1e-10


def test_init_with_a_cpu_generator_on_the_device():
    a = fl.uniform_sphere(5, 3, generator=torch.Generator().manual_seed(6), device=DEVICE)
    b = fl.uniform_sphere(5, 3, generator=torch.Generator().manual_seed(6))
    assert a.device.type == DEVICE.type and torch.allclose(a.cpu(), b)
