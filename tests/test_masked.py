"""Tests for flowlib.book.masked: the causal mean-field velocity, the Cesàro profile and conditional distances."""

import math

import pytest
import torch

import flowlib as fl
from flowlib.book import masked

F64 = torch.float64


def _normal_cdf(z, mean, std):
    return 0.5 * torch.erfc(-(z - mean) / (std * math.sqrt(2.0)))


def test_causal_velocity_equals_causal_softmax_attention():
    gen = torch.Generator().manual_seed(0)
    n, d = 9, 3
    x = torch.randn(n, d, generator=gen, dtype=F64)
    Q, K, V = (torch.randn(d, d, generator=gen, dtype=F64) for _ in range(3))
    s = torch.arange(1, n + 1, dtype=F64) / n
    v = masked.causal_velocity(s, x, s, x, Q=Q, K=K, V=V, beta=0.7)
    ref = fl.SoftmaxAttention(Q=Q, K=K, V=V, beta=0.7, causal=True, backend="dense")(x)
    assert torch.allclose(v, ref, atol=1e-13)
    assert torch.allclose(v[0], V @ x[0], atol=1e-13)  # the first token sees only itself


def test_causal_velocity_equal_positions_is_full_attention_and_weights_count():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 2, generator=gen, dtype=F64)
    s = torch.full((7,), 0.5, dtype=F64)
    assert torch.allclose(masked.causal_velocity(s, x, s, x), fl.SoftmaxAttention()(x), atol=1e-13)
    # doubling an atom's weight equals duplicating the atom
    y2 = torch.cat([x, x[:1]])
    s2 = torch.full((8,), 0.5, dtype=F64)
    w = torch.ones(7, dtype=F64)
    w[0] = 2.0
    a = masked.causal_velocity(s, x, s, x, weights=w)
    b = masked.causal_velocity(s, x, s2, y2)
    assert torch.allclose(a, b, atol=1e-13)


def test_causal_velocity_empty_past_is_zero_and_validation():
    x = torch.ones(2, 2, dtype=F64)
    v = masked.causal_velocity(torch.tensor([0.1, 0.9], dtype=F64), x, torch.tensor([0.5, 0.6], dtype=F64), x)
    assert torch.equal(v[0], torch.zeros(2, dtype=F64))
    assert torch.allclose(v[1], torch.ones(2, dtype=F64))
    with pytest.raises(ValueError):
        masked.causal_velocity(torch.zeros(3, dtype=F64), x, torch.zeros(2, dtype=F64), x)
    with pytest.raises(TypeError):
        masked.causal_velocity(torch.zeros(2, dtype=torch.long), x, torch.zeros(2, dtype=F64), x)
    with pytest.raises(ValueError):
        masked.causal_velocity(torch.zeros(2, dtype=F64), x, torch.zeros(2, dtype=F64), x, weights=-torch.ones(2))


def test_cesaro_profile_solves_the_running_average_equation():
    coeffs = [-1.0, 2.0, 0.5]
    s = torch.linspace(0.05, 1.0, 40, dtype=F64)
    t, h, rate = 0.7, 1e-4, 1.3
    dm_dt = (
        masked.cesaro_profile(coeffs, s, t + h, rate=rate) - masked.cesaro_profile(coeffs, s, t - h, rate=rate)
    ) / (2 * h)
    # running average by Gauss-Legendre-free quadrature: fine trapezoid on [0, s]
    u = torch.linspace(0.0, 1.0, 4001, dtype=F64)
    avg = torch.stack(
        [torch.trapezoid(masked.cesaro_profile(coeffs, si * u, t, rate=rate), u) for si in s]
    )  # (1/s) int_0^s m = int_0^1 m(s u) du
    assert torch.allclose(dm_dt, rate * avg, atol=1e-6)
    # constant profile grows like e^{rate t}; linear profile like e^{rate t / 2}
    one = torch.ones(1, dtype=F64)
    assert math.isclose(float(masked.cesaro_profile([1.0], one, 2.0)), math.exp(2.0), rel_tol=1e-14)
    assert math.isclose(float(masked.cesaro_profile([0.0, 1.0], one, 2.0)), math.exp(1.0), rel_tol=1e-14)


def test_w1_dirac_normal_closed_form():
    z = torch.tensor([0.0, 0.3, -2.0, 8.0], dtype=F64)
    w = masked.w1_dirac_normal(z, 0.0, 0.5)
    assert math.isclose(float(w[0]), 0.5 * math.sqrt(2 / math.pi), rel_tol=1e-14)
    assert math.isclose(float(w[3]), 8.0, rel_tol=1e-12)  # far away: |z - m|
    gen = torch.Generator().manual_seed(2)
    y = 0.5 * torch.randn(400_000, generator=gen, dtype=F64)
    mc = (z.unsqueeze(-1) - y).abs().mean(-1)
    assert torch.allclose(w, mc, rtol=5e-3, atol=2e-3)
    assert bool((w >= 0.5 * math.sqrt(2 / math.pi) - 1e-15).all())
    with pytest.raises(ValueError):
        masked.w1_dirac_normal(z, 0.0, 0.0)


def test_binned_conditional_w1_shift_and_rate():
    def cdf(z, s):
        return _normal_cdf(z, 2 * s - 1, 0.3)

    n = 4000
    s = torch.arange(1, n + 1, dtype=F64) / n
    gen = torch.Generator().manual_seed(3)
    x = (2 * s - 1) + 0.3 * torch.randn(n, generator=gen, dtype=F64)
    base = masked.binned_conditional_w1(s, x, cdf, n_bins=4)
    shifted = masked.binned_conditional_w1(s, x + 1.0, cdf, n_bins=4)
    assert float(base) < 0.03
    assert abs(float(shifted) - 1.0) < 0.03  # W1 of a translation is the shift
    # sampling error of exact samples falls like n^{-1/2} at a fixed number of bins
    ns, errs = [250, 1000, 4000, 16000], []
    for m in ns:
        sm = torch.arange(1, m + 1, dtype=F64) / m
        xm = (2 * sm - 1) + 0.3 * torch.randn(8, m, generator=gen, dtype=F64)
        errs.append(float(masked.binned_conditional_w1(sm, xm, cdf, n_bins=4)))
    slope = torch.linalg.lstsq(
        torch.stack([torch.log(torch.tensor(ns, dtype=F64)), torch.ones(4, dtype=F64)], 1),
        torch.log(torch.tensor(errs, dtype=F64)).unsqueeze(-1),
    ).solution[0, 0]
    assert abs(float(slope) + 0.5) < 0.12
    with pytest.raises(ValueError):
        masked.binned_conditional_w1(s[:3], x[:3], cdf, n_bins=8)  # empty bins
