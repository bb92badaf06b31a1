"""Regression tests for the findings of the flowlib 0.2.0 review and user trial (issue 23).

Every test here failed (raised, or returned a wrong number) on flowlib 0.2.0; the finding it guards is
named in its docstring (B1-B18: the code review; "user": the researcher's trial).
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import torch

import flowlib as fl
from flowlib.fields import reductions
from flowlib.fields.reductions import logsumexp_rows, softmax_average

F64 = torch.float64


def _mats(d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(d, d, generator=g, dtype=F64) / math.sqrt(d) for _ in range(3))


def _blocked_fields(backend: str, chunk_size: int | None):
    """One field of each kind, on ``backend`` (several blocks with chunk_size=2)."""
    Q, K, V = _mats(2, 0)
    g = torch.Generator().manual_seed(1)
    kw = dict(backend=backend, chunk_size=chunk_size)
    return {
        "softmax": fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=0.8, **kw),
        "softmax-causal": fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=0.8, causal=True, **kw),
        "l2": fl.L2Attention(Q=Q, K=K, V=V, beta=0.5, **kw),
        "sinkhorn": fl.SinkhornAttention(Q=Q, K=K, V=V, beta=0.7, n_half_steps=5, tol=None, **kw),
        "sigmoid": fl.SigmoidAttention(Q=Q, K=K, V=V, beta=0.6, bias=-0.2, **kw),
        "multihead": fl.MultiHeadAttention(
            Q=torch.randn(2, 2, 2, generator=g, dtype=F64),
            K=torch.randn(2, 2, 2, generator=g, dtype=F64),
            V=torch.randn(2, 1, 2, generator=g, dtype=F64),
            **kw,
        ),
        "sphere-SA": fl.SphereAttention(beta=2.0, **kw),
        "sphere-USA": fl.SphereAttention(beta=2.0, normalized=False, **kw),
    }


BLOCKED = list(_blocked_fields("chunked", 2))


def _tokens(name: str, shape, seed: int = 3) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return fl.unit_normalize(x) if name.startswith("sphere") else x


# ----------------------------------------------------------------------------------------- high
@pytest.mark.parametrize("name", BLOCKED)
def test_jvp_through_every_blocked_path(name):
    """B1: the chunked backend's scratch buffer (matmul(out=)) had no forward-mode rule."""
    chunked, dense = _blocked_fields("chunked", 2)[name], _blocked_fields("dense", None)[name]
    x = _tokens(name, (9, 2))
    u = torch.randn(9, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    with torch.no_grad():  # no_grad is where 0.2 reused the buffer
        _, jc = torch.func.jvp(chunked.velocity, (x,), (u,))
        _, jd = torch.func.jvp(dense.velocity, (x,), (u,))
    assert torch.allclose(jc, jd, atol=1e-12)
    assert jc.abs().max() > 1e-3  # a real directional derivative, not zeros


@pytest.mark.parametrize("name", BLOCKED)
def test_vmap_through_every_blocked_path(name):
    """B1: vmap over a batch of configurations through the blocked path ("matmul.out" had no batching rule)."""
    chunked, dense = _blocked_fields("chunked", 2)[name], _blocked_fields("dense", None)[name]
    x = _tokens(name, (3, 9, 2))
    with torch.no_grad():
        out = torch.func.vmap(chunked.velocity)(x)
    assert torch.allclose(out, dense.velocity(x), atol=1e-12)


def test_vmap_over_masses_through_the_blocked_path():
    """B1: an unbatched block updated in place by a batched bias (vmap over masses) is not allowed."""
    field = fl.SoftmaxAttention(backend="chunked", chunk_size=2)
    pts = torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    masses = torch.rand(4, 7, generator=torch.Generator().manual_seed(1), dtype=F64) + 0.1
    out = torch.func.vmap(lambda w: field.mean_field_velocity(pts, pts, w))(masses)
    ref = torch.stack([fl.SoftmaxAttention(backend="dense").mean_field_velocity(pts, pts, w) for w in masses])
    assert torch.allclose(out, ref, atol=1e-12)


def test_lipschitz_estimate_when_auto_chooses_chunked(monkeypatch):
    """B1: lipschitz_estimate crashed once auto chose the chunked backend inside jvp (n >= 2900 in float64).

    The dense limit is lowered so that auto chooses chunked at n = 60 (as it does at n = 3000 by default).
    """
    x = torch.randn(60, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = fl.lipschitz_estimate(fl.SoftmaxAttention(backend="dense"), x, generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(reductions, "DENSE_LIMIT_BYTES", 1024)
    monkeypatch.setattr(reductions, "CHUNK_BUDGET_BYTES", 4096)
    assert reductions.choose_backend(60, 60, dtype=F64, has_bias=True) == "chunked"
    est = fl.lipschitz_estimate(fl.SoftmaxAttention(), x, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(est, ref, rtol=1e-10)


@pytest.mark.slow
def test_lipschitz_estimate_at_3000_tokens():
    """B1, at the size of the report (slow: a few jvp passes over 3000 x 3000 logits)."""
    x = torch.randn(3000, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    est = fl.lipschitz_estimate(fl.SoftmaxAttention(), x, n_iter=3, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(est) and est > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", ["dense", "chunked"])
def test_half_precision_sums_over_many_keys(dtype, backend):
    """B2: with m > 65 504 keys the float16 softmax denominator overflowed and the average became 0."""
    m = 70_000
    q = torch.zeros(1, 1, dtype=dtype)
    k = torch.zeros(m, 1, dtype=dtype)
    v = torch.full((m, 1), 0.5, dtype=dtype)
    out = softmax_average(q, k, v, beta=0.0, backend=backend, chunk_size=1)
    assert out.dtype == dtype and out.item() == 0.5
    lse = logsumexp_rows(q, k, backend=backend)
    assert abs(lse.float().item() - math.log(m)) < 0.05


def test_half_precision_sigmoid_sum():
    """B2: sigmoid attention's unnormalised sum W @ v overflowed in float16 as well (before the 1/n)."""
    m = 70_000
    w = torch.ones(1, m, dtype=torch.float16)  # sigma(large) = 1 for every key
    v = torch.ones(m, 1, dtype=torch.float16)
    total = fl.SigmoidAttention._apply_weights(w, v)  # the block product of the sigmoid field
    assert torch.isinf(total).all()  # 70 000 itself exceeds float16: the sum must be scaled in float32
    assert abs(fl.SigmoidAttention._apply_weights(w / m, v).item() - 1.0) < 2e-3  # fp16 rounding of 1/m
    field = fl.SigmoidAttention(beta=0.0, bias=30.0, backend="chunked", chunk_size=1)
    pts = torch.ones(m, 1, dtype=torch.float16)
    out = field.mean_field_velocity(pts[:1], pts)  # (1/m) sum_j sigma(30) * 1 = 1
    assert abs(out.item() - 1.0) < 2e-3


def test_forced_linear_solution_on_any_grid():
    """B3: forced_linear_solution used p(t[0]) for p(0): wrong unless the time grid started at 0."""
    from flowlib.book.contraction import forced_linear_solution

    M = torch.tensor([[-1.0, 2.0], [-2.0, -1.0]], dtype=F64)
    c = torch.tensor([1.0 + 0j, 0.5j], dtype=torch.complex128)
    x0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    full = forced_linear_solution(M, c, 2.0, x0, torch.linspace(0.0, 1.0, 11, dtype=F64))
    part = forced_linear_solution(M, c, 2.0, x0, torch.linspace(0.5, 1.0, 6, dtype=F64))
    assert torch.allclose(full[-1], part[-1], atol=1e-12)
    assert torch.allclose(full[5], part[0], atol=1e-12)  # t = 0.5 on both grids
    # and it solves the ODE: compare with RK4 from t = 0 on a fine grid
    field = fl.TimeDependent(lambda x, t: x @ M.mT + (c * torch.exp(torch.tensor(2.0j * t))).real)
    ref = fl.simulate(field, x0, t1=1.0, n_steps=200, method="rk4").final
    assert torch.allclose(part[-1], ref, atol=1e-9)


# ----------------------------------------------------------------------------------------- medium
def test_pde_runs_on_the_densitys_device():
    """B4: the PDE solver copied its density onto the grid's device (the CPU by default).

    A grid on the "meta" device stands in for "another device than the density's": 0.2 moved the
    density there and failed; now the solve runs where the density lives and agrees with a CPU grid.
    """
    field = fl.SoftmaxAttention(beta=1.0)
    grid_cpu = fl.make_grid(-3.0, 3.0, 30)
    grid_meta = fl.make_grid(-3.0, 3.0, 30, device="meta")
    rho0 = fl.pde.density_on_grid(grid_cpu, lambda x: torch.exp(-(x[..., 0] ** 2)))
    a = fl.solve_transformer_pde(field, rho0, grid_cpu, t1=0.2, n_save=2)
    b = fl.solve_transformer_pde(field, rho0, grid_meta, t1=0.2, n_save=2)
    assert b.density.device.type == "cpu"
    assert torch.allclose(a.density, b.density, atol=1e-14)
    assert b.points().device.type == "cpu"


def test_usa_overflow_is_a_clear_error():
    """B5: USA's velocity was NaN in float32 at beta ~ 100, while weights() raised a clear error."""
    x = fl.uniform_sphere(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    field = fl.SphereAttention(beta=100.0, normalized=False)
    with pytest.raises(ValueError, match="USA velocities"):
        field(x)
    with pytest.raises(ValueError, match="USA velocities"):
        fl.simulate(field, x, t1=0.1, n_steps=2)
    # in range it is still computed, and matches float64
    ok = fl.SphereAttention(beta=50.0, normalized=False)
    assert torch.allclose(ok(x).double(), ok(x.double()), rtol=1e-4, atol=1e-6 * math.exp(50))


def test_l2_attention_translation_far_from_the_origin():
    """B6: L2 attention's translation error in float32 was 7e-2 at offset 1000 (uncentred logits)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, generator=g)
    field = fl.L2Attention(beta=1.0)
    for c in (10.0, 100.0, 1000.0):
        err = (field(x + c) - (field(x) + c)).abs().max().item()
        assert err < 2e-3 * max(1.0, c / 100), (c, err)  # float32 spacing at 1000 is 6e-5
    exact = fl.L2Attention(beta=1.0)(x.double() + 1000.0)
    assert (field(x + 1000.0).double() - exact).abs().max().item() < 1e-3


def test_bures_gradient_at_repeated_eigenvalues():
    """B7: bures_wasserstein had NaN gradients at identity covariances (eigh's backward divides by gaps)."""
    m = torch.zeros(2, dtype=F64)
    cov1 = torch.eye(2, dtype=F64, requires_grad=True)
    d = fl.bures_wasserstein(m, cov1, m, 2 * torch.eye(2, dtype=F64))
    (g,) = torch.autograd.grad(d, cov1)
    # W^2 = 2s + 4 - 4 sqrt(2s) for cov1 = s I: dW/dcov1 = (1 - sqrt 2) / (2 W) I at s = 1
    w = 6 - 4 * math.sqrt(2)
    assert d.item() == pytest.approx(math.sqrt(w), rel=1e-12)
    assert torch.allclose(g, (1 - math.sqrt(2)) / (2 * math.sqrt(w)) * torch.eye(2, dtype=F64), atol=1e-10)
    # equal Gaussians: distance 0, gradient 0 (a subgradient), not NaN
    cov = torch.eye(3, dtype=F64, requires_grad=True)
    (g0,) = torch.autograd.grad(
        fl.bures_wasserstein(torch.zeros(3, dtype=F64), cov, torch.zeros(3, dtype=F64), cov), cov
    )
    assert torch.isfinite(g0).all()


def test_symmetric_sqrt_gradient_matches_finite_differences():
    """B7: the Sylvester backward of symmetric_sqrt, against central differences (distinct eigenvalues)."""
    from flowlib.gaussian import symmetric_sqrt

    A = torch.tensor([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 3.0]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda S: symmetric_sqrt(0.5 * (S + S.mT)), (A,))


def test_missing_pot_names_the_extra(monkeypatch):
    """B8: without POT, wasserstein_exact raised a bare ModuleNotFoundError: No module named 'ot'."""
    monkeypatch.setitem(sys.modules, "ot", None)  # "import ot" now raises ImportError
    x = torch.zeros(2, 1, dtype=F64)
    with pytest.raises(ImportError, match=r"tokens-in-motion\[ot\]"):
        fl.wasserstein_exact(x, x)
    with pytest.raises(ImportError, match=r"tokens-in-motion\[ot\]"):
        fl.measures.conditional_wasserstein(x[None], x[None])


def test_stability_helpers_pass_a_time_to_time_dependent_fields():
    """B9: field_jacobian and lipschitz_estimate called time-dependent fields with t=None."""
    field = fl.TimeDependent(lambda x, t: t * x)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    J = fl.field_jacobian(field, x, t=2.0).reshape(6, 6)
    assert torch.allclose(J, 2.0 * torch.eye(6, dtype=F64))
    assert fl.lipschitz_estimate(field, x, t=3.0).item() == pytest.approx(3.0, rel=1e-9)
    assert fl.one_sided_lipschitz(field, x, t=-1.0).item() == pytest.approx(-1.0, rel=1e-12)


# ----------------------------------------------------------------------------------------- low
def test_masses_are_validated():
    """B10: negative masses gave all-NaN output; float64 masses with float32 points broke auto/SDPA."""
    pts = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    field = fl.SoftmaxAttention()
    with pytest.raises(ValueError, match="non-negative"):
        fl.measure_velocity(field, pts, pts, torch.tensor([1.0, -0.5, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="positive total"):
        fl.measure_velocity(field, pts, pts, torch.zeros(5))
    with pytest.raises(TypeError, match="floating"):
        fl.measure_velocity(field, pts, pts, torch.ones(5, dtype=torch.int64))
    w64 = torch.rand(5, generator=torch.Generator().manual_seed(1), dtype=F64) + 0.1
    auto = fl.measure_velocity(field, pts, pts, w64)
    dense = fl.measure_velocity(fl.SoftmaxAttention(backend="dense"), pts, pts, w64)
    assert auto.dtype == torch.float32 and torch.allclose(auto, dense, atol=1e-6)


def test_sliced_wasserstein_rejects_p_below_one():
    """B11: sliced_wasserstein returned numbers for p = 0.5 and p = -1."""
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for p in (0.5, -1.0):
        with pytest.raises(ValueError, match="p must be >= 1"):
            fl.sliced_wasserstein(x, x + 1, p=p, generator=torch.Generator().manual_seed(0))
        with pytest.raises(ValueError, match="p must be >= 1"):
            fl.measures.conditional_wasserstein(x[None], x[None], p=p, method="sliced")


def test_sinkhorn_warns_by_default_when_not_converged():
    """B12: at beta = 100 the column marginal was off by 1.08 with no warning (tol=None by default)."""
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.warns(RuntimeWarning, match="did not reach tol=1e-06"):
        fl.SinkhornAttention(beta=100.0)(x)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        fl.simulate(fl.SinkhornAttention(beta=100.0), x, t1=0.1, n_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fl.SinkhornAttention(beta=100.0, tol=None)(x)  # explicitly unchecked
        fl.SinkhornAttention(beta=0.1, n_half_steps=200)(x)  # converged
    f32 = fl.SinkhornAttention(beta=0.1, n_half_steps=30)
    assert f32._tolerance(torch.float32) == 1e-3 and f32._tolerance(F64) == 1e-6


def test_sinkhorn_half_steps_name():
    """B12: n_iter counted half-steps; the name says so now (n_iter stays as a deprecated alias)."""
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.warns(DeprecationWarning, match="n_half_steps"):
        old = fl.SinkhornAttention(n_iter=7, tol=None)
    assert old.n_half_steps == 7 and torch.equal(old(x), fl.SinkhornAttention(n_half_steps=7, tol=None)(x))


def test_multihead_beta_length_checked_at_construction():
    """B13: a wrong-length per-head beta was only caught at the first call."""
    Q = torch.randn(2, 2, 4)
    with pytest.raises(ValueError, match=r"shape \(H,\) = \(2,\)"):
        fl.MultiHeadAttention(Q=Q, K=Q, V=Q, beta=torch.ones(3))


def test_gaussian_closure_keeps_a_tensor_betas_gradient():
    """B15: the Gaussian closure called .item() on a tensor beta, so solve_gaussian gave no gradient."""
    beta = torch.nn.Parameter(torch.tensor(0.3, dtype=F64))
    field = fl.SoftmaxAttention(beta=beta)
    cov0 = torch.eye(2, dtype=F64)
    sol = fl.solve_gaussian(field, torch.zeros(2, dtype=F64), cov0, t1=0.5, n_steps=50)
    sol.final_cov.trace().backward()
    # V = I, A = beta I: Sigma(t) = (1 - 2 beta t)^-1 I, so d tr / d beta = 2 * 2t / (1 - 2 beta t)^2
    assert beta.grad is not None
    assert beta.grad.item() == pytest.approx(2 * 2 * 0.5 / (1 - 2 * 0.3 * 0.5) ** 2, rel=1e-6)


def test_contract_quirks():
    """B16: NumPy scalars in make_grid, a silently rounded phase-diagram step, empty inputs, zero tokens."""
    grid = fl.make_grid(np.float32(-1), np.float64(1), np.int64(8))
    assert grid.lower == (-1.0,) and grid.shape == (8,)
    with pytest.raises(ValueError, match="whole number of steps"):
        fl.diagnostics.phase_diagram([1.0], n=4, d=3, t1=1.0, step=0.3, n_systems=2)
    q = torch.zeros(0, 2)
    k = torch.zeros(3, 2)
    assert softmax_average(q, k, k).shape == (0, 2)
    assert torch.equal(softmax_average(k, q, q), torch.zeros(3, 2))  # no key: 0 by convention
    assert torch.equal(logsumexp_rows(k, q), torch.full((3,), -math.inf))
    assert torch.equal(fl.unit_normalize(torch.zeros(1, 3)), torch.zeros(1, 3))


def test_hitting_time_is_a_quadrature(monkeypatch):
    """B18: hitting_time stepped a scalar ODE with RK4 up to 10^7 times (50 s to return inf).

    The evaluation count stands in for the time: 0.2 called the right-hand side four times per step.
    The values agree with a fine RK4 reference and with the report's quadrature (1.35e5 at beta = 16).
    """
    calls = {"n": 0}
    original = fl.diagnostics.equiangular_rhs

    def counting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10_000:
            raise RuntimeError("hitting_time stepped the ODE more than 10^4 times")
        return original(*args, **kwargs)

    monkeypatch.setattr(fl.diagnostics, "equiangular_rhs", counting)
    assert fl.hitting_time(16.0, 32) == math.inf
    assert fl.hitting_time(16.0, 32, t_max=1e6) == pytest.approx(1.3509e5, rel=1e-3)
    monkeypatch.setattr(fl.diagnostics, "equiangular_rhs", original)
    for beta, n, normalized in ((1.0, 4, True), (4.0, 32, True), (2.0, 5, False)):
        t = fl.hitting_time(beta, n, normalized=normalized)
        gam = fl.diagnostics.equiangular_solution(beta, n, [t], normalized=normalized, n_substeps=4000)
        assert gam.item() == pytest.approx(1 - 1e-3, abs=1e-8)


# ----------------------------------------------------------------------------------------- user trial
def test_cluster_count_requires_unit_norm():
    """user: 32 tokens after layer_norm_projection (norm sqrt(d)) counted as 1 cluster."""
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(ValueError, match="unit_normalize"):
        fl.cluster_count(fl.layer_norm_projection(x))
    with pytest.raises(ValueError, match="unit-norm"):
        fl.diagnostics.clustered_fraction(2 * fl.unit_normalize(x))
    assert fl.cluster_count(fl.unit_normalize(x)).item() == 32


def test_a_field_and_explicit_parameters_are_not_both_accepted():
    """user: solve_gaussian(field, ..., beta=5.0) and affine_velocity(field, m, S, Q) used the field's own."""
    field = fl.SoftmaxAttention(beta=0.7)
    m, S = torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)
    with pytest.raises(TypeError, match="supplies its own"):
        fl.solve_gaussian(field, m, S, t1=0.1, n_steps=2, beta=5.0)
    with pytest.raises(TypeError, match="supplies its own"), pytest.warns(DeprecationWarning):
        fl.affine_velocity(field, m, S, 3 * torch.eye(2, dtype=F64))
    with pytest.raises(TypeError, match="supplies its own"):
        fl.affine_velocity(field, m, S, Q=3 * torch.eye(2, dtype=F64))
    _, J = fl.affine_velocity(field, m, S)
    assert torch.allclose(J, 0.7 * torch.eye(2, dtype=F64))


def test_positional_matrices_are_deprecated_but_work():
    """item 4: keyword-only matrices; the 0.2 positional form still works, with a DeprecationWarning."""
    m, S = torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64)
    Q = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=F64)
    with pytest.warns(DeprecationWarning, match="keywords"):
        old = fl.affine_velocity("softmax", m, S, Q, None, None, beta=0.5)
    new = fl.affine_velocity("softmax", m, S, Q=Q, beta=0.5)
    assert all(torch.equal(a, b) for a, b in zip(old, new))


def test_beta_is_always_in_the_state_dict():
    """user: a float beta was not in state_dict, so loading kept the old beta ("All keys matched")."""
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    src, dst = fl.SoftmaxAttention(beta=2.0), fl.SoftmaxAttention(beta=1.0)
    assert list(src.state_dict()) == ["beta"]
    dst.load_state_dict(src.state_dict())
    assert dst.beta_value == 2.0 and torch.equal(dst(x), src(x))
    # the same keys whether beta is a number, a tensor or a Parameter
    kinds = [2.0, torch.tensor(2.0, dtype=F64), torch.nn.Parameter(torch.tensor(2.0, dtype=F64))]
    assert {tuple(fl.SoftmaxAttention(beta=b).state_dict()) for b in kinds} == {("beta",)}
    # a matrix left None (the identity) has no key: loading one says how to build the field
    with pytest.raises(RuntimeError, match="built with Q=None"):
        fl.SoftmaxAttention().load_state_dict(fl.SoftmaxAttention(Q=torch.eye(2, dtype=F64)).state_dict())
    # sigmoid attention's bias likewise
    sig = fl.SigmoidAttention(bias=-1.0)
    assert sorted(sig.state_dict()) == ["beta", "bias"]
    other = fl.SigmoidAttention(bias=0.5)
    other.load_state_dict(sig.state_dict())
    assert torch.equal(other(x), sig(x))
    # a number stays exact in float64 computations after .to(float32) and back
    f = fl.SoftmaxAttention(beta=0.1).to(torch.float32).to(F64)
    assert f.beta_value == 0.1 and f.beta.dtype == F64


def test_a_retraction_that_leaves_the_sphere_raises():
    """user: SphereAttention with retraction=layer_norm_projection ran with every token at norm sqrt(3)."""
    x = fl.uniform_sphere(8, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    with pytest.raises(ValueError, match="leaves the unit sphere"):
        fl.simulate(fl.SphereAttention(), x, t1=1.0, n_steps=4, retraction=fl.layer_norm_projection)
    ok = fl.simulate(fl.SphereAttention(), x, t1=1.0, n_steps=4, retraction=fl.unit_normalize)
    assert torch.allclose(ok.final.norm(dim=-1), torch.ones(8, dtype=F64))


def test_batched_beta_and_vmap_over_beta():
    """user: a batched beta was refused, and vmap over beta failed in flowlib's validation."""
    betas = torch.tensor([0.5, 1.0, 2.0], dtype=F64)
    x = torch.randn(3, 6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    one_by_one = torch.stack([fl.SoftmaxAttention(beta=float(b))(x[i]) for i, b in enumerate(betas)])
    batched = fl.SoftmaxAttention(beta=betas)(x)  # beta[i] for system i: a sweep in one call
    assert torch.allclose(batched, one_by_one, atol=1e-14)
    field = fl.SoftmaxAttention(beta=1.0)
    swept = torch.func.vmap(lambda b, xi: torch.func.functional_call(field, {"beta": b}, (xi,)))(betas, x)
    assert torch.allclose(swept, one_by_one, atol=1e-14)
    swept2 = torch.func.vmap(lambda b: fl.SoftmaxAttention(beta=b)(x[0]))(betas)
    assert torch.allclose(swept2[1], fl.SoftmaxAttention(beta=1.0)(x[0]), atol=1e-14)
    assert field.beta_value == 1.0 and torch.allclose(field(x[0]), swept2[1], atol=1e-14)  # field unchanged
    traj = fl.simulate(fl.SphereAttention(beta=betas), fl.unit_normalize(x), t1=0.5, n_steps=5)
    assert traj.final.shape == (3, 6, 2)
    with pytest.raises(ValueError, match="broadcast against the batch dimensions"):
        fl.SoftmaxAttention(beta=torch.ones(4, dtype=F64))(x)


def test_no_per_step_graph_break():
    """user: torch.compile broke the graph inside every field call (a functorch probe, then .item())."""
    import torch._dynamo as dynamo

    field = fl.SoftmaxAttention(Q=torch.nn.Parameter(torch.eye(3)))
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    dynamo.reset()
    explained = dynamo.explain(lambda: fl.residual_stack(field, x, n_layers=4).final)()
    inside_fields = [r.reason for r in explained.break_reasons if any("/fields/" in f.filename for f in r.user_stack)]
    assert inside_fields == []  # the only breaks are the checks of x0 before the loop (0.2: 13 breaks, in the fields)


def test_py_typed_is_shipped():
    """user: no py.typed, so type checkers ignored the annotations."""
    from pathlib import Path

    assert (Path(fl.__file__).parent / "py.typed").is_file()


# ----------------------------------------------------------------------------------------- torch.nn conventions
def test_parameter_dtype_and_device_mismatch_is_an_error():
    """item 3: a float64 Parameter met float32 tokens by a silent cast at every call."""
    field = fl.SoftmaxAttention(Q=torch.nn.Parameter(torch.eye(2, dtype=F64)))
    x = torch.randn(4, 2)
    with pytest.raises(TypeError, match=r"field\.to\(torch\.float32\)"):
        field(x)
    assert field.to(torch.float32)(x).dtype == torch.float32
    meta = fl.SoftmaxAttention(Q=torch.nn.Parameter(torch.eye(2, device="meta")))
    with pytest.raises(ValueError, match=r"field\.to\('cpu'\)"):
        meta(x)
    # a fixed matrix (a buffer) is used in the input's dtype
    assert fl.SoftmaxAttention(Q=torch.eye(2, dtype=F64))(x).dtype == torch.float32


def test_integrators_call_fields_through_call():
    """item 3: simulate called field.velocity, so forward hooks never ran."""
    field = fl.SoftmaxAttention()
    seen = []
    field.register_forward_hook(lambda mod, args, kwargs, out: seen.append(kwargs.get("check")), with_kwargs=True)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    fl.simulate(field, x, t1=1.0, n_steps=3, method="rk4")
    assert seen == [False] * 12  # 3 steps x 4 stages, unchecked
    field(x)
    assert seen[-1] is None  # a direct call: checked (the default)


def test_custom_field_needs_no_weights():
    """item 3: weights() was abstract on every VelocityField; it belongs to attention fields now."""

    class Drift(fl.VelocityField):
        def velocity(self, x):
            return torch.ones_like(x)

    traj = fl.simulate(Drift(), torch.zeros(1, 1, dtype=F64), t1=2.0, n_steps=4)
    assert traj.final.item() == 2.0


def test_samplers_follow_the_default_dtype():
    """item 3: uniform_sphere, gaussian_matrix and random_orthonormal returned float64 regardless."""
    g = torch.Generator().manual_seed(0)
    default = torch.get_default_dtype()
    assert fl.uniform_sphere(3, 2, generator=g).dtype == default
    assert fl.gaussian_matrix(2, 2, generator=g).dtype == default
    assert fl.random_orthonormal(2, 3, generator=g).dtype == default
    assert fl.uniform_sphere(3, 2, generator=g, dtype=F64).dtype == F64


def test_renamed_keywords_keep_working():
    """item 4: masses (not weights) for measures; the old keywords warn and still work."""
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    with pytest.warns(DeprecationWarning, match="masses"):
        old = fl.empirical_moments(x, weights=w)
    assert all(torch.equal(a, b) for a, b in zip(old, fl.empirical_moments(x, masses=w)))
    with pytest.warns(DeprecationWarning, match="u_masses"):
        a = fl.wasserstein_1d(x[:, 0], x[:, 1], u_weights=w)
    assert torch.equal(a, fl.wasserstein_1d(x[:, 0], x[:, 1], u_masses=w))
    field = fl.SoftmaxAttention()
    with pytest.warns(DeprecationWarning, match="masses"):
        b = fl.measure_velocity(field, x, x, weights=w)
    assert torch.equal(b, fl.measure_velocity(field, x, x, masses=w))
    with pytest.warns(DeprecationWarning, match="masses"):
        c = field.mean_field_velocity(x, x, weights=w)
    assert torch.equal(c, b)


def test_one_slope_fit():
    """item 4: one slope fit in the core (fit_order is minus the log-log slope)."""
    from flowlib.convergence import fit_slope

    n = [10, 20, 40, 80]
    errs = [3.0 * v**-1.5 for v in n]
    assert fit_slope(n, errs) == pytest.approx(-1.5, rel=1e-12)
    assert fl.fit_order(n, errs) == pytest.approx(1.5, rel=1e-12)
    assert fit_slope([0.0, 1.0, 2.0], [math.exp(-0.2 * t) for t in (0.0, 1.0, 2.0)], log_x=False) == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="> 0 on a logarithmic axis"):
        fit_slope([0.0, 1.0], [1.0, 2.0])


def test_lipschitz_keyword_name():
    """item 4: one name for a Lipschitz constant (lipschitz=; lip= is deprecated)."""
    with pytest.warns(DeprecationWarning, match="lipschitz"):
        assert fl.contraction_step_limit(1.0, lip=2.0) == 0.5
    assert fl.euler_step_factor(1.0, lipschitz=1.0, h=0.5) == pytest.approx(0.5)
