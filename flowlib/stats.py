"""Statistics over independent seeds: a mean with its Student-t interval, and fitted slopes with theirs.

The book states every empirical observation as a statistic over at least five independent seeds with a 95%
interval; this module is the one implementation of that standard (chapters, experiments and tests use it).
Nothing here touches a random state: the caller runs one experiment per seed and passes the values.

Examples
--------
>>> from flowlib import stats
>>> ci = stats.mean_interval([0.9, 1.1, 1.0, 0.95, 1.05])
>>> print(ci)
1 [0.9019, 1.098] (95% t interval, 5 seeds)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MeanInterval", "mean_interval", "slope_interval", "fit_slope", "t_quantile"]

# two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int, level: float = 0.95) -> float:
    r"""Two-sided Student-t quantile :math:`t_{(1+\text{level})/2,\ \text{df}}`.

    Exact to the printed digits for ``level = 0.95`` and ``df <= 30`` (a table); elsewhere the Cornish-Fisher
    expansion of the t quantile in :math:`1/\text{df}` (Abramowitz and Stegun 26.7.5), within 2e-3 for
    ``df >= 5`` at the usual levels.

    Parameters
    ----------
    df : int
        Degrees of freedom, at least 1.
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``df < 1`` or ``level`` is not in (0, 1).

    Examples
    --------
    >>> from flowlib.stats import t_quantile
    >>> t_quantile(4), round(t_quantile(200), 3), round(t_quantile(10**6, level=0.9), 3)
    (2.776, 1.972, 1.645)
    """
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an integer >= 1; got {df!r}")
    if not isinstance(level, (int, float)) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    if abs(level - 0.95) < 1e-12 and df <= len(_T975):
        return _T975[df - 1]
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


@dataclass(frozen=True)
class MeanInterval:
    """Mean of a statistic over independent seeds and its Student-t interval (:func:`mean_interval`).

    Attributes
    ----------
    mean : float
        Sample mean over the seeds.
    low, high : float
        Ends of the interval, ``mean -/+ t * sd / sqrt(n)``.
    n : int
        Number of seeds.
    level : float
        Confidence level (0.95 by default).

    Examples
    --------
    >>> from flowlib.stats import mean_interval
    >>> ci = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    >>> ci.mean, round(ci.half_width, 3), 3.0 in ci, 5.0 in ci
    (3.0, 1.963, True, False)
    """

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    @property
    def half_width(self) -> float:
        """Half the length of the interval."""
        return 0.5 * (self.high - self.low)

    def __contains__(self, value: float) -> bool:
        return self.low <= float(value) <= self.high

    def __iter__(self):
        """``mean, low, high = interval`` unpacks like a tuple."""
        return iter((self.mean, self.low, self.high))

    def __str__(self) -> str:
        pct = f"{100 * self.level:g}%"
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}] ({pct} t interval, {self.n} seeds)"


def mean_interval(values: Sequence[float] | Tensor, *, level: float = 0.95) -> MeanInterval:
    r"""Mean over seeds with its Student-t confidence interval.

    Parameters
    ----------
    values : sequence of float or Tensor
        One value of the statistic per independent seed (at least two, all finite).
    level : float
        Confidence level, 0.95 by default.

    Returns
    -------
    MeanInterval
        ``mean`` and the interval :math:`\bar v \pm t_{(1+\text{level})/2,\,n-1}\, s/\sqrt n`, with :math:`s` the
        sample standard deviation.

    Raises
    ------
    ValueError
        If fewer than two values are given or a value is not finite.

    Examples
    --------
    >>> import torch
    >>> from flowlib.stats import mean_interval
    >>> draws = torch.randn(10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> ci = mean_interval(draws)
    >>> ci.n, ci.low < ci.mean < ci.high, 0.0 in ci
    (10, True, True)
    >>> mean, low, high = ci  # unpacks like a tuple
    """
    v = torch.as_tensor(values, dtype=torch.float64).detach().reshape(-1).cpu()
    if v.numel() < 2:
        raise ValueError(f"need at least two seeds for an interval; got {v.numel()}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"values must be finite; got {v.tolist()}")
    n = v.numel()
    m = float(v.mean())
    half = t_quantile(n - 1, level) * float(v.std(unbiased=True)) / math.sqrt(n)
    return MeanInterval(m, m - half, m + half, n, float(level))


def fit_slope(x: Sequence[float] | Tensor, y: Sequence[float] | Tensor, *, log: bool = True) -> float:
    r"""Least-squares slope of ``y`` against ``x``: of :math:`\log y` against :math:`\log x` when ``log``.

    The same fit as :func:`flowlib.convergence.fit_slope` (flowlib has one), for the seed statistics.

    A quantity behaving like :math:`C x^p` has log-log slope :math:`p`.

    Parameters
    ----------
    x, y : sequence of float or Tensor
        At least two points, same length; positive when ``log``.
    log : bool
        Fit in log-log coordinates (default) or plain coordinates.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        On mismatched lengths, fewer than two points, equal abscissae, or non-positive values with ``log``.

    Examples
    --------
    >>> from flowlib.stats import fit_slope
    >>> round(fit_slope([1, 2, 4, 8], [3.0, 1.5, 0.75, 0.375]), 12)
    -1.0
    >>> fit_slope([0, 1, 2], [1.0, 3.0, 5.0], log=False)
    2.0
    """
    from .convergence import fit_slope as _fit_slope  # flowlib's one slope fit

    xs = torch.as_tensor(x, dtype=torch.float64).detach().reshape(-1).cpu().tolist()
    ys = torch.as_tensor(y, dtype=torch.float64).detach().reshape(-1).cpu().tolist()
    if len(xs) != len(ys):
        raise ValueError(f"need two sequences of equal length >= 2; got {len(xs)} and {len(ys)}")
    return _fit_slope(xs, ys, log_x=log, log_y=log)


def slope_interval(
    x: Sequence[float] | Tensor, values: Sequence[Sequence[float]] | Tensor, *, log: bool = True, level: float = 0.95
) -> MeanInterval:
    r"""A slope fitted separately for each seed (:func:`fit_slope`), with a Student-t interval over the seeds.

    Parameters
    ----------
    x : sequence of float
        The abscissae (e.g. sample sizes or layer counts), at least two.
    values : array of shape (n_seeds, len(x))
        One row of measurements per independent seed (positive when ``log``).
    log : bool
        Log-log slopes (default) or plain slopes.
    level : float
        Confidence level, 0.95 by default.

    Returns
    -------
    MeanInterval
        The mean slope over the seeds and its interval: a quantity decaying like ``x ** p`` has slope ``p``.

    Raises
    ------
    ValueError
        If the shapes do not match, fewer than two seeds are given, or a value is not positive with ``log``.

    Examples
    --------
    >>> import torch
    >>> from flowlib.stats import slope_interval
    >>> sizes = [100, 400, 1600]
    >>> noise = 1 + 0.05 * torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    >>> ci = slope_interval(sizes, noise * torch.tensor(sizes, dtype=torch.float64) ** -0.5)
    >>> -0.5 in ci, ci.half_width < 0.05
    (True, True)
    """
    xs = torch.as_tensor(x, dtype=torch.float64).detach().reshape(-1).cpu()
    y = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if y.ndim != 2 or y.shape[1] != xs.numel() or xs.numel() < 2:
        raise ValueError(
            f"values must have shape (n_seeds, {xs.numel()}) with at least two abscissae; got {tuple(y.shape)}"
        )
    return mean_interval([fit_slope(xs, row, log=log) for row in y], level=level)
