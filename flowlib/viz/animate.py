"""Static-site-safe animations: matplotlib frames in a self-contained JavaScript player (play/pause, a time
slider, step buttons), the same player as the explorers' (``flowlib/viz/_player.py``). Frames are drawn
:data:`~flowlib.viz.FRAME_PX` pixels wide, twice the width the website shows them at; the book's build
moves them into image files loaded when played. No request leaves the page (no icon font from a CDN).
"""

from __future__ import annotations

from ..integrate.simulate import Trajectory
from ._player import FRAME_PX, player_html, render_frame
from .plots import new_figure, plot_tokens

__all__ = ["JSAnimation", "animate_tokens", "MAX_FRAMES"]

#: Hard cap on the frames of any animation (page weight).
MAX_FRAMES = 40


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
    figsize=(4.6, 4.3),
    dpi: int | None = None,
    interval: int = 120,
    alt: str = "Animation of token trajectories",
    title: str | None = None,
    sphere: bool | None = None,
    lim: float | None = None,
    hint: str | None = None,
) -> JSAnimation:
    """Animate the tokens of a 2-D or 3-D trajectory as a JavaScript player.

    At most ``max_frames`` (capped at :data:`MAX_FRAMES`) evenly spaced saved states are drawn, each at
    least :data:`~flowlib.viz.FRAME_PX` pixels wide (``dpi``, if given, is a lower bound on the
    resolution; it no longer sets the displayed size, which the page does). The player opens on the first
    frame; ``hint`` adds one line of "what to look for" above it.

    Returns
    -------
    JSAnimation
        Display it in a notebook cell (``_repr_html_``); its ``html`` attribute is the player.

    Raises
    ------
    ValueError
        If ``max_frames`` < 1 or ``interval`` <= 0.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> traj = fl.simulate(fl.SoftmaxAttention(), torch.randn(5, 2, generator=torch.Generator().manual_seed(0)), t1=1.0, n_steps=20)
    >>> anim = viz.animate_tokens(traj, max_frames=5)
    >>> anim.n_frames, "<script" in anim.html, 'title="Play"' in anim.html
    (5, True, True)
    >>> "https://" in anim.html or "font-awesome" in anim.html  # nothing from a CDN
    False
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if interval <= 0:
        raise ValueError(f"interval must be > 0 ms, got {interval}")
    S = len(traj)
    n_frames = max(1, min(max_frames, MAX_FRAMES, S))
    idx = sorted({round(i * (S - 1) / max(1, n_frames - 1)) for i in range(n_frames)})
    xs = traj.cpu()
    d = xs.x.shape[-1]
    if lim is None:
        lim = 1.1 * float(xs.x.abs().max())
    out = []
    for k in idx:
        fig, ax = new_figure(figsize, projection="3d" if d == 3 else None)
        t_k = float(xs.t[k])
        plot_tokens(xs, step=k, ax=ax, sphere=sphere, lim=lim, title=(title + "  " if title else "") + f"t = {t_k:.2f}")
        out.append([k, S - 1, render_frame(fig, min_px=FRAME_PX, dpi=dpi), f"{t_k:.3g} (step {k} of {S - 1})"])
    text = player_html(
        kind="animation",
        params=[],
        frames={"": out},
        alt=alt,
        depth_label="time t",
        interval=interval,
        start="first",
        hint=hint,
    )
    return JSAnimation(text, len(idx), alt)
