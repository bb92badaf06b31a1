"""Integrators: convergence orders, stage honesty, exactness on linear fields, references (DESIGN 5.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import flowlib as fl
from flowlib.integrate.steppers import Stepper

F64 = torch.float64


def _order_setup(gen):
    d, n = 3, 8
    Q = torch.randn(d, d, generator=gen, dtype=F64) / math.sqrt(d)
    K = torch.randn(d, d, generator=gen, dtype=F64) / math.sqrt(d)
    V = torch.randn(d, d, generator=gen, dtype=F64) / math.sqrt(d)
    x0 = torch.randn(n, d, generator=gen, dtype=F64)
    return fl.SoftmaxAttention(Q=Q, K=K, V=V), x0


LAYERS = [4, 8, 16, 32, 64, 128]


@pytest.mark.parametrize(
    "method, order, tol", [("euler", 1, 0.15), ("heun", 2, 0.2), ("rk4", 4, 0.3), ("rk4_38", 4, 0.3)]
)
def test_convergence_order(gen, method, order, tol):
    field, x0 = _order_setup(gen)
    study = fl.convergence_study(field, x0, t1=1.0, layers=LAYERS, method=method, reference_steps=4096)
    assert abs(study.order - order) < tol, (study.order, study.errors)
    # errors decrease monotonically until the round-off floor
    errs = [e for e in study.errors if e > 1e-12]
    assert all(a > b for a, b in zip(errs, errs[1:]))


def test_euler_error_is_uniform_over_tokens_and_times(gen):
    """L * (max over tokens and layers of the error) tends to a constant: the O(1/L) theorem."""
    field, x0 = _order_setup(gen)
    study = fl.convergence_study(field, x0, t1=1.0, layers=[32, 64, 128, 256], method="euler")
    scaled = [L * e for L, e in zip(study.layers, study.errors)]
    assert max(scaled) / min(scaled) < 1.1


def _frozen_rk4(field):
    """A known-bad 'RK4': the attention matrix is computed once per step and reused in every stage."""

    def step(f, t, x, h):
        P = field.weights(x)
        V = field.V

        def g(y):
            return P @ (y @ V.mT)

        k1 = g(x)
        k2 = g(x + 0.5 * h * k1)
        k3 = g(x + 0.5 * h * k2)
        k4 = g(x + h * k3)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)

    return Stepper("frozen_rk4", 4, 4, step)


def test_frozen_attention_rk4_is_detected(gen):
    """The order test can fail: freezing attention within a step makes 'RK4' first order."""
    field, x0 = _order_setup(gen)
    study = fl.convergence_study(field, x0, t1=1.0, layers=LAYERS, method=_frozen_rk4(field), reference_steps=4096)
    assert study.method == "frozen_rk4"
    assert abs(study.order - 1.0) < 0.2
    assert abs(study.order - 4.0) > 2.0


@pytest.mark.parametrize("method", ["euler", "heun", "rk4", "rk4_38"])
def test_stage_honesty(gen, method):
    field, x0 = _order_setup(gen)
    calls = []

    def counted(x):
        calls.append(1)
        return field(x)

    fl.simulate(counted, x0, t1=1.0, n_steps=5, method=method)
    assert len(calls) == 5 * fl.integrate.STEPPERS[method].n_stages


def _scipy_softmax_flow(x0: np.ndarray, t1: float) -> np.ndarray:
    """x' = softmax(X X^T) X (Q = K = V = I, beta = 1) with DOP853 at tolerance 1e-13."""
    n, d = x0.shape

    def rhs(_t, y):
        X = y.reshape(n, d)
        S = X @ X.T
        P = np.exp(S - S.max(axis=1, keepdims=True))
        return (P / P.sum(axis=1, keepdims=True) @ X).ravel()

    sol = solve_ivp(rhs, (0.0, t1), x0.ravel(), method="DOP853", rtol=1e-13, atol=1e-13)
    return sol.y[:, -1].reshape(n, d)


def test_three_token_regression():
    """MATH 2.4 check 1: Q=K=V=I, three tokens in R^2; Euler is first order with L*err -> const."""
    x0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-0.6, -0.8]], dtype=F64)
    field = fl.SoftmaxAttention()
    ref = fl.simulate(field, x0, t1=1.0, n_steps=4096, method="rk4").final
    # an independent reference: scipy's DOP853 on a plain numpy softmax field (not flowlib's own output)
    assert np.abs(ref.numpy() - _scipy_softmax_flow(x0.numpy(), 1.0)).max() < 1e-11
    Le = []
    for L in [64, 128, 256, 512]:
        err = torch.linalg.vector_norm(fl.residual_stack(field, x0, L).final - ref, dim=-1).max()
        Le.append(L * float(err))
    assert max(Le) / min(Le) < 1.05


M = torch.tensor([[-1.0, 2.0], [-2.0, -1.0]], dtype=F64)


@pytest.mark.parametrize("method, tol", [("euler", None), ("heun", 1e-3), ("rk4", 1e-8)])
def test_linear_field_against_matrix_exp(gen, method, tol):
    x0 = torch.randn(5, 2, generator=gen, dtype=F64)
    field = lambda x: x @ M.mT  # noqa: E731
    traj = fl.simulate(field, x0, t1=1.0, n_steps=100, method=method)
    exact = x0 @ torch.linalg.matrix_exp(M).mT
    err = float((traj.final - exact).abs().max())
    if method == "euler":
        # Euler is exact for the discrete map: (I + hM)^L
        discrete = x0 @ torch.linalg.matrix_power(torch.eye(2, dtype=F64) + 0.01 * M, 100).mT
        assert torch.allclose(traj.final, discrete, atol=1e-13)
        assert 1e-3 < err < 5e-2  # first order: O(h) = O(1e-2)
    else:
        assert err < tol


@pytest.mark.parametrize("h, factor", [(0.1, 0.921954), (0.3, 0.921954), (0.5, 1.118034)])
def test_one_euler_step_contraction_factor(gen, h, factor):
    """One Euler layer multiplies distances by sqrt(1 - 2h + 5h^2) for M (MATH 2.4 check 2)."""
    x = torch.randn(4, 2, generator=gen, dtype=F64)
    y = torch.randn(4, 2, generator=gen, dtype=F64)
    field = lambda z: z @ M.mT  # noqa: E731
    step = lambda z: fl.simulate(field, z, t1=h, n_steps=1).final  # noqa: E731
    ratio = torch.linalg.vector_norm(step(x) - step(y)) / torch.linalg.vector_norm(x - y)
    assert abs(float(ratio) - factor) < 1e-6
    assert abs(fl.euler_step_factor(1.0, math.sqrt(5.0), h) - factor) < 1e-6


def test_non_divisible_horizon():
    x0 = torch.zeros(2, 2, dtype=F64)
    traj = fl.simulate(lambda x: torch.ones_like(x), x0, t1=0.7, n_steps=3)
    assert traj.t[-1].item() == 0.7  # exactly: no step is shortened or lengthened by rounding
    assert torch.allclose(traj.t, torch.tensor([0.0, 0.7 / 3, 2 * 0.7 / 3, 0.7], dtype=F64), atol=1e-16, rtol=0)
    assert torch.allclose(traj.final, torch.full((2, 2), 0.7, dtype=F64), atol=1e-15)


def test_save_every_keeps_initial_and_final():
    x0 = torch.zeros(1, 1, dtype=F64)
    traj = fl.simulate(lambda x: torch.ones_like(x), x0, t1=1.0, n_steps=10, save_every=4)
    assert traj.t.tolist() == pytest.approx([0.0, 0.4, 0.8, 1.0])
    assert traj.x.shape == (4, 1, 1)
    assert float(traj.final) == pytest.approx(1.0)
    assert float(traj.at(0.41)) == pytest.approx(0.4)


def test_t0_and_time_dependent_field():
    x0 = torch.zeros(1, 1, dtype=F64)
    traj = fl.simulate(
        fl.TimeDependent(lambda x, t: torch.full_like(x, 2 * t)), x0, t0=1.0, t1=2.0, n_steps=8, method="rk4"
    )
    assert float(traj.final) == pytest.approx(3.0, abs=1e-12)  # int_1^2 2t dt


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_gradcheck_through_simulate(gen, method):
    field = fl.SoftmaxAttention(beta=0.7)
    x0 = torch.randn(4, 2, generator=gen, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fl.simulate(field, x, t1=1.0, n_steps=3, method=method).x, (x0,))


def test_rk4_against_scipy_solve_ivp(gen):
    """Independent reference: scipy's DOP853 with tight tolerances on a numpy softmax field."""
    d, n = 3, 6
    Q = torch.randn(d, d, generator=gen, dtype=F64) / math.sqrt(d)
    K = torch.randn(d, d, generator=gen, dtype=F64) / math.sqrt(d)
    V = torch.randn(d, d, generator=gen, dtype=F64) / math.sqrt(d)
    x0 = torch.randn(n, d, generator=gen, dtype=F64)
    beta = 1.5
    Qn, Kn, Vn = Q.numpy(), K.numpy(), V.numpy()

    def rhs(_t, y):
        X = y.reshape(n, d)
        S = beta * (X @ Qn.T) @ (X @ Kn.T).T
        P = np.exp(S - S.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        return (P @ (X @ Vn.T)).ravel()

    sol = solve_ivp(rhs, (0.0, 2.0), x0.numpy().ravel(), method="DOP853", rtol=1e-13, atol=1e-13)
    ours = fl.simulate(fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=beta), x0, t1=2.0, n_steps=400, method="rk4").final
    assert np.abs(ours.numpy().ravel() - sol.y[:, -1]).max() < 1e-10


def test_batched_systems_are_independent(gen):
    field = fl.SoftmaxAttention(beta=2.0)
    x0 = torch.randn(3, 5, 2, generator=gen, dtype=F64)
    batched = fl.simulate(field, x0, t1=1.0, n_steps=10, method="heun").final
    single = torch.stack([fl.simulate(field, x0[b], t1=1.0, n_steps=10, method="heun").final for b in range(3)])
    assert torch.allclose(batched, single, atol=1e-14)


def test_float32_rk4_floor_documented(gen):
    """I7: in float32, RK4 stalls at round-off (1e-7 .. 1e-5) instead of reaching 1e-12: order tests use float64."""
    field, x0 = _order_setup(gen)
    ref = fl.simulate(field, x0, t1=1.0, n_steps=1024, method="rk4").final
    err32 = (fl.simulate(field, x0.float(), t1=1.0, n_steps=256, method="rk4").final.double() - ref).abs().max()
    err64 = (fl.simulate(field, x0, t1=1.0, n_steps=256, method="rk4").final - ref).abs().max()
    assert 1e-8 < float(err32) < 1e-4
    assert float(err64) < 1e-11
