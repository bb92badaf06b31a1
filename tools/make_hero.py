"""Draw the landing page's picture, ``_static/hero.svg``: tokens on the circle clustering under attention.

    python tools/make_hero.py        # (make hero) rewrites _static/hero.svg; deterministic

Sixty-four tokens start at random points of the unit circle and follow the attention dynamics on the
circle (``fl.SphereAttention(beta=9)``, the flow of chapter 5, integrated by chapter 2's projected residual
layers). Time runs outwards: a token at angle theta at time t is drawn at radius 0.3 + 0.7 (t / T)^(1/2), so every
path is a curve from the inner ring (t = 0) to the outer ring (t = T), where the tokens have merged into a
few clusters. An SVG: crisp at any size, about 100 kB.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

import flowlib as fl

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_static" / "hero.svg"
N_TOKENS, BETA, T, N_LAYERS = 64, 9.0, 6.0, 240


def trajectory(seed: int = 3) -> np.ndarray:
    """Angles of the tokens at every layer, shape (N_LAYERS + 1, N_TOKENS), unwrapped in time."""
    gen = torch.Generator().manual_seed(seed)
    x0 = fl.uniform_sphere(N_TOKENS, 2, generator=gen).to(torch.float64)
    traj = fl.residual_stack(fl.SphereAttention(beta=BETA), x0, N_LAYERS, t1=T, retraction=fl.unit_normalize)
    x = traj.x.detach().numpy()
    return np.unwrap(np.arctan2(x[..., 1], x[..., 0]), axis=0)


def draw(theta: np.ndarray) -> Figure:
    steps = theta.shape[0]
    radius = 0.3 + 0.7 * np.sqrt(np.linspace(0.0, 1.0, steps))  # early times, when most merging happens, get room
    xs, ys = radius[:, None] * np.cos(theta), radius[:, None] * np.sin(theta)
    fig = Figure(figsize=(5.6, 5.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_aspect("equal")
    ax.set_xlim(-1.08, 1.08)
    ax.set_ylim(-1.08, 1.08)
    ring = np.linspace(0, 2 * math.pi, 400)
    for r, alpha in ((0.3, 0.35), (1.0, 0.35)):
        ax.plot(r * np.cos(ring), r * np.sin(ring), color="0.55", lw=0.6, alpha=alpha)
    cmap = matplotlib.colormaps["hsv"]
    order = np.argsort(theta[0] % (2 * math.pi))
    colours = {int(i): cmap(0.9 * (k + 0.5) / len(order)) for k, i in enumerate(order)}
    segs = [np.column_stack([xs[::3, i], ys[::3, i]]).round(3) for i in range(theta.shape[1])]
    ax.add_collection(LineCollection(segs, colors=[colours[i] for i in range(len(segs))], linewidths=1.1, alpha=0.9))
    ax.scatter(xs[0], ys[0], s=9, c=[colours[i] for i in range(len(segs))], edgecolors="none", zorder=3)
    ax.scatter(xs[-1], ys[-1], s=42, c=[colours[i] for i in range(len(segs))], edgecolors="k", linewidths=0.4, zorder=4)
    return fig


def main() -> None:
    fig = draw(trajectory())
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "tokens-in-motion"}):
        FigureCanvasSVG(fig).print_svg(buf, metadata={"Date": None, "Creator": None})
    svg = re.sub(r"\n\s*", "\n", buf.getvalue())
    OUT.write_text(svg)
    print(f"{OUT.relative_to(ROOT)}: {len(svg.encode()) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
