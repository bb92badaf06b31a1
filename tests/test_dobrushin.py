"""Chapter 6: mean-field constants of softmax attention and sampling rates of empirical measures."""

from __future__ import annotations

import math

import pytest
import torch

import flowlib as fl
from flowlib.book import dobrushin

F64 = torch.float64


def _gamma(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, A: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Mean-field velocity of sum_j w_j delta_{y_j} at the queries x, written out."""
    logits = (x @ A.T) @ y.T + torch.log(w)
    return torch.softmax(logits, dim=-1) @ (y @ V.T)


def _ball(n: int, d: int, R: float, gen: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, d, generator=gen, dtype=F64)
    r = R * torch.rand(n, 1, generator=gen, dtype=F64) ** (1 / d)
    return r * z / z.norm(dim=-1, keepdim=True)


def test_constants_closed_form():
    c = dobrushin.attention_constants(2.0, beta=0.5, V=3 * torch.eye(2, dtype=F64))
    assert c.speed == pytest.approx(6.0)
    assert c.lip_x == pytest.approx(3 * 0.5 * 4)
    assert c.lip_mu == pytest.approx(3 * (1 + 2 * 0.5 * 4) * math.exp(4.0))
    Q = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=F64)
    K = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=F64)  # K^T Q = diag(2, 3)
    assert dobrushin.attention_constants(1.0, Q=Q, K=K).lip_x == pytest.approx(3.0)
    RT, C = dobrushin.dobrushin_constant(1.0, 0.5, V=2 * torch.eye(2, dtype=F64), beta=0.1)
    assert RT == pytest.approx(math.e)
    a = 0.1 * math.e**2
    assert C == pytest.approx(2 * a + 2 * (1 + 2 * a) * math.exp(2 * a))
    assert dobrushin.attention_constants(30.0).lip_mu == math.inf  # e^1800 overflows: reported as inf
    assert dobrushin.attention_constants(30.0).lip_x == pytest.approx(900.0)


def test_bounds_hold_and_lip_x_is_nearly_attained(gen):
    d, R = 2, 1.5
    Q = torch.randn(d, d, generator=gen, dtype=F64)
    K = torch.randn(d, d, generator=gen, dtype=F64)
    V = torch.randn(d, d, generator=gen, dtype=F64)
    beta = 0.4
    A = beta * K.T @ Q
    c = dobrushin.attention_constants(R, Q=Q, K=K, V=V, beta=beta)
    field = fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=beta)
    y = _ball(60, d, R, gen)
    w = torch.ones(60, dtype=F64) / 60
    x = _ball(200, d, R, gen)
    # the written-out velocity is flowlib's
    assert torch.allclose(_gamma(x, y, w, A, V), fl.measure_velocity(field, x, y), atol=1e-12)
    g = _gamma(x, y, w, A, V)
    assert float(g.norm(dim=-1).max()) <= c.speed
    # Lipschitz in x: difference quotients stay below lip_x
    x2 = x + 1e-3 * torch.randn(x.shape, generator=gen, dtype=F64)
    q = (_gamma(x2, y, w, A, V) - g).norm(dim=-1) / (x2 - x).norm(dim=-1)
    assert float(q.max()) <= c.lip_x
    # the bound is attained up to a factor: two atoms at +-R along the top singular directions
    U, S, Vh = torch.linalg.svd(A)
    y2 = torch.stack([R * U[:, 0], -R * U[:, 0]])
    w2 = torch.tensor([0.5, 0.5], dtype=F64)
    eps = 1e-6
    x0 = torch.zeros(1, d, dtype=F64)
    dx = eps * Vh[0][None]  # A dx points along U[:, 0]
    slope = (
        _gamma(x0 + dx, y2, w2, A, torch.eye(d, dtype=F64)) - _gamma(x0, y2, w2, A, torch.eye(d, dtype=F64))
    ).norm() / eps
    assert float(slope) == pytest.approx(float(S[0]) * R**2, rel=1e-4)  # = ||A|| R^2, the bound with V = I


def test_measure_lipschitz_bound_holds(gen):
    d, R = 3, 1.0
    Q = torch.randn(d, d, generator=gen, dtype=F64)
    K = torch.randn(d, d, generator=gen, dtype=F64)
    V = torch.randn(d, d, generator=gen, dtype=F64)
    beta = 0.8
    A = beta * K.T @ Q
    c = dobrushin.attention_constants(R, Q=Q, K=K, V=V, beta=beta)
    x = _ball(100, d, R, gen)
    for _ in range(5):
        y = _ball(40, d, R, gen)
        z = _ball(40, d, R, gen)
        w = torch.ones(40, dtype=F64) / 40
        w1 = float(fl.wasserstein_exact(y, z, p=1))
        gap = (_gamma(x, y, w, A, V) - _gamma(x, z, w, A, V)).norm(dim=-1).max()
        assert 0 < float(gap) <= c.lip_mu * w1


def test_w1_to_uniform_closed_forms():
    x0 = torch.tensor([[0.5], [0.2], [1.3]], dtype=F64)
    expect = torch.tensor([0.25, 0.04 / 2 + 0.64 / 2, 1.3 - 0.5], dtype=F64)  # x0^2/2 + (1-x0)^2/2 inside [0,1]
    assert torch.allclose(dobrushin.w1_to_uniform_1d(x0), expect)
    N = 7
    mid = (torch.arange(N, dtype=F64) + 0.5) / N
    assert float(dobrushin.w1_to_uniform_1d(mid)) == pytest.approx(1 / (4 * N))  # the optimal N-point measure
    assert 1 / (4 * N) >= dobrushin.cube_lower_bound(N, 1) == pytest.approx(1 / (8 * N))


def test_w1_to_uniform_matches_quantile_formula(gen):
    x = torch.rand(50, generator=gen, dtype=F64) * 1.4 - 0.2
    fine = (torch.arange(20000, dtype=F64) + 0.5) / 20000
    ref = fl.wasserstein_1d(x, fine, p=1)
    assert float(dobrushin.w1_to_uniform_1d(x)) == pytest.approx(float(ref), abs=1e-4)


def test_one_dimensional_rate_constant(gen):
    # E W1(mu^N, U[0,1]) ~ sqrt(pi/32) N^{-1/2}, below the bound (pi/8) N^{-1/2}
    N, reps = 400, 400
    w = dobrushin.w1_to_uniform_1d(torch.rand(reps, N, generator=gen, dtype=F64)).mean()
    assert float(w) * math.sqrt(N) == pytest.approx(math.sqrt(math.pi / 32), rel=0.08)
    assert float(w) * math.sqrt(N) < math.pi / 8


def test_two_sample_study_slopes(gen):
    def unif(d):
        return lambda n, g: torch.rand(n, d, generator=g, dtype=F64)

    s1 = dobrushin.two_sample_study(unif(1), [50, 100, 200, 400], n_reps=[32, 16, 8, 4], generator=gen)
    assert s1.w1_slope == pytest.approx(-0.5, abs=0.12)
    assert s1.sliced == pytest.approx(s1.w1)  # in 1-D, slicing changes nothing
    s4 = dobrushin.two_sample_study(unif(4), [50, 100, 200, 400], n_reps=[16, 8, 4, 2], generator=gen, sliced_reps=32)
    assert -0.38 < s4.w1_slope < -0.18  # near -1/4, far from -1/2
    assert s4.sliced_slope == pytest.approx(-0.5, abs=0.12)
    for N, w in zip(s4.sizes, s4.w1):
        assert w >= dobrushin.cube_lower_bound(N, 4)


def test_validation(gen):
    with pytest.raises(ValueError):
        dobrushin.attention_constants(0.0)
    with pytest.raises(ValueError):
        dobrushin.attention_constants(1.0, beta=-1.0)
    with pytest.raises(TypeError):
        dobrushin.attention_constants(1.0, V=[[1.0]])
    with pytest.raises(ValueError):
        dobrushin.attention_constants(1.0, Q=torch.eye(2), K=torch.eye(3))
    with pytest.raises(ValueError):
        dobrushin.w1_to_uniform_1d(torch.zeros(0))
    with pytest.raises(TypeError):
        dobrushin.w1_to_uniform_1d([0.5])
    with pytest.raises(ValueError):
        dobrushin.two_sample_study(lambda n, g: torch.rand(n, 2, generator=g), [10], n_reps=2, generator=gen)
    with pytest.raises(TypeError):
        dobrushin.two_sample_study(lambda n, g: torch.rand(n, 2, generator=g), [10, 20], n_reps=2, generator=None)
    with pytest.raises(ValueError):
        dobrushin.two_sample_study(
            lambda n, g: torch.rand(n, 2, generator=g), [10, 20], n_reps=2, generator=gen, sliced_reps=[1]
        )
    with pytest.raises(ValueError):
        dobrushin.cube_lower_bound(0, 2)


def test_two_sample_lemma_brackets_the_one_sample_distance(gen):
    # E W1(mu^N, mu) <= E W1(mu^N, nu^N) <= 2 E W1(mu^N, mu), with mu = U[0, 1] known exactly
    N, reps = 200, 2000
    x = torch.rand(reps, N, generator=gen, dtype=F64)
    y = torch.rand(reps, N, generator=gen, dtype=F64)
    one = float(dobrushin.w1_to_uniform_1d(x).mean())
    two = float(fl.wasserstein_1d(x, y, p=1).mean())
    assert 1.05 * one < two < 0.95 * 2 * one  # strictly inside the bracket, with room for sampling noise
    # for the uniform law the ratio tends to sqrt(2) (a Brownian bridge scaled by sqrt(2))
    assert two / one == pytest.approx(math.sqrt(2), rel=0.05)
