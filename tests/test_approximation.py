"""Tests for flowlib.book.approximation: the constants of the flow approximation theorem and per-layer weights."""

from __future__ import annotations

import math

import pytest
import torch

import flowlib as fl
from flowlib.book import approximation as ap
from flowlib.book import regularity as rg

F64 = torch.float64


def test_max_token_norm_is_the_largest_token_norm():
    x = torch.tensor([[[3.0, 4.0], [1.0, 0.0]], [[0.0, 0.5], [0.0, -2.0]]], dtype=F64)
    assert torch.allclose(ap.max_token_norm(x), torch.tensor([5.0, 2.0], dtype=F64))


def test_invariant_radius_closed_form_and_contains_the_flow(gen):
    assert rg.invariant_radius(1.5, 0.5, 2.0 * torch.eye(2, dtype=F64)) == pytest.approx(1.5 * math.e)
    assert rg.invariant_radius(2.0, 1.0, None) == pytest.approx(2.0 * math.e)
    V = fl.gaussian_matrix(3, 3, generator=gen)
    x0 = torch.randn(10, 3, generator=gen, dtype=F64)
    traj = fl.simulate(fl.SoftmaxAttention(V=V, beta=2.0), x0, t1=1.0, n_steps=200, method="rk4")
    r0 = float(ap.max_token_norm(x0))
    radii = ap.max_token_norm(traj.x)
    bounds = torch.tensor([rg.invariant_radius(r0, float(t), V) for t in traj.t], dtype=F64)
    assert bool((radii <= bounds + 1e-12).all())


def _jacobian_inf_norm_1d(x, beta):
    """Operator norm (max-over-tokens norm) of the Jacobian of 1-D attention with Q=K=V=1: max row abs sum."""
    f = fl.SoftmaxAttention(beta=beta)

    def flat(y):
        return f(y.reshape(-1, 1)).reshape(-1)

    jac = torch.autograd.functional.jacobian(flat, x.reshape(-1))
    return float(jac.abs().sum(dim=1).max())


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_lipschitz_bound_dominates_the_jacobian_and_is_not_vacuous(gen, beta):
    # In d = 1 the operator norm in the max-over-tokens norm is the max absolute row sum, computed exactly.
    R = 1.5
    best = 0.0
    for _ in range(30):
        x = (2 * torch.rand(6, generator=gen, dtype=F64) - 1) * R
        best = max(best, _jacobian_inf_norm_1d(x, beta) / rg.lipschitz_bound(R, beta))
    # two tokens on a grid of [-R, R]^2: the bound is attained up to a factor 6 (about 2, 3, 5 for these betas)
    bound = rg.lipschitz_bound(R, beta)
    grid = torch.linspace(-R, R, 21, dtype=F64)
    edge = max(_jacobian_inf_norm_1d(torch.stack([a, c]), beta) for a in grid for c in grid)
    assert best <= 1.0 and edge <= bound
    assert edge >= bound / 6


def test_lipschitz_bound_formula(gen):
    Q, K = fl.gaussian_matrix(2, 3, generator=gen), fl.gaussian_matrix(2, 3, generator=gen)
    V = fl.gaussian_matrix(3, 3, generator=gen)
    a = float(torch.linalg.matrix_norm(K.T @ Q, ord=2))
    v = float(torch.linalg.matrix_norm(V, ord=2))
    got = rg.lipschitz_bound(2.0, -0.5, Q, K, V)
    assert got == pytest.approx(v * (1 + 2 * 0.5 * a * 4.0))
    assert rg.lipschitz_bound(0.0, 1.0, Q, K, V) == pytest.approx(v)


def test_error_bound_lambda_zero_and_continuity():
    assert ap.euler_error_bound(C=2.0, lipschitz=0.0, t1=3.0, h=0.1) == pytest.approx(0.3)
    near = ap.euler_error_bound(C=2.0, lipschitz=1e-9, t1=3.0, h=0.1)
    assert near == pytest.approx(0.3, rel=1e-6)
    assert ap.euler_error_bound(C=1.0, lipschitz=1.0, t1=1.0, h=0.5) == pytest.approx(0.25 * (math.e - 1))


def test_step_limit_puts_the_bound_on_the_tube():
    h0 = ap.euler_step_limit(C=3.0, lipschitz=2.0, t1=1.5, delta=0.2)
    assert ap.euler_error_bound(C=3.0, lipschitz=2.0, t1=1.5, h=h0) == pytest.approx(0.2)
    assert ap.euler_step_limit(C=0.0, lipschitz=2.0, t1=1.5, delta=0.2) == math.inf
    assert ap.log10_euler_step_limit(C=3.0, lipschitz=2.0, t1=1.5, delta=0.2) == pytest.approx(math.log10(h0))
    # no overflow for huge Lambda T: h_0 = 2 delta Lambda / (C (e^{Lambda T} - 1)) ~ 2 * 1000 e^{-1000} / 1
    assert ap.euler_step_limit(C=1.0, lipschitz=1000.0, t1=1.0, delta=1.0) == 0.0
    expected = (math.log(2000.0) - 1000.0) / math.log(10.0)
    assert ap.log10_euler_step_limit(C=1.0, lipschitz=1000.0, t1=1.0, delta=1.0) == pytest.approx(expected)


def test_error_bound_holds_and_is_sharp_for_exponential_growth():
    # x' = lam x, x0 = 1: Lambda = lam, C = lam^2 e^{lam T}; error ~ (1/2) lam^2 T e^{lam T} h
    lam, T = 1.0, 2.0
    C = lam**2 * math.exp(lam * T)
    for L in (50, 100, 200):
        h = T / L
        err = abs((1 + lam * h) ** L - math.exp(lam * T))
        bound = ap.euler_error_bound(C=C, lipschitz=lam, t1=T, h=h)
        assert err <= bound
        assert err >= 0.2 * bound  # same order: bound/err -> (e^{lam T}-1)/(lam T) ~ 3.2


def test_attention_constants_certify_a_tame_example(gen):
    V = 0.5 * torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)
    x0 = torch.randn(6, 2, generator=gen, dtype=F64)
    x0 = 0.5 * x0 / ap.max_token_norm(x0)
    c = ap.attention_flow_constants(x0, t1=1.0, delta=0.5, V=V, beta=1.0)
    assert c.radius0 == pytest.approx(0.5)
    assert c.radius_t == pytest.approx(0.5 * math.exp(0.5))
    assert c.h_max > 0.25  # L = 4 layers are already covered by the theorem
    field = fl.SoftmaxAttention(V=V, beta=1.0)
    for L in (4, 8, 32):
        study = fl.convergence_study(field, x0, t1=1.0, layers=[L, 2 * L], method="euler", reference_steps=2048)
        assert study.errors[0] <= c.bound(1.0 / L)
        assert study.errors[0] <= c.delta


def test_residual_network_matches_residual_stack_and_time_dependent_simulate(gen):
    x0 = torch.randn(5, 2, generator=gen, dtype=F64)
    field = fl.SoftmaxAttention(V=fl.gaussian_matrix(2, 2, generator=gen), beta=0.7)
    out = ap.residual_network(lambda x, ell: field(x), x0, t1=2.0, n_layers=16)
    assert torch.allclose(out, fl.residual_stack(field, x0, 16, t1=2.0).x, atol=1e-13)

    def vel(x, t):
        return math.cos(3 * t) * field(x)

    L = 20
    out = ap.residual_network(lambda x, ell: vel(x, ell * 1.5 / L), x0, t1=1.5, n_layers=L)
    ref = fl.simulate(fl.TimeDependent(vel), x0, t1=1.5, n_steps=L, method="euler")
    assert torch.allclose(out, ref.x, atol=1e-13)


def _linear_errors(W_of_layers, M_mean, x0, layers, T):
    ref = x0 @ torch.linalg.matrix_exp(T * M_mean).T
    errs = []
    for L in layers:
        W = W_of_layers(L)
        out = ap.residual_network(lambda x, ell: x @ W[ell].mT, x0, t1=T, n_layers=L)
        errs.append(float((out[-1] - ref).norm(dim=-1).amax(dim=-1).pow(2).mean().sqrt()))
    return errs


def test_smooth_weights_order_one_iid_weights_order_one_half(gen):
    M = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=F64)
    x0 = torch.randn(3, 2, generator=gen, dtype=F64)
    layers = [16, 64, 256, 1024]

    # smooth in depth: M(t) = M + sin(2 pi t) I; the limit solves x' = M(t) x, whose flow is
    # exp(M T + (1 - cos 2 pi T)/(2 pi) I) because I commutes with M. At T = 1 the extra term vanishes.
    def smooth(L):
        t = torch.arange(L, dtype=F64) / L
        return M + torch.sin(2 * math.pi * t)[:, None, None] * torch.eye(2, dtype=F64)

    order = fl.fit_order(layers, _linear_errors(smooth, M, x0, layers, 1.0))
    assert abs(order - 1.0) < 0.1

    xb = x0.expand(64, 3, 2)
    iid_errs = _linear_errors(
        lambda L: ap.iid_layer_weights(M, 0.5, L, batch_shape=(64,), generator=gen), M, xb, layers, 1.0
    )
    assert abs(fl.fit_order(layers, iid_errs) - 0.5) < 0.12


def test_iid_weights_moments_and_sde_scaling(gen):
    mean = torch.tensor([[1.0, 2.0]], dtype=F64)
    w = ap.iid_layer_weights(mean, 0.3, 4000, generator=gen)
    assert w.shape == (4000, 1, 2)
    assert torch.allclose(w.mean(0), mean, atol=0.03)
    assert float((w - mean).std()) == pytest.approx(0.3, rel=0.05)
    ws = ap.iid_layer_weights(mean, 0.3, 400, t1=4.0, regime="sde", batch_shape=(10,), generator=gen)
    assert ws.shape == (400, 10, 1, 2)
    assert float((ws - mean).std()) == pytest.approx(0.3 * math.sqrt(100.0), rel=0.05)


def test_validation():
    with pytest.raises(ValueError):
        rg.invariant_radius(-1.0, 1.0, None)
    with pytest.raises(ValueError):
        ap.euler_error_bound(C=1.0, lipschitz=-1.0, t1=1.0, h=0.1)
    with pytest.raises(ValueError):
        ap.euler_error_bound(C=1.0, lipschitz=1.0, t1=1.0, h=0.0)
    with pytest.raises(ValueError):
        ap.euler_step_limit(C=1.0, lipschitz=1.0, t1=1.0, delta=0.0)
    with pytest.raises(ValueError):
        rg.lipschitz_bound(1.0, 1.0, torch.eye(2, dtype=F64), torch.eye(3, dtype=F64))
    with pytest.raises(TypeError):
        ap.residual_network(3, torch.zeros(2, 2, dtype=F64), t1=1.0, n_layers=2)
    with pytest.raises(ValueError):
        ap.residual_network(lambda x, ell: x[:1], torch.zeros(2, 2, dtype=F64), t1=1.0, n_layers=2)
    with pytest.raises(ValueError):
        ap.iid_layer_weights(torch.eye(2, dtype=F64), 0.1, 3, regime="levy")
    with pytest.raises(TypeError):
        ap.max_token_norm([1.0, 2.0])


def test_iid_weights_intermediate_noise_exponent(gen):
    # gamma = 1/4 with h = 1/16: the fluctuation is sigma * 16^{1/4} = 2 sigma; regime shorthands agree
    mean = torch.zeros(1, 1, dtype=F64)
    w = ap.iid_layer_weights(mean, 0.3, 16, gamma=0.25, batch_shape=(4000,), generator=gen)
    assert float(w.std()) == pytest.approx(0.6, rel=0.05)
    a = ap.iid_layer_weights(mean, 0.3, 16, regime="sde", generator=torch.Generator().manual_seed(1))
    b = ap.iid_layer_weights(mean, 0.3, 16, gamma=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        ap.iid_layer_weights(mean, 0.3, 16, gamma=-0.1)


def test_intermediate_noise_gives_intermediate_rate(gen):
    # Scalar model x' = mean + noise: x_L - x(T) = h^{1 - gamma} sigma sum Z_l, whose RMS is sigma sqrt(T) h^{1/2 - gamma}
    layers = [16, 64, 256, 1024]
    for gamma, rate in [(0.0, 0.5), (0.25, 0.25)]:
        rms = []
        for L in layers:
            W = ap.iid_layer_weights(
                torch.ones(1, 1, dtype=F64), 1.0, L, gamma=gamma, batch_shape=(2000,), generator=gen
            )
            out = ap.residual_network(
                lambda x, ell: x * 0 + W[ell], torch.zeros(2000, 1, 1, dtype=F64), t1=1.0, n_layers=L
            )
            rms.append(float((out[-1] - 1.0).pow(2).mean().sqrt()))
        assert abs(fl.fit_order(layers, rms) - rate) < 0.05
