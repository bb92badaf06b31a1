"""Attention fields: structure, conventions and backends (DESIGN 5.3, 5.4)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowlib as fl
from flowlib.fields.reductions import DENSE_LIMIT_BYTES

F64 = torch.float64


def _params(d, seed, k=None):
    g = torch.Generator().manual_seed(seed)
    k = d if k is None else k
    Q = torch.randn(k, d, generator=g, dtype=F64)
    K = torch.randn(k, d, generator=g, dtype=F64)
    V = torch.randn(d, d, generator=g, dtype=F64)
    return Q, K, V


def _fields(d, seed=0):
    Q, K, V = _params(d, seed)
    g = torch.Generator().manual_seed(seed + 1)
    H = 2
    return {
        "softmax": fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=0.8),
        "l2": fl.L2Attention(Q=Q, K=K, V=V, beta=0.5),
        "sinkhorn": fl.SinkhornAttention(Q=Q, K=K, V=V, beta=0.7, n_half_steps=9),
        "sigmoid": fl.SigmoidAttention(Q=Q, K=K, V=V, beta=0.6, bias=-0.2),
        "multihead": fl.MultiHeadAttention(
            Q=torch.randn(H, 2, d, generator=g, dtype=F64),
            K=torch.randn(H, 2, d, generator=g, dtype=F64),
            V=torch.randn(H, d, d, generator=g, dtype=F64),
            W=torch.randn(H, d, d, generator=g, dtype=F64),
            beta=torch.tensor([0.5, 1.5]),
        ),
        "sphere": fl.SphereAttention(beta=2.0, V=V),
        "usa": fl.SphereAttention(beta=2.0, normalized=False),
    }


FIELD_NAMES = list(_fields(2))


@pytest.mark.parametrize("name", FIELD_NAMES)
@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 12), d=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_permutation_equivariance(name, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    field = _fields(d, seed)[name]
    if field.on_sphere:
        x = fl.unit_normalize(x)
    perm = torch.randperm(n, generator=g)
    assert field.perm_equivariant
    diff = (field(x[perm]) - field(x)[perm]).abs().max()
    assert float(diff) < 1e-12


def test_column_vector_convention():
    """v = V y (column vectors): with beta = 0 every token moves to V times the mean."""
    V = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=F64)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    v = fl.SoftmaxAttention(V=V, beta=0.0)(x)
    assert torch.allclose(v, torch.tensor([[1.5, 0.5], [1.5, 0.5]], dtype=F64))  # V @ [0.5, 0.5]


def test_beta_limits(gen):
    x = torch.randn(6, 3, generator=gen, dtype=F64)
    P0 = fl.SoftmaxAttention(beta=0.0).weights(x)
    assert torch.equal(P0, torch.full((6, 6), 1 / 6, dtype=F64))
    # beta -> infinity: hardmax, with the error bound (n - 1) exp(-beta * gap) for the logit gap
    S = x @ x.mT
    top2 = S.topk(2, dim=-1).values
    gap = float((top2[:, 0] - top2[:, 1]).min())
    for beta in (20.0, 200.0):
        P = fl.SoftmaxAttention(beta=beta).weights(x)
        onehot = torch.nn.functional.one_hot(S.argmax(dim=-1), 6).to(F64)
        assert float((P - onehot).abs().max()) <= 5 * math.exp(-beta * gap) + 1e-15
    e = torch.eye(4, dtype=F64)  # orthonormal tokens: gap 1
    assert float((fl.SoftmaxAttention(beta=200.0).weights(e) - e).abs().max()) < 1e-6


def test_causal_attention_ignores_the_future(gen):
    x = torch.randn(7, 3, generator=gen, dtype=F64)
    Q, K, V = _params(3, 5)
    field = fl.SoftmaxAttention(Q=Q, K=K, V=V, causal=True)
    assert not field.perm_equivariant
    v = field(x)
    y = x.clone()
    y[4:] += torch.randn(3, 3, generator=gen, dtype=F64)
    w = field(y)
    assert float((v[:4] - w[:4]).abs().max()) == 0.0
    assert float((v[0] - V @ x[0]).abs().max()) < 1e-15  # the first token only sees itself
    assert torch.allclose(fl.SoftmaxAttention(Q=Q, K=K, V=V, mask=fl.causal_mask(7))(x), v, atol=1e-15)


@pytest.mark.parametrize("backend", ["dense", "chunked", "sdpa"])
def test_fully_masked_row_gives_zero(gen, backend):
    x = torch.randn(5, 2, generator=gen, dtype=F64)
    mask = fl.causal_mask(5, include_self=False)
    field = fl.SoftmaxAttention(mask=mask, backend=backend, chunk_size=2)
    v = field(x)
    assert torch.isfinite(v).all()
    assert float(v[0].abs().max()) == 0.0
    assert torch.allclose(v[1], x[0])  # token 1 sees only token 0
    # gradients stay finite too
    xg = x.clone().requires_grad_(True)
    field(xg).sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_sinkhorn_one_half_step_is_softmax(gen):
    x = torch.randn(9, 3, generator=gen, dtype=F64)
    Q, K, V = _params(3, 2)
    a = fl.SinkhornAttention(Q=Q, K=K, V=V, beta=1.3, n_half_steps=1)(x)
    b = fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=1.3)(x)
    assert float((a - b).abs().max()) == 0.0


@pytest.mark.parametrize("last", ["rows", "cols"])
def test_sinkhorn_marginals(gen, last):
    x = torch.randn(12, 3, generator=gen, dtype=F64)
    errs = []
    for n_iter in (10, 20, 50, 100):
        row, col = fl.SinkhornAttention(beta=1.0, n_half_steps=n_iter, last_step=last).marginal_error(x)
        exact, other = (row, col) if last == "rows" else (col, row)
        assert float(exact) < 1e-13
        errs.append(float(other))
    # measured: 6.1e-2, 7.4e-3, 1.3e-5, 3.6e-10 (linear convergence)
    assert all(b < 0.2 * a for a, b in zip(errs, errs[1:]))
    assert errs[-1] < 1e-8
    P = fl.SinkhornAttention(beta=1.0, n_half_steps=200).weights(x)
    assert torch.allclose(P.sum(0), torch.ones(12, dtype=F64), atol=1e-10)
    assert torch.allclose(P.sum(1), torch.ones(12, dtype=F64), atol=1e-12)


def test_sinkhorn_mean_law(gen):
    """Column-ending Sinkhorn preserves mean(v) = V mean(x), even unconverged; softmax does not."""
    x = torch.randn(10, 3, generator=gen, dtype=F64) * 2
    Q, K, V = _params(3, 4)
    for n_iter in (2, 8):
        v = fl.SinkhornAttention(Q=Q, K=K, V=V, n_half_steps=n_iter, last_step="cols")(x)
        assert float((v.mean(0) - V @ x.mean(0)).abs().max()) < 1e-13
    soft = fl.SoftmaxAttention(Q=Q, K=K, V=V)(x)
    assert float((soft.mean(0) - V @ x.mean(0)).abs().max()) > 1e-2
    # integrated: mean(X_T) = e^{TV} mean(X_0)
    Vs = 0.3 * V
    traj = fl.simulate(
        fl.SinkhornAttention(Q=Q, K=K, V=Vs, n_half_steps=6, last_step="cols"), x, t1=1.0, n_steps=64, method="rk4"
    )
    expected = torch.linalg.matrix_exp(Vs) @ x.mean(0)
    assert float((traj.final.mean(0) - expected).abs().max()) < 1e-8


def test_sinkhorn_warns_when_not_converged(gen):
    x = torch.randn(10, 2, generator=gen, dtype=F64) * 3
    with pytest.warns(RuntimeWarning, match="did not reach"):
        fl.SinkhornAttention(beta=2.0, n_half_steps=2, tol=1e-12)(x)
    # with enough iterations it stops early and quietly
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fl.SinkhornAttention(beta=0.5, n_half_steps=500, tol=1e-8)(x)


def test_l2_translation_equivariance(gen):
    x = torch.randn(8, 3, generator=gen, dtype=F64)
    Q = torch.randn(3, 3, generator=gen, dtype=F64)
    field = fl.L2Attention(Q=Q, K=Q, beta=0.7)
    c = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
    assert float((field(x + c) - (field(x) + c)).abs().max()) < 1e-13


def test_l2_weights_match_distances(gen):
    x = torch.randn(6, 2, generator=gen, dtype=F64)
    Q, K, _ = _params(2, 7)
    P = fl.L2Attention(Q=Q, K=K, beta=0.4).weights(x)
    D = torch.cdist(x @ Q.mT, x @ K.mT) ** 2
    assert torch.allclose(P, torch.softmax(-0.4 * D, dim=-1), atol=1e-14)


def test_multihead_reductions(gen):
    x = torch.randn(7, 4, generator=gen, dtype=F64)
    Q, K, V = _params(4, 3)
    single = fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=0.9)(x)
    multi = fl.MultiHeadAttention(Q=Q[None], K=K[None], V=V[None], beta=0.9)(x)
    assert float((single - multi).abs().max()) < 1e-14
    # W = None concatenates: head h fills coordinates [2h, 2h+2)
    H, dv = 2, 2
    Qh = torch.randn(H, 3, 4, generator=gen, dtype=F64)
    Kh = torch.randn(H, 3, 4, generator=gen, dtype=F64)
    Vh = torch.randn(H, dv, 4, generator=gen, dtype=F64)
    cat = fl.MultiHeadAttention(Q=Qh, K=Kh, V=Vh)(x)
    for h in range(H):
        P = torch.softmax((x @ Qh[h].mT) @ (x @ Kh[h].mT).mT, dim=-1)
        assert torch.allclose(cat[:, 2 * h : 2 * h + 2], P @ (x @ Vh[h].mT), atol=1e-14)
    W = torch.zeros(H, 4, dv, dtype=F64)
    W[0, :2] = torch.eye(2, dtype=F64)
    W[1, 2:] = torch.eye(2, dtype=F64)
    assert torch.allclose(fl.MultiHeadAttention(Q=Qh, K=Kh, V=Vh, W=W)(x), cat, atol=1e-14)


def test_sigmoid_matches_formula(gen):
    x = torch.randn(5, 3, generator=gen, dtype=F64)
    Q, K, V = _params(3, 8)
    v = fl.SigmoidAttention(Q=Q, K=K, V=V, beta=0.5, bias=-1.0, chunk_size=2)(x)
    S = torch.sigmoid(0.5 * (x @ Q.mT) @ (x @ K.mT).mT - 1.0)
    assert torch.allclose(v, S @ (x @ V.mT) / 5, atol=1e-14)
    raw = fl.SigmoidAttention(Q=Q, K=K, V=V, beta=0.5, bias=-1.0, normalization="none")(x)
    assert torch.allclose(raw, 5 * v, atol=1e-13)


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_gradcheck_fields(gen, name):
    field = _fields(3, 11)[name]
    x = torch.randn(4, 3, generator=gen, dtype=F64)
    if field.on_sphere:
        x = fl.unit_normalize(x)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(field.velocity, (x,))


# --------------------------------------------------------------------------- backends
@pytest.mark.parametrize("causal", [False, True])
def test_chunked_matches_dense_large_n(gen, causal):
    x = torch.randn(3000, 3, generator=gen, dtype=F64)
    dense = fl.SoftmaxAttention(beta=5.0, backend="dense", causal=causal)(x)
    chunked = fl.SoftmaxAttention(beta=5.0, backend="chunked", causal=causal, chunk_size=257)(x)
    assert float((dense - chunked).abs().max()) < 1e-12


@pytest.mark.parametrize("name", ["softmax", "l2", "sinkhorn", "sigmoid", "sphere", "usa", "multihead"])
@pytest.mark.parametrize("backend", ["chunked", "sdpa"])
def test_fast_backends_match_dense_values_and_gradients(gen, name, backend, dtype):
    d = 3
    fields = _fields(d, 21)
    base = fields[name]

    if name == "sigmoid" and backend == "sdpa":
        with pytest.raises(ValueError, match="no fused SDPA kernel"):
            base.replace(backend="sdpa")
        return
    dense = base.replace(backend="dense")
    fast = base.replace(backend=backend, chunk_size=13)
    x = torch.randn(50, d, generator=gen, dtype=F64)
    if base.on_sphere:
        x = fl.unit_normalize(x)
    x = x.to(dtype).requires_grad_(True)
    vd, vf = dense(x), fast(x)
    tol = 1e-12 if dtype == F64 else 2e-5
    scale = float(vd.detach().abs().max())
    assert float((vd - vf).detach().abs().max()) <= tol * max(1.0, scale)
    w = torch.randn(vd.shape, generator=gen, dtype=F64).to(dtype)
    (gd,) = torch.autograd.grad((vd * w).sum(), x)
    (gf,) = torch.autograd.grad((vf * w).sum(), x)
    assert float((gd - gf).abs().max()) <= 10 * tol * max(1.0, float(gd.detach().abs().max()))


@pytest.mark.parametrize("backend", ["dense", "chunked", "sdpa"])
def test_sdpa_and_chunked_masks_and_batches(gen, backend):
    x = torch.randn(2, 3, 9, 4, generator=gen, dtype=F64)
    mask = torch.rand(3, 9, 9, generator=gen) > 0.4
    ref = fl.SoftmaxAttention(beta=1.5, mask=mask, backend="dense")(x)
    out = fl.SoftmaxAttention(beta=1.5, mask=mask, backend=backend, chunk_size=4)(x)
    assert out.shape == x.shape
    assert float((out - ref).abs().max()) < 1e-13
    causal_ref = fl.SoftmaxAttention(beta=1.5, causal=True, mask=mask, backend="dense")(x)
    causal_out = fl.SoftmaxAttention(beta=1.5, causal=True, mask=mask, backend=backend, chunk_size=4)(x)
    assert float((causal_out - causal_ref).abs().max()) < 1e-13


@pytest.mark.parametrize("backend", ["dense", "chunked", "sdpa"])
def test_no_overflow_in_float32(gen, backend):
    """beta = 5 with Gaussian tokens gives logits in the hundreds (exp overflows float32 past 88.7)."""
    x = torch.randn(256, 16, generator=gen, dtype=torch.float32) * 1.8
    logits = 5.0 * (x @ x.mT)
    assert float(logits.max()) > 200
    assert not torch.isfinite(torch.exp(logits)).all()  # the naive formula would overflow
    v = fl.SoftmaxAttention(beta=5.0, backend=backend)(x)
    assert torch.isfinite(v).all()
    ref = fl.SoftmaxAttention(beta=5.0, backend="dense")(x.double())
    assert float((v.double() - ref).abs().max()) < 1e-4
    usa = fl.SphereAttention(beta=80.0, normalized=False, backend=backend)(fl.unit_normalize(x))
    assert torch.isfinite(usa).all()


@pytest.mark.parametrize("name", FIELD_NAMES)
def test_dtype_and_device_are_followed(name, device, dtype):
    x = torch.randn(6, 3, dtype=dtype, device=device)
    field = _fields(3, 4)[name]
    if field.on_sphere:
        x = fl.unit_normalize(x)
    v = field(x)
    assert v.dtype == dtype and v.device == x.device and v.shape == x.shape
    traj = fl.simulate(field, x, t1=0.1, n_steps=2, method="heun")
    assert traj.x.dtype == dtype and traj.x.device == x.device


def test_auto_backend_rule():
    limit_n = int(math.isqrt(DENSE_LIMIT_BYTES // 4))
    # fused kernels whenever they apply, at any size
    assert fl.choose_backend(10, 10, dtype=torch.float64) == "sdpa"
    assert fl.choose_backend(20000, 20000, dtype=torch.float64) == "sdpa"
    assert fl.choose_backend(1000, 1000, batch=100, dtype=torch.float32) == "sdpa"
    assert fl.choose_backend(20000, 20000, dtype=torch.float32, device="cuda") == "sdpa"
    # otherwise dense while the logits fit in 64 MiB, chunked beyond
    assert fl.choose_backend(1000, 1000, dtype=torch.float64, device="cuda") == "dense"
    assert fl.choose_backend(20000, 20000, dtype=torch.float64, device="cuda") == "chunked"
    assert fl.choose_backend(limit_n, limit_n, dtype=torch.float32, has_bias=True) == "dense"
    assert fl.choose_backend(limit_n + 1, limit_n + 1, dtype=torch.float32, has_bias=True) == "chunked"
    assert fl.choose_backend(100, 100, dtype=torch.float32, device="mps") == "dense"
    assert fl.choose_backend(100, 100, dtype=torch.float16) == "dense"
    assert fl.choose_backend(100, 100, dtype=torch.float32, allow_fused=False) == "dense"
    assert fl.choose_backend(limit_n + 1, limit_n + 1, dtype=torch.float32, allow_fused=False) == "chunked"


def test_public_field_runs_memory_linear_at_large_n():
    """N = 10^5 tokens through the public field on the CPU: no n^2 tensor (40 GB) is formed."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, 4, generator=g)
    v = fl.SoftmaxAttention(beta=1.0)(x[:20_000])  # sdpa by the auto rule
    ref = fl.SoftmaxAttention(beta=1.0, backend="chunked")(x[:20_000])
    assert float((v - ref).abs().max()) < 1e-5 * float(ref.abs().max())  # float32 round-off
    run = fl.measure_call(lambda: fl.SoftmaxAttention(beta=1.0)(x))
    assert run.result.shape == x.shape and torch.isfinite(run.result).all()
    if run.peak_bytes is not None:  # Linux
        extra = run.peak_bytes / 2**20
        assert extra < 512, f"N=1e5 used {extra:.0f} MiB beyond its inputs; a dense pass would need 40 GB"


@pytest.mark.parametrize("name", ["sigmoid", "sinkhorn", "l2", "multihead"])
def test_chunked_fields_stay_memory_linear(gen, name):
    """Every field at n = 20000 (float32) stays memory-linear under auto (one dense n x n is 1.6 GB).

    L2 attention's augmented queries have one more column than its values, and these multi-head values
    are narrower than the queries: SDPA gets padded inputs, else it silently takes its O(n^2) math kernel.
    """
    x = torch.randn(20_000, 3, generator=gen)
    field = {
        "sigmoid": fl.SigmoidAttention(beta=1.0, bias=-1.0),
        "sinkhorn": fl.SinkhornAttention(beta=1.0, n_half_steps=3),
        "l2": fl.L2Attention(beta=0.5),
        "multihead": fl.MultiHeadAttention(
            Q=torch.randn(2, 4, 3, generator=gen),
            K=torch.randn(2, 4, 3, generator=gen),
            V=torch.randn(2, 1, 3, generator=gen),
            W=torch.randn(2, 3, 1, generator=gen),
            beta=0.3,
        ),
    }[name]
    run = fl.measure_call(lambda: field(x))
    assert torch.isfinite(run.result).all()
    # the values of the large run itself, against a dense reference: for a field with a mean-field
    # velocity, rows of v(x) are Gamma_{mu_x} at those tokens, computed densely (200 rows x 20000 keys)
    dense = field.replace(backend="dense")
    if name != "sinkhorn":
        ref = dense.mean_field_velocity(x[:200].double(), x.double())
        rel = float((run.result[:200].double() - ref).abs().max() / ref.abs().max())
        assert rel < 1e-4, rel  # float32 over 20000 keys
    # and the blocked path on a subsample, with several blocks, against the dense one
    sub = x[::10]
    chunked = field.replace(backend="chunked", chunk_size=97)(sub)
    assert torch.allclose(chunked, dense(sub), atol=1e-5)
    if run.peak_bytes is not None:  # Linux
        extra = run.peak_bytes / 2**20
        assert extra < 400, f"{name} at n=20000 used {extra:.0f} MiB; the dense weights alone are 1526 MiB"


def test_measure_call_reports_time_and_peak_memory():
    stats = fl.measure_call(lambda: torch.ones(25_000_000))  # 100 MB of float32
    assert stats.result.shape == (25_000_000,) and stats.seconds > 0
    if stats.peak_bytes is not None:
        assert 95e6 < stats.peak_bytes < 140e6, stats.peak_bytes
        small = fl.measure_call(lambda: torch.ones(100).sum())
        assert small.peak_bytes < 20e6


def test_auto_backend_supports_forward_mode_autodiff(gen):
    """Inside torch.func transforms ``auto`` avoids the fused kernels, which have no forward-mode rule."""
    from torch.func import jvp

    field = fl.SoftmaxAttention(beta=0.7)
    x = torch.randn(300, 3, generator=gen, dtype=F64)
    u = torch.randn(300, 3, generator=gen, dtype=F64)
    _, auto = jvp(field.velocity, (x,), (u,))
    _, dense = jvp(fl.SoftmaxAttention(beta=0.7, backend="dense").velocity, (x,), (u,))
    assert torch.allclose(auto, dense, atol=1e-12)
    eps = 1e-6  # and it is the derivative: central difference
    fd = (field(x + eps * u) - field(x - eps * u)) / (2 * eps)
    assert torch.allclose(auto, fd, atol=1e-7)
