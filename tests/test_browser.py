"""The built website in a real headless browser (marker ``browser``; part of README's test command).

Debian's ``chromium`` (``/usr/bin/chromium``, installed by ``make browser-deps``, which ``make test``
runs) is driven by Playwright with flags for a closed network and a fresh profile; no browser is
downloaded. The site is the session's real book build (``book_build`` in conftest), served on
localhost. Screenshots go to ``_build/screenshots/``.

Without Chromium or Playwright the tests skip, unless ``FLOWLIB_REQUIRE_BROWSER=1`` (set by
``.ci/run``), in which case they fail.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FLOWLIB_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "_build" / "screenshots"
#: Budget for everything one page loads from a cold cache (HTML, figures, theme, MathJax, fonts).
MAX_PAGE_WEIGHT = 8_000_000

pytestmark = pytest.mark.browser


def _toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [c["file"] for c in part["chapters"]]
    return pages


PAGES = _toc_pages()
NOTEBOOK_PAGES = [p for p in PAGES if (ROOT / p).with_suffix(".ipynb").exists()]
EXPLORER_PAGES = [p for p in NOTEBOOK_PAGES if "viz.explore(" in (ROOT / p).with_suffix(".ipynb").read_text()]
#: Budget of one kernel-free explorer (flowlib.viz.MAX_EXPLORER_BYTES).
MAX_EXPLORER_BYTES = 2_500_000
REPO_URL = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def _require(what: str, ok: bool) -> None:
    if not ok:
        msg = f"{what} is not available; run `make browser-deps`"
        if os.environ.get("FLOWLIB_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


# ----------------------------------------------------------------------------- the local server
class _Handler(http.server.SimpleHTTPRequestHandler):
    log: list[tuple[str, int, int]]  # (path, status, bytes)

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def send_response(self, code, message=None):
        self._status = code
        super().send_response(code, message)

    def copyfile(self, source, outputfile):
        data = source.read()
        outputfile.write(data)
        self.server.log.append((unquote(urlparse(self.path).path), self._status, len(data)))

    def send_error(self, code, message=None, explain=None):
        self.server.log.append((unquote(urlparse(self.path).path), code, 0))
        super().send_error(code, message, explain)


@pytest.fixture(scope="module")
def site(book_build):
    html_dir, _ = book_build
    handler = functools.partial(_Handler, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.log = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", html_dir, server
    server.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _require(f"Chromium at {CHROMIUM}", Path(CHROMIUM).exists())
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require("Playwright (pip install playwright)", False)
    t0 = time.perf_counter()
    pw = sync_playwright().start()
    context = pw.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium-profile")),  # a new, empty user-data-dir
        executable_path=CHROMIUM,
        headless=True,
        args=FLAGS,
        viewport={"width": 1280, "height": 900},
    )
    yield context
    context.close()
    pw.stop()
    print(f"browser session: {time.perf_counter() - t0:.1f} s")


def _open(context, url: str, *, dark: bool = False):
    """Open ``url`` in a fresh tab with the cache off; return ``(page, errors)``.

    ``errors`` are console errors and uncaught exceptions whose source is this site; a resource
    that a closed network keeps out (a CDN) is not our code's error and is not collected.
    """
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
    origin = url.split("/", 3)[:3]
    origin = "/".join(origin)
    errors: list[str] = []

    def on_console(msg):
        if msg.type != "error":
            return
        src = (msg.location or {}).get("url", "")
        if src.startswith(origin) or not src:
            errors.append(f"console: {msg.text} ({src})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"exception: {exc}"))
    mode = "dark" if dark else "light"  # explicit: the profile's localStorage is shared by every tab
    page.add_init_script(f"localStorage.setItem('theme', '{mode}'); localStorage.setItem('mode', '{mode}');")
    page.goto(url, wait_until="load")
    if page.locator("script[src*='mathjax']").count():
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20_000)
        page.evaluate("() => MathJax.startup.promise")
    return page, errors


# ----------------------------------------------------------------------------- per page
@pytest.mark.parametrize("name", PAGES)
def test_page_loads_typesets_and_stays_light(site, browser, name):
    base, html_dir, server = site
    start = len(server.log)
    page, errors = _open(browser, f"{base}/{name}.html")
    try:
        assert not errors, errors
        html = (html_dir / f"{name}.html").read_text()
        if "\\(" in html or "\\[" in html or "$$" in html or 'class="math' in html:
            n_math = page.locator("mjx-container").count()
            assert n_math > 0, "math was not typeset"
            assert page.locator("mjx-merror").count() == 0, "MathJax could not parse some math (undefined macro?)"
        served = [entry for entry in server.log[start:]]
        missing = sorted({p for p, status, _ in served if status >= 400})
        assert not missing, f"local resources not found: {missing}"
        weight = sum(size for _, _, size in served)
        print(f"{name}: {weight / 1e6:.2f} MB on a cold load, {len(served)} requests")
        assert weight < MAX_PAGE_WEIGHT, f"{name} weighs {weight / 1e6:.1f} MB"
    finally:
        page.close()


@pytest.mark.parametrize("name", NOTEBOOK_PAGES)
def test_chapter_widgets_in_the_browser(site, browser, name):
    base, _, _ = site
    page, errors = _open(browser, f"{base}/{name}.html")
    try:
        # theorem-like blocks and exercises render
        assert page.locator("div.proof").count() >= 1
        assert page.locator("div.exercise, .exercise").count() >= 3
        # a solution dropdown starts closed and opens on click (sphinx-togglebutton)
        solution = page.locator("div.solution.dropdown").first
        solution.scroll_into_view_if_needed()
        body = solution.locator(":scope > :not(.admonition-title)").first
        assert not body.is_visible(), "the solution should start hidden"
        toggle = solution.locator("button.toggle-button")
        (toggle if toggle.count() else solution.locator(".admonition-title")).first.click()
        body.wait_for(state="visible", timeout=5_000)
        # every animation player advances one frame on "Next frame"
        players = page.locator("div.animation")
        assert players.count() >= 1
        for i in range(players.count()):
            player = players.nth(i)
            player.scroll_into_view_if_needed()
            # at the text column's width (_static/figures.css), not matplotlib's 250-odd pixels
            frame = player.locator("img[id^='_anim_img']").bounding_box()
            column = page.locator("main article, article").first.bounding_box()
            assert frame["width"] > 0.6 * column["width"], (frame, column)
            player.locator("button[title='Pause']").click()
            player.locator("button[title='First frame']").click()
            slider = player.locator("input[type=range]")
            before = int(slider.input_value())
            player.locator("button[title='Next frame']").click()
            assert int(slider.input_value()) == before + 1
        # launch buttons point at the configured repository and this notebook
        path = f"{name}.ipynb"
        hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        colab = [h for h in hrefs if h.startswith("https://colab.research.google.com/")]
        binder = [h for h in hrefs if "mybinder.org" in h]
        repo = REPO_URL.removeprefix("https://github.com/")
        assert colab and all(f"github/{repo}/blob/main/{path}" in h for h in colab), colab
        assert binder and all(f"/gh/{repo}/" in h and path in h for h in binder), binder
        assert not errors, errors
    finally:
        page.close()


@pytest.mark.parametrize("name", NOTEBOOK_PAGES)
def test_figures_are_readable_in_dark_mode(site, browser, name):
    base, _, _ = site
    page, errors = _open(browser, f"{base}/{name}.html", dark=True)
    try:
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert sum(map(int, re.findall(r"\d+", background)[:3])) < 3 * 80, background  # the page really is dark
        # every output figure is drawn on an opaque light background: sample its corner pixels
        stats = page.evaluate(
            """async () => {
              const imgs = [...document.querySelectorAll('.cell_output img')];
              const out = [];
              for (const img of imgs) {
                await img.decode().catch(() => null);
                const c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                if (!c.width) continue;
                const g = c.getContext('2d');
                g.drawImage(img, 0, 0);
                const px = [[1, 1], [c.width - 2, 1], [1, c.height - 2], [c.width - 2, c.height - 2]]
                  .map(([x, y]) => g.getImageData(x, y, 1, 1).data);
                out.push({alpha: Math.min(...px.map(p => p[3])),
                          light: Math.min(...px.map(p => (p[0] + p[1] + p[2]) / 3))});
              }
              return out;
            }"""
        )
        assert stats, "no figures found"
        assert all(s["alpha"] == 255 and s["light"] > 200 for s in stats), stats
        assert not errors, errors
    finally:
        page.close()


_FRAME_JS = """ex => {
  const data = JSON.parse(ex.querySelector("script[type='application/json']").textContent);
  const key = [...ex.querySelectorAll("input[data-param], select[data-param]")].map(c => c.value).join(",");
  const depth = Number(ex.querySelector("input[data-depth]").value);
  return data.frames[key][depth][2];
}"""


@pytest.mark.parametrize("name", EXPLORER_PAGES)
def test_explorers_work_without_a_kernel(site, browser, name):
    """viz.explore's static view: each control moves the picture, from the keyboard, with no kernel."""
    base, _, server = site
    start = len(server.log)
    page, errors = _open(browser, f"{base}/{name}.html")
    try:
        explorers = page.locator("div.flowlib-explorer")
        n = explorers.count()
        assert n >= 1, "no kernel-free explorer on the page (is text/html preferred in _config.yml?)"
        assert page.locator(".jupyter-widgets, .widget-subarea").count() == 0
        weights = []
        for i in range(n):
            ex = explorers.nth(i)
            ex.scroll_into_view_if_needed()
            weight = len(ex.evaluate("e => e.outerHTML").encode())
            weights.append(weight)
            assert weight <= MAX_EXPLORER_BYTES, f"explorer {i} weighs {weight / 1e6:.2f} MB"
            img = ex.locator("img.flowlib-explorer-frame")
            assert img.count() == 1 and (img.get_attribute("alt") or "").strip()
            # at the text column's width
            box, column = img.bounding_box(), page.locator("main article, article").first.bounding_box()
            assert box["width"] >= 0.9 * ex.bounding_box()["width"] and box["width"] > 0.6 * column["width"], (
                box,
                column,
            )
            controls = ex.locator("input[data-param], select[data-param]")
            assert controls.count() >= 1
            for j in range(controls.count()):
                c = controls.nth(j)
                label = ex.locator(f"label[for='{c.get_attribute('id')}']")
                assert label.count() == 1 and "=" in label.inner_text()
                before_src, before_alt, before_label = (
                    img.get_attribute("src"),
                    img.get_attribute("alt"),
                    label.inner_text(),
                )
                before_frame = ex.evaluate(_FRAME_JS)
                if c.evaluate("e => e.tagName") == "SELECT":
                    c.select_option(index=c.locator("option").count() - 1)
                else:  # a focused slider moves with the arrow keys
                    c.focus()
                    value = int(c.input_value())
                    page.keyboard.press("ArrowRight")
                    assert int(c.input_value()) == value + 1, "the arrow key did not move the slider"
                frame = ex.evaluate(_FRAME_JS)
                assert img.get_attribute("src") == frame, "the picture is not the frame of the controls' state"
                assert img.get_attribute("alt") != before_alt and label.inner_text() != before_label
                if frame != before_frame:  # (two parameter values may draw the same picture)
                    assert img.get_attribute("src") != before_src, "moving the control did not change the picture"
            depth = ex.locator("input[data-depth]")
            depth.focus()
            value, before_src, before_alt = int(depth.input_value()), img.get_attribute("src"), img.get_attribute("alt")
            page.keyboard.press("ArrowLeft")
            assert int(depth.input_value()) == value - 1
            assert img.get_attribute("src") == ex.evaluate(_FRAME_JS) and img.get_attribute("alt") != before_alt
            page.keyboard.press("Home")  # (the last two depths may look alike once the tokens have settled)
            assert int(depth.input_value()) == 0
            assert img.get_attribute("src") == ex.evaluate(_FRAME_JS) != before_src, "the depth slider did not move"
            if i == 0:
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                ex.screenshot(path=str(SCREENSHOTS / f"explorer-{Path(name).name}.png"))
        served = sum(size for _, _, size in server.log[start:])
        print(
            f"{name}: {n} explorer(s), {', '.join(f'{w / 1e6:.2f} MB' for w in weights)}; "
            f"page {served / 1e6:.2f} MB on a cold load"
        )
        assert not errors, errors
    finally:
        page.close()


# ----------------------------------------------------------------------------- the whole site
class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])


def test_internal_links_and_anchors_resolve(site):
    base, html_dir, _ = site
    parsed: dict[Path, _Links] = {}

    def parse(path: Path) -> _Links:
        if path not in parsed:
            p = _Links()
            p.feed(path.read_text(errors="replace"))
            parsed[path] = p
        return parsed[path]

    broken = []
    n_links = 0
    for page in sorted(html_dir.rglob("*.html")):
        rel = page.relative_to(html_dir).as_posix()
        for href in parse(page).hrefs:
            if re.match(r"^[a-z]+:", href) and not href.startswith(base):
                continue  # external (https:, mailto:, javascript:)
            n_links += 1
            target_url = urljoin(f"{base}/{rel}", href)
            path, _, frag = urlparse(target_url).path, None, urlparse(target_url).fragment
            target = html_dir / unquote(path).lstrip("/")
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{rel}: {href} (no file)")
                continue
            if frag and target.suffix == ".html" and unquote(frag) not in parse(target).ids:
                broken.append(f"{rel}: {href} (no anchor)")
    print(f"{n_links} local links checked in {len(parsed)} pages")
    assert n_links > 100
    assert not broken, broken[:20]


def test_screenshots_of_key_pages(site, browser):
    base, _, _ = site
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = [("intro", False), (NOTEBOOK_PAGES[0], False), (NOTEBOOK_PAGES[0], True), (NOTEBOOK_PAGES[-1], False)]
    brightness = {}
    for name, dark in shots:
        page, _ = _open(browser, f"{base}/{name}.html", dark=dark)
        out = SCREENSHOTS / f"{Path(name).name}{'-dark' if dark else ''}.png"
        page.screenshot(path=str(out), full_page=False)
        page.close()
        img = Image.open(out).convert("L")
        hist = img.histogram()
        # a real rendering: text and figures give many grey levels, and no single one covers the page
        assert sum(1 for c in hist if c > 0) > 40, f"{out.name}: almost uniform image"
        assert max(hist) < 0.97 * img.width * img.height, f"{out.name}: a blank page"
        brightness[(name, dark)] = sum(i * c for i, c in enumerate(hist)) / (img.width * img.height)
    light, dark = brightness[(NOTEBOOK_PAGES[0], False)], brightness[(NOTEBOOK_PAGES[0], True)]
    assert dark < 0.6 * light, f"dark mode did not darken the page (mean grey {dark:.0f} vs {light:.0f})"
