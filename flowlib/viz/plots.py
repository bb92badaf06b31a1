"""Matplotlib plots. Every function takes ``ax=None``, returns the Figure, and never touches rcParams."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..convergence import fit_order
from ..gaussian import trace_normalized_coordinates
from ..integrate.simulate import Trajectory

__all__ = [
    "new_figure",
    "plot_tokens",
    "plot_error_vs_layers",
    "plot_decay",
    "plot_weights",
    "plot_phase_diagram",
    "plot_covariance_disc",
    "plot_density_1d",
]


def new_figure(figsize=(4.5, 4.0), *, projection: str | None = None, dpi: int = 100, ncols: int = 1):
    """A Figure with an opaque white background (readable in dark mode) and ``ncols`` Axes in a row.

    Returns ``(fig, ax)`` for ``ncols=1`` and ``(fig, [ax, ...])`` otherwise.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> fig, ax = viz.new_figure()
    >>> fig.get_facecolor()  # opaque white
    (1.0, 1.0, 1.0, 1.0)
    >>> fig, axes = viz.new_figure((8, 3), ncols=2)
    >>> len(axes)
    2
    """
    fig = Figure(figsize=figsize, dpi=dpi, facecolor="white", layout="constrained" if ncols > 1 else None)
    axes = [fig.add_subplot(1, ncols, i + 1, projection=projection) for i in range(ncols)]
    for ax in axes:
        ax.set_facecolor("white")
    return (fig, axes[0]) if ncols == 1 else (fig, axes)


def _np(x: Tensor) -> np.ndarray:
    return x.detach().cpu().to(torch.float64).numpy()


def plot_tokens(
    traj_or_x: Trajectory | Tensor,
    *,
    step: int = -1,
    ax=None,
    sphere: bool | None = None,
    trails: bool = True,
    title: str | None = None,
    lim: float | None = None,
):
    """Scatter the tokens of one system at saved index ``step`` (2-D or 3-D), with trails up to it.

    Parameters
    ----------
    traj_or_x : Trajectory or Tensor of shape (n, d)
        ``d`` must be 2 or 3; batched trajectories plot their first system.
    step : int
        Saved index to show (default: the last).
    sphere : bool, optional
        Draw the unit circle / sphere wireframe (default: if all tokens have unit norm).
    trails : bool
        Draw each token's path up to ``step``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> traj = fl.simulate(fl.SoftmaxAttention(), torch.randn(6, 2, generator=torch.Generator().manual_seed(0)), t1=1.0, n_steps=10)
    >>> fig = viz.plot_tokens(traj, title="t = 1")
    >>> fig.axes[0].get_title()
    't = 1'
    """
    if isinstance(traj_or_x, Trajectory):
        xs = traj_or_x.x
        while xs.ndim > 3:
            xs = xs[:, 0]
        step = step % xs.shape[0]
        path = _np(xs[: step + 1])
    else:
        x = traj_or_x
        while x.ndim > 2:
            x = x[0]
        path = _np(x)[None]
    d = path.shape[-1]
    if d not in (2, 3):
        raise ValueError(f"plot_tokens needs d in (2, 3); got d={d}")
    if ax is None:
        fig, ax = new_figure(projection="3d" if d == 3 else None)
    fig = ax.figure
    if sphere is None:
        sphere = bool(np.allclose(np.linalg.norm(path[-1], axis=-1), 1.0, atol=1e-3))
    cur = path[-1]
    colors = np.arange(cur.shape[0])
    if d == 2:
        if sphere:
            th = np.linspace(0, 2 * np.pi, 200)
            ax.plot(np.cos(th), np.sin(th), color="0.8", lw=1)
        if trails and path.shape[0] > 1:  # one collection of n paths: fast for thousands of tokens
            from matplotlib.collections import LineCollection

            ax.add_collection(LineCollection(list(path[:, :, :2].transpose(1, 0, 2)), colors="0.6", linewidths=0.6))
        ax.scatter(cur[:, 0], cur[:, 1], c=colors, cmap="viridis", s=22, zorder=3, edgecolors="k", linewidths=0.3)
        ax.set_aspect("equal")
        if lim is not None:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
        ax.set_xlabel("$x^{(1)}$")
        ax.set_ylabel("$x^{(2)}$")
    else:
        if sphere:
            u, v = np.mgrid[0 : 2 * np.pi : 24j, 0 : np.pi : 12j]
            ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", lw=0.4)
        if trails and path.shape[0] > 1:
            from mpl_toolkits.mplot3d.art3d import Line3DCollection

            ax.add_collection3d(Line3DCollection(list(path.transpose(1, 0, 2)), colors="0.6", linewidths=0.6))
        ax.scatter(cur[:, 0], cur[:, 1], cur[:, 2], c=colors, cmap="viridis", s=18, depthshade=False)
        ax.set_box_aspect((1, 1, 1))
        if lim is not None:
            for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
                setter(-lim, lim)
    if title:
        ax.set_title(title)
    return fig


def plot_error_vs_layers(
    n_layers: Sequence[int],
    errors: Sequence[float] | dict[str, Sequence[float]],
    *,
    orders: Sequence[int] = (1, 2, 4),
    ax=None,
    floor: float = 1e-13,
):
    """Log-log plot of error against the number of layers, with the fitted slope of each curve
    in the legend and dashed reference lines ``L^-p`` for ``p`` in ``orders``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> fig = viz.plot_error_vs_layers([4, 8, 16], {"euler": [1e-1, 5e-2, 2.5e-2]}, orders=(1,))
    >>> len(fig.axes), fig.axes[0].get_xscale(), fig.axes[0].get_yscale()
    (1, 'log', 'log')
    """
    if ax is None:
        fig, ax = new_figure((5, 4))
    fig = ax.figure
    L = np.asarray(n_layers, dtype=float)
    series = errors if isinstance(errors, dict) else {"error": errors}
    for name, errs in series.items():
        e = np.asarray([float(v) for v in errs])
        p = fit_order(L, e, floor=floor)
        ax.loglog(L, e, "o-", label=f"{name} (slope {p:.2f})")
    ref = max(float(np.asarray(list(series.values())[0], dtype=float)[0]), 1e-300)
    for p in orders:
        ax.loglog(L, ref * (L / L[0]) ** (-p), "--", color="0.6", lw=0.8)
        ax.annotate(f"$L^{{-{p}}}$", (L[-1], ref * (L[-1] / L[0]) ** (-p)), fontsize=8, color="0.4")
    ax.set_xlabel("number of layers $L$")
    ax.set_ylabel(r"$\max_{k,i}\ \|x_i^k - x_i(t_k)\|$")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def plot_decay(t: Tensor | np.ndarray, ratios: dict[str, Tensor | np.ndarray], *, rate: float | None = None, ax=None):
    """Semilog plot of perturbation ratios against time, with the bound ``e^{-rate t}`` if given.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> t = torch.linspace(0, 2, 21)
    >>> fig = viz.plot_decay(t, {"Euler": torch.exp(-t)}, rate=1.0)
    >>> fig.axes[0].get_yscale()
    'log'
    """
    if ax is None:
        fig, ax = new_figure((5, 3.5))
    fig = ax.figure
    t = np.asarray(t, dtype=float)
    for name, r in ratios.items():
        r = _np(r) if isinstance(r, Tensor) else np.asarray(r)
        ax.semilogy(t[: len(r)], r, label=name)
    if rate is not None:
        ax.semilogy(t, np.exp(-rate * t), "k--", lw=1, label=f"$e^{{-{rate:g} t}}$")
    ax.set_xlabel("depth $t$")
    ax.set_ylabel(r"$\|y(t)-x(t)\| / \|y(0)-x(0)\|$")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return fig


def plot_weights(P: Tensor, *, ax=None, title: str | None = None):
    """Heat map of an attention matrix ``(n, n)``.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> P = fl.SoftmaxAttention().weights(torch.eye(3))
    >>> fig = viz.plot_weights(P, title="softmax weights")
    >>> fig.axes[0].get_title()
    'softmax weights'
    """
    if ax is None:
        fig, ax = new_figure((4, 3.6))
    fig = ax.figure
    im = ax.imshow(_np(P), cmap="magma", vmin=0)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xlabel("key $j$")
    ax.set_ylabel("query $i$")
    if title:
        ax.set_title(title)
    return fig


def plot_phase_diagram(t, betas, fraction, *, curve=None, ax=None, title: str | None = None):
    """Heat map of a clustering statistic over (time, beta), e.g. from :func:`flowlib.diagnostics.phase_diagram`.

    Parameters
    ----------
    t : (S,) times; betas : (B,) values; fraction : (B, S) statistic in [0, 1].
    curve : tuple (times, betas), optional
        A curve to overlay, e.g. equiangular hitting times :math:`t(\\beta)`.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> t, frac = fl.diagnostics.phase_diagram([1.0, 2.0, 4.0], n=6, d=3, t1=2.0, n_systems=2, step=0.5, generator=torch.Generator().manual_seed(0))
    >>> fig = viz.plot_phase_diagram(t, [1.0, 2.0, 4.0], frac, title="clustered fraction")
    >>> fig.axes[0].get_title()
    'clustered fraction'
    """
    if ax is None:
        fig, ax = new_figure((5, 3.8))
    fig = ax.figure
    t = np.asarray(t, dtype=float)
    b = np.asarray(betas, dtype=float)
    f = _np(fraction) if isinstance(fraction, Tensor) else np.asarray(fraction)
    im = ax.pcolormesh(t, b, f, shading="nearest", cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.85, label="fraction of clustered pairs")
    if curve is not None:
        ax.plot(np.asarray(curve[0], dtype=float), np.asarray(curve[1], dtype=float), "w--", lw=1.5)
    ax.set_xlim(t[0], t[-1])  # the curve may leave the computed window; keep the data in view
    ax.set_ylim(
        b[0] - 0.5 * (b[1] - b[0]) if len(b) > 1 else b[0] - 0.5,
        b[-1] + 0.5 * (b[-1] - b[-2]) if len(b) > 1 else b[0] + 0.5,
    )
    ax.set_xlabel("time $t$")
    ax.set_ylabel(r"$\beta$")
    if title:
        ax.set_title(title)
    return fig


def plot_covariance_disc(covs, *, ax=None, color_by_start: bool = True, title: str | None = None):
    """Trajectories of trace-normalised 2x2 covariances in the unit disc (the circle = rank one).

    ``covs`` has shape ``(S, ..., 2, 2)`` (time first, e.g. ``GaussianSolution.cov``).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> sol = fl.solve_gaussian("softmax", torch.zeros(2, dtype=torch.float64), torch.diag(torch.tensor([1.0, 2.0], dtype=torch.float64)), t1=0.2, n_steps=20)
    >>> fig = viz.plot_covariance_disc(sol.cov)  # time first, shape (S, 2, 2)
    >>> len(fig.axes) >= 1
    True
    """

    if ax is None:
        fig, ax = new_figure((4.2, 4.0))
    fig = ax.figure
    uw = _np(trace_normalized_coordinates(torch.as_tensor(covs)))  # (S, ..., 2)
    uw = uw.reshape(uw.shape[0], -1, 2)
    th = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(th), np.sin(th), "k-", lw=1)
    cmap = matplotlib.colormaps["twilight"]
    for k in range(uw.shape[1]):
        start = uw[0, k]
        c = cmap((np.arctan2(start[1], start[0]) / (2 * np.pi)) % 1.0) if color_by_start else "C0"
        ax.plot(uw[:, k, 0], uw[:, k, 1], "-", color=c, lw=0.8)
        ax.plot(uw[-1, k, 0], uw[-1, k, 1], "o", color=c, ms=2.5)
    ax.set_aspect("equal")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel(r"$(a-b)/(a+b)$")
    ax.set_ylabel(r"$2c/(a+b)$")
    if title:
        ax.set_title(title)
    return fig


def plot_density_1d(solution, *, particles=None, frames: Sequence[int] | None = None, ax=None, bins: int = 40):
    """Densities of a 1-D :class:`flowlib.pde.PDESolution` at saved frames, with particle histograms.

    ``particles`` is a 1-D :class:`Trajectory` saved at the same times (``x`` of shape ``(S, n, 1)``).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> grid = fl.make_grid(-3.0, 3.0, 60)
    >>> rho0 = fl.pde.density_on_grid(grid, lambda x: torch.exp(-x[..., 0] ** 2))
    >>> sol = fl.solve_transformer_pde(fl.SoftmaxAttention(), rho0, grid, t1=0.2, n_save=3)
    >>> fig = viz.plot_density_1d(sol)
    >>> len(fig.axes[0].lines) >= 3  # one curve per saved frame
    True
    """
    if ax is None:
        fig, ax = new_figure((5.5, 3.6))
    fig = ax.figure
    grid = solution.grid
    if grid.dim != 1:
        raise ValueError(f"plot_density_1d needs a 1-D grid; got dimension {grid.dim}")
    xs = _np(grid.axes()[0])
    frames = list(range(len(solution.t))) if frames is None else list(frames)
    for j, s in enumerate(frames):
        color = f"C{j}"
        ax.plot(xs, _np(solution.density[s]), color=color, lw=1.5, label=f"PDE, t = {float(solution.t[s]):.2g}")
        if particles is not None:
            p = _np(particles.x[s][..., 0]).ravel()
            ax.hist(p, bins=bins, range=(xs[0], xs[-1]), density=True, histtype="step", color=color, ls="--", lw=1)
    ax.set_xlabel("$x$")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig


def plot_gaussian_ellipses(mean, cov, *, n_sigma: Sequence[float] = (1.0, 2.0), ax=None, color: str = "k", label=True):
    r"""Draw the ellipses :math:`\{x : (x-\alpha)^\top\Sigma^{-1}(x-\alpha) = r^2\}` of a 2-D Gaussian.

    Parameters
    ----------
    mean : Tensor, shape (2,)
    cov : Tensor, shape (2, 2)
        Symmetric positive semi-definite (a degenerate one gives a segment).
    n_sigma : sequence of float
        The radii ``r`` (default 1 and 2 standard deviations).
    ax : matplotlib Axes, optional
    color : str
    label : bool
        Label the curves ``"r sigma"`` for a legend.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``mean`` is not of shape (2,) or ``cov`` not of shape (2, 2).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> fig = viz.plot_gaussian_ellipses(torch.zeros(2), torch.diag(torch.tensor([4.0, 1.0])))
    >>> type(fig).__name__
    'Figure'
    """
    m = _np(torch.as_tensor(mean)).astype(float)
    S = _np(torch.as_tensor(cov)).astype(float)
    if m.shape != (2,) or S.shape != (2, 2):
        raise ValueError(f"expected mean of shape (2,) and cov of shape (2, 2); got {m.shape} and {S.shape}")
    if ax is None:
        fig, ax = new_figure((4.2, 4.0))
    lam, U = np.linalg.eigh(0.5 * (S + S.T))
    root = U * np.sqrt(np.clip(lam, 0.0, None))  # S = root root^T
    th = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(th), np.sin(th)])
    for r in n_sigma:
        pts = m[:, None] + r * root @ circle
        ax.plot(
            pts[0],
            pts[1],
            "-",
            color=color,
            lw=1.2 if r == n_sigma[0] else 0.8,
            label=f"{r:g} sigma" if label else None,
        )
    return ax.figure
