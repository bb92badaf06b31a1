"""ipywidgets explorers (imported lazily). They slice cached trajectories; moving the time slider
never re-simulates, and each parameter combination is simulated at most once."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..integrate.simulate import Trajectory
from .plots import plot_tokens

__all__ = ["explore"]


def explore(
    make_trajectory: Callable[..., Trajectory],
    *,
    plot: Callable[[Trajectory, int], Any] | None = None,
    **sliders: Sequence[Any],
):
    """An interactive explorer: one slider per parameter plus a slider over saved steps.

    Parameters
    ----------
    make_trajectory : callable
        ``make_trajectory(**params) -> Trajectory``; called once per parameter combination.
    plot : callable, optional
        ``plot(traj, step) -> Figure`` (default :func:`plot_tokens`).
    **sliders : sequence
        For each keyword of ``make_trajectory``, the values offered.

    Returns
    -------
    ipywidgets.VBox
        The widget; ``widget.cache`` is the dict of computed trajectories.

    Raises
    ------
    ImportError
        If ipywidgets is not installed (``pip install ipywidgets``).

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> make = lambda beta: fl.simulate(fl.SoftmaxAttention(beta=beta), torch.eye(3)[:, :2].contiguous(), t1=1.0, n_steps=5)
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):  # outside Jupyter, the widget's output is printed
    ...     widget = viz.explore(make, beta=[0.5, 1.0])  # needs ipywidgets
    ...
    >>> type(widget).__name__, len(widget.cache) >= 1
    ('VBox', True)
    """
    try:
        import ipywidgets as widgets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("flowlib.viz.explore needs ipywidgets: pip install ipywidgets") from exc
    from IPython.display import display

    plot = plot or (lambda traj, step: plot_tokens(traj, step=step))
    cache: dict[tuple, Trajectory] = {}

    def get(params: dict) -> Trajectory:
        key = tuple(sorted(params.items()))
        if key not in cache:
            cache[key] = make_trajectory(**params)
        return cache[key]

    controls = {
        name: widgets.SelectionSlider(
            options=list(values), value=list(values)[0], description=name, continuous_update=False
        )
        for name, values in sliders.items()
    }
    first = get({k: w.value for k, w in controls.items()})
    step = widgets.IntSlider(value=len(first) - 1, min=0, max=len(first) - 1, description="step")
    out = widgets.Output()

    def redraw(*_):
        traj = get({k: w.value for k, w in controls.items()})
        step.max = len(traj) - 1
        with out:
            out.clear_output(wait=True)
            display(plot(traj, min(step.value, len(traj) - 1)))

    for w in [*controls.values(), step]:
        w.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([*controls.values(), step, out])
    box.cache = cache
    return box
