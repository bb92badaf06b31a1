"""Visualisation: matplotlib figures, JavaScript animations, ipywidgets explorers."""

from ._player import DISPLAY_PX, FRAME_PX, human_label
from .animate import MAX_FRAMES, JSAnimation, animate_tokens
from .plots import (
    new_figure,
    plot_covariance_disc,
    plot_decay,
    plot_density_1d,
    plot_error_vs_layers,
    plot_gaussian_ellipses,
    plot_phase_diagram,
    plot_tokens,
    plot_weights,
)
from .widgets import MAX_EXPLORER_BYTES, MAX_EXPLORER_FRAMES, Explorer, explore

__all__ = [
    "new_figure",
    "plot_tokens",
    "plot_error_vs_layers",
    "plot_decay",
    "plot_weights",
    "plot_phase_diagram",
    "plot_covariance_disc",
    "plot_density_1d",
    "plot_gaussian_ellipses",
    "animate_tokens",
    "JSAnimation",
    "MAX_FRAMES",
    "explore",
    "Explorer",
    "MAX_EXPLORER_FRAMES",
    "MAX_EXPLORER_BYTES",
    "human_label",
    "FRAME_PX",
    "DISPLAY_PX",
]
