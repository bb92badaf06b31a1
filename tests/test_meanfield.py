"""Mean-field behaviour and the Part II diagnostics (DESIGN §5.7, MATH §3.5)."""

from __future__ import annotations

import math

import pytest
import torch

import flowlib as fl

F64 = torch.float64


def test_independent_particle_systems_get_closer_like_inverse_sqrt_n(gen):
    # MF1: two independent N-particle systems from the same mu_0, run to T; SW_1 between them ~ N^(-1/2)
    Q = 0.5 * torch.randn(2, 2, generator=gen, dtype=F64)
    K = 0.5 * torch.randn(2, 2, generator=gen, dtype=F64)
    field = fl.SoftmaxAttention(Q=Q, K=K, V=torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64), beta=1.0)
    P = fl.measures.random_directions(2, 64, generator=gen)
    dist = {}
    for N in (400, 1600):
        pairs = 32 if N == 400 else 12
        # compactly supported initial law (uniform on a square), as the mean-field theorem assumes
        x = 2 * torch.rand(2, pairs, N, 2, generator=gen, dtype=F64) - 1
        xT = fl.simulate(field, x, t1=0.5, n_steps=10, method="rk4", save_every=10).final
        dist[N] = fl.sliced_wasserstein(xT[0], xT[1], p=1, projections=P).mean().item()
    ratio = dist[400] / dist[1600]
    print(f"SW1 between independent systems: {dist}; ratio N=400 vs 1600: {ratio:.2f}")
    assert 1.5 < ratio < 2.7, dist


def test_equiangular_solution_matches_particles():
    n = d = 6
    x0 = fl.random_orthonormal(n, d, generator=torch.Generator().manual_seed(0))
    for beta, normalized in [(1.0, True), (3.0, True), (1.0, False)]:
        field = fl.SphereAttention(beta=beta, normalized=normalized)
        traj = fl.simulate(field, x0, t1=3.0, n_steps=300, method="rk4", save_every=30)
        gamma = fl.equiangular_solution(beta, n, traj.t, normalized=normalized, n_substeps=200)
        particles = fl.pairwise_inner_products(traj.x)  # (S, n(n-1))
        assert (particles - gamma[:, None]).abs().max().item() < 1e-8


def test_hitting_time_agrees_with_the_solution_curve():
    for beta in (0.5, 4.0):
        t_hit = fl.hitting_time(beta, 32, delta=1e-3)
        g = fl.equiangular_solution(beta, 32, [t_hit - 0.01, t_hit, t_hit + 0.01], n_substeps=2000)
        assert g[0] < 1 - 1e-3 < g[2]
        assert g[1].item() == pytest.approx(1 - 1e-3, abs=1e-6)
    # larger beta clusters later (SA), and USA at the same beta clusters faster than SA for beta > 0
    assert fl.hitting_time(1.0, 32) < fl.hitting_time(4.0, 32)
    assert fl.hitting_time(2.0, 32, normalized=False) < fl.hitting_time(2.0, 32)
    # near gamma = 1 the SA gap decays like e^{-2t}
    g = fl.equiangular_solution(1.0, 8, [20.0, 21.0])
    assert math.log((1 - g[0]) / (1 - g[1])).real == pytest.approx(2.0, abs=0.02)


def test_clustered_fraction_and_cluster_count():
    e = torch.eye(3, dtype=F64)
    x = torch.stack([e[0], e[0], e[0], e[1], e[1], e[2]])
    # ordered pairs inside clusters: 3*2 + 2*1 = 8 out of 6*5 = 30
    assert fl.clustered_fraction(x).item() == pytest.approx(8 / 30)
    assert fl.cluster_count(x).item() == 3
    assert fl.clustered_fraction(x[:1]).item() == 1.0


def test_phase_diagram_batches_beta_exactly_like_separate_runs():
    betas = [0.5, 4.0]
    t, frac = fl.phase_diagram(
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
        assert torch.allclose(frac[b], fl.clustered_fraction(traj.x).mean(-1), atol=1e-12)


def test_phase_diagram_small_beta_clusters_and_large_beta_is_slower():
    t, frac = fl.phase_diagram(
        [0.5, 9.0], n=16, d=4, t1=20.0, n_systems=16, save_every=50, generator=torch.Generator().manual_seed(0)
    )
    assert frac[0, -1].item() > 0.99  # d >= 3: one cluster eventually; small beta gets there fast
    assert frac[1, -1].item() < 0.9  # large beta: metastable multi-cluster states at t = 20
    assert frac[0, 0].item() == 0.0  # uniform start: no pair within 0.999
