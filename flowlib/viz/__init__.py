"""Visualisation: matplotlib figures, JavaScript animations, ipywidgets explorers."""

from .animate import MAX_FRAMES, JSAnimation, animate_tokens
from .plots import new_figure, plot_decay, plot_error_vs_layers, plot_tokens, plot_weights
from .widgets import explore

__all__ = [
    "new_figure",
    "plot_tokens",
    "plot_error_vs_layers",
    "plot_decay",
    "plot_weights",
    "animate_tokens",
    "JSAnimation",
    "MAX_FRAMES",
    "explore",
]
