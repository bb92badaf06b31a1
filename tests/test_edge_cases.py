"""Edge cases and devices: singular covariances, overflow, bad layer counts, zero perturbations,
generators on other devices, masked multi-head attention, weighted distances, diagnostics' corner cases."""

from __future__ import annotations

import math

import pytest
import torch

import flowlib as fl

F64 = torch.float64


# ----------------------------------------------------------------------------- sampling
def test_gaussian_tokens_sample_rank_deficient_covariances(gen):
    u = torch.tensor([1.0, 2.0, -1.0], dtype=F64) / math.sqrt(6)
    cov = 4.0 * torch.outer(u, u)  # rank one: Cholesky fails on it
    mean = torch.tensor([1.0, 0.0, -2.0], dtype=F64)
    x = fl.gaussian_tokens(20_000, mean, cov, generator=gen)
    resid = (x - mean) - ((x - mean) @ u)[:, None] * u  # component outside range(cov)
    assert float(resid.abs().max()) < 1e-12
    emp = torch.cov(x.T)
    assert float((emp - cov).abs().max()) < 0.1  # sampling error ~ 4 * sqrt(2 / 20000) = 0.04
    with pytest.raises(ValueError, match="positive semi-definite"):
        fl.gaussian_tokens(5, mean, -cov - torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="symmetric"):
        fl.gaussian_tokens(5, mean, torch.triu(torch.ones(3, 3, dtype=F64)))


def test_generators_on_another_device_draw_there_and_move():
    g = torch.Generator().manual_seed(5)
    x = fl.uniform_sphere(4, 3, generator=g, device="meta", dtype=F64)  # a CPU generator, another device
    assert x.device.type == "meta" and x.dtype == F64
    a = fl.gaussian_matrix(3, 2, generator=torch.Generator().manual_seed(5))
    b = fl.gaussian_matrix(3, 2, generator=torch.Generator().manual_seed(5), device="cpu", dtype=torch.float32)
    assert torch.allclose(a.float(), b)  # same numbers whatever the target dtype and device


# ----------------------------------------------------------------------------- overflow and bad counts
def test_usa_weights_never_overflow_silently():
    x = fl.uniform_sphere(6, 3, generator=torch.Generator().manual_seed(0)).float()
    w = fl.SphereAttention(beta=20.0, normalized=False).weights(x)
    assert torch.isfinite(w).all()
    assert torch.allclose(w.double(), torch.exp(20.0 * (x.double() @ x.double().mT)) / 6, rtol=1e-5)
    with pytest.raises(ValueError, match="float64"):
        fl.SphereAttention(beta=100.0, normalized=False).weights(x)  # e^100 / 6 > float32's max
    assert torch.isfinite(fl.SphereAttention(beta=100.0, normalized=False).weights(x.double())).all()
    sa = fl.SphereAttention(beta=1e4).weights(x)  # softmax weights: always in [0, 1]
    assert torch.isfinite(sa).all() and torch.allclose(sa.sum(-1), torch.ones(6), atol=1e-6)


def test_layer_counts_and_perturbations_are_checked(gen):
    field = fl.SoftmaxAttention()
    x0 = torch.randn(3, 2, generator=gen, dtype=F64)
    with pytest.raises(ValueError, match="int >= 1"):
        fl.convergence_study(field, x0, t1=1.0, layers=[0, 4])
    with pytest.raises(ValueError, match="int >= 1"):
        fl.convergence_study(field, x0, t1=1.0, layers=[-4, 8])
    with pytest.raises(ValueError, match="at least two"):
        fl.convergence_study(field, x0, t1=1.0, layers=[8])
    with pytest.raises(ValueError, match=">= 1"):
        fl.residual_stack(field, x0, 0)
    with pytest.raises(ValueError, match="positive"):
        fl.fit_order([0, 4], [1.0, 0.5])
    with pytest.raises(ValueError, match="non-zero perturbation"):
        fl.perturbation_growth(field, x0, torch.zeros_like(x0), t1=1.0, n_steps=2)
    delta = torch.stack([torch.zeros_like(x0), 1e-3 * torch.ones_like(x0)])
    with pytest.raises(ValueError, match="1 of 2"):
        fl.perturbation_growth(field, torch.stack([x0, x0]), delta, t1=1.0, n_steps=2)


# ----------------------------------------------------------------------------- masks
def test_rows_with_no_admissible_key_are_zero_on_every_backend(gen):
    n = 6
    x = torch.randn(n, 2, generator=gen, dtype=F64)
    mask = torch.ones(n, n, dtype=torch.bool).triu(1)  # j > i only; with causal (j <= i) nothing is left
    for backend in ("dense", "chunked", "sdpa"):
        v = fl.SoftmaxAttention(mask=mask, causal=True, backend=backend, chunk_size=2)(x)
        assert torch.equal(v, torch.zeros_like(v)), backend
    one = torch.zeros(n, n, dtype=torch.bool)
    one[:, 0] = True
    one[0, 0] = False  # row 0 empty, every other row sees token 0 only
    for backend in ("dense", "chunked", "sdpa"):
        v = fl.SoftmaxAttention(mask=one, backend=backend, chunk_size=4)(x)
        assert torch.equal(v[0], torch.zeros(2, dtype=F64)) and torch.allclose(v[1:], x[0].expand(n - 1, 2))


@pytest.mark.parametrize("backend", ["dense", "chunked", "sdpa"])
def test_multihead_with_mask_and_causal_is_the_sum_of_masked_heads(gen, backend):
    n, d, H = 7, 4, 2
    Q = torch.randn(H, 3, d, generator=gen, dtype=F64)
    K = torch.randn(H, 3, d, generator=gen, dtype=F64)
    V = torch.randn(H, 2, d, generator=gen, dtype=F64)
    W = torch.randn(H, d, 2, generator=gen, dtype=F64)
    x = torch.randn(n, d, generator=gen, dtype=F64)
    mask = torch.rand(n, n, generator=gen) < 0.6
    mask |= torch.eye(n, dtype=torch.bool)
    mh = fl.MultiHeadAttention(Q=Q, K=K, V=V, W=W, beta=0.9, mask=mask, causal=True, backend=backend, chunk_size=3)
    expected = torch.zeros(n, d, dtype=F64)
    for h in range(H):
        P = fl.SoftmaxAttention(Q=Q[h], K=K[h], beta=0.9, mask=mask, causal=True).weights(x)
        assert torch.equal(P.triu(1), torch.zeros_like(P))  # causal
        assert torch.equal(P[~mask], torch.zeros_like(P[~mask]))  # masked pairs get no weight
        expected += P @ (x @ V[h].mT) @ W[h].mT
    assert torch.allclose(mh(x), expected, atol=1e-13)
    assert not mh.perm_equivariant


# ----------------------------------------------------------------------------- weighted distances
def test_weighted_exact_and_sliced_distances():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=F64)
    y = torch.tensor([[0.0, 0.0]], dtype=F64)
    w = torch.tensor([0.25, 0.75], dtype=F64)
    # all the mass 0.75 at distance 1 must move: W_1 = 0.75, W_2 = sqrt(0.75)
    assert fl.wasserstein_exact(x, y, p=1, x_weights=w).item() == pytest.approx(0.75, abs=1e-12)
    assert fl.wasserstein_exact(x, y, p=2, x_weights=w).item() == pytest.approx(math.sqrt(0.75), abs=1e-12)
    # sliced W_1: E|cos theta| * 0.75 = 0.75 * 2 / pi over uniform directions of the circle
    theta = torch.linspace(0, math.pi, 4001, dtype=F64)[:-1]
    P = torch.stack([theta.cos(), theta.sin()])
    sw = fl.sliced_wasserstein(x, y, p=1, projections=P, x_weights=w).item()
    assert sw == pytest.approx(0.75 * 2 / math.pi, rel=1e-4)
    # in 1-D the sliced distance is the exact one, weights included
    x1 = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)
    wx = torch.tensor([0.5, 0.25, 0.25], dtype=F64)
    y1 = torch.tensor([[1.0], [2.0]], dtype=F64)
    wy = torch.tensor([0.5, 0.5], dtype=F64)
    one = torch.ones(1, 1, dtype=F64)
    exact = fl.wasserstein_exact(x1, y1, p=1, x_weights=wx, y_weights=wy).item()
    assert exact == pytest.approx(0.5 * 1 + 0.25 * 1 + 0.25 * 1, abs=1e-12)  # 0->1, 1->2, 3->2
    sliced = fl.sliced_wasserstein(x1, y1, p=1, projections=one, x_weights=wx, y_weights=wy).item()
    assert sliced == pytest.approx(exact, abs=1e-12)


# ----------------------------------------------------------------------------- diagnostics
def test_cluster_count_follows_chains():
    # consecutive tokens 0.03 rad apart (cos = 0.99955 > 0.999) but the ends far apart: one cluster
    angles = torch.arange(10, dtype=F64) * 0.03
    chain = torch.stack([angles.cos(), angles.sin()], dim=-1)
    assert math.cos(0.06) < 0.999  # tokens two links apart are not close directly
    assert int(fl.cluster_count(chain)) == 1
    far = torch.tensor([[-1.0, 0.0]], dtype=F64)
    assert int(fl.cluster_count(torch.cat([chain, far]))) == 2
    assert int(fl.cluster_count(chain[::2])) == 5  # 0.06 rad apart: no link at all


def test_solve_gaussian_reports_an_unstable_step():
    # V = I, K = -Q = -I: Sigma' = -2 Sigma^2 contracts; one Euler step of h = 1 from Sigma = I gives
    # Sigma (1 - 2h Sigma) = -I, indefinite: the solver must say "unstable", not "ok" or "blowup"
    eye = torch.eye(2, dtype=F64)
    sol = fl.solve_gaussian("softmax", torch.zeros(2, dtype=F64), eye, eye, -eye, t1=1.0, n_steps=1, method="euler")
    assert sol.status == "unstable"
    assert float(sol.stop_time) == 0.0
    ok = fl.solve_gaussian("softmax", torch.zeros(2, dtype=F64), eye, eye, -eye, t1=1.0, n_steps=8, method="euler")
    assert ok.status == "ok"


def test_hitting_time_is_infinite_when_not_reached():
    assert fl.hitting_time(1.0, 8, delta=1e-3, t_max=0.5) == math.inf
    assert math.isfinite(fl.hitting_time(1.0, 8, delta=1e-3, t_max=50.0))


def test_grid_has_a_device_and_the_solver_follows_the_density():
    grid = fl.make_grid(-1.0, 1.0, 16, device="cpu")
    assert grid.device.type == "cpu" and grid.centers().device.type == "cpu"
    assert grid.centers("meta").device.type == "meta"  # centres where asked (the solver asks its density's)
    meta_grid = fl.make_grid(-1.0, 1.0, 16, device="meta")  # a grid elsewhere: the CPU density decides
    rho = fl.pde.density_on_grid(grid, lambda x: torch.exp(-4 * x[..., 0] ** 2))
    sol = fl.solve_transformer_pde(fl.SoftmaxAttention(), rho, meta_grid, t1=0.05, n_save=1)
    assert sol.density.device.type == "cpu" and torch.allclose(sol.mass(), torch.ones(2, dtype=F64))
    with pytest.raises(TypeError, match="SinkhornAttention has no mean-field velocity"):
        fl.solve_transformer_pde(fl.SinkhornAttention(), torch.ones(16, dtype=F64), grid, t1=0.1)
