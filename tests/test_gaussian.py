"""Gaussian closures: closed forms, scalar cases, blow-up, limit rank, particles (DESIGN §5.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import flowlib as fl
from flowlib import gaussian as G

F64 = torch.float64


def spd(d: int, gen: torch.Generator, shift: float = 0.5) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen, dtype=F64)
    return a @ a.T / d + shift * torch.eye(d, dtype=F64)


# ----------------------------------------------------------------------------- G1, G3: closed forms
@pytest.mark.parametrize("d", [2, 3, 5])
def test_softmax_identity_value_matches_closed_form(gen, d):
    Q = torch.randn(d, d, generator=gen, dtype=F64)
    K = torch.randn(d, d, generator=gen, dtype=F64)
    beta = 1 / math.sqrt(d)
    S0 = spd(d, gen)
    A = G.score_matrix(Q, K, beta=beta)
    t_star = G.blowup_time(S0, A)
    T = 0.5 * min(t_star, 2.0)
    sol = fl.solve_gaussian("softmax", torch.zeros(d, dtype=F64), S0, Q, K, t1=T, n_steps=400, beta=beta)
    exact = G.softmax_covariance_closed_form(S0, A, sol.t)
    assert sol.status == "ok"
    assert (sol.cov - exact).abs().max().item() < 1e-10
    assert exact.shape == sol.cov.shape == (401, d, d)


@pytest.mark.parametrize("d", [2, 3, 4])
def test_blowup_time_and_solver_status(d):
    # Q = K = I with the 1/sqrt(d) scaling: Sigma(t) = I / (1 - 2t/sqrt(d)), t* = sqrt(d)/2
    beta = 1 / math.sqrt(d)
    S0 = torch.eye(d, dtype=F64)
    t_star = G.blowup_time(S0, G.score_matrix(None, None, beta=beta, d=d))
    assert t_star == pytest.approx(math.sqrt(d) / 2, rel=1e-12)
    h = 2.0 / 4000
    sol = fl.solve_gaussian("softmax", torch.zeros(d, dtype=F64), S0, t1=2.0, n_steps=4000, beta=beta)
    assert sol.status == "blowup"
    assert t_star - 0.01 < float(sol.stop_time) <= t_star + h
    # before blow-up the solution follows the closed form lambda(t) = 1/(1 - 2 t / sqrt d)
    k = int(0.5 * t_star / h)
    assert sol.cov[k, 0, 0].item() == pytest.approx(1 / (1 - 2 * sol.t[k].item() / math.sqrt(d)), rel=1e-9)


def test_blowup_time_is_infinite_for_negative_semidefinite_symmetric_part(gen):
    Q = torch.randn(2, 3, generator=gen, dtype=F64)
    assert G.blowup_time(spd(3, gen), G.score_matrix(Q, -Q)) == math.inf


def test_mean_of_softmax_identity_unscaled():
    # A = I (beta = 1, Q = K = I), Sigma0 = I: alpha(t) = alpha0 e^t (1 - 2t)^(-1/2)
    a0 = torch.tensor([0.3, -0.2], dtype=F64)
    sol = fl.solve_gaussian("softmax", a0, torch.eye(2, dtype=F64), t1=0.3, n_steps=300)
    t = sol.t[-1].item()
    assert torch.allclose(sol.final_mean, a0 * math.exp(t) / math.sqrt(1 - 2 * t), rtol=1e-10, atol=0)


# ----------------------------------------------------------------------------- G2: scalar cases
SCALAR = {
    "softmax": lambda lam: 2 * lam**2,
    "l2": lambda lam: 4 * lam**2 / (1 + 2 * lam),
    "sinkhorn": lambda lam: math.sqrt(1 + 4 * lam**2) - 1,
}


@pytest.mark.parametrize("kind", list(SCALAR))
def test_scalar_cases_against_scipy(kind):
    lam0, T = 0.4, 1.0
    ref = solve_ivp(lambda t, y: [SCALAR[kind](y[0])], (0, T), [lam0], rtol=1e-12, atol=1e-14, dense_output=True)
    sol = fl.solve_gaussian(kind, torch.zeros(2, dtype=F64), lam0 * torch.eye(2, dtype=F64), t1=T, n_steps=2000)
    assert sol.status == "ok"
    lam = sol.cov[:, 0, 0].numpy()
    assert np.abs(lam - ref.sol(sol.t.numpy())[0]).max() < 1e-8
    assert sol.cov[:, 0, 1].abs().max().item() < 1e-14  # stays isotropic
    if kind == "softmax":  # closed form lambda0 / (1 - 2 lambda0 t)
        assert lam[-1] == pytest.approx(lam0 / (1 - 2 * lam0 * T), rel=1e-9)


def test_l2_and_sinkhorn_diverge_without_blowup():
    for kind in ("l2", "sinkhorn"):
        sol = fl.solve_gaussian(kind, torch.zeros(1, dtype=F64), torch.eye(1, dtype=F64), t1=5.0, n_steps=500)
        assert sol.status == "ok"
        lam = sol.cov[:, 0, 0]
        rate = (torch.log(lam[-1]) - torch.log(lam[-101])) / 1.0  # growth rate over the last unit of time
        assert rate.item() == pytest.approx(2.0, abs=0.1)  # dlambda/dt ~ 2 lambda for large lambda


# ----------------------------------------------------------------------------- structure of each kind
def test_multihead_with_one_head_is_softmax(gen):
    d = 3
    Q, K, V = (torch.randn(d, d, generator=gen, dtype=F64) for _ in range(3))
    S, m = spd(d, gen), torch.randn(d, generator=gen, dtype=F64)
    b1, J1 = G.affine_velocity("multihead", m, S, Q[None], K[None], V[None], beta=0.7)
    b2, J2 = G.affine_velocity("softmax", m, S, Q, K, V, beta=0.7)
    assert torch.allclose(J1, J2, atol=1e-14) and torch.allclose(b1, b2, atol=1e-14)


def test_multihead_is_sum_of_heads(gen):
    d, H = 4, 2
    Q = torch.randn(H, 2, d, generator=gen, dtype=F64)
    K = torch.randn(H, 2, d, generator=gen, dtype=F64)
    V = torch.randn(H, 2, d, generator=gen, dtype=F64)
    S = spd(d, gen)
    _, J = G.affine_velocity("multihead", torch.zeros(d, dtype=F64), S, Q, K, V, beta=torch.tensor([0.5, 1.5]))
    expected = torch.zeros(d, d, dtype=F64)
    for h, beta in enumerate([0.5, 1.5]):
        E = torch.zeros(d, 2, dtype=F64)
        E[2 * h : 2 * h + 2] = torch.eye(2, dtype=F64)
        expected += E @ V[h] @ S @ (beta * K[h].T @ Q[h])
    assert torch.allclose(J, expected, atol=1e-13)


def test_l2_translation_invariant_kernel_moves_mean_at_unit_rate(gen):
    # Q = K and V = I: the L2 kernel depends on x - y only, so alpha' = alpha
    Q = torch.randn(2, 2, generator=gen, dtype=F64)
    m = torch.randn(2, generator=gen, dtype=F64)
    assert torch.allclose(G.mean_rhs("l2", m, spd(2, gen), Q, Q), m, atol=1e-13)


def test_sinkhorn_coupling_precision_and_mean_law(gen):
    d = 3
    B = torch.randn(d, d, generator=gen, dtype=F64)
    S = spd(d, gen)
    P = G.sinkhorn_coupling(S, B)  # E[y | x] = P x (centred)
    C = S @ P.T  # Cov(x, y)
    joint = torch.cat([torch.cat([S, C], 1), torch.cat([C.T, S], 1)], 0)
    precision = torch.linalg.inv(joint)
    # the plan's density is exp(f(x) + g(y) + x^T B y): off-diagonal precision block is -B
    assert (precision[:d, d:] + B).abs().max().item() < 1e-12
    # both marginals are Sigma: Cov(E[y|x]) + E[Cov(y|x)] = Sigma  <=>  joint is PSD with those blocks
    assert torch.linalg.eigvalsh(joint).min().item() > 0
    V = torch.randn(d, d, generator=gen, dtype=F64)
    m = torch.randn(d, generator=gen, dtype=F64)
    assert torch.allclose(G.mean_rhs("sinkhorn", m, S, torch.eye(d, dtype=F64), B, V), V @ m, atol=1e-13)


def test_sinkhorn_gaussian_slope_matches_sander():
    # rho = N(0, a) in 1-D with epsilon = 1/beta: E[y|x] = (sqrt(eps^2 + 4a^2) - eps) / (2a) x
    for a, eps in [(0.5, 1.0), (2.0, 0.3), (1.0, 0.05)]:
        P = G.sinkhorn_coupling(torch.tensor([[a]], dtype=F64), torch.tensor([[1 / eps]], dtype=F64))
        assert P.item() == pytest.approx((math.sqrt(eps**2 + 4 * a**2) - eps) / (2 * a), rel=1e-12)


def test_field_objects_give_the_same_closure(gen):
    d = 2
    Q, K, V = (torch.randn(d, d, generator=gen, dtype=F64) for _ in range(3))
    S, m = spd(d, gen), torch.randn(d, generator=gen, dtype=F64)
    for field, kind in [
        (fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=0.3), "softmax"),
        (fl.L2Attention(Q=Q, K=K, V=V, beta=0.3), "l2"),
        (fl.SinkhornAttention(Q=Q, K=K, V=V, beta=0.3), "sinkhorn"),
    ]:
        b1, J1 = G.affine_velocity(field, m, S)
        b2, J2 = G.affine_velocity(kind, m, S, Q, K, V, beta=0.3)
        assert torch.equal(J1, J2) and torch.equal(b1, b2)


# ----------------------------------------------------------------------------- G5: the field is affine
@pytest.mark.parametrize("kind", ["softmax", "l2", "multihead"])
def test_empirical_velocity_of_gaussian_samples_is_affine(kind, gen):
    d = 4 if kind == "multihead" else 2
    m = torch.randn(d, generator=gen, dtype=F64) * 0.3
    S = spd(d, gen, shift=0.3) * 0.5
    if kind == "multihead":
        Q, K, V = (torch.randn(2, 2, d, generator=gen, dtype=F64) * 0.5 for _ in range(3))
        field = fl.MultiHeadAttention(Q=Q, K=K, V=V, beta=0.8)
    else:
        Q, K, V = (torch.randn(d, d, generator=gen, dtype=F64) * 0.5 for _ in range(3))
        field = (fl.SoftmaxAttention if kind == "softmax" else fl.L2Attention)(Q=Q, K=K, V=V, beta=0.8)
    y = fl.gaussian_tokens(200_000, m, S, generator=gen)
    x = m + torch.randn(5, d, generator=gen, dtype=F64) * 0.7
    b, J = G.affine_velocity(field, m, S)
    exact = b + x @ J.T
    mc = fl.measure_velocity(field, x, y)
    assert ((mc - exact).norm(dim=-1) / exact.norm(dim=-1).clamp_min(0.1)).max().item() < 0.02


def test_sinkhorn_field_on_samples_matches_closure(gen):
    d, n = 2, 2000
    m = torch.tensor([0.3, -0.1], dtype=F64)
    S = torch.tensor([[0.6, 0.2], [0.2, 0.4]], dtype=F64)
    Q, K = torch.randn(d, d, generator=gen, dtype=F64), torch.randn(d, d, generator=gen, dtype=F64)
    field = fl.SinkhornAttention(Q=Q, K=K, beta=1.0, n_half_steps=101)
    x = fl.gaussian_tokens(n, m, S, generator=gen)
    mean, cov = fl.empirical_moments(x)
    b, J = G.affine_velocity(field, mean, cov)
    v = field(x)
    # least-squares affine fit of the particle velocities
    X1 = torch.cat([x, torch.ones(n, 1, dtype=F64)], 1)
    coef = torch.linalg.lstsq(X1, v).solution
    assert (coef[:d].T - J).abs().max().item() < 0.05
    assert ((v - (b + x @ J.T)).norm(dim=-1).mean() / v.norm(dim=-1).mean()).item() < 0.05


# ----------------------------------------------------------------------------- G7: limit rank
@pytest.mark.parametrize("d", [3, 4, 5])
def test_limit_covariance_rank_and_rate(d, gen):
    Q = torch.randn(d // 2, d, generator=gen, dtype=F64)
    S0 = spd(d, gen, shift=1.0)
    S_inf = G.limit_covariance(S0, Q)
    assert int(torch.linalg.matrix_rank(S_inf)) == d - d // 2 == math.ceil(d / 2)
    A = G.score_matrix(Q, -Q, beta=0.5)
    sol = fl.solve_gaussian(
        "softmax", torch.zeros(d, dtype=F64), S0, Q, -Q, beta=0.5, t1=400.0, n_steps=4000, save_every=1000
    )
    assert sol.status == "ok"
    err = (sol.cov - S_inf).norm(dim=(-2, -1))
    closed = G.softmax_covariance_closed_form(S0, A, sol.t)
    assert (sol.cov - closed).abs().max().item() < 1e-5  # stiff at first (h = 0.1); G1 tests accuracy
    # O(1/t): t * error settles to a constant (within 5% between t = 200 and t = 400)
    ratio = (sol.t[-1] * err[-1]) / (sol.t[2] * err[2])
    assert ratio.item() == pytest.approx(1.0, abs=0.05)
    assert err[-1].item() < 0.02


def test_trace_normalized_coordinates_disc_and_circle(gen):
    S = torch.stack([spd(2, gen) for _ in range(20)])
    uw = G.trace_normalized_coordinates(S)
    assert (uw.norm(dim=-1) < 1).all()
    v = torch.randn(5, 2, generator=gen, dtype=F64)
    rank_one = v[:, :, None] * v[:, None, :]
    assert torch.allclose(G.trace_normalized_coordinates(rank_one).norm(dim=-1), torch.ones(5, dtype=F64))


def test_batched_initial_covariances_blow_up_independently():
    S0 = torch.stack([torch.eye(2, dtype=F64) * s for s in (0.25, 0.5, 1.0)])
    sol = fl.solve_gaussian("softmax", torch.zeros(2, dtype=F64), S0, t1=1.5, n_steps=3000)
    assert sol.status == "blowup"
    # lambda0 = s: blow-up at 1/(2 s) = 2, 1, 0.5; the first survives to t1 = 1.5
    assert sol.stop_time[0].item() == 1.5
    assert sol.stop_time[1].item() == pytest.approx(1.0, abs=0.01)
    assert sol.stop_time[2].item() == pytest.approx(0.5, abs=0.01)
    assert torch.isfinite(sol.cov).all()


# ----------------------------------------------------------------------------- G4: particles vs closure
def test_particles_approach_closure_like_inverse_sqrt_n(gen):
    d, T = 2, 0.25
    Q = 0.5 * torch.randn(d, d, generator=gen, dtype=F64)
    K = 0.5 * torch.randn(d, d, generator=gen, dtype=F64)
    m0 = torch.zeros(d, dtype=F64)
    S0 = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
    field = fl.SoftmaxAttention(Q=Q, K=K, beta=1 / math.sqrt(2))
    closure = fl.solve_gaussian(field, m0, S0, t1=T, n_steps=8)
    sizes, errors = [256, 1024, 4096], []
    for N, seeds in zip(sizes, [16, 16, 4]):
        x0 = fl.gaussian_tokens(N, m0, S0, batch_shape=(seeds,), generator=gen)
        xT = fl.simulate(field, x0, t1=T, n_steps=8, method="rk4", save_every=8).final
        sw = [
            fl.sliced_wasserstein_to_gaussian(
                xT[s], closure.final_mean, closure.final_cov, n_projections=64, generator=gen
            )
            for s in range(seeds)
        ]
        errors.append(torch.stack(sw).mean().item())
    slope = np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    print(f"SW(particles, closure) for N={sizes}: {errors}; slope {slope:.3f}")
    assert -0.7 < slope < -0.35, (errors, slope)


def test_layers_closure_is_the_law_of_residual_layers(gen):
    """method="layers": the Gaussian law after L residual layers, checked against 8 x 10^4 particles.

    With h = 1/2 the per-layer difference from the Euler closure, h^2 J Sigma J^T, is far above the
    Monte Carlo error, so the particles tell the two apart; as L grows both approach the ODE at O(1/L).
    """
    Q = 0.5 * torch.tensor([[1.0, 0.4], [-0.3, 0.8]], dtype=F64)
    V = torch.tensor([[0.5, -1.0], [1.0, 0.2]], dtype=F64)
    m0 = torch.tensor([0.3, -0.2], dtype=F64)
    S0 = torch.tensor([[0.6, 0.2], [0.2, 0.4]], dtype=F64)
    field = fl.SoftmaxAttention(Q=Q, V=V, beta=1.0)
    layers = fl.solve_gaussian(field, m0, S0, t1=1.0, n_steps=2, method="layers")
    euler = fl.solve_gaussian(field, m0, S0, t1=1.0, n_steps=2, method="euler")
    x0 = fl.gaussian_tokens(10_000, m0, S0, batch_shape=(8,), generator=gen)
    mean, cov = (z.mean(0) for z in fl.empirical_moments(fl.residual_stack(field, x0, n_layers=2, t1=1.0).final))
    err_layers = max((mean - layers.final_mean).abs().max().item(), (cov - layers.final_cov).abs().max().item())
    err_euler = (cov - euler.final_cov).abs().max().item()
    print(f"particles vs layers closure {err_layers:.2e}; vs Euler closure {err_euler:.2e}")
    assert err_layers < 0.02 and err_euler > 3 * err_layers  # Monte Carlo error here is about 0.005
    # Both discretisations converge to the ODE at first order.
    exact = fl.solve_gaussian(field, m0, S0, t1=1.0, n_steps=200).final_cov
    errs = [
        (fl.solve_gaussian(field, m0, S0, t1=1.0, n_steps=L, method="layers").final_cov - exact).abs().max().item()
        for L in (16, 32, 64)
    ]
    assert 1.8 < errs[0] / errs[1] < 2.2 and 1.8 < errs[1] / errs[2] < 2.2, errs


# ----------------------------------------------------------------------------- validation
def test_gaussian_validation(gen):
    S = torch.eye(2, dtype=F64)
    m = torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError, match="sigmoid"):
        G.affine_velocity("sigmoid", m, S)
    with pytest.raises(ValueError, match="sigmoid"):
        G.affine_velocity(fl.SigmoidAttention(), m, S)
    with pytest.raises(ValueError, match="kind must be one of"):
        G.affine_velocity("cosine", m, S)
    with pytest.raises(ValueError, match="causal"):
        G.affine_velocity(fl.SoftmaxAttention(causal=True), m, S)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        G.affine_velocity("softmax", torch.zeros(3, dtype=F64), S)
    with pytest.raises(ValueError, match=r"Q must have shape"):
        G.affine_velocity("softmax", m, S, torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="H \\* d_v"):
        G.affine_velocity("multihead", m, S, torch.ones(2, 1, 2), torch.ones(2, 1, 2), torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="cov0 must be symmetric positive"):
        fl.solve_gaussian("softmax", m, -S, t1=1.0, n_steps=10)
    with pytest.raises(ValueError, match="n_steps"):
        fl.solve_gaussian("softmax", m, S, t1=1.0, n_steps=0)
    with pytest.raises(ValueError, match="method"):
        fl.solve_gaussian("softmax", m, S, t1=1.0, n_steps=10, method="rk45")
    with pytest.raises(TypeError, match="no Gaussian closure"):
        G.affine_velocity(fl.SphereAttention(), m, S)
