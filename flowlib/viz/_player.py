"""The kernel-free frame player shared by explorers (:func:`flowlib.viz.explore`) and animations.

One ``<div class="flowlib-player">`` holds a control per parameter (a slider for numbers, a drop-down
otherwise), a time slider, play/pause and step buttons, one ``<img>``, and the frames as ``data:`` URIs
in a JSON block, so that the HTML is self-contained (a notebook, Colab, a saved file). The book's build
(``_ext/site_assets.py``) moves every such URI into an image file of its own and lets the page load a
frame only when it is shown. No kernel, no network.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import uuid
from typing import Any

__all__ = ["FRAME_PX", "DISPLAY_PX", "human_label", "render_frame", "player_html"]

#: Width, in CSS pixels, at which the website shows a player's picture (at most; less on a phone).
DISPLAY_PX = 520
#: Width, in pixels, at which every frame is drawn: twice :data:`DISPLAY_PX`, so frames stay crisp.
FRAME_PX = 2 * DISPLAY_PX

#: What a reader sees for a parameter name (words and symbols, not Python names).
_NAMES = {
    "beta": "β (inverse temperature)",
    "n_layers": "layers L",
    "layers": "layers L",
    "l": "layers L",
    "depth": "layers L",
    "t": "time t",
    "time": "time t",
    "t1": "final time t",
    "n": "tokens n",
    "n_tokens": "tokens n",
    "N": "tokens N",
    "h": "step size h",
    "step": "step size h",
    "dt": "step size h",
    "d": "dimension d",
    "dim": "dimension d",
    "angle": "angle θ",
    "theta": "angle θ",
    "n_iter": "iterations",
    "iters": "iterations",
    "n_heads": "heads",
    "heads": "heads",
    "init": "initialisation",
    "seed": "seed",
    "sigma": "σ",
    "alpha": "α",
    "gamma": "γ",
    "lam": "λ",
    "lambda_": "λ",
    "mu": "μ",
    "eps": "ε",
    "epsilon": "ε",
    "tau": "τ",
    "rho": "ρ",
    "kappa": "κ",
    "omega": "ω",
    "backend": "backend",
}


def human_label(name: str) -> str:
    """The label a reader sees for parameter ``name``: ``beta`` -> ``'β (inverse temperature)'``.

    Known names (``beta``, ``n_layers``/``L``, ``t``/``time``, ``N``, ``h``, ``angle``, Greek letters...)
    map to words and symbols; any other name loses its underscores.

    Examples
    --------
    >>> from flowlib.viz import human_label
    >>> human_label("beta"), human_label("L"), human_label("time"), human_label("warm_up")
    ('β (inverse temperature)', 'layers L', 'time t', 'warm up')
    """
    if not isinstance(name, str):
        raise TypeError(f"a parameter name is a str, got {type(name).__name__}")
    if name in _NAMES:
        return _NAMES[name]
    if name.lower() in _NAMES and name.lower() not in ("n",):
        return _NAMES[name.lower()]
    return name.replace("_", " ").strip()


def value_label(value: Any) -> str:
    """A parameter value as shown: floats in ``%g`` form, anything else as ``str``."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render_frame(fig, *, min_px: int = FRAME_PX, dpi: float | None = None, colors: int = 64) -> str:
    """Draw ``fig`` at least ``min_px`` pixels wide as a palette PNG; return it as a ``data:`` URI.

    The figure is cleared afterwards. ``dpi`` is a lower bound on the drawing resolution.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    width_in = float(fig.get_figwidth())
    render_dpi = max(float(dpi or 0), math.ceil(min_px / width_in))
    fig.set_dpi(render_dpi)
    fig.set_facecolor("white")
    if fig.get_layout_engine() is None and len(fig.axes) == 1:
        # room for the axis labels and the title, the same in every frame (a layout engine costs 3x the drawing)
        fig.subplots_adjust(left=0.15, right=0.97, bottom=0.12, top=0.91)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = canvas.buffer_rgba()
    img = Image.frombuffer("RGBA", canvas.get_width_height(), rgba, "raw", "RGBA", 0, 1).convert("RGB")
    fig.clf()
    pal = img.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    out = io.BytesIO()
    pal.save(out, format="png", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


_SCRIPT = """
(function () {
  var root = document.currentScript.parentElement;
  var data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  var img = root.querySelector("img.flowlib-frame");
  var controls = [].slice.call(root.querySelectorAll("input[data-param], select[data-param]"));
  var depth = root.querySelector("input[data-depth]");
  var depthOut = root.querySelector("output[data-depth]");
  var play = root.querySelector("button[data-play]");
  var timer = null;
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
      var v = p.values[Number(c.value)];
      root.querySelector("output[data-param='" + c.dataset.param + "']").textContent = v;
      return p.label + " = " + v;
    });
    depthOut.textContent = f[3];
    if (img.getAttribute("src") !== f[2]) img.src = f[2];
    img.alt = data.alt + ": " + labels.concat([data.depth + " = " + f[3]]).join(", ");
  }
  function preload() {
    data.frames[key()].forEach(function (f) { var im = new Image(); im.src = f[2]; });
  }
  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
    play.textContent = "\\u25B6 Play";
    play.title = "Play";
    play.setAttribute("aria-pressed", "false");
  }
  function start() {
    preload();
    if (Number(depth.value) >= Number(depth.max)) { depth.value = "0"; show(false); }
    timer = setInterval(function () {
      if (Number(depth.value) >= Number(depth.max)) { stop(); return; }
      depth.value = String(Number(depth.value) + 1);
      show(false);
    }, data.interval);
    play.textContent = "\\u25AE\\u25AE Pause";
    play.title = "Pause";
    play.setAttribute("aria-pressed", "true");
  }
  function go(to) { stop(); depth.value = String(to(Number(depth.value), Number(depth.max))); show(false); }
  play.addEventListener("click", function () { if (timer) stop(); else start(); });
  root.querySelector("button[data-first]").addEventListener("click", function () { go(function () { return 0; }); });
  root.querySelector("button[data-prev]").addEventListener("click", function () { go(function (v) { return Math.max(0, v - 1); }); });
  root.querySelector("button[data-next]").addEventListener("click", function () { go(function (v, m) { return Math.min(m, v + 1); }); });
  root.querySelector("button[data-last]").addEventListener("click", function () { go(function (v, m) { return m; }); });
  controls.forEach(function (c) { c.addEventListener("input", function () { show(true); }); });
  depth.addEventListener("input", function () { stop(); show(false); });
  show(false);
})();
"""

_STYLE = (
    ".flowlib-player{max-width:min(100%,{px}px);margin:0.8em auto}"
    ".flowlib-player-controls{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:0.25em 0.8em;"
    "align-items:center;font-size:0.9em}"
    ".flowlib-player-controls input,.flowlib-player-controls select{width:100%;min-width:0}"
    ".flowlib-player-buttons{display:flex;gap:0.3em;flex-wrap:wrap;margin:0.3em 0}"
    ".flowlib-player-buttons button{font:inherit;font-size:0.9em;padding:0.15em 0.6em;border:1px solid #888;"
    "border-radius:4px;background:#f4f4f4;color:#111;cursor:pointer}"
    ".flowlib-player img.flowlib-frame{display:block;width:100%;height:auto;background:#fff;border-radius:4px}"
    ".flowlib-player-hint{font-size:0.85em;margin:0.2em 0;opacity:0.85}"
).replace("{px}", str(DISPLAY_PX))


def player_html(
    *,
    kind: str,
    params: list[dict],
    frames: dict[str, list],
    alt: str,
    depth_label: str = "time t",
    interval: int = 150,
    start: str = "last",
    hint: str | None = None,
) -> str:
    """The player's HTML. ``params``: ``[{"name", "label", "values"}]`` (values as shown);
    ``frames``: ``{"i,j,...": [[step, last, src, shown], ...]}`` keyed by the controls' indices."""
    if kind not in ("explorer", "animation"):
        raise ValueError(f"kind must be 'explorer' or 'animation', got {kind!r}")
    uid = uuid.uuid4().hex[:8]
    rows = []
    for i, p in enumerate(params):
        cid = f"flp-{uid}-{i}"
        values = p["values"]
        label = html.escape(p["label"])
        if p.get("numeric", True):
            control = (
                f'<input type="range" id="{cid}" data-param="{i}" min="0" max="{len(values) - 1}" step="1" '
                f'value="0" aria-label="{label}">'
            )
        else:
            options = "".join(f'<option value="{j}">{html.escape(v)}</option>' for j, v in enumerate(values))
            control = f'<select id="{cid}" data-param="{i}" aria-label="{label}">{options}</select>'
        rows.append(
            f'<label for="{cid}">{label} = <output data-param="{i}">{html.escape(values[0])}</output></label>{control}'
        )
    first = frames[",".join("0" for _ in params)]
    k0 = len(first) - 1 if start == "last" else 0
    did = f"flp-{uid}-depth"
    rows.append(
        f'<label for="{did}">{html.escape(depth_label)} = <output data-depth="1">{html.escape(first[k0][3])}'
        f"</output></label>"
        f'<input type="range" id="{did}" data-depth="1" min="0" max="{len(first) - 1}" step="1" '
        f'value="{k0}" aria-label="{html.escape(depth_label)}">'
    )
    buttons = (
        '<div class="flowlib-player-buttons">'
        '<button type="button" data-first="1" title="First frame" aria-label="First frame">|\u25c0</button>'
        '<button type="button" data-prev="1" title="Previous frame" aria-label="Previous frame">\u25c0</button>'
        '<button type="button" data-play="1" title="Play" aria-pressed="false">\u25b6 Play</button>'
        '<button type="button" data-next="1" title="Next frame" aria-label="Next frame">\u25b6</button>'
        '<button type="button" data-last="1" title="Last frame" aria-label="Last frame">\u25b6|</button>'
        "</div>"
    )
    payload = json.dumps(
        {"params": params, "frames": frames, "alt": alt, "depth": depth_label, "interval": int(interval)}
    ).replace("</", "<\\/")
    hint_html = f'<p class="flowlib-player-hint">{html.escape(hint)}</p>' if hint else ""
    w, h = _png_size(first[k0][2]) or (FRAME_PX, FRAME_PX)
    height = round(DISPLAY_PX * h / w)  # with width: the page keeps the frame's place before it loads
    cls = "flowlib-player flowlib-explorer" if kind == "explorer" else "flowlib-player flowlib-animation"
    return (
        f'<div class="{cls}" id="flp-{uid}"><style>{_STYLE}</style>{hint_html}'
        f'<div class="flowlib-player-controls">{"".join(rows)}</div>{buttons}'
        f'<img class="flowlib-frame flowlib-explorer-frame" alt="{html.escape(alt, quote=True)}" '
        f'src="{first[k0][2]}" width="{DISPLAY_PX}" height="{height}">'
        f'<script type="application/json">{payload}</script>'
        f"<script>{_SCRIPT}</script></div>"
    )


def _png_size(uri: str) -> tuple[int, int] | None:
    """Width and height of a PNG ``data:`` URI, from its header (None if it is not one)."""
    prefix = "data:image/png;base64,"
    if not uri.startswith(prefix):
        return None
    head = base64.b64decode(uri[len(prefix) : len(prefix) + 32])
    if head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def frame_count(text: str) -> int:
    """How many ``data:`` frames a player's HTML embeds."""
    return len(re.findall(r"data:image/png;base64,", text))
