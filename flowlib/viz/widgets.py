"""Explorers: an ipywidgets view in a live kernel, and a kernel-free HTML/JavaScript view on the website.

The live view slices cached trajectories; moving the time slider never re-simulates, and each parameter
combination is simulated at most once. The static view (:meth:`Explorer.to_html`) is built only when the
explorer is displayed (a notebook cell's output, e.g. when the book executes its chapters): every parameter
combination is simulated once (the same cache), a few evenly spaced depths of each are drawn, and one
self-contained ``<div class="flowlib-explorer">`` (the player of ``flowlib/viz/_player.py``) with a control
per parameter, a time slider and play/pause swaps between them. No kernel, no network.

Controls are labelled for a reader, not with Python names (:func:`human_label`: ``beta`` reads
"β (inverse temperature)", ``n_layers`` "layers L"); ``labels=`` overrides, ``hint=`` adds one line of
"what to try".

Trade-off of the static view: it shows at most :data:`MAX_EXPLORER_FRAMES` frames in all (at most
:data:`MAX_DEPTH_FRAMES` depths per parameter combination, evenly spaced, always including the first and the
last), each drawn :data:`FRAME_PX` pixels wide (twice the width the website shows it at) as a 64-colour PNG.
The book's build moves the frames out of the page into image files loaded when shown; in a notebook the
HTML stays self-contained (under :data:`MAX_EXPLORER_BYTES` in all is the aim, not a guarantee).
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..integrate.simulate import Trajectory
from ._player import DISPLAY_PX, FRAME_PX, human_label, player_html, render_frame, value_label
from .plots import plot_tokens

__all__ = [
    "explore",
    "Explorer",
    "human_label",
    "MAX_EXPLORER_FRAMES",
    "MAX_DEPTH_FRAMES",
    "MAX_EXPLORER_BYTES",
    "FRAME_PX",
    "DISPLAY_PX",
]

#: Cap on the frames embedded in one static explorer (all parameter combinations together).
MAX_EXPLORER_FRAMES = 40
#: Cap on the depths drawn per parameter combination in the static explorer.
MAX_DEPTH_FRAMES = 12
#: Budget of one static explorer's self-contained HTML, in bytes (the website loads one frame at a time).
MAX_EXPLORER_BYTES = 4_000_000

_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _time_label(traj: Trajectory, k: int) -> str:
    return f"{float(traj.t[k]):.3g} (step {k} of {len(traj) - 1})"


def _follow_limits(ax, x) -> None:
    """Centre the axes on the cloud ``x`` (n, 2) and fit it, with a margin (the window follows the tokens)."""
    import numpy as np

    pts = np.asarray(x, dtype=float)
    centre = pts.mean(axis=0)
    r = 1.15 * float(np.abs(pts - centre).max()) or 1.0
    ax.set_xlim(centre[0] - r, centre[0] + r)
    ax.set_ylim(centre[1] - r, centre[1] + r)


def _label(value: Any) -> str:  # kept for code that imported it
    return value_label(value)


class Explorer:
    """What :func:`explore` returns: the ipywidgets view, and a kernel-free HTML view for the website.

    Jupyter shows the widget (``application/vnd.jupyter.widget-view+json``); a renderer without widgets,
    such as the book's static build (``nb_mime_priority_overrides`` in ``_config.yml``), shows the
    ``text/html`` view, :meth:`to_html`. Attribute access falls through to the widget (``children``, ...).

    Attributes
    ----------
    widget : ipywidgets.VBox
        One slider per parameter, the time slider with a play button, and the output.
    cache : dict
        The computed trajectories, keyed by ``tuple(sorted(params.items()))``.
    labels : dict
        What the reader sees for each parameter (``{"beta": "β (inverse temperature)"}``).
    n_frames : int
        Frames embedded by the last :meth:`to_html` (0 before).

    Examples
    --------
    >>> import contextlib, io, torch, flowlib as fl
    >>> from flowlib import viz
    >>> make = lambda n: fl.simulate(fl.SoftmaxAttention(), torch.eye(3)[:, :2].contiguous(), t1=1.0, n_steps=n)
    >>> with contextlib.redirect_stdout(io.StringIO()):
    ...     explorer = viz.explore(make, n=[2, 40])
    >>> bundle = explorer._repr_mimebundle_()  # what a notebook cell's output holds
    >>> sorted(bundle)
    ['application/vnd.jupyter.widget-view+json', 'text/html', 'text/plain']
    >>> explorer.n_frames  # 3 saved steps of n=2, 12 evenly spaced of the 41 of n=40
    15
    >>> explorer.labels
    {'n': 'tokens n'}
    """

    def __init__(
        self,
        widget,
        get,
        plot,
        sliders: dict[str, list],
        alt: str,
        default_plot: bool,
        labels: Mapping[str, str] | None = None,
        hint: str | None = None,
        view: str = "fixed",
    ) -> None:
        self.widget = widget
        self.cache = widget.cache
        self._get = get
        self._plot = plot
        self._sliders = sliders
        self._alt = alt
        self._default_plot = default_plot
        self.labels = {n: (labels or {}).get(n) or human_label(n) for n in sliders}
        self.hint = hint
        self.view = view
        self._html: str | None = None
        self.n_frames = 0

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("widget", "labels", "hint", "view"):
            raise AttributeError(name)
        return getattr(self.widget, name)

    def __repr__(self) -> str:
        return f"Explorer({', '.join(f'{k}={v!r}' for k, v in self._sliders.items())})"

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        bundle = {"text/plain": repr(self), "text/html": self.to_html()}
        view = getattr(self.widget, "_repr_mimebundle_", None)
        if view is not None:
            data = view(include=include, exclude=exclude, **kwargs) or {}
            if isinstance(data, tuple):
                data = data[0]
            if _WIDGET_VIEW in data:
                bundle[_WIDGET_VIEW] = data[_WIDGET_VIEW]
        return bundle

    def to_html(self, *, dpi: int | None = None, max_frames: int = MAX_EXPLORER_FRAMES) -> str:
        """The kernel-free explorer: one ``<div class="flowlib-explorer">`` with embedded PNG frames.

        Every parameter combination is simulated (once; the widget shares the cache) and at most
        ``min(MAX_DEPTH_FRAMES, max_frames // n_combinations)`` (at least 2) evenly spaced saved steps of
        each are drawn, at least :data:`FRAME_PX` pixels wide (``dpi``, if given, is a lower bound on the
        resolution). The result is cached. It opens on the last step of the first combination.
        """
        default = dpi is None and max_frames == MAX_EXPLORER_FRAMES
        if self._html is not None and default:
            return self._html
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        names = list(self._sliders)
        combos = list(itertools.product(*(range(len(v)) for v in self._sliders.values())))
        trajs = {c: self._get({n: self._sliders[n][i] for n, i in zip(names, c)}) for c in combos}
        plot = self._plot
        if self._default_plot:
            if self.view == "follow":

                def plot(traj, step):
                    fig = plot_tokens(traj, step=step)
                    x = traj.cpu().x
                    while x.ndim > 3:
                        x = x[:, 0]
                    if x.shape[-1] == 2:
                        _follow_limits(fig.axes[0], x[step].numpy())
                    return fig

            else:
                lim = 1.1 * max(float(t.cpu().x.abs().max()) for t in trajs.values())
                plot = lambda traj, step: plot_tokens(traj, step=step, lim=lim)  # noqa: E731  shared axes
        per = max(2, min(MAX_DEPTH_FRAMES, max_frames // max(1, len(combos))))
        frames: dict[str, list] = {}
        n_frames = 0
        for c, traj in trajs.items():
            S = len(traj)
            n = min(per, S)
            idx = sorted({round(i * (S - 1) / max(1, n - 1)) for i in range(n)})
            out = []
            for k in idx:
                src = render_frame(plot(traj, k), min_px=FRAME_PX, dpi=dpi)
                out.append([k, S - 1, src, _time_label(traj, k)])
            frames[",".join(map(str, c))] = out
            n_frames += len(out)
        params = []
        for n in names:
            values = self._sliders[n]
            numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
            params.append(
                {"name": n, "label": self.labels[n], "values": [value_label(v) for v in values], "numeric": numeric}
            )
        text = player_html(
            kind="explorer", params=params, frames=frames, alt=self._alt, depth_label="time t", hint=self.hint
        )
        if default:
            self._html = text
        self.n_frames = n_frames
        return text


def explore(
    make_trajectory: Callable[..., Trajectory],
    *,
    plot: Callable[[Trajectory, int], Any] | None = None,
    alt: str = "Explorer of token trajectories",
    labels: Mapping[str, str] | None = None,
    hint: str | None = None,
    view: str = "fixed",
    **sliders: Sequence[Any],
) -> Explorer:
    """An interactive explorer: one control per parameter, a time slider, and play/pause.

    In Jupyter it is an ipywidgets view that simulates on demand. Displayed where no kernel runs (the
    book's website), it is a self-contained HTML/JavaScript explorer of precomputed frames
    (:meth:`Explorer.to_html`): numeric parameters get a slider, others a drop-down, each labelled for a
    reader (:func:`human_label`) with its current value, plus the time slider and play/pause buttons. Its
    trade-off: a few evenly spaced depths per parameter combination (at most :data:`MAX_EXPLORER_FRAMES`
    frames in all), each drawn at twice the width the website shows it at.

    Parameters
    ----------
    make_trajectory : callable
        ``make_trajectory(**params) -> Trajectory``; called once per parameter combination.
    plot : callable, optional
        ``plot(traj, step) -> Figure`` (default :func:`plot_tokens`, on axes shared by all frames in the
        static view, or following the cloud, see ``view``).
    alt : str
        Alternative text of the static view's picture (the parameters and the time are appended).
    labels : mapping, optional
        What the reader sees for a parameter, e.g. ``{"angle": "angle θ between Q and K"}``; the other
        parameters get :func:`human_label`.
    hint : str, optional
        One line of "what to try", shown above the controls.
    view : {"fixed", "follow"}
        With the default plot: one window for every frame (``"fixed"``), or a window that follows the
        cloud of 2-D tokens, centred on its mean (``"follow"``).
    **sliders : sequence
        For each keyword of ``make_trajectory``, the values offered.

    Returns
    -------
    Explorer
        Wraps the widget (``explorer.widget``; other attributes fall through to it);
        ``explorer.cache`` is the dict of computed trajectories.

    Raises
    ------
    ImportError
        If ipywidgets is not installed (``pip install ipywidgets``).
    ValueError
        If no parameter is given, a parameter offers no value, or ``view`` is unknown.

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> make = lambda beta: fl.simulate(fl.SoftmaxAttention(beta=beta), torch.eye(3)[:, :2].contiguous(), t1=1.0, n_steps=5)
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):  # outside Jupyter, the widget's output is printed
    ...     explorer = viz.explore(make, beta=[0.5, 1.0], hint="Raise β: the tokens merge sooner.")  # needs ipywidgets
    ...
    >>> type(explorer.widget).__name__, len(explorer.cache) >= 1
    ('VBox', True)
    >>> page = explorer.to_html()  # the website's view: both betas, every saved step (6 of each)
    >>> 'class="flowlib-player flowlib-explorer"' in page, explorer.n_frames
    (True, 12)
    >>> "β (inverse temperature) = " in page, "Raise β" in page
    (True, True)
    """
    try:
        import ipywidgets as widgets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("flowlib.viz.explore needs ipywidgets: pip install ipywidgets") from exc
    from IPython.display import display

    if not sliders:
        raise ValueError("explore needs at least one parameter, e.g. explore(make, beta=[0.5, 1.0])")
    if view not in ("fixed", "follow"):
        raise ValueError(f"view must be 'fixed' or 'follow', got {view!r}")
    sliders = {name: list(values) for name, values in sliders.items()}
    for name, values in sliders.items():
        if not values:
            raise ValueError(f"parameter {name!r} offers no value")
    names = {n: (labels or {}).get(n) or human_label(n) for n in sliders}
    default_plot = plot is None
    plot = plot or (lambda traj, step: plot_tokens(traj, step=step))
    cache: dict[tuple, Trajectory] = {}

    def get(params: dict) -> Trajectory:
        key = tuple(sorted(params.items()))
        if key not in cache:
            cache[key] = make_trajectory(**params)
        return cache[key]

    wide = {"description_width": "initial"}
    controls = {
        name: widgets.SelectionSlider(
            options=values, value=values[0], description=names[name], continuous_update=False, style=wide
        )
        for name, values in sliders.items()
    }
    first = get({k: w.value for k, w in controls.items()})
    step = widgets.IntSlider(value=len(first) - 1, min=0, max=len(first) - 1, description="step", style=wide)
    player = widgets.Play(value=step.value, min=0, max=step.max, interval=150, description="Play")
    widgets.jslink((player, "value"), (step, "value"))
    out = widgets.Output()

    def redraw(*_):
        traj = get({k: w.value for k, w in controls.items()})
        step.max = player.max = len(traj) - 1
        with out:
            out.clear_output(wait=True)
            display(plot(traj, min(step.value, len(traj) - 1)))

    for w in [*controls.values(), step]:
        w.observe(redraw, names="value")
    redraw()
    rows = [*controls.values(), widgets.HBox([player, step]), out]
    if hint:
        rows.insert(0, widgets.HTML(f"<em>{hint}</em>"))
    box = widgets.VBox(rows)
    box.cache = cache
    return Explorer(box, get, plot, sliders, alt, default_plot, labels=labels, hint=hint, view=view)
