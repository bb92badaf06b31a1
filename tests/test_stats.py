"""flowlib.stats: the seed standard's intervals against closed forms and a coverage experiment."""

from __future__ import annotations

import math

import pytest
import torch

from flowlib import stats


def test_t_quantiles_against_known_values():
    # exact table values and the Cornish-Fisher expansion beyond it (reference: t_{0.975, 40} = 2.0211,
    # t_{0.975, 120} = 1.9799, t_{0.95, 10} = 1.8125, t_{0.995, 60} = 2.6603)
    assert stats.t_quantile(1) == 12.706 and stats.t_quantile(30) == 2.042
    assert stats.t_quantile(40) == pytest.approx(2.0211, abs=2e-3)
    assert stats.t_quantile(120) == pytest.approx(1.9799, abs=1e-3)
    assert stats.t_quantile(10, level=0.90) == pytest.approx(1.8125, abs=3e-3)
    assert stats.t_quantile(60, level=0.99) == pytest.approx(2.6603, abs=3e-3)


def test_mean_interval_closed_form_and_coverage():
    ci = stats.mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ci.mean == 3.0 and ci.half_width == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5))
    # coverage: 2000 experiments of 6 normal draws; the 95% interval covers the true mean 95% of the time
    g = torch.Generator().manual_seed(0)
    draws = 0.7 + 2.0 * torch.randn(2000, 6, generator=g, dtype=torch.float64)
    covered = sum(0.7 in stats.mean_interval(row) for row in draws)
    assert 0.93 < covered / 2000 < 0.97, covered / 2000


def test_slopes_recover_powers_and_their_intervals_cover():
    x = [8, 16, 32, 64]
    assert stats.fit_slope(x, [v**-1.5 for v in x]) == pytest.approx(-1.5, abs=1e-12)
    g = torch.Generator().manual_seed(3)
    noise = torch.exp(0.1 * torch.randn(10, 4, generator=g, dtype=torch.float64))
    ci = stats.slope_interval(x, noise * torch.tensor(x, dtype=torch.float64) ** -0.5)
    assert -0.5 in ci and ci.half_width < 0.1 and ci.n == 10


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: stats.mean_interval([1.0]), "at least two"),
        (lambda: stats.mean_interval([1.0, float("nan")]), "finite"),
        (lambda: stats.fit_slope([1, 2], [1.0, -1.0]), "positive"),
        (lambda: stats.fit_slope([2, 2], [1.0, 3.0]), "all equal"),
        (lambda: stats.fit_slope([1, 2, 3], [1.0, 2.0]), "equal length"),
        (lambda: stats.slope_interval([1, 2], [[1.0, 2.0, 3.0]]), "shape"),
        (lambda: stats.t_quantile(0), "df"),
        (lambda: stats.t_quantile(5, level=1.5), "level"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
