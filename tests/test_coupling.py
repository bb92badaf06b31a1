"""flowlib.book.coupling: mean-field copies, Euler on measures, the normaliser-variance index (chapter 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flowlib as fl
from flowlib.book import coupling

F64 = torch.float64


def chapter_problem():
    Q = 0.5 * torch.tensor([[1.0, 0.5], [-0.5, 1.0]], dtype=F64)
    V = torch.tensor([[0.4, -1.0], [1.0, 0.2]], dtype=F64)
    mean0 = torch.tensor([0.5, 0.0], dtype=F64)
    cov0 = torch.tensor([[0.5, 0.15], [0.15, 0.3]], dtype=F64)
    return fl.SoftmaxAttention(Q=Q, V=V, beta=1.0), mean0, cov0


def random_problem(d: int):
    g = torch.Generator().manual_seed(100 + d)
    Q = 0.35 * torch.randn(d, d, generator=g, dtype=F64) / d**0.5
    V = torch.randn(d, d, generator=g, dtype=F64) / d**0.5
    return fl.SoftmaxAttention(Q=Q, V=V), 0.3 * torch.ones(d, dtype=F64), 0.5 * torch.eye(d, dtype=F64)


def test_copies_are_the_composed_affine_map_and_follow_the_layer_law():
    field, mean0, cov0 = chapter_problem()
    x0 = fl.gaussian_tokens(20_000, mean0, cov0, generator=torch.Generator().manual_seed(0))
    copies = coupling.mean_field_copies(field, x0, mean0, cov0, t1=1.0, n_layers=4)
    assert copies.shape == (5, 20_000, 2)
    M, c = coupling.gaussian_flow_map(field, mean0, cov0, t1=1.0, n_layers=4)
    # two routes to the same copies: layer by layer, and the composed affine map
    assert torch.allclose(copies[-1], x0 @ M.mT + c, atol=1e-12)
    # the law of the copies is the mean-field law of the 4-layer network: exact moments M Sigma M^T, M alpha + c
    law = fl.solve_gaussian(field, mean0, cov0, t1=1.0, n_steps=4, method="layers")
    assert torch.allclose(M @ cov0 @ M.mT, law.final_cov, atol=1e-12)
    assert torch.allclose(M @ mean0 + c, law.final_mean, atol=1e-12)
    # and the sample moments agree with it up to Monte Carlo error (20,000 samples: ~0.01)
    mean, cov = fl.empirical_moments(copies[-1])
    assert (mean - law.final_mean).abs().max().item() < 0.03
    assert (cov - law.final_cov).abs().max().item() < 0.03


def test_layer_maps_converge_to_the_flow_map_at_first_order():
    field, mean0, cov0 = chapter_problem()
    M1, c1 = coupling.gaussian_flow_map(field, mean0, cov0, t1=1.0, n_layers=1024)
    M2, c2 = coupling.gaussian_flow_map(field, mean0, cov0, t1=1.0, n_layers=512)
    ref_M, ref_c = 2 * M1 - M2, 2 * c1 - c2  # Richardson: O(h^2)
    # the exact covariance at t = 1 (RK4 on the closure) is transported by the flow map
    exact = fl.solve_gaussian(field, mean0, cov0, t1=1.0, n_steps=400, method="rk4")
    assert torch.allclose(ref_M @ cov0 @ ref_M.mT, exact.final_cov, atol=1e-6)
    assert torch.allclose(ref_M @ mean0 + ref_c, exact.final_mean, atol=1e-6)
    layers = [4, 8, 16, 32, 64]
    errs = []
    for L in layers:
        M, c = coupling.gaussian_flow_map(field, mean0, cov0, t1=1.0, n_layers=L)
        errs.append((M - ref_M).abs().max().item() + (c - ref_c).abs().max().item())
    slope = np.polyfit(np.log(layers), np.log(errs), 1)[0]
    assert abs(slope + 1) < 0.1, (errs, slope)


def _coupling_slope(field, mean0, cov0, sizes, budget, seed):
    errs = []
    for N in sizes:
        reps = max(4, budget // N)
        x0 = fl.gaussian_tokens(N, mean0, cov0, batch_shape=(reps,), generator=torch.Generator().manual_seed(N + seed))
        xT = fl.residual_stack(field, x0, n_layers=4).final
        copies = coupling.mean_field_copies(field, x0, mean0, cov0, t1=1.0, n_layers=4)[-1]
        errs.append(coupling.coupling_distance(xT, copies).mean().item())
    return np.polyfit(np.log(sizes), np.log(errs), 1)[0], errs


def test_particles_approach_their_copies_like_inverse_sqrt_n():
    # MF1 in d = 2: E|x_i - xbar_i| against N, fitted slope within 0.15 of -1/2
    slope, errs = _coupling_slope(*chapter_problem(), sizes=[250, 500, 1000, 2000], budget=8000, seed=0)
    assert abs(slope + 0.5) < 0.15, (slope, errs)
    # a deterministic map would pass a ratio test; the errors must also be small and decreasing overall
    assert errs[-1] < errs[0] / 2


@pytest.mark.slow
@pytest.mark.parametrize("d", [3, 8])
def test_coupling_rate_is_dimension_free(d):
    slope, errs = _coupling_slope(*random_problem(d), sizes=[250, 500, 1000, 2000, 4000], budget=16000, seed=0)
    assert abs(slope + 0.5) < 0.15, (slope, errs)


def test_euler_on_the_empirical_measure_is_the_residual_stack():
    field, mean0, cov0 = chapter_problem()
    x0 = fl.gaussian_tokens(50, mean0, cov0, generator=torch.Generator().manual_seed(1))
    traj = coupling.euler_on_measure(field, x0, t1=1.0, n_layers=6)
    stack = fl.residual_stack(field, x0, n_layers=6).x
    assert torch.allclose(traj, stack, atol=1e-12)
    # an atom of mass 2/51 is the same measure as two equal atoms of mass 1/51
    doubled = torch.cat([x0, x0[:1]])
    w = torch.ones(50, dtype=F64)
    w[0] = 2.0
    weighted = coupling.euler_on_measure(field, x0, w, t1=1.0, n_layers=6)
    assert torch.allclose(weighted, fl.residual_stack(field, doubled, n_layers=6).x[:, :50], atol=1e-12)


def test_normaliser_variance_index():
    # scalar case: Sigma = s I, A = a I gives a^2 s^2
    s, a = 0.7, 0.9
    idx = coupling.normaliser_variance_index(s * torch.eye(3, dtype=F64), beta=a)
    assert idx.item() == pytest.approx(a**2 * s**2, rel=1e-12)
    # general case: the spectrum of Sigma^(1/2) A^T Sigma A Sigma^(1/2) is that of A^T Sigma A Sigma
    g = torch.Generator().manual_seed(2)
    Q, K = torch.randn(2, 3, generator=g, dtype=F64), torch.randn(2, 3, generator=g, dtype=F64)
    B = torch.randn(3, 3, generator=g, dtype=F64)
    cov = B @ B.mT + 0.1 * torch.eye(3, dtype=F64)
    A = 0.5 * K.mT @ Q
    other = torch.linalg.eigvals(A.mT @ cov @ A @ cov).real.max()
    assert coupling.normaliser_variance_index(cov, Q, K, beta=0.5).item() == pytest.approx(other.item(), rel=1e-9)
    # batched covariances
    assert coupling.normaliser_variance_index(torch.stack([cov, 2 * cov]), Q, K, beta=0.5).shape == (2,)


def test_bad_input_raises():
    field, mean0, cov0 = chapter_problem()
    with pytest.raises(TypeError):
        coupling.gaussian_layer_maps(field, [0.5, 0.0], cov0, t1=1.0, n_layers=2)
    with pytest.raises(ValueError):
        coupling.gaussian_layer_maps(field, mean0, cov0[:1], t1=1.0, n_layers=2)
    with pytest.raises(ValueError):
        coupling.gaussian_flow_map(field, mean0, cov0, t1=-1.0, n_layers=2)
    with pytest.raises(ValueError):
        coupling.mean_field_copies(field, torch.zeros(5, 3, dtype=F64), mean0, cov0, t1=1.0, n_layers=2)
    with pytest.raises(ValueError):
        coupling.coupling_distance(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError):
        coupling.euler_on_measure(field, torch.zeros(4, 2, dtype=F64), -torch.ones(4, dtype=F64), n_layers=2)
    with pytest.raises(ValueError):
        coupling.normaliser_variance_index(torch.zeros(2, 3, dtype=F64))
    # a closure that blows up before t1 (V = I, A = I, Sigma = I: t* = 1/2) is refused
    blow = fl.SoftmaxAttention(beta=1.0)
    with pytest.raises(ValueError, match="did not reach"):
        coupling.gaussian_layer_maps(blow, torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64), t1=1.0, n_layers=64)
