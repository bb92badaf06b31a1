"""The Eulerian Transformer-PDE solver: conservation, positivity, convergence, particles and closures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flowlib as fl
from flowlib import pde

F64 = torch.float64


def _field_1d():
    Q = torch.tensor([[1.0]], dtype=F64)
    return fl.SoftmaxAttention(Q=Q, K=-Q, V=torch.tensor([[1.0]], dtype=F64), beta=1.0)


def _gaussian_pdf(mean, cov):
    P = torch.linalg.inv(cov)
    return lambda x: torch.exp(-0.5 * (((x - mean) @ P) * (x - mean)).sum(-1))


def test_measure_velocity_of_uniform_tokens_is_self_attention(gen):
    x = torch.randn(30, 3, generator=gen, dtype=F64)
    Q, K, V = (torch.randn(3, 3, generator=gen, dtype=F64) for _ in range(3))
    for field in (
        fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=0.7),
        fl.L2Attention(Q=Q, K=K, V=V, beta=0.7),
        fl.MultiHeadAttention(Q=Q[None], K=K[None], V=V[None], beta=0.7),
    ):
        assert torch.allclose(fl.measure_velocity(field, x, x), field(x), atol=1e-12)
        # doubling a token's mass is the same as duplicating it
        w = torch.ones(30, dtype=F64)
        w[3] = 2.0
        dup = torch.cat([x, x[3:4]])
        assert torch.allclose(fl.measure_velocity(field, x, x, w), fl.measure_velocity(field, x, dup), atol=1e-12)


@pytest.mark.parametrize("scheme", ["upwind", "muscl"])
def test_mass_is_conserved_and_density_stays_nonnegative(scheme):
    grid = fl.make_grid(-4, 4, 80)
    rho0 = pde.density_on_grid(grid, lambda x: (x[..., 0].abs() < 1.5).to(F64))  # a box: sharp edges
    field = fl.SoftmaxAttention(V=torch.tensor([[-1.0]], dtype=F64), beta=2.0)
    sol = fl.solve_transformer_pde(field, rho0, grid, t1=1.0, n_save=5, scheme=scheme)
    assert (sol.mass() - 1).abs().max().item() < 1e-13
    assert (sol.density >= 0).all()
    assert sol.max_cfl <= 0.4 + 1e-12


def test_one_dimensional_gaussian_converges_to_closure_at_second_order():
    m0, s0, T = 0.5, 1.0, 1.0
    field = _field_1d()
    closure = fl.solve_gaussian(
        field, torch.tensor([m0], dtype=F64), torch.tensor([[s0]], dtype=F64), t1=T, n_steps=200
    )
    errors = {"upwind": [], "muscl": []}
    for n in (50, 100, 200):
        grid = fl.make_grid(-6, 8, n)
        rho0 = pde.density_on_grid(grid, lambda x: torch.exp(-0.5 * (x[..., 0] - m0) ** 2 / s0))
        for scheme in errors:
            sol = fl.solve_transformer_pde(field, rho0, grid, t1=T, n_save=1, scheme=scheme)
            _, cov = sol.moments()
            errors[scheme].append(abs(cov.item() - closure.final_cov.item()))
    up = np.log2(np.array(errors["upwind"][:-1]) / np.array(errors["upwind"][1:]))
    mu = np.log2(np.array(errors["muscl"][:-1]) / np.array(errors["muscl"][1:]))
    assert (up > 0.8).all() and (up < 1.3).all(), errors  # first order
    print(f"1-D covariance error vs closure, n = 50, 100, 200: {errors}")
    assert (mu > 1.6).all(), errors  # second order
    assert errors["muscl"][-1] < 1e-3


def test_two_dimensional_moments_converge_to_closure():
    gen = torch.Generator().manual_seed(1)
    Q = 0.6 * torch.randn(2, 2, generator=gen, dtype=F64)
    V = torch.tensor([[0.5, 0.3], [-0.3, 0.2]], dtype=F64)
    field = fl.SoftmaxAttention(Q=Q, K=-Q, V=V)
    m0 = torch.tensor([0.5, -0.3], dtype=F64)
    S0 = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
    closure = fl.solve_gaussian(field, m0, S0, t1=1.0, n_steps=100)
    errs = []
    for n in (16, 32):
        grid = fl.make_grid((-5, -5), (6, 5), (n, n))
        sol = fl.solve_transformer_pde(field, pde.density_on_grid(grid, _gaussian_pdf(m0, S0)), grid, t1=1.0, n_save=1)
        mean, cov = sol.moments()
        assert abs(sol.mass()[-1].item() - 1) < 1e-13
        assert sol.boundary_mass() < 1e-5
        errs.append(((mean - closure.final_mean).norm() + (cov - closure.final_cov).norm()).item())
    print(f"2-D PDE vs closure, n = 16, 32: {errs}")
    assert errs[1] < errs[0] / 2.5, errs  # second order would give 4
    assert errs[1] < 0.04


def test_particles_and_pde_agree_in_one_dimension_under_refinement():
    # a bimodal (non-Gaussian) initial density; compare the laws at T by W1 between the particles'
    # empirical measure and the PDE's cell masses (the 1-D Wasserstein distance compares CDFs)
    field = fl.SoftmaxAttention(V=torch.tensor([[-0.5]], dtype=F64), beta=1.5)
    pdf = lambda x: torch.exp(-2 * (x[..., 0] - 1) ** 2) + 0.6 * torch.exp(-4 * (x[..., 0] + 1) ** 2)  # noqa: E731
    errs = []
    for n in (60, 120, 240):
        grid = fl.make_grid(-3.5, 3.5, n)
        rho0 = pde.density_on_grid(grid, pdf)
        sol = fl.solve_transformer_pde(field, rho0, grid, t1=1.0, n_save=1)
        x0 = pde.quantile_particles(grid, rho0, n)
        xT = fl.simulate(field, x0, t1=1.0, n_steps=100, method="rk4", save_every=100).final
        errs.append(fl.wasserstein_1d(xT[:, 0], sol.points()[:, 0], p=1, v_weights=sol.weights()).item())
    print(f"1-D W1(particles, PDE), n = 60, 120, 240: {errs}")
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[2] < 0.5 * errs[0]
    assert errs[2] < 0.02


def test_pde_validation():
    grid = fl.make_grid(-1, 1, 10)
    field = fl.SoftmaxAttention()
    with pytest.raises(ValueError, match="grid's shape"):
        fl.solve_transformer_pde(field, torch.ones(11, dtype=F64), grid, t1=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        fl.solve_transformer_pde(field, -torch.ones(10, dtype=F64), grid, t1=1.0)
    with pytest.raises(ValueError, match="cfl"):
        fl.solve_transformer_pde(field, torch.ones(10, dtype=F64), grid, t1=1.0, cfl=1.5)
    with pytest.raises(ValueError, match="scheme"):
        fl.solve_transformer_pde(field, torch.ones(10, dtype=F64), grid, t1=1.0, scheme="weno")
    with pytest.raises(TypeError, match="Grid"):
        fl.solve_transformer_pde(field, torch.ones(10, dtype=F64), (10,), t1=1.0)
    with pytest.raises(ValueError, match="1-D or 2-D"):
        fl.make_grid((0, 0, 0), (1, 1, 1), (4, 4, 4))
    with pytest.raises(ValueError, match="upper must exceed"):
        fl.make_grid(1, 0, 10)
    with pytest.raises(TypeError, match="SinkhornAttention has no mean-field velocity"):
        fl.measure_velocity(fl.SinkhornAttention(), torch.zeros(3, 1), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="causal"):
        fl.measure_velocity(fl.SoftmaxAttention(causal=True), torch.zeros(3, 1), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="max_steps"):
        fl.solve_transformer_pde(fl.SoftmaxAttention(beta=1.0), torch.ones(10, dtype=F64), grid, t1=10.0, max_steps=2)


def test_quantile_particles():
    grid = fl.make_grid(0.0, 1.0, 10)
    x = pde.quantile_particles(grid, torch.ones(10, dtype=F64), 4)
    assert torch.allclose(x[:, 0], torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=F64), atol=1e-14)
    rho = torch.zeros(10, dtype=F64)
    rho[7] = 5.0  # all mass in the cell [0.7, 0.8]
    x = pde.quantile_particles(grid, rho, 2)
    assert torch.allclose(x[:, 0], torch.tensor([0.725, 0.775], dtype=F64), atol=1e-14)
    with pytest.raises(ValueError, match="1-D grid"):
        pde.quantile_particles(fl.make_grid((0, 0), (1, 1), (4, 4)), torch.ones(4, 4), 3)
