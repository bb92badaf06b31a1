"""Dynamics on the sphere (GLPR): invariants, energy, the equiangular reduction (DESIGN 5.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import flowlib as fl

F64 = torch.float64


def _drift(traj):
    return float((torch.linalg.vector_norm(traj.x, dim=-1) - 1).abs().max())


@pytest.fixture
def sphere_setup(gen):
    x0 = fl.uniform_sphere(16, 3, generator=gen, dtype=F64)
    return fl.SphereAttention(beta=2.0), x0


def test_ambient_euler_drifts_like_h(sphere_setup):
    field, x0 = sphere_setup
    layers = [8, 16, 32, 64, 128]
    drifts = [_drift(fl.simulate(field, x0, t1=2.0, n_steps=L)) for L in layers]
    assert abs(fl.fit_order(layers, drifts) - 1.0) < 0.15


def test_euler_with_retraction_stays_on_sphere_and_converges(sphere_setup):
    field, x0 = sphere_setup
    ref = fl.simulate(field, x0, t1=2.0, n_steps=2048, method="rk4", retraction=fl.unit_normalize)
    layers = [8, 16, 32, 64, 128]
    errs = []
    for L in layers:
        traj = fl.residual_stack(field, x0, L, t1=2.0, retraction=fl.unit_normalize)
        assert _drift(traj) < 1e-15 * 4
        errs.append(float((traj.final - ref.final).norm(dim=-1).max()))
    assert abs(fl.fit_order(layers, errs) - 1.0) < 0.15


def test_ambient_rk4_error_and_drift_are_fourth_order(sphere_setup):
    field, x0 = sphere_setup
    layers = [8, 16, 32, 64]
    ref = fl.simulate(field, x0, t1=2.0, n_steps=2048, method="rk4").final
    errs, drifts = [], []
    for L in layers:
        traj = fl.simulate(field, x0, t1=2.0, n_steps=L, method="rk4")
        errs.append(float((traj.final - ref).norm(dim=-1).max()))
        drifts.append(_drift(traj))
    assert abs(fl.fit_order(layers, errs) - 4.0) < 0.3
    assert abs(fl.fit_order(layers, drifts) - 4.0) < 0.5


@pytest.mark.parametrize("normalized", [True, False])
def test_energy_is_nondecreasing(gen, normalized):
    beta = 1.0
    x0 = fl.uniform_sphere(12, 3, generator=gen, dtype=F64)
    traj = fl.simulate(
        fl.SphereAttention(beta=beta, normalized=normalized),
        x0,
        t1=2.0,
        n_steps=200,
        method="rk4",
        retraction=fl.unit_normalize,
    )
    E = fl.interaction_energy(traj.x, beta)
    inc = E[1:] - E[:-1]
    assert float(inc.min()) >= -1e-14
    assert float(E[-1] - E[0]) > 0.05
    # energy lies between its minimum-ish and the Dirac value e^beta / (2 beta)
    assert float(E.max()) <= math.exp(beta) / (2 * beta) + 1e-12


def test_stationary_configurations():
    field = fl.SphereAttention(beta=3.0)
    antipodal = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]], dtype=F64)
    assert float(field(antipodal).abs().max()) == 0.0
    single = torch.tensor([[0.6, 0.8, 0.0]], dtype=F64)
    assert float(field(single).abs().max()) == 0.0


def test_rotation_equivariance(gen):
    x = fl.uniform_sphere(10, 3, generator=gen, dtype=F64)
    R, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=F64))
    field = fl.SphereAttention(beta=1.3)
    assert float((field(x @ R.mT) - field(x) @ R.mT).abs().max()) < 1e-14


@pytest.mark.parametrize("normalized", [True, False])
def test_equiangular_reduction_against_scipy(normalized):
    """Orthonormal start (n = d = 8): every inner product follows GLPR's scalar ODE."""
    n = d = 8
    beta = 3.0
    x0 = torch.eye(d, dtype=F64)[:n]
    traj = fl.simulate(
        fl.SphereAttention(beta=beta, normalized=normalized),
        x0,
        t1=4.0,
        n_steps=4000,
        method="rk4",
        retraction=fl.unit_normalize,
        save_every=4000,
    )
    G = fl.pairwise_inner_products(traj.final)
    assert float(G.max() - G.min()) < 1e-10  # equiangular

    def rhs(_t, g):  # written out independently of flowlib
        e = np.exp(beta * g)
        core = 2 * e * (1 - g) * ((n - 1) * g + 1)
        return core / (np.exp(beta) + (n - 1) * e) if normalized else core / n

    sol = solve_ivp(rhs, (0, 4.0), [0.0], method="DOP853", rtol=1e-12, atol=1e-14)
    assert abs(float(G.mean()) - sol.y[0, -1]) < 1e-6
    assert abs(float(fl.diagnostics.equiangular_rhs(0.3, beta, n, normalized=normalized)) - rhs(0, 0.3)) < 1e-15


def test_off_sphere_input_rejected(gen):
    x = torch.randn(5, 3, generator=gen, dtype=F64) * 2
    with pytest.raises(ValueError, match="unit sphere"):
        fl.SphereAttention()(x)
    with pytest.raises(ValueError, match="unit sphere"):
        fl.simulate(fl.SphereAttention(), x, t1=1.0, n_steps=2)


def test_normalisations_differ(gen):
    x = torch.randn(6, 5, generator=gen, dtype=F64)
    ln = fl.layer_norm_projection(x)
    assert float(ln.mean(dim=-1).abs().max()) < 1e-12
    assert float((ln.norm(dim=-1) - math.sqrt(5)).abs().max()) < 1e-12
    un = fl.unit_normalize(x)
    assert float((un.norm(dim=-1) - 1).abs().max()) < 1e-12
    assert float((ln - un).abs().max()) > 0.1


def test_cluster_count_and_clustering(gen):
    """d >= 3: almost every start clusters to a single point (GLPR); count clusters along the way."""
    x0 = fl.uniform_sphere(10, 3, generator=gen, dtype=F64)
    traj = fl.simulate(
        fl.SphereAttention(beta=1.0),
        x0,
        t1=30.0,
        n_steps=600,
        method="rk4",
        retraction=fl.unit_normalize,
        save_every=600,
    )
    assert int(fl.cluster_count(traj.x[0])) == 10
    assert int(fl.cluster_count(traj.final)) == 1
    two = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]], dtype=F64)
    assert int(fl.cluster_count(two)) == 2
