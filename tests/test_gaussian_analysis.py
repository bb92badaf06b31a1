"""Tests of flowlib.book.gaussian_analysis: closed forms against exact solutions and Monte Carlo."""

import math

import pytest
import torch

import flowlib as fl
from flowlib.book import gaussian_analysis as ga

F64 = torch.float64


def _spd(d, seed):
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(d, d, generator=g, dtype=F64)
    return G @ G.T + 0.5 * torch.eye(d, dtype=F64)


def test_blowup_shape_simple_top_eigenvalue_is_rank_one_and_matches_closed_form():
    d = 3
    S0 = _spd(d, 0)
    g = torch.Generator().manual_seed(1)
    A = torch.randn(d, d, generator=g, dtype=F64)
    shape, m = ga.blowup_limit_shape(S0, A)
    assert m == 1
    assert torch.linalg.matrix_rank(shape, atol=1e-10) == 1
    assert abs(float(shape.trace()) - 1) < 1e-12
    t_star = fl.gaussian.blowup_time(S0, A)
    S = fl.gaussian.softmax_covariance_closed_form(S0, A, t_star * (1 - 1e-9))
    assert torch.allclose(S / S.trace(), shape, atol=1e-7)


def test_blowup_shape_multiplicity_gives_identity_over_d():
    # Q = K = I, Sigma0 = I: R = 2 beta I, every eigenvalue is top, and Sigma/tr Sigma = I/d for all t
    d = 4
    shape, m = ga.blowup_limit_shape(torch.eye(d, dtype=F64), 0.7 * torch.eye(d, dtype=F64))
    assert m == d
    assert torch.allclose(shape, torch.eye(d, dtype=F64) / d, atol=1e-12)


def test_blowup_shape_double_eigenvalue_has_rank_two():
    S0 = torch.diag(torch.tensor([1.0, 1.0, 0.25], dtype=F64))
    A = torch.eye(3, dtype=F64)  # R = 2 Sigma0: top eigenvalue 2, twice
    shape, m = ga.blowup_limit_shape(S0, A)
    assert m == 2
    assert torch.allclose(shape, torch.diag(torch.tensor([0.5, 0.5, 0.0], dtype=F64)), atol=1e-12)


def test_blowup_shape_rejects_no_blowup_and_bad_input():
    q = torch.tensor([[1.0, 2.0]], dtype=F64)
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        ga.blowup_limit_shape(torch.eye(2, dtype=F64), fl.gaussian.score_matrix(q, -q))
    with pytest.raises(ValueError, match="positive definite"):
        ga.blowup_limit_shape(torch.zeros(2, 2, dtype=F64), torch.eye(2, dtype=F64))
    with pytest.raises(ValueError, match="shape"):
        ga.blowup_limit_shape(torch.eye(2, dtype=F64), torch.eye(3, dtype=F64))
    with pytest.raises(TypeError):
        ga.blowup_limit_shape(torch.eye(2, dtype=torch.int64), torch.eye(2, dtype=F64))


def test_criterion_is_the_squared_spectral_norm_and_isotropic_value():
    assert ga.normaliser_criterion(2.0 * torch.eye(3, dtype=F64), 0.3 * torch.eye(3, dtype=F64)) == pytest.approx(
        0.36, rel=1e-12
    )  # (beta sigma^2)^2 = (0.3 * 2)^2
    S = _spd(3, 2)
    A = torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    lam = ga.normaliser_criterion(S, A)
    R = fl.gaussian.symmetric_sqrt(S)
    assert lam == pytest.approx(float(torch.linalg.eigvalsh(R @ A.T @ S @ A @ R)[-1]), rel=1e-10)


def test_relative_variance_matches_monte_carlo():
    g = torch.Generator().manual_seed(4)
    alpha = torch.tensor([0.5, -1.0], dtype=F64)
    S = torch.tensor([[0.5, 0.1], [0.1, 0.3]], dtype=F64)
    A = torch.tensor([[0.4, 0.2], [-0.1, 0.3]], dtype=F64)
    x = torch.tensor([0.8, 1.1], dtype=F64)
    y = fl.gaussian_tokens(400_000, alpha, S, generator=g)
    w = torch.exp(y @ (A @ x))
    mc = float(w.var() / w.mean() ** 2)
    exact = float(ga.normaliser_relative_variance(x, S, A))
    assert exact == pytest.approx(mc, rel=0.03)
    assert exact == pytest.approx(math.expm1(float((A @ x) @ S @ (A @ x))), rel=1e-12)


def test_expected_relative_variance_one_dimensional_closed_form_and_infinity():
    # d = 1: x ~ N(a, s), q = b x^2 with b = A^2 s; E e^{b x^2} = (1 - 2 b s)^{-1/2} exp(b a^2 / (1 - 2 b s))
    a, s, A = 0.7, 0.8, 0.6
    b = A * A * s
    expected = (1 - 2 * b * s) ** -0.5 * math.exp(b * a * a / (1 - 2 * b * s)) - 1
    got = ga.expected_relative_variance(
        torch.tensor([a], dtype=F64), torch.tensor([[s]], dtype=F64), torch.tensor([[A]], dtype=F64)
    )
    assert got == pytest.approx(expected, rel=1e-12)
    # lambda = (A s)^2 = 0.5 exactly at A = sqrt(0.5)/s: infinite
    A_bad = math.sqrt(0.5) / s * 1.0001
    assert (
        ga.expected_relative_variance(
            torch.tensor([a], dtype=F64), torch.tensor([[s]], dtype=F64), torch.tensor([[A_bad]], dtype=F64)
        )
        == math.inf
    )


def test_expected_relative_variance_matches_monte_carlo_in_2d():
    g = torch.Generator().manual_seed(5)
    alpha = torch.tensor([0.3, -0.2], dtype=F64)
    S = torch.tensor([[0.6, 0.2], [0.2, 0.4]], dtype=F64)
    A = torch.tensor([[0.5, 0.3], [-0.2, 0.4]], dtype=F64)
    assert ga.normaliser_criterion(S, A) < 0.25  # the variance of the estimate below is finite
    x = fl.gaussian_tokens(400_000, alpha, S, generator=g)
    mc = float(ga.normaliser_relative_variance(x, S, A).mean())
    assert ga.expected_relative_variance(alpha, S, A) == pytest.approx(mc, rel=0.02)


def test_snis_asymptotic_variance_matches_repeated_estimates():
    g = torch.Generator().manual_seed(6)
    N, reps = 2000, 3000
    alpha = torch.tensor([0.2, 0.1], dtype=F64)
    S = torch.tensor([[0.5, 0.1], [0.1, 0.4]], dtype=F64)
    A = torch.tensor([[0.6, 0.1], [0.0, 0.5]], dtype=F64)
    V = torch.tensor([[1.0, 0.3], [-0.2, 0.8]], dtype=F64)
    x = torch.tensor([0.7, -0.4], dtype=F64)
    y = fl.gaussian_tokens(N, alpha, S, batch_shape=(reps,), generator=g)  # (reps, N, d)
    w = torch.softmax(y @ (A @ x), dim=-1)
    est = (w.unsqueeze(-1) * (y @ V.T)).sum(-2)
    exact_velocity = V @ (alpha + S @ A @ x)
    mse = float(((est - exact_velocity) ** 2).sum(-1).mean())
    assert N * mse == pytest.approx(float(ga.snis_asymptotic_variance(x, S, A, V)), rel=0.08)


def test_velocity_error_slope_is_minus_one_half_when_criterion_holds():
    field = fl.SoftmaxAttention(beta=0.4)  # Sigma = I, A = 0.4 I: criterion 0.16 < 1/2
    Ns, rms = [100, 400, 1600, 6400], []
    for N in Ns:
        errs = []
        for s in range(6):
            g = torch.Generator().manual_seed(50 + s)
            x = torch.randn(300, 2, generator=g, dtype=F64)
            y = torch.randn(N, 2, generator=g, dtype=F64)
            errs.append(((fl.measure_velocity(field, x, y) - 0.4 * x) ** 2).sum(-1))
        rms.append(float(torch.cat(errs).mean().sqrt()))
    assert -fl.fit_order(Ns, rms) == pytest.approx(-0.5, abs=0.12)


# --- the mean law, effective keys and the seed standard (Chapter 7, issue 21)


@pytest.mark.parametrize("v", [1.0, -1.0, 0.5])
def test_standardized_mean_follows_the_mean_law_for_every_A(v):
    g = torch.Generator().manual_seed(3)
    Q, K = torch.randn(2, 2, generator=g, dtype=F64), torch.randn(2, 2, generator=g, dtype=F64)
    mean0, cov0 = torch.tensor([0.3, -0.5], dtype=F64), torch.tensor([[0.5, 0.1], [0.1, 0.3]], dtype=F64)
    sol = fl.solve_gaussian("softmax", mean0, cov0, Q=Q, K=K, V=v * torch.eye(2, dtype=F64), t1=0.5, n_steps=200)
    assert sol.status == "ok"
    ratio = ga.standardized_mean(sol.final_mean, sol.final_cov) / ga.standardized_mean(mean0, cov0)
    assert abs(float(ratio) - math.exp(0.5 * v)) < 1e-8


def test_standardized_mean_batches_and_rejects_bad_input():
    cov = torch.stack([torch.eye(2, dtype=F64), 4 * torch.eye(2, dtype=F64)])
    out = ga.standardized_mean(torch.tensor([[3.0, 4.0], [3.0, 4.0]], dtype=F64), cov)
    assert torch.allclose(out, torch.tensor([5.0, 2.5], dtype=F64))
    with pytest.raises(ValueError, match="positive definite"):
        ga.standardized_mean(torch.zeros(2, dtype=F64), torch.diag(torch.tensor([1.0, -1.0], dtype=F64)))
    with pytest.raises(ValueError, match="do not match"):
        ga.standardized_mean(torch.zeros(3, dtype=F64), torch.eye(2, dtype=F64))
    with pytest.raises(TypeError):
        ga.standardized_mean(torch.zeros(2, dtype=torch.int64), torch.eye(2, dtype=F64))


def test_effective_keys_values_and_errors():
    P = torch.tensor(
        [[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.7, 0.1, 0.1, 0.1]], dtype=F64
    )
    assert torch.allclose(ga.effective_keys(P), torch.tensor([4.0, 1.0, 2.0, 1 / 0.52], dtype=F64))
    W = fl.SoftmaxAttention(beta=0.0).weights(torch.randn(5, 2, dtype=F64))
    assert torch.allclose(ga.effective_keys(W), torch.full((5,), 5.0, dtype=F64))
    with pytest.raises(ValueError, match="probability"):
        ga.effective_keys(torch.tensor([[0.5, 0.6], [0.5, 0.5]], dtype=F64))
    with pytest.raises(ValueError, match="probability"):
        ga.effective_keys(torch.tensor([[1.5, -0.5], [0.5, 0.5]], dtype=F64))


def test_runaway_mean_freezes_the_cloud_and_stable_mean_tracks():
    # Chapter 7: same covariance closure, V = I with K = -Q (runaway mean) against V = -I with K = Q (stable mean)
    q = torch.tensor([[0.6, 0.8]], dtype=F64)
    cov0 = 0.5 * torch.tensor([[1.0, 0.4], [0.4, 0.8]], dtype=F64)
    x0 = fl.gaussian_tokens(200, torch.zeros(2, dtype=F64), cov0, generator=torch.Generator().manual_seed(5))
    m0, C0 = fl.empirical_moments(x0)
    z = q[0] / q[0].norm()
    ratios = {}
    for name, f in {
        "runaway": fl.SoftmaxAttention(Q=q, K=-q),
        "stable": fl.SoftmaxAttention(Q=q, K=q, V=-torch.eye(2, dtype=F64)),
    }.items():
        tr = fl.simulate(f, x0, t1=16.0, n_steps=40, method="rk4")
        cl = fl.solve_gaussian(f, m0, C0, t1=16.0, n_steps=160)
        ratios[name] = float(z @ fl.empirical_moments(tr.final)[1] @ z / (z @ cl.final_cov @ z))
        if name == "runaway":
            assert float(ga.effective_keys(f.weights(tr.final)).mean()) < 1.01  # single-token attention
            assert float(tr.final.mean(0).norm()) > 1e4
    assert abs(ratios["stable"] - 1) < 0.01 and ratios["runaway"] > 1.5
