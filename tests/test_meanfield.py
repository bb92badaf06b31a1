"""Mean-field behaviour and the Part II diagnostics (DESIGN §5.7, MATH §3.5)."""

from __future__ import annotations

import math

import pytest
import torch

import flowlib as fl

F64 = torch.float64


def test_particles_track_their_mean_field_copies_like_inverse_sqrt_n():
    """MF1, the coupling: N particles and, from the same initial draws, N independent copies moved by the
    exact mean field of the layers (the Gaussian law of the residual stack, ``solve_gaussian(method="layers")``).
    The mean distance between a particle and its copy falls like N^(-1/2): a fitted slope, not a ratio window
    (which any deterministic map would pass). Here lambda_max(S^1/2 A^T S A S^1/2) = 0.03 < 1/2, so the
    attention normaliser's relative variance is integrable under the Gaussian data (chapter 7)."""
    d, n_layers, h = 2, 2, 0.5
    Q = 0.3 * torch.eye(d, dtype=F64)
    K = 0.3 * torch.tensor([[1.0, 0.3], [-0.2, 1.0]], dtype=F64)
    V = torch.tensor([[0.3, -1.0], [1.0, 0.3]], dtype=F64)
    field = fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=1.0)
    mean0 = torch.tensor([0.5, -0.2], dtype=F64)
    cov0 = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
    law = fl.solve_gaussian(field, mean0, cov0, t1=1.0, n_steps=n_layers, method="layers")
    gen = torch.Generator().manual_seed(0)
    sizes, errors, wrong = [500, 2000, 8000], [], []
    for N, systems in zip(sizes, [32, 16, 8]):  # the error is coherent within a system: average many
        x = fl.gaussian_tokens(N, mean0, cov0, batch_shape=(systems,), generator=gen)
        copies, off = x.clone(), x.clone()
        for layer in range(n_layers):
            b, J = fl.gaussian.affine_velocity(field, law.mean[layer], law.cov[layer])
            copies = copies + h * (b + copies @ J.mT)
            off = off + h * 0.9 * (b + off @ J.mT)  # a slightly wrong mean field
        particles = fl.residual_stack(field, x, n_layers).final
        errors.append((particles - copies).norm(dim=-1).mean().item())
        wrong.append((particles - off).norm(dim=-1).mean().item())
    slope = -fl.fit_order(sizes, errors)
    print(f"E|x_i - xbar_i| = {errors} for N = {sizes}: slope {slope:.2f}; wrong field: {wrong}")
    assert abs(slope + 0.5) < 0.15, errors
    assert wrong[-1] > 3 * errors[-1] and wrong[-1] > 0.5 * wrong[0]  # a wrong field does not converge


def test_equiangular_solution_matches_particles():
    n = d = 6
    x0 = fl.random_orthonormal(n, d, generator=torch.Generator().manual_seed(0), dtype=F64)
    for beta, normalized in [(1.0, True), (3.0, True), (1.0, False)]:
        field = fl.SphereAttention(beta=beta, normalized=normalized)
        traj = fl.simulate(field, x0, t1=3.0, n_steps=300, method="rk4", save_every=30)
        gamma = fl.diagnostics.equiangular_solution(beta, n, traj.t, normalized=normalized, n_substeps=200)
        particles = fl.pairwise_inner_products(traj.x)  # (S, n(n-1))
        assert (particles - gamma[:, None]).abs().max().item() < 1e-8


def test_hitting_time_agrees_with_the_solution_curve():
    for beta in (0.5, 4.0):
        t_hit = fl.hitting_time(beta, 32, delta=1e-3)
        g = fl.diagnostics.equiangular_solution(beta, 32, [t_hit - 0.01, t_hit, t_hit + 0.01], n_substeps=2000)
        assert g[0] < 1 - 1e-3 < g[2]
        assert g[1].item() == pytest.approx(1 - 1e-3, abs=1e-6)
    # larger beta clusters later (SA), and USA at the same beta clusters faster than SA for beta > 0
    assert fl.hitting_time(1.0, 32) < fl.hitting_time(4.0, 32)
    assert fl.hitting_time(2.0, 32, normalized=False) < fl.hitting_time(2.0, 32)
    # near gamma = 1 the SA gap decays like e^{-2t}
    g = fl.diagnostics.equiangular_solution(1.0, 8, [20.0, 21.0])
    assert math.log((1 - g[0]) / (1 - g[1])).real == pytest.approx(2.0, abs=0.02)


def test_clustered_fraction_and_cluster_count():
    e = torch.eye(3, dtype=F64)
    x = torch.stack([e[0], e[0], e[0], e[1], e[1], e[2]])
    # ordered pairs inside clusters: 3*2 + 2*1 = 8 out of 6*5 = 30
    assert fl.diagnostics.clustered_fraction(x).item() == pytest.approx(8 / 30)
    assert fl.cluster_count(x).item() == 3
    assert fl.diagnostics.clustered_fraction(x[:1]).item() == 1.0


def test_phase_diagram_batches_beta_exactly_like_separate_runs():
    betas = [0.5, 4.0]
    t, frac = fl.diagnostics.phase_diagram(
        betas,
        n=8,
        d=3,
        t1=6.0,
        n_systems=5,
        step=0.1,
        save_every=20,
        generator=torch.Generator().manual_seed(3),
        dtype=F64,
    )
    assert frac.shape == (2, len(t)) and len(t) == 4
    x0 = fl.uniform_sphere(8, 3, batch_shape=(2, 5), generator=torch.Generator().manual_seed(3), dtype=F64)
    for b, beta in enumerate(betas):
        traj = fl.simulate(
            fl.SphereAttention(beta=beta), x0[b], t1=6.0, n_steps=60, retraction=fl.unit_normalize, save_every=20
        )
        assert torch.allclose(frac[b], fl.diagnostics.clustered_fraction(traj.x).mean(-1), atol=1e-12)


def test_phase_diagram_small_beta_clusters_and_large_beta_is_slower():
    t, frac = fl.diagnostics.phase_diagram(
        [0.5, 9.0], n=16, d=4, t1=20.0, n_systems=16, save_every=50, generator=torch.Generator().manual_seed(0)
    )
    assert frac[0, -1].item() > 0.99  # d >= 3: one cluster eventually; small beta gets there fast
    assert frac[1, -1].item() < 0.9  # large beta: metastable multi-cluster states at t = 20
    assert frac[0, 0].item() == 0.0  # uniform start: no pair within 0.999
