"""Distances between measures against closed forms and independent methods (DESIGN §5.6)."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import scipy.linalg
import torch
from scipy.optimize import linear_sum_assignment

import flowlib as fl
from flowlib import measures as M

F64 = torch.float64


def test_wasserstein_1d_sorted_matching_equals_hungarian(gen):
    x = torch.randn(300, generator=gen, dtype=F64)
    y = 2 * torch.randn(300, generator=gen, dtype=F64) + 0.5
    w = fl.wasserstein_1d(x, y).item()
    cost = (x[:, None] - y[None, :]).numpy() ** 2
    r, c = linear_sum_assignment(cost)
    assert w == pytest.approx(math.sqrt(cost[r, c].mean()), rel=1e-12)
    assert fl.wasserstein_exact(x[:, None], y[:, None]).item() == pytest.approx(w, rel=1e-10)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_weighted_wasserstein_1d_matches_pot(gen, p):
    u = torch.randn(37, generator=gen, dtype=F64)
    v = torch.randn(51, generator=gen, dtype=F64) + 0.5
    uw = torch.rand(37, generator=gen, dtype=F64)
    vw = torch.rand(51, generator=gen, dtype=F64)
    ours = fl.wasserstein_1d(u, v, p=p, u_weights=uw, v_weights=vw).item()
    ref = ot.wasserstein_1d(u.numpy(), v.numpy(), (uw / uw.sum()).numpy(), (vw / vw.sum()).numpy(), p=p) ** (1 / p)
    assert ours == pytest.approx(float(ref), rel=1e-12)
    # the general code path also reproduces the sorted matching for equal uniform clouds
    a, b = u[:30], v[:30]
    same = M._w1d_power(a, b, float(p), torch.full((30,), 1 / 30, dtype=F64), None) ** (1 / p)
    assert same.item() == pytest.approx(fl.wasserstein_1d(a, b, p=p).item(), rel=1e-12)


def test_wasserstein_1d_is_batched(gen):
    x = torch.randn(4, 3, 50, generator=gen, dtype=F64)
    y = torch.randn(4, 3, 50, generator=gen, dtype=F64)
    out = fl.wasserstein_1d(x, y)
    assert out.shape == (4, 3)
    assert out[2, 1].item() == pytest.approx(fl.wasserstein_1d(x[2, 1], y[2, 1]).item(), rel=1e-14)


def test_exact_w2_of_translation_and_basic_axioms(gen):
    x = torch.randn(60, 3, generator=gen, dtype=F64)
    c = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    assert fl.wasserstein_exact(x + c, x).item() == pytest.approx(c.norm().item(), rel=1e-10)
    assert fl.wasserstein_exact(x, x).item() == pytest.approx(0.0, abs=1e-12)
    y = torch.randn(45, 3, generator=gen, dtype=F64)
    assert fl.wasserstein_exact(x, y).item() == pytest.approx(fl.wasserstein_exact(y, x).item(), rel=1e-10)


def test_sliced_wasserstein_shifted_gaussians(gen):
    # SW_2(N(0, I), N(m, I)) = |m| / sqrt(d); with the same cloud shifted it is exact per direction
    d = 5
    m = torch.full((d,), 1.2, dtype=F64)
    X = torch.randn(10_000, d, generator=gen, dtype=F64)
    P = M.random_directions(d, 500, generator=gen, dtype=F64)
    same_cloud = fl.sliced_wasserstein(X, X + m, projections=P).item()
    assert same_cloud == pytest.approx(math.sqrt(((m @ P) ** 2).mean().item()), rel=1e-12)
    Y = torch.randn(10_000, d, generator=gen, dtype=F64) + m
    sw = fl.sliced_wasserstein(X, Y, n_projections=2000, generator=gen).item()
    assert sw == pytest.approx(m.norm().item() / math.sqrt(d), rel=0.03)


def test_sliced_is_below_exact_and_equals_it_in_one_dimension(gen):
    for n in (50, 200):
        x = torch.randn(n, 3, generator=gen, dtype=F64)
        y = 1.5 * torch.randn(n, 3, generator=gen, dtype=F64) + 0.7
        assert fl.sliced_wasserstein(x, y, n_projections=200, generator=gen) <= fl.wasserstein_exact(x, y)
    u, v = torch.randn(80, 1, generator=gen, dtype=F64), torch.randn(80, 1, generator=gen, dtype=F64)
    assert fl.sliced_wasserstein(u, v, n_projections=3, generator=gen).item() == pytest.approx(
        fl.wasserstein_exact(u, v).item(), rel=1e-10
    )


def test_sliced_generator_is_reproducible_and_leaves_global_rng_alone(gen):
    x = torch.randn(100, 3, generator=gen, dtype=F64)
    y = torch.randn(100, 3, generator=gen, dtype=F64)
    state = torch.get_rng_state()
    a = fl.sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(7))
    b = fl.sliced_wasserstein(x, y, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())


def test_sliced_wasserstein_to_gaussian_matches_quantile_quadrature(gen):
    # one dimension: SW_2 to N(m, s^2) is W_2 between the cloud and the Gaussian; compare with a fine
    # quantile discretisation of the Gaussian through the independent wasserstein_1d
    x = 0.8 * torch.randn(400, 1, generator=gen, dtype=F64) + 0.3
    mean, var = torch.tensor([0.1], dtype=F64), torch.tensor([[0.5]], dtype=F64)
    ours = fl.sliced_wasserstein_to_gaussian(x, mean, var, projections=torch.ones(1, 1, dtype=F64)).item()
    levels = (torch.arange(400_000, dtype=F64) + 0.5) / 400_000
    q = mean + math.sqrt(0.5) * torch.distributions.Normal(0.0, 1.0).icdf(levels.float()).to(F64)
    ref = fl.wasserstein_1d(x[:, 0], q).item()
    assert ours == pytest.approx(ref, rel=2e-3)


def test_sliced_wasserstein_to_gaussian_shrinks_like_inverse_sqrt_n(gen):
    mean = torch.tensor([0.5, -0.5], dtype=F64)
    cov = torch.tensor([[1.0, 0.4], [0.4, 0.6]], dtype=F64)
    P = M.random_directions(2, 64, generator=gen, dtype=F64)
    errs = []
    for n in (500, 8000):
        x = fl.gaussian_tokens(n, mean, cov, batch_shape=(10,), generator=gen)
        errs.append(
            np.mean([fl.sliced_wasserstein_to_gaussian(x[s], mean, cov, projections=P).item() for s in range(10)])
        )
    assert 2.5 < errs[0] / errs[1] < 6.0  # 16x more points: sqrt(16) = 4


def test_bures_wasserstein_closed_forms(gen):
    one = torch.eye(1, dtype=F64)
    assert fl.bures_wasserstein(torch.zeros(1), one, torch.full((1,), 10.0), one).item() == pytest.approx(10.0)
    # commuting covariances: |m1 - m2|^2 + |S1^1/2 - S2^1/2|_F^2
    S1 = torch.diag(torch.tensor([2.0, 0.5], dtype=F64))
    S2 = torch.diag(torch.tensor([0.3, 4.0], dtype=F64))
    m1, m2 = torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0.0, 2.0], dtype=F64)
    expected = math.sqrt(5.0 + ((S1.sqrt() - S2.sqrt()) ** 2).sum().item())
    assert fl.bures_wasserstein(m1, S1, m2, S2).item() == pytest.approx(expected, rel=1e-12)
    # general covariances: scipy's sqrtm and POT agree
    a = torch.randn(3, 3, generator=gen, dtype=F64)
    b = torch.randn(3, 3, generator=gen, dtype=F64)
    C1, C2 = (a @ a.T).numpy(), (b @ b.T + 0.1 * torch.eye(3, dtype=F64)).numpy()
    R = scipy.linalg.sqrtm(C1)
    ref = math.sqrt(max(0.0, np.trace(C1) + np.trace(C2) - 2 * np.trace(scipy.linalg.sqrtm(R @ C2 @ R)).real))
    ours = fl.bures_wasserstein(
        torch.zeros(3, dtype=F64), torch.from_numpy(C1), torch.zeros(3, dtype=F64), torch.from_numpy(C2)
    ).item()
    assert ours == pytest.approx(ref, rel=1e-8)
    pot = ot.gaussian.bures_wasserstein_distance(np.zeros(3), np.zeros(3), C1, C2)
    assert ours == pytest.approx(float(pot), rel=1e-8)
    assert fl.bures_wasserstein(m1, S1, m1, S1).item() == pytest.approx(0.0, abs=1e-7)  # clamped, not NaN


def test_empirical_moments_weighted_and_plain(gen):
    x = torch.randn(7, 3, generator=gen, dtype=F64)
    mean, cov = fl.empirical_moments(x)
    assert torch.allclose(cov, torch.cov(x.T, correction=0))
    w = torch.zeros(7, dtype=F64)
    w[[1, 4]] = 2.0
    mw, cw = fl.empirical_moments(x, w)
    assert torch.allclose(mw, (x[1] + x[4]) / 2)
    assert torch.allclose(cw, torch.cov(x[[1, 4]].T, correction=0))


def test_conditional_wasserstein(gen):
    x = torch.randn(40, 3, 2, generator=gen, dtype=F64)
    shift = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=F64)  # one shift per position
    d = fl.measures.conditional_wasserstein(x, x + shift).item()
    assert d == pytest.approx(math.sqrt((0 + 1 + 4) / 3), rel=1e-10)
    # positions matter: permuting the positions of y changes the distance, a plain W2 would not see it
    y = x[:, [1, 0, 2]]
    assert fl.measures.conditional_wasserstein(x, y).item() > 0.1
    sliced = fl.measures.conditional_wasserstein(x, x + shift, method="sliced", generator=gen).item()
    assert sliced < d


def test_measures_validation(gen):
    x = torch.randn(10, 2, dtype=F64)
    with pytest.raises(ValueError, match="same dimension"):
        fl.sliced_wasserstein(x, torch.randn(10, 3, dtype=F64))
    with pytest.raises(ValueError, match="same dimension"):
        fl.wasserstein_exact(x, torch.randn(10, 3, dtype=F64))
    with pytest.raises(ValueError, match="p must be >= 1"):
        fl.wasserstein_1d(x[:, 0], x[:, 1], p=0.5)
    with pytest.raises(ValueError, match="one weight per point"):
        fl.wasserstein_1d(x[:, 0], x[:, 1], u_weights=torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        fl.wasserstein_1d(x[:, 0], x[:, 1], u_weights=-torch.ones(10))
    with pytest.raises(ValueError, match="projections must have shape"):
        fl.sliced_wasserstein(x, x, projections=torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"\(M, n, d\)"):
        fl.measures.conditional_wasserstein(x, x)
    with pytest.raises(TypeError):
        fl.wasserstein_1d([1.0, 2.0], x[:, 0])
