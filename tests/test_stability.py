"""Stability helpers: Jacobians, one-sided Lipschitz constants, perturbation growth (book chapter 4)."""

from __future__ import annotations

import math

import pytest
import torch

import flowlib as fl

F64 = torch.float64
M = torch.tensor([[-1.0, 2.0], [-2.0, -1.0]], dtype=F64)


def linear(x):
    return x @ M.mT


def test_jacobian_matches_autograd(gen):
    field = fl.SoftmaxAttention(beta=1.2, V=torch.randn(3, 3, generator=gen, dtype=F64))
    x = torch.randn(5, 3, generator=gen, dtype=F64)
    J = fl.field_jacobian(field, x)
    ref = torch.autograd.functional.jacobian(field.velocity, x)
    assert J.shape == (5, 3, 5, 3)
    assert torch.allclose(J, ref, atol=1e-13)
    Jb = fl.field_jacobian(field, torch.stack([x, 2 * x]))
    assert torch.allclose(Jb[0], ref, atol=1e-13)


def test_one_sided_lipschitz_of_linear_field(gen):
    x = torch.randn(3, 2, generator=gen, dtype=F64)
    assert float(fl.one_sided_lipschitz(linear, x)) == pytest.approx(-1.0, abs=1e-12)
    traj = fl.simulate(linear, x, t1=1.0, n_steps=4)
    mu = fl.one_sided_lipschitz(linear, traj.x)
    assert mu.shape == (5,)
    assert torch.allclose(mu, torch.full((5,), -1.0, dtype=F64), atol=1e-12)


def test_lipschitz_estimate_matches_full_jacobian(gen):
    field = fl.SoftmaxAttention(beta=0.9, Q=torch.randn(3, 3, generator=gen, dtype=F64))
    x = torch.randn(6, 3, generator=gen, dtype=F64)
    J = torch.autograd.functional.jacobian(field.velocity, x).reshape(18, 18)
    exact = torch.linalg.matrix_norm(J, ord=2)
    est = fl.lipschitz_estimate(field, x, n_iter=500, tol=1e-12, generator=torch.Generator().manual_seed(3))
    assert float(abs(est - exact) / exact) < 1e-6
    state = torch.get_rng_state()
    fl.lipschitz_estimate(field, x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(state, torch.get_rng_state())


def test_perturbations_decay_like_exp_minus_mt(gen):
    x0 = torch.randn(4, 2, generator=gen, dtype=F64)
    delta = 1e-3 * torch.randn(4, 2, generator=gen, dtype=F64)
    t, ratio = fl.perturbation_growth(linear, x0, delta, t1=3.0, n_steps=300, method="rk4")
    assert torch.allclose(ratio, torch.exp(-t), rtol=1e-8)


def test_discrete_layers_lose_contraction_past_the_step_limit(gen):
    x0 = torch.randn(4, 2, generator=gen, dtype=F64)
    delta = torch.randn(4, 2, generator=gen, dtype=F64)
    h_max = fl.contraction_step_limit(1.0, math.sqrt(5.0))
    assert h_max == pytest.approx(0.4)
    for h, grows in [(0.3, False), (0.5, True)]:
        n = 10
        _, ratio = fl.perturbation_growth(linear, x0, delta, t1=h * n, n_steps=n)
        factor = fl.euler_step_factor(1.0, math.sqrt(5.0), h)
        assert torch.allclose(ratio, torch.tensor([factor**k for k in range(n + 1)], dtype=F64), rtol=1e-10)
        assert (float(ratio[-1]) > 1.0) == grows


def test_attention_with_negative_value_matrix_contracts(gen):
    """V = -I, Q = K = 0 (uniform attention): v_i = -mean(x), so differences of means decay like e^{-t}."""
    field = fl.SoftmaxAttention(
        Q=torch.zeros(1, 2, dtype=F64), K=torch.zeros(1, 2, dtype=F64), V=-torch.eye(2, dtype=F64)
    )
    x0 = torch.randn(5, 2, generator=gen, dtype=F64)
    mu = fl.one_sided_lipschitz(field, x0)
    assert float(mu) == pytest.approx(0.0, abs=1e-12)  # directions with zero mean do not move
    delta = torch.ones(5, 2, dtype=F64) * 1e-2  # a pure shift of the mean
    t, ratio = fl.perturbation_growth(field, x0, delta, t1=2.0, n_steps=200, method="rk4")
    assert torch.allclose(ratio, torch.exp(-t), rtol=1e-8)
