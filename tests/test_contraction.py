"""Tests for flowlib.book.contraction (Chapter 4): exact linear factors, the uniform-in-time Euler bound,
the certified attention Lipschitz bound and the forced linear closed form."""

from __future__ import annotations

import math

import pytest
import torch

import flowlib as fl
from flowlib.book import approximation as ap
from flowlib.book import contraction as ct

F64 = torch.float64
M_SPIRAL = torch.tensor([[-1.0, 2.0], [-2.0, -1.0]], dtype=F64)  # M + M^T = -2I, M^T M = 5I: m = 1, Lip = sqrt(5)
ROT = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)  # m = 0: not contracting
C_FORCE = torch.tensor([1.0, -1.0j], dtype=torch.complex128)  # Re(c e^{2it}) = (cos 2t, sin 2t)


def forced_field(M):
    return fl.TimeDependent(lambda x, t: x @ M.T + torch.tensor([math.cos(2 * t), math.sin(2 * t)], dtype=F64))


@pytest.mark.parametrize("h", [0.05, 0.1, 0.3, 0.4, 0.5])
def test_linear_factor_spiral_equals_bound(h):
    # M + M^T = -2I and M^T M = 5I: the bound sqrt(1 - 2mh + Lip^2 h^2) is attained (normality alone would not do)
    exact = ct.linear_euler_factor(M_SPIRAL, h).item()
    assert exact == pytest.approx(fl.euler_step_factor(1.0, math.sqrt(5.0), h), abs=1e-12)
    assert exact == pytest.approx(math.sqrt(1 - 2 * h + 5 * h * h), abs=1e-12)


def test_bound_is_sufficient_not_necessary():
    M = torch.diag(torch.tensor([-1.0, -10.0], dtype=F64))
    assert fl.contraction_step_limit(1.0, 10.0) == pytest.approx(0.02)
    assert ct.linear_euler_factor(M, 0.1).item() == pytest.approx(0.9, abs=1e-12)
    assert fl.euler_step_factor(1.0, 10.0, 0.1) > 1.0  # the bound says nothing at h = 0.1
    # exact threshold for diag(-1, -10): |1 - 10 h| < 1 <=> h < 0.2
    assert ct.linear_euler_factor(M, 0.199).item() < 1.0 < ct.linear_euler_factor(M, 0.201).item()


def test_linear_factor_batched_and_attained(gen):
    M = torch.randn(3, 4, 4, generator=gen, dtype=F64)
    f = ct.linear_euler_factor(M, 0.2)
    assert f.shape == (3,)
    # attained by the top right singular vector of I + hM
    A = torch.eye(4, dtype=F64) + 0.2 * M[1]
    _, S, Vh = torch.linalg.svd(A)
    assert torch.linalg.vector_norm(A @ Vh[0]).item() == pytest.approx(f[1].item(), rel=1e-12)


def test_uniform_bound_closed_form_and_simplified():
    m, lip, C, h = 1.0, math.sqrt(5.0), 10.0, 0.1
    rho = math.sqrt(1 - 2 * h + 5 * h * h)
    assert ct.uniform_euler_error_bound(m, lip, C, h) == pytest.approx(0.05 / (1 - rho), rel=1e-12)
    assert ct.uniform_euler_error_bound(m, lip, C, h, simplified=True) == pytest.approx(1.0 / (2 * 0.75), rel=1e-12)
    assert ct.uniform_euler_error_bound(m, lip, C, h) <= ct.uniform_euler_error_bound(m, lip, C, h, simplified=True)
    # first order in h: halving h roughly halves the bound
    r = ct.uniform_euler_error_bound(m, lip, C, 0.01) / ct.uniform_euler_error_bound(m, lip, C, 0.005)
    assert r == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize(
    "args, exc",
    [
        ((0.0, 1.0, 1.0, 0.1), ValueError),
        ((1.0, 1.0, 1.0, 2.0), ValueError),
        ((1.0, 0.5, 1.0, 0.1), ValueError),
        ((1.0, 1.0, -1.0, 0.1), ValueError),
        ((1.0, 1.0, 1.0, "a"), TypeError),
    ],
)
def test_uniform_bound_validation(args, exc):
    with pytest.raises(exc):
        ct.uniform_euler_error_bound(*args)


def test_forced_solution_matches_rk4(gen):
    x0 = torch.randn(3, 2, generator=gen, dtype=F64)
    traj = fl.simulate(forced_field(M_SPIRAL), x0, t1=3.0, n_steps=600, method="rk4")
    exact = ct.forced_linear_solution(M_SPIRAL, C_FORCE, 2.0, x0, traj.t)
    assert exact.shape == traj.x.shape
    assert torch.allclose(exact, traj.x, atol=1e-9)
    assert torch.equal(exact[0], x0) or torch.allclose(exact[0], x0, atol=1e-14)


def test_forced_solution_resonance_rejected():
    with pytest.raises(ValueError, match="resonance"):
        ct.forced_linear_solution(ROT, C_FORCE, 1.0, torch.zeros(1, 2, dtype=F64), torch.zeros(1, dtype=F64))


def _max_error(M, x0, T, h):
    L = round(T / h)
    traj = fl.simulate(forced_field(M), x0, t1=T, n_steps=L)
    exact = ct.forced_linear_solution(M, C_FORCE, 2.0, x0, traj.t)
    return torch.linalg.vector_norm(traj.x - exact, dim=(-2, -1)).max().item()


def test_uniform_in_time_bound_holds_and_rotation_grows(gen):
    x0 = torch.randn(3, 2, generator=gen, dtype=F64)
    h = 0.05
    # certified C: ||x_i(t)|| <= max(||x_i(0)||, 1) and x'' = M(Mx + b) + b'
    R = torch.clamp(torch.linalg.vector_norm(x0, dim=-1), min=1.0)
    C = torch.linalg.vector_norm(5 * R + math.sqrt(5) + 2).item()
    bound = ct.uniform_euler_error_bound(1.0, math.sqrt(5.0), C, h)
    errs = [_max_error(M_SPIRAL, x0, T, h) for T in (10.0, 40.0)]
    assert errs[1] <= bound
    assert errs[1] == pytest.approx(errs[0], rel=1e-6)  # plateau: the sup is reached early
    rot = [_max_error(ROT, x0, T, h) for T in (10.0, 40.0)]
    assert rot[1] > 3 * rot[0]


def test_attention_bound_closed_form_and_dominates_jacobians(gen):
    V = 0.5 * torch.eye(2, dtype=F64)
    b = ct.attention_lipschitz_bound(1.0, 10, beta=0.5, V=V)
    c = math.e
    assert b == pytest.approx(0.5 * (math.sqrt(c) + math.sqrt(2 * (1 + c)) * 0.5), rel=1e-12)
    # n large: c saturates at e^{2 kappa R^2}, the bound stops depending on n
    assert ct.attention_lipschitz_bound(1.0, 10**6, beta=0.5, V=V) == pytest.approx(b)
    assert ct.attention_lipschitz_bound(1.0, 1, beta=0.5, V=V) < b
    assert ct.attention_lipschitz_bound(1.0, 10, beta=-0.5, V=V) == pytest.approx(b)  # only |beta| enters
    Q = torch.randn(2, 2, generator=gen, dtype=F64)
    K = torch.randn(2, 2, generator=gen, dtype=F64)
    Vr = torch.randn(2, 2, generator=gen, dtype=F64)
    for beta, R in [(0.5, 1.0), (2.0, 1.5), (-1.0, 1.2)]:
        G = fl.SoftmaxAttention(Q=Q, K=K, V=Vr, beta=beta)
        bound = ct.attention_lipschitz_bound(R, 6, beta=beta, Q=Q, K=K, V=Vr)
        worst = 0.0
        for _ in range(20):
            x = torch.randn(6, 2, generator=gen, dtype=F64)
            x = R * x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # on the boundary sphere
            J = fl.field_jacobian(G, x).reshape(12, 12)
            worst = max(worst, torch.linalg.matrix_norm(J, ord=2).item())
        assert worst <= bound
        assert worst > 0.05 * bound  # not vacuous by orders of magnitude


def test_attention_bound_validation():
    with pytest.raises(ValueError):
        ct.attention_lipschitz_bound(0.0, 3)
    with pytest.raises(ValueError):
        ct.attention_lipschitz_bound(1.0, 3, V=torch.zeros(2, 3, dtype=F64))
    with pytest.raises(TypeError):
        ct.attention_lipschitz_bound(1.0, 3, V=[[1.0]])
    with pytest.raises(TypeError):
        ct.attention_lipschitz_bound(1.0, 2.5)


def test_linear_factor_validation():
    with pytest.raises(ValueError):
        ct.linear_euler_factor(torch.zeros(2, 3, dtype=F64), 0.1)
    with pytest.raises(TypeError):
        ct.linear_euler_factor(torch.zeros(2, 2, dtype=torch.int64), 0.1)
    with pytest.raises(ValueError):
        ct.linear_euler_factor(torch.zeros(2, 2, dtype=F64), -0.1)


def test_max_norm_certificate_numbers_and_n_independence():
    V = 0.5 * torch.eye(2, dtype=F64)
    c = ct.max_norm_contraction(2.0, 1.0, beta=0.5, V=V)
    assert (c.lipschitz, c.rate, c.step_max) == (1.0, 1.0, 0.5)
    assert c.step_max_extended == pytest.approx(2.0 / 3.0)
    assert c.contracts and c.layer_factor(0.5) == pytest.approx(0.5)
    assert c.layer_factor(0.6) == pytest.approx(0.8) and c.layer_factor(2.0 / 3.0) == pytest.approx(1.0)
    # the Euclidean route of the same chapter certifies a smaller rate and a much smaller step range
    lg = ct.attention_lipschitz_bound(1.0, 10, beta=0.5, V=V)
    assert 2.0 - lg == pytest.approx(0.4939, abs=1e-4)
    assert fl.contraction_step_limit(2.0 - lg, 2.0 + lg) == pytest.approx(0.0804, abs=1e-4)
    assert not ct.max_norm_contraction(1.0, 1.0, beta=0.5, V=V).contracts  # a = Lambda_R: no certificate
    with pytest.raises(ValueError):
        c.layer_factor(0.81)  # beyond 2/(a + ||V||) = 0.8 the ball is not invariant
    with pytest.raises(ValueError):
        ct.max_norm_contraction(0.0, 1.0)


def test_max_norm_layer_factor_holds_on_random_pairs(gen):
    Q, K, V = (torch.randn(2, 2, generator=gen, dtype=F64) for _ in range(3))
    beta, R, a = 0.7, 1.3, 4.0
    c = ct.max_norm_contraction(a, R, beta=beta, Q=Q, K=K, V=V)
    G = fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=beta)
    worst = 0.0
    for h in (0.1, c.step_max, 0.3):
        for _ in range(30):
            x, y = (torch.randn(7, 2, generator=gen, dtype=F64) for _ in range(2))
            x = R * x / torch.linalg.vector_norm(x, dim=-1).max()
            y = x + 0.3 * R * (y / torch.linalg.vector_norm(y, dim=-1).max())
            y = R * y / torch.linalg.vector_norm(y, dim=-1).max().clamp(min=R)  # both in B_R
            px, py = x + h * (-a * x + G(x)), y + h * (-a * y + G(y))
            ratio = (ap.max_token_norm(px - py) / ap.max_token_norm(x - y)).item()
            assert ratio <= c.layer_factor(h) + 1e-12
            assert ap.max_token_norm(px).item() <= R + 1e-12  # B_R is invariant (a >= ||V||)
            worst = max(worst, ratio / c.layer_factor(h))
    assert worst > 0.2  # the certificate is not vacuous by orders of magnitude
