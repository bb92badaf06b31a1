"""flowlib.book.splitting: Lie-Trotter and Strang orders, the transformer block, Euler's scalar test problem."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

import flowlib as fl
from flowlib.book import splitting as sp

F64 = torch.float64

# Two non-commuting matrices (so the splitting error is not zero).
A = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=F64)
B = torch.tensor([[-0.5, 0.0], [0.3, 0.2]], dtype=F64)


def lin(Mat):
    return lambda x: x @ Mat.T


def _x0():
    return torch.tensor([[1.0, 0.0], [0.3, -0.7], [-0.2, 0.5]], dtype=F64)


def test_lie_euler_is_the_transformer_block(gen):
    d, n = 3, 5
    Q = torch.randn(d, d, generator=gen, dtype=F64)
    W = torch.randn(d, d, generator=gen, dtype=F64) / math.sqrt(d)
    attn = fl.SoftmaxAttention(Q=Q)
    mlp = lambda x: torch.tanh(x @ W.T)  # noqa: E731
    x0 = torch.randn(n, d, generator=gen, dtype=F64)
    L, h = 7, 0.5 / 7
    x = x0
    for _ in range(L):
        x = x + h * attn(x)
        x = x + h * mlp(x)
    traj = sp.split_simulate(attn, mlp, x0, t1=0.5, n_steps=L)
    assert traj.x.shape == (L + 1, n, d)
    assert traj.method == "lie-euler" and traj.n_steps == L
    assert torch.allclose(traj.final, x, atol=1e-14, rtol=0)
    assert traj.t[-1].item() == 0.5


@pytest.mark.parametrize("scheme, order", [("lie", 1.0), ("strang", 2.0)])
def test_splitting_orders_linear(scheme, order):
    x0 = _x0()
    T = 1.0
    exact = x0 @ torch.linalg.matrix_exp(T * (A + B)).T
    layers = [8, 16, 32, 64]
    errs = []
    for L in layers:
        xL = sp.split_simulate(lin(A), lin(B), x0, t1=T, n_steps=L, scheme=scheme, method="rk4", substeps=4).final
        errs.append((xL - exact).norm(dim=-1).max().item())
    p = fl.fit_order(layers, errs)
    assert abs(p - order) < 0.05, (p, errs)


def test_lie_one_step_commutator():
    """One Lie step with exact sub-flows misses exp(h(A+B)) by (h^2/2)[B, A] + O(h^3)."""
    for h in [1e-2, 5e-3]:
        x0 = torch.eye(2, dtype=F64)  # columns e1, e2 as tokens: the result is the matrix transposed
        step = sp.split_simulate(lin(A), lin(B), x0, t1=h, n_steps=1, method="rk4", substeps=2).final.T
        defect = step - torch.linalg.matrix_exp(h * (A + B))
        lead = 0.5 * h * h * (B @ A - A @ B)
        assert (defect - lead).abs().max().item() < 2.0 * h**3


def test_strang_one_step_errors():
    """Strang with exact sub-flows misses exp(h(A+B)) by O(h^3); with Euler sub-steps (the Macaron block) by
    -h^2 (A^2/4 + B^2/2) + O(h^3), the sum of the three Euler sub-step errors, so it is only first order."""
    exact_defects = []
    for h in [1e-2, 5e-3]:
        x0 = torch.eye(2, dtype=F64)
        target = torch.linalg.matrix_exp(h * (A + B))
        euler = sp.split_simulate(lin(A), lin(B), x0, t1=h, n_steps=1, scheme="strang", method="euler").final.T
        lead = -h * h * (A @ A / 4 + B @ B / 2)
        assert lead.abs().max().item() > 10 * h**3
        assert (euler - target - lead).abs().max().item() < 0.5 * h**3
        rk = sp.split_simulate(lin(A), lin(B), x0, t1=h, n_steps=1, scheme="strang", method="rk4", substeps=2).final.T
        exact_defects.append((rk - target).abs().max().item())
    assert 7.5 < exact_defects[0] / exact_defects[1] < 8.5  # third order in h


def test_commuting_fields_split_exactly():
    x0 = _x0()
    A2 = 2.0 * A  # commutes with A
    T = 1.3
    xL = sp.split_simulate(lin(A), lin(A2), x0, t1=T, n_steps=3, method="rk4", substeps=64).final
    exact = x0 @ torch.linalg.matrix_exp(3.0 * T * A).T
    assert (xL - exact).abs().max().item() < 1e-9


def test_strang_rk4_matches_simulate_reference(gen):
    d, n = 2, 6
    attn = fl.SoftmaxAttention(Q=torch.randn(d, d, generator=gen, dtype=F64))
    W = torch.randn(d, d, generator=gen, dtype=F64)
    mlp = lambda x: torch.tanh(x @ W.T)  # noqa: E731
    x0 = torch.randn(n, d, generator=gen, dtype=F64)
    ref = fl.simulate(lambda x: attn(x) + mlp(x), x0, t1=1.0, n_steps=512, method="rk4").final
    errs = {}
    for L in [16, 32]:
        xL = sp.split_simulate(attn, mlp, x0, t1=1.0, n_steps=L, scheme="strang", method="rk4", substeps=2).final
        errs[L] = (xL - ref).norm(dim=-1).max().item()
    assert 3.5 < errs[16] / errs[32] < 4.5, errs


def test_euler_test_error_exact_and_limit():
    # L = 2, lambda = -1, T = 1: e^{-1} - (1/2)^2
    assert sp.euler_test_error(-1.0, 2) == pytest.approx(math.exp(-1) - 0.25, abs=1e-15)
    for lam, x0, T in [(-1.5, 2.0, 1.0), (0.7, -1.0, 2.0), (-1 + 2j, 0.5 + 0.5j, 1.0)]:
        lim = sp.euler_test_error_limit(lam, t1=T, x0=x0)
        assert lim == pytest.approx(0.5 * (lam * T) ** 2 * cmath.exp(lam * T) * x0)
        gaps = [abs(L * sp.euler_test_error(lam, L, t1=T, x0=x0) - lim) for L in (100, 200, 400)]
        # the gap is O(1/L): halves when L doubles
        assert gaps[0] / gaps[1] == pytest.approx(2.0, rel=0.05)
        assert gaps[1] / gaps[2] == pytest.approx(2.0, rel=0.05)
        assert gaps[2] < 0.05 * abs(lim)


def test_euler_spectral_radius():
    M = torch.tensor([[-1.0, 2.0], [-2.0, -1.0]], dtype=F64)
    assert sp.euler_spectral_radius(M, 0.4) == pytest.approx(1.0, abs=1e-12)
    assert sp.euler_spectral_radius(M, 0.1) == pytest.approx(math.sqrt(1 - 0.2 + 0.05), abs=1e-12)
    J = torch.tensor([[-1.0, 10.0], [0.0, -1.0]], dtype=F64)  # not diagonalisable
    assert sp.euler_spectral_radius(J, 0.5) == pytest.approx(0.5, abs=1e-6)


def test_validation():
    x0 = _x0()
    with pytest.raises(ValueError, match="scheme"):
        sp.split_simulate(lin(A), lin(B), x0, t1=1.0, n_steps=2, scheme="yoshida")
    with pytest.raises(ValueError, match="method"):
        sp.split_simulate(lin(A), lin(B), x0, t1=1.0, n_steps=2, method="rk45")
    with pytest.raises(ValueError):
        sp.split_simulate(lin(A), lin(B), x0, t1=1.0, n_steps=0)
    with pytest.raises(ValueError):
        sp.split_simulate(lin(A), lin(B), x0, t1=1.0, n_steps=2, substeps=0)
    with pytest.raises(TypeError, match="field_b"):
        sp.split_simulate(lin(A), "mlp", x0, t1=1.0, n_steps=2)
    with pytest.raises(ValueError, match="NaN"):
        sp.split_simulate(lin(A), lin(B), x0 * float("nan"), t1=1.0, n_steps=2)
    with pytest.raises(TypeError):
        sp.euler_test_error("1", 3)
    with pytest.raises(ValueError):
        sp.euler_test_error(float("inf"), 3)
    with pytest.raises(ValueError):
        sp.euler_test_error(1.0, 0)
    with pytest.raises(ValueError, match="square"):
        sp.euler_spectral_radius(torch.zeros(2, 3, dtype=F64), 0.1)
    with pytest.raises(TypeError):
        sp.euler_spectral_radius([[1.0]], 0.1)
    with pytest.raises(ValueError):
        sp.euler_spectral_radius(torch.eye(2, dtype=F64), -0.1)


def test_error_coefficient_linear_closed_form():
    # For x' = Mx the variational equation has the solution e(t) = -(t/2) M^2 e^{tM} x0.
    M = torch.tensor([[-1.0, 2.0], [-2.0, -1.0]], dtype=F64)
    x0 = torch.tensor([[1.0, 0.0], [0.6, -0.8]], dtype=F64)
    xT, eT = sp.euler_error_coefficient(lambda x: x @ M.T, x0, t1=2.0, n_steps=200)
    E = torch.linalg.matrix_exp(2.0 * M)
    assert torch.allclose(xT, x0 @ E.T, atol=1e-9)
    assert torch.allclose(eT, -1.0 * x0 @ (M @ M @ E).T, atol=1e-8)
    # ... and (x^L - x(T)) / h approaches e(T) with an O(h) gap
    gaps = []
    for L in (200, 400):
        xL = fl.simulate(lambda x: x @ M.T, x0, t1=2.0, n_steps=L).final
        gaps.append(((xL - xT) * L / 2.0 - eT).abs().max().item())
    assert gaps[1] < 0.6 * gaps[0] and gaps[1] < 0.05


def test_error_coefficient_nonlinear_closed_form():
    # x' = -x^2, x(0) = 1: x = 1/(1+t), e(t) = -log(1+t) / (1+t)^2.
    x0 = torch.ones(1, 1, dtype=F64)
    xT, eT = sp.euler_error_coefficient(lambda x: -(x**2), x0, t1=1.0, n_steps=100)
    assert xT.item() == pytest.approx(0.5, abs=1e-10)
    assert eT.item() == pytest.approx(-math.log(2.0) / 4.0, abs=1e-9)


def test_error_coefficient_validation():
    with pytest.raises(TypeError):
        sp.euler_error_coefficient("f", torch.ones(1, 1, dtype=F64), t1=1.0)
    with pytest.raises(ValueError):
        sp.euler_error_coefficient(lambda x: x, torch.ones(1, 1, dtype=F64), t1=0.0)
    with pytest.raises(ValueError):
        sp.euler_error_coefficient(lambda x: x, torch.ones(1, 1, dtype=F64), t1=1.0, n_steps=0)
