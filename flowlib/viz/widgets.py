"""Explorers: an ipywidgets view in a live kernel, and a kernel-free HTML/JavaScript view on the website.

The live view slices cached trajectories; moving the time slider never re-simulates, and each parameter
combination is simulated at most once. The static view (:meth:`Explorer.to_html`) is built only when the
explorer is displayed (a notebook cell's output, e.g. when the book executes its chapters): every parameter
combination is simulated once (the same cache), a few evenly spaced depths of each are drawn as small PNGs,
and one self-contained ``<div class="flowlib-explorer">`` with a control per parameter and a depth slider
swaps between them. No kernel, no network.

Trade-off of the static view: it shows at most :data:`MAX_EXPLORER_FRAMES` frames in all (at most
:data:`MAX_DEPTH_FRAMES` depths per parameter combination, evenly spaced, always including the first and the
last), drawn at ``dpi`` 72 and stored as 64-colour PNGs, so that an explorer weighs well under
:data:`MAX_EXPLORER_BYTES` (2.5 MB); the live view shows every saved step at full resolution.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import numbers
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..integrate.simulate import Trajectory
from .plots import plot_tokens

__all__ = ["explore", "Explorer", "MAX_EXPLORER_FRAMES", "MAX_DEPTH_FRAMES", "MAX_EXPLORER_BYTES"]

#: Cap on the frames embedded in one static explorer (all parameter combinations together).
MAX_EXPLORER_FRAMES = 48
#: Cap on the depths drawn per parameter combination in the static explorer.
MAX_DEPTH_FRAMES = 12
#: Budget of one static explorer's HTML, in bytes.
MAX_EXPLORER_BYTES = 2_500_000

_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

_SCRIPT = """
(function () {
  var root = document.currentScript.parentElement;
  var data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  var img = root.querySelector("img.flowlib-explorer-frame");
  var controls = [].slice.call(root.querySelectorAll("input[data-param], select[data-param]"));
  var depth = root.querySelector("input[data-depth]");
  var depthOut = root.querySelector("output[data-depth]");
  function key() { return controls.map(function (c) { return c.value; }).join(","); }
  function show(keepFraction) {
    var frames = data.frames[key()];
    var n = frames.length;
    var old = Math.max(1, Number(depth.max));
    var k = keepFraction ? Math.round(Number(depth.value) / old * (n - 1)) : Number(depth.value);
    depth.max = String(n - 1);
    depth.value = String(Math.min(Math.max(k, 0), n - 1));
    var f = frames[Number(depth.value)];
    var labels = controls.map(function (c) {
      var p = data.params[Number(c.dataset.param)];
      var v = p.labels[Number(c.value)];
      root.querySelector("output[data-param='" + c.dataset.param + "']").textContent = v;
      return p.name + " = " + v;
    });
    depthOut.textContent = f[0] + " of " + f[1];
    img.src = f[2];
    img.alt = data.alt + ": " + labels.join(", ") + ", step " + f[0] + " of " + f[1];
  }
  controls.forEach(function (c) { c.addEventListener("input", function () { show(true); }); });
  depth.addEventListener("input", function () { show(false); });
  show(false);
})();
"""

_STYLE = (
    ".flowlib-explorer{max-width:100%;margin:0.5em 0}"
    ".flowlib-explorer-controls{display:grid;grid-template-columns:max-content 1fr;gap:0.2em 0.8em;"
    "align-items:center;max-width:32em}"
    ".flowlib-explorer-controls input,.flowlib-explorer-controls select{width:100%}"
    ".flowlib-explorer img.flowlib-explorer-frame{display:block;width:100%;max-width:100%;height:auto;"
    "background:#fff}"
)


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class Explorer:
    """What :func:`explore` returns: the ipywidgets view, and a kernel-free HTML view for the website.

    Jupyter shows the widget (``application/vnd.jupyter.widget-view+json``); a renderer without widgets,
    such as the book's static build (``nb_mime_priority_overrides`` in ``_config.yml``), shows the
    ``text/html`` view, :meth:`to_html`. Attribute access falls through to the widget (``children``, ...).

    Attributes
    ----------
    widget : ipywidgets.VBox
        One slider per parameter, the step slider, and the output.
    cache : dict
        The computed trajectories, keyed by ``tuple(sorted(params.items()))``.
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
    """

    def __init__(self, widget, get, plot, sliders: dict[str, list], alt: str, default_plot: bool) -> None:
        self.widget = widget
        self.cache = widget.cache
        self._get = get
        self._plot = plot
        self._sliders = sliders
        self._alt = alt
        self._default_plot = default_plot
        self._html: str | None = None
        self.n_frames = 0

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "widget":
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

    def to_html(self, *, dpi: int = 72, max_frames: int = MAX_EXPLORER_FRAMES) -> str:
        """The kernel-free explorer: one ``<div class="flowlib-explorer">`` with embedded PNG frames.

        Every parameter combination is simulated (once; the widget shares the cache) and at most
        ``min(MAX_DEPTH_FRAMES, max_frames // n_combinations)`` (at least 2) evenly spaced saved steps of
        each are drawn. The result is cached.
        """
        if self._html is not None and dpi == 72 and max_frames == MAX_EXPLORER_FRAMES:
            return self._html
        from PIL import Image

        names = list(self._sliders)
        combos = list(itertools.product(*(range(len(v)) for v in self._sliders.values())))
        trajs = {c: self._get({n: self._sliders[n][i] for n, i in zip(names, c)}) for c in combos}
        plot = self._plot
        if self._default_plot:
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
                fig = plot(traj, k)
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
                fig.clf()
                buf.seek(0)
                img = Image.open(buf).convert("RGB").quantize(colors=64, dither=Image.Dither.NONE)
                small = io.BytesIO()
                img.save(small, format="png", optimize=True)
                out.append([k, S - 1, "data:image/png;base64," + base64.b64encode(small.getvalue()).decode()])
            frames[",".join(map(str, c))] = out
            n_frames += len(out)
        params = [{"name": n, "labels": [_label(v) for v in self._sliders[n]]} for n in names]
        payload = json.dumps({"params": params, "frames": frames, "alt": self._alt}).replace("</", "<\\/")
        uid = uuid.uuid4().hex[:8]
        rows = []
        for i, n in enumerate(names):
            values = self._sliders[n]
            cid = f"fle-{uid}-{i}"
            numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
            if numeric:
                control = (
                    f'<input type="range" id="{cid}" data-param="{i}" min="0" max="{len(values) - 1}" step="1" '
                    f'value="0" aria-label="{html.escape(n)}">'
                )
            else:
                options = "".join(
                    f'<option value="{j}">{html.escape(_label(v))}</option>' for j, v in enumerate(values)
                )
                control = f'<select id="{cid}" data-param="{i}" aria-label="{html.escape(n)}">{options}</select>'
            rows.append(
                f'<label for="{cid}">{html.escape(n)} = <output data-param="{i}">{html.escape(_label(values[0]))}'
                f"</output></label>{control}"
            )
        first = frames[",".join("0" for _ in names)]
        did = f"fle-{uid}-step"
        rows.append(
            f'<label for="{did}">step <output data-depth="1">{first[-1][0]} of {first[-1][1]}</output></label>'
            f'<input type="range" id="{did}" data-depth="1" min="0" max="{len(first) - 1}" step="1" '
            f'value="{len(first) - 1}" aria-label="step">'
        )
        alt0 = html.escape(self._alt, quote=True)
        text = (
            f'<div class="flowlib-explorer" id="fle-{uid}"><style>{_STYLE}</style>'
            f'<div class="flowlib-explorer-controls">{"".join(rows)}</div>'
            f'<img class="flowlib-explorer-frame" alt="{alt0}" src="{first[-1][2]}">'
            f'<script type="application/json">{payload}</script>'
            f"<script>{_SCRIPT}</script></div>"
        )
        if dpi == 72 and max_frames == MAX_EXPLORER_FRAMES:
            self._html = text
        self.n_frames = n_frames
        return text


def explore(
    make_trajectory: Callable[..., Trajectory],
    *,
    plot: Callable[[Trajectory, int], Any] | None = None,
    alt: str = "Explorer of token trajectories",
    **sliders: Sequence[Any],
) -> Explorer:
    """An interactive explorer: one slider per parameter plus a slider over saved steps.

    In Jupyter it is an ipywidgets view that simulates on demand. Displayed where no kernel runs (the
    book's website), it is a self-contained HTML/JavaScript explorer of precomputed frames
    (:meth:`Explorer.to_html`): numeric parameters get a slider, others a drop-down, each labelled with
    its name and current value, plus the depth (step) slider. Its trade-off: a few evenly spaced depths
    per parameter combination (at most :data:`MAX_EXPLORER_FRAMES` frames in all) at a low resolution,
    to stay under :data:`MAX_EXPLORER_BYTES` (2.5 MB) per explorer.

    Parameters
    ----------
    make_trajectory : callable
        ``make_trajectory(**params) -> Trajectory``; called once per parameter combination.
    plot : callable, optional
        ``plot(traj, step) -> Figure`` (default :func:`plot_tokens`, on axes shared by all frames in the
        static view).
    alt : str
        Alternative text of the static view's picture (the parameters and the step are appended).
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

    Examples
    --------
    >>> import torch, flowlib as fl
    >>> from flowlib import viz
    >>> make = lambda beta: fl.simulate(fl.SoftmaxAttention(beta=beta), torch.eye(3)[:, :2].contiguous(), t1=1.0, n_steps=5)
    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):  # outside Jupyter, the widget's output is printed
    ...     explorer = viz.explore(make, beta=[0.5, 1.0])  # needs ipywidgets
    ...
    >>> type(explorer.widget).__name__, len(explorer.cache) >= 1
    ('VBox', True)
    >>> page = explorer.to_html()  # the website's view: both betas, every saved step (6 of each)
    >>> 'class="flowlib-explorer"' in page, explorer.n_frames
    (True, 12)
    """
    try:
        import ipywidgets as widgets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("flowlib.viz.explore needs ipywidgets: pip install ipywidgets") from exc
    from IPython.display import display

    if not sliders:
        raise ValueError("explore needs at least one parameter, e.g. explore(make, beta=[0.5, 1.0])")
    sliders = {name: list(values) for name, values in sliders.items()}
    default_plot = plot is None
    plot = plot or (lambda traj, step: plot_tokens(traj, step=step))
    cache: dict[tuple, Trajectory] = {}

    def get(params: dict) -> Trajectory:
        key = tuple(sorted(params.items()))
        if key not in cache:
            cache[key] = make_trajectory(**params)
        return cache[key]

    controls = {
        name: widgets.SelectionSlider(options=values, value=values[0], description=name, continuous_update=False)
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
    return Explorer(box, get, plot, sliders, alt, default_plot)
