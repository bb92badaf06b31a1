"""Light pages: what every written HTML page loads before the reader scrolls (tests/test_browser.py).

After the HTML is written (``build-finished``), each page is rewritten once:

* **Frames out of the page.** Every ``data:image/...;base64`` URI of the explorers' and animations'
  players (``flowlib/viz/_player.py``; also matplotlib's ``to_jshtml`` player, if a page has one) is
  written to an image file of its own, ``_images/frames/<sha1>.<ext>`` (identical frames share one
  file), and the page refers to that file instead. The player shows one frame at a time, so a page loads
  a frame only when it is shown; a notebook keeps the self-contained HTML.
* **Images load when needed.** Every ``<img>`` in the article gets ``loading="lazy"`` and
  ``decoding="async"`` (the browser fetches it when it nears the screen).
* **No request leaves the site.** matplotlib's player links Font Awesome 4 from a CDN: the link goes.
* **No 1.5 MB icon script.** pydata-sphinx-theme loads all of Font Awesome as JavaScript
  (``scripts/fontawesome.js``, 1.49 MB) on every page although its CSS already draws the same icons
  from its web fonts (``vendor/fontawesome/webfonts``): the script tag goes.
* **Icon fonts cut to the icons in use.** The theme's Font Awesome web fonts (275 kB for the two a page
  loads) are subset to the code points that the pages' icon classes and the stylesheets use, written as
  WOFF next to the originals, and the theme's stylesheet in the built site points at them (about 10 kB).
* **No widget state.** The ipywidgets state that a notebook saves (up to 0.5 MB of the explorers' live
  view) goes: the site shows the explorers' kernel-free view and loads no widget JavaScript.
* **The search index** (``searchindex.js``) is needed by the search page only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

DATA_URI = re.compile(r"data:image/(png|jpeg|webp|gif);base64,([A-Za-z0-9+/=]+)")
#: Inline data URIs shorter than this stay (icons; not worth a request).
MIN_BYTES = 4096
FA_CDN = re.compile(r'<link[^>]+href="https?://[^"]*font-awesome[^"]*"[^>]*>\s*', re.I)
FA_SCRIPT = re.compile(r'<script[^>]+src="[^"]*scripts/fontawesome\.js[^"]*"[^>]*>\s*</script>\s*')
#: The ipywidgets state a notebook saves (the explorers' live view, with its images): the site renders the
#: explorers' HTML view and loads no widget JavaScript (``nb_ipywidgets_js: {}``), so the state is dead weight.
WIDGET_STATE = re.compile(r'<script type="application/vnd\.jupyter\.widget-state\+json">.*?</script>\s*', re.S)
SEARCH_INDEX = re.compile(r'<script[^>]+src="[^"]*searchindex\.js[^"]*"[^>]*>\s*</script>\s*')
IMG = re.compile(r"<img\b([^>]*)>")


def rewrite_page(text: str, page: Path, outdir: Path) -> tuple[str, int]:
    """Rewrite one page's HTML; returns ``(new_text, frames_written)``."""
    frames_dir = outdir / "_images" / "frames"
    rel = os.path.relpath(frames_dir, page.parent).replace(os.sep, "/")
    written = 0

    def extract(m: re.Match) -> str:
        nonlocal written
        b64 = m.group(2)
        if len(b64) * 3 // 4 < MIN_BYTES:
            return m.group(0)
        data = base64.b64decode(b64)
        ext = {"jpeg": "jpg"}.get(m.group(1), m.group(1))
        name = hashlib.sha1(data).hexdigest()[:20] + "." + ext
        target = frames_dir / name
        if not target.exists():
            frames_dir.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written += 1
        return f"{rel}/{name}"

    text = WIDGET_STATE.sub("", text)
    text = DATA_URI.sub(extract, text)
    text = FA_CDN.sub("", text)
    text = FA_SCRIPT.sub("", text)
    if page.name != "search.html":
        text = SEARCH_INDEX.sub("", text)

    def lazy(m: re.Match) -> str:
        attrs = m.group(1)
        if "loading=" in attrs:
            return m.group(0)
        slash = "/" if attrs.rstrip().endswith("/") else ""
        attrs = attrs.rstrip().rstrip("/")
        return f'<img{attrs} loading="lazy" decoding="async"{" " + slash if slash else ""}>'

    head, sep, body = text.partition('<main id="main-content"')
    if sep:
        text = head + sep + IMG.sub(lazy, body)
    return text, written


_CLASS_MAP = re.compile(r'((?:\.fa-[a-z0-9-]+:(?:before|after),?)+)\{content:"\\([0-9a-f]+)"\}')
_CODEPOINT = re.compile(r'"\\([ef][0-9a-f]{3})"')
_FA_CLASS = re.compile(r"\bfa-[a-z0-9-]+")


def subset_icon_fonts(outdir: Path, html_texts: list[str]) -> dict[str, int]:
    """Subset the theme's Font Awesome fonts to the icons in use; returns ``{font: bytes}`` written."""
    css_path = outdir / "_static" / "styles" / "pydata-sphinx-theme.css"
    fonts = outdir / "_static" / "vendor" / "fontawesome" / "webfonts"
    if not css_path.exists() or not fonts.is_dir():
        return {}
    try:
        from fontTools import subset
        from fontTools.ttLib import TTFont
    except ImportError:  # pragma: no cover - matplotlib brings fontTools
        return {}
    css = css_path.read_text(encoding="utf-8")
    class_map = {}
    for selectors, code in _CLASS_MAP.findall(css):
        for name in re.findall(r"\.(fa-[a-z0-9-]+):", selectors):
            class_map[name] = int(code, 16)
    used = set()
    for text in html_texts:
        used.update(class_map[c] for c in _FA_CLASS.findall(text) if c in class_map)
    for sheet in (outdir / "_static").rglob("*.css"):
        rest = _CLASS_MAP.sub("", sheet.read_text(encoding="utf-8", errors="replace"))
        used.update(int(c, 16) for c in _CODEPOINT.findall(rest))
    written = {}
    for name in ("fa-solid-900", "fa-regular-400", "fa-brands-400"):
        ttf = fonts / f"{name}.ttf"
        if not ttf.exists():
            continue
        font = TTFont(ttf)
        options = subset.Options()
        options.flavor = "woff"
        options.layout_features = ["*"]
        sub = subset.Subsetter(options)
        sub.populate(unicodes=sorted(used))
        sub.subset(font)
        out = fonts / f"{name}.subset.woff"
        subset.save_font(font, str(out), options)
        written[name] = out.stat().st_size
        css = css.replace(
            f'src:url(../vendor/fontawesome/webfonts/{name}.woff2) format("woff2"),'
            f'url(../vendor/fontawesome/webfonts/{name}.ttf) format("truetype")',
            f'src:url(../vendor/fontawesome/webfonts/{name}.subset.woff) format("woff")',
        )
    css_path.write_text(css, encoding="utf-8")
    return written


def _finish(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    total = 0
    texts = []
    for page in outdir.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        new, n = rewrite_page(text, page, outdir)
        total += n
        texts.append(new)
        if new != text:
            page.write_text(new, encoding="utf-8")
    subset_icon_fonts(outdir, texts)
    if total:
        from sphinx.util import logging

        logging.getLogger(__name__).info(f"site_assets: {total} frames moved out of the pages into _images/frames")


def setup(app):
    app.connect("build-finished", _finish)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
