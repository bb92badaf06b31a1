"""Regularity of softmax attention (book chapter 2): closed-form Jacobian, Lipschitz bounds on
balls, the two-token counterexample, the scaling law and the invariant ball."""

from __future__ import annotations

import math

import pytest
import torch

import flowlib as fl
from flowlib.book import regularity as rg

F64 = torch.float64


@pytest.mark.parametrize(("n", "d", "k", "beta"), [(5, 3, 2, 0.7), (4, 2, 2, -1.3), (3, 1, 1, 2.0)])
def test_jacobian_matches_autograd(gen, n, d, k, beta):
    x = torch.randn(2, n, d, generator=gen, dtype=F64)
    Q, K = (torch.randn(k, d, generator=gen, dtype=F64) for _ in range(2))
    V = torch.randn(d, d, generator=gen, dtype=F64)
    J = rg.attention_jacobian(x, Q, K, V, beta=beta)
    ref = fl.field_jacobian(fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=beta), x)
    assert J.shape == (2, n, d, n, d)
    assert torch.allclose(J, ref, atol=1e-12)
    J_id = rg.attention_jacobian(x[0], beta=beta)
    assert torch.allclose(J_id, fl.field_jacobian(fl.SoftmaxAttention(beta=beta), x[0]), atol=1e-12)


def test_two_token_jacobian_closed_form():
    # x = (0, R) in R^1, Q = K = V = 1: dF_1/dx_1 = 1/2 + beta R^2 / 4, dF_1/dx_2 = 1/2.
    for R, beta in [(1.0, 1.0), (3.0, 0.5), (10.0, 2.0)]:
        J = rg.attention_jacobian(torch.tensor([[0.0], [R]], dtype=F64), beta=beta)[:, 0, :, 0]
        assert float(J[0, 0]) == pytest.approx(0.5 + beta * R**2 / 4, rel=1e-13)
        assert float(J[0, 1]) == pytest.approx(0.5, rel=1e-13)
        assert float(rg.max_block_row_norm(J[:, None, :, None])) >= 1 + beta * R**2 / 4 - 1e-12


def test_lower_bound_configuration_many_tokens():
    # x_1 = 0 and (n-1)/2 tokens at +R and at -R: row 1 of the Jacobian sums to 1 + beta R^2 (1 - 1/n).
    R, beta = 2.0, 0.75
    for n in (3, 5, 9):
        half = (n - 1) // 2
        x = torch.tensor([0.0] + [R] * half + [-R] * half, dtype=F64).unsqueeze(-1)
        row = rg.attention_jacobian(x, beta=beta)[0, 0, :, 0]
        assert float(row.abs().sum()) == pytest.approx(1 + beta * R**2 * (1 - 1 / n), rel=1e-13)


def test_bound_dominates_sampled_configurations(gen):
    n, d, k = 6, 3, 2
    Q, K = (torch.randn(k, d, generator=gen, dtype=F64) for _ in range(2))
    V = torch.randn(d, d, generator=gen, dtype=F64)
    for R, beta in [(0.5, 1.0), (1.0, 2.0), (2.0, 0.5), (2.0, -1.0)]:
        u = torch.randn(4000, n, d, generator=gen, dtype=F64)
        u = u / u.norm(dim=-1, keepdim=True)
        radii = R * torch.rand(4000, n, 1, generator=gen, dtype=F64) ** 0.2
        x = u * radii
        measured = float(rg.max_block_row_norm(rg.attention_jacobian(x, Q, K, V, beta=beta)).max())
        bound = rg.lipschitz_bound(R, beta, Q, K, V)
        assert measured <= bound
        assert measured >= 0.05 * bound  # the bound is not absurdly loose on these samples


def test_lipschitz_bound_values():
    assert rg.lipschitz_bound(2.0, 1.0) == pytest.approx(9.0)
    assert rg.lipschitz_bound(2.0, -1.0, n=4, norm="euclidean") == pytest.approx(18.0)
    V = torch.diag(torch.tensor([3.0, 1.0], dtype=F64))
    Q = torch.diag(torch.tensor([2.0, 1.0], dtype=F64))
    assert rg.lipschitz_bound(1.0, 0.5, Q, None, V) == pytest.approx(3 * (1 + 2 * 0.5 * 2))


def test_scaling_law_lip_depends_on_beta_R_squared():
    # F(R x; beta) = R F(x; beta R^2), hence DF(R x; beta) = DF(x; beta R^2).
    a = rg.two_token_lipschitz(3.0, 0.5, n_grid=101)
    b = rg.two_token_lipschitz(1.0, 4.5, n_grid=101)
    assert a == pytest.approx(b, rel=1e-12)


def test_two_token_lipschitz_grows_like_R_squared():
    lips = [rg.two_token_lipschitz(R, 1.0) for R in (8.0, 16.0, 32.0)]
    slope = math.log(lips[2] / lips[1]) / math.log(2.0)
    assert slope == pytest.approx(2.0, abs=0.02)
    for R, lip in zip((8.0, 16.0, 32.0), lips):
        assert 1 + R**2 / 4 - 1e-9 <= lip <= rg.lipschitz_bound(R, 1.0)


def test_invariant_ball(gen):
    n, d = 7, 2
    Q, K, V = (torch.randn(d, d, generator=gen, dtype=F64) for _ in range(3))
    x0 = torch.randn(n, d, generator=gen, dtype=F64)
    R0 = float(x0.norm(dim=-1).max())
    traj = fl.simulate(fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=1.0), x0, t1=1.0, n_steps=200, method="rk4")
    for t, x in zip(traj.t.tolist(), traj.x):
        assert float(x.norm(dim=-1).max()) <= rg.invariant_radius(R0, t, V) + 1e-12
    # sharp: identical tokens and V = I grow exactly like e^t
    same = torch.ones(3, 2, dtype=F64)
    end = fl.simulate(fl.SoftmaxAttention(beta=1.0), same, t1=1.0, n_steps=100, method="rk4").x[-1]
    assert float(end.norm(dim=-1).max()) == pytest.approx(rg.invariant_radius(math.sqrt(2.0), 1.0), rel=1e-8)


def test_score_operator():
    Q = torch.tensor([[1.0, 2.0]], dtype=F64)
    K = torch.tensor([[3.0, -1.0]], dtype=F64)
    A = rg.score_operator(Q, K)
    x, y = torch.tensor([0.5, 1.0], dtype=F64), torch.tensor([2.0, 1.0], dtype=F64)
    assert float(A @ x @ y) == pytest.approx(float((Q @ x) @ (K @ y)))
    assert rg.score_operator(None, None) is None


def test_validation():
    with pytest.raises(TypeError):
        rg.attention_jacobian([[1.0, 2.0]])
    with pytest.raises(ValueError):
        rg.attention_jacobian(torch.zeros(3, 2, dtype=F64), V=torch.eye(3, dtype=F64))
    with pytest.raises(ValueError):
        rg.attention_jacobian(torch.zeros(3, 2, dtype=F64), beta=float("inf"))
    with pytest.raises(ValueError):
        rg.score_operator(torch.zeros(2, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError):
        rg.lipschitz_bound(-1.0, 1.0)
    with pytest.raises(ValueError):
        rg.lipschitz_bound(1.0, 1.0, norm="euclidean")
    with pytest.raises(ValueError):
        rg.lipschitz_bound(1.0, 1.0, norm="frobenius")
    with pytest.raises(ValueError):
        rg.max_block_row_norm(torch.zeros(2, 3, 2, 2))
    with pytest.raises(ValueError):
        rg.two_token_lipschitz(1.0, 1.0, n_grid=100)
    with pytest.raises(ValueError):
        rg.invariant_radius(1.0, -0.5)


@pytest.mark.parametrize(("n", "beta"), [(2, 1.0), (6, -0.7), (40, 2.0)])
def test_constant_two_is_sharp(n, beta):
    # d = 2, Q = rotation by a right angle, K = V = I, x_j = (-1)^j R e_1 (n even): in the direction
    # h_1 = -e_2, h_j = s_1 s_j e_2, token 1 moves by beta R^2 (2 - 2/n) e_1 - (2/n) e_2.
    R = 3.0
    rot = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)
    e1, e2 = torch.eye(2, dtype=F64)
    s = torch.tensor([(-1.0) ** j for j in range(1, n + 1)], dtype=F64)
    x = R * s[:, None] * e1
    h = (s[0] * s)[:, None] * e2
    h[0] = -e2
    J = rg.attention_jacobian(x, rot, None, None, beta=beta)
    out = torch.einsum("iajb,jb->ia", J, h)[0]
    expected = beta * R**2 * (2 - 2 / n) * e1 - (2 / n) * e2
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12)
    _, ref = torch.autograd.functional.jvp(fl.SoftmaxAttention(Q=rot, beta=beta, backend="dense"), x, h)
    assert torch.allclose(ref[0], expected, rtol=1e-12, atol=1e-12)
    bound = rg.lipschitz_bound(R, beta, rot)
    assert abs(beta) * R**2 * (2 - 2 / n) <= float(out.norm()) <= bound


def test_jacobian_batched_matrices(gen):
    # Leading dimensions of Q, K, V broadcast against those of x: three draws in one call.
    x = torch.randn(3, 5, 4, 2, generator=gen, dtype=F64)
    Q, K, V = (torch.randn(3, 1, 2, 2, generator=gen, dtype=F64) for _ in range(3))
    J = rg.attention_jacobian(x, Q, K, V, beta=0.9)
    for s in range(3):
        ref = rg.attention_jacobian(x[s], Q[s, 0], K[s, 0], V[s, 0], beta=0.9)
        assert torch.allclose(J[s], ref, atol=1e-13)
