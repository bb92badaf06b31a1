"""flowlib.book.hemisphere: Wendel's formula, the hemisphere test, the Gram ODE, the circle, the cone-collapse lemma."""

from __future__ import annotations

import math

import pytest
import torch

import flowlib as fl
from flowlib.book import hemisphere as hs

F64 = torch.float64


def test_wendel_closed_forms():
    assert hs.wendel_probability(6, 3) == 0.5  # 2^-5 (1 + 5 + 10)
    assert hs.wendel_probability(3, 3) == 1.0
    for n in range(1, 10):  # on the circle: n / 2^(n-1)
        assert hs.wendel_probability(n, 2) == pytest.approx(n / 2 ** (n - 1), abs=0)
    assert hs.wendel_probability(32, 3) == 497 / 2**31


@pytest.mark.parametrize("n,d", [(6, 3), (8, 3), (5, 2), (7, 4)])
def test_wendel_agrees_with_monte_carlo(n, d, gen):
    x = fl.uniform_sphere(n, d, batch_shape=(20000,), dtype=torch.float64, generator=gen)
    p_hat = hs.in_open_hemisphere(x).double().mean().item()
    p = hs.wendel_probability(n, d)
    assert abs(p_hat - p) < 4 * math.sqrt(p * (1 - p) / 20000) + 1e-12


def test_in_open_hemisphere_on_known_configurations():
    up = torch.tensor([[0.0, 0.6, 0.8], [0.6, 0.0, 0.8], [-0.6, 0.0, 0.8], [0.0, -0.6, 0.8]], dtype=F64)
    assert bool(hs.in_open_hemisphere(up))
    # vertices of a regular tetrahedron surround the origin: in no open hemisphere
    tet = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=F64) / math.sqrt(3)
    assert not bool(hs.in_open_hemisphere(tet))
    # circle: three points at 0, 2pi/3, 4pi/3 are not in a half-circle; at 0, 1, 2 radians they are
    ang = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=F64)
    assert not bool(hs.in_open_hemisphere(torch.stack([ang.cos(), ang.sin()], -1)))
    ang = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    assert bool(hs.in_open_hemisphere(torch.stack([ang.cos(), ang.sin()], -1)))


def test_margin_and_chart():
    x = torch.tensor([[0.0, 0.6, 0.8], [0.6, 0.0, 0.8]], dtype=F64)
    w = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    assert hs.hemisphere_margin(x, w).item() == pytest.approx(0.8)
    y = hs.gnomonic_chart(x, w)
    assert torch.allclose(y @ w, torch.ones(2, dtype=F64))
    with pytest.raises(ValueError):
        hs.gnomonic_chart(-x, w)


@pytest.mark.parametrize("normalized", [True, False])
def test_chart_turns_dynamics_into_consensus(normalized, gen):
    """d/dt (x_i / <x_i, w>) = sum_j a_ij (c_j / c_i) (y_j - y_i): a consensus system with positive weights."""
    w = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    x = fl.uniform_sphere(7, 3, dtype=torch.float64, generator=gen)
    x = torch.where((x @ w)[:, None] < 0, -x, x)  # reflect into the upper hemisphere
    field = fl.SphereAttention(beta=1.5, normalized=normalized)
    v = field(x)
    c = x @ w
    ydot = v / c[:, None] - x * (v @ w)[:, None] / c[:, None] ** 2
    W = torch.exp(1.5 * x @ x.T)
    A = W / W.sum(-1, keepdim=True) if normalized else W / 7
    B = A * c[None, :] / c[:, None]
    y = hs.gnomonic_chart(x, w)
    consensus = B @ y - B.sum(-1, keepdim=True) * y
    assert torch.allclose(ydot, consensus, atol=1e-13)


@pytest.mark.parametrize("normalized", [True, False])
def test_cone_collapse_lemma_along_a_run(normalized, gen):
    """The margin never decreases and the diameter obeys the lemma's bound 2 diam(y0) e^{-lambda t}."""
    beta, n = 1.0, 10
    w = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    x0 = fl.uniform_sphere(n, 3, dtype=torch.float64, generator=gen)
    x0 = torch.where((x0 @ w)[:, None] < 0, -x0, x0)
    run = fl.simulate(fl.SphereAttention(beta=beta, normalized=normalized), x0, t1=8.0, n_steps=800, method="rk4")
    r = hs.hemisphere_margin(run.x, w)
    assert bool((torch.diff(r) > -1e-12).all())
    y0 = hs.gnomonic_chart(x0, w)
    diam0 = torch.cdist(y0, y0).max().item()
    lam = hs.cone_collapse_rate(beta, n, r[0].item(), normalized=normalized)
    spread = torch.cdist(run.x, run.x).amax(dim=(-2, -1))
    assert bool((spread <= 2 * diam0 * torch.exp(-lam * run.t) + 1e-12).all())


def test_gram_rhs_matches_particles_and_equiangular(gen):
    for normalized in (True, False):
        x = fl.uniform_sphere(6, 4, dtype=torch.float64, generator=gen)
        v = fl.SphereAttention(beta=2.0, normalized=normalized)(x)
        G = x @ x.T
        assert torch.allclose(hs.gram_rhs(G, 2.0, normalized=normalized), v @ x.T + x @ v.T, atol=1e-13)
        n, g = 5, 0.3
        Ge = (1 - g) * torch.eye(n, dtype=F64) + g * torch.ones(n, n, dtype=F64)
        F = hs.gram_rhs(Ge, 2.0, normalized=normalized)
        rate = fl.diagnostics.equiangular_rhs(g, 2.0, n, normalized=normalized)
        assert torch.allclose(F, rate * (torch.ones(n, n, dtype=F64) - torch.eye(n, dtype=F64)), atol=1e-14)


@pytest.mark.parametrize("normalized", [True, False])
def test_circle_velocity_matches_sphere_attention(normalized, gen):
    theta = 2 * math.pi * torch.rand(9, generator=gen, dtype=F64)
    x = torch.stack([theta.cos(), theta.sin()], -1)
    v = fl.SphereAttention(beta=3.0, normalized=normalized)(x)
    tangent = torch.stack([-theta.sin(), theta.cos()], -1)
    assert torch.allclose((v * tangent).sum(-1), hs.circle_velocity(theta, 3.0, normalized=normalized), atol=1e-13)
    assert torch.allclose(v, hs.circle_velocity(theta, 3.0, normalized=normalized)[:, None] * tangent, atol=1e-13)


def test_decay_rate_recovers_exponent_and_sa_local_rate(gen):
    t = torch.linspace(0, 10, 101, dtype=F64)
    assert hs.decay_rate(t, 3.0 * torch.exp(-1.7 * t), lo=1e-9, hi=1.0) == pytest.approx(1.7, abs=1e-10)
    # SA near the cluster: 1 - min <x_i, x_j> decays like e^{-2t}; USA like e^{-2 e^beta t}
    x0 = fl.uniform_sphere(8, 3, dtype=torch.float64, generator=gen)
    x0 = torch.where(x0[:, 2:] < 0, -x0, x0)
    for normalized, expected in [(True, 2.0), (False, 2.0 * math.e)]:
        run = fl.simulate(
            fl.SphereAttention(beta=1.0, normalized=normalized),
            x0,
            t1=12.0,
            n_steps=1200,
            method="rk4",
            retraction=fl.unit_normalize,
        )
        gap = 1 - fl.pairwise_inner_products(run.x).amin(-1)
        assert hs.decay_rate(run.t, gap, lo=1e-11, hi=1e-4) == pytest.approx(expected, rel=1e-3)


def test_validation():
    with pytest.raises(ValueError):
        hs.wendel_probability(0, 3)
    with pytest.raises(ValueError):
        hs.weight_floor(-1.0, 3)
    with pytest.raises(ValueError):
        hs.cone_collapse_rate(1.0, 3, 1.5)
    with pytest.raises(ValueError):
        hs.gram_rhs(torch.ones(2, 3), 1.0)
    with pytest.raises(TypeError):
        hs.circle_velocity(torch.arange(3), 1.0)
    with pytest.raises(ValueError):
        hs.decay_rate(torch.arange(3.0), torch.ones(2))
    with pytest.raises(ValueError):
        hs.in_open_hemisphere(torch.ones(3, 1, dtype=F64))
