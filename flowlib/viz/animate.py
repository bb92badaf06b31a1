"""Static-site-safe animations: matplotlib frames embedded as a self-contained JavaScript player."""

from __future__ import annotations

import html

from matplotlib.animation import FuncAnimation

from ..integrate.simulate import Trajectory
from .plots import new_figure, plot_tokens

__all__ = ["JSAnimation", "animate_tokens", "MAX_FRAMES"]

#: Hard cap on the frames of any animation (page weight).
MAX_FRAMES = 60


class JSAnimation:
    """An animation rendered to HTML (matplotlib's ``to_jshtml``); displays itself in Jupyter.

    Attributes
    ----------
    html : str
        The self-contained player (frames are embedded PNGs).
    n_frames : int
    alt : str
        Alternative text, set on the player's image.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> anim = viz.JSAnimation("<div>frames</div>", n_frames=1, alt="a still frame")
    >>> anim.n_frames, anim.alt
    (1, 'a still frame')
    >>> "frames" in anim._repr_html_()
    True
    """

    def __init__(self, html_text: str, n_frames: int, alt: str) -> None:
        self.html = html_text
        self.n_frames = n_frames
        self.alt = alt

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"JSAnimation({self.n_frames} frames, {len(self.html) / 1e6:.2f} MB): {self.alt}"


def animate_tokens(
    traj: Trajectory,
    *,
    max_frames: int = 30,
    figsize=(3.6, 3.4),
    dpi: int = 70,
    interval: int = 120,
    alt: str = "Animation of token trajectories",
    title: str | None = None,
    sphere: bool | None = None,
    lim: float | None = None,
) -> JSAnimation:
    """Animate the tokens of a 2-D or 3-D trajectory as a JavaScript player.

    At most ``max_frames`` (capped at :data:`MAX_FRAMES`) evenly spaced saved states are drawn,
    at a small size and dpi so that a page stays light; the figure is closed afterwards.

    Returns
    -------
    JSAnimation
        Display it in a notebook cell (``_repr_html_``); its ``html`` attribute is the player.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> traj = fl.simulate(fl.SoftmaxAttention(), torch.randn(5, 2, generator=torch.Generator().manual_seed(0)), t1=1.0, n_steps=20)
    >>> anim = viz.animate_tokens(traj, max_frames=5)
    >>> anim.n_frames, "<script" in anim.html
    (5, True)
    """
    S = len(traj)
    n_frames = max(1, min(max_frames, MAX_FRAMES, S))
    idx = sorted({round(i * (S - 1) / max(1, n_frames - 1)) for i in range(n_frames)})
    xs = traj.cpu()
    d = xs.x.shape[-1]
    if lim is None:
        lim = 1.1 * float(xs.x.abs().max())
    fig, ax = new_figure(figsize, projection="3d" if d == 3 else None, dpi=dpi)

    def draw(k: int):
        ax.clear()
        plot_tokens(
            xs,
            step=idx[k],
            ax=ax,
            sphere=sphere,
            lim=lim,
            title=(title + "  " if title else "") + f"t = {float(xs.t[idx[k]]):.2f}",
        )
        return []

    anim = FuncAnimation(fig, draw, frames=len(idx), interval=interval, blit=False)
    text = anim.to_jshtml(default_mode="once")
    del anim
    fig.clf()
    text = text.replace("<img id=", f'<img alt="{html.escape(alt, quote=True)}" id=', 1)
    return JSAnimation(text, len(idx), alt)
