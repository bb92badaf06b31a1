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
#: Budget for everything a chapter page (or the landing page) loads from a cold cache before the reader
#: scrolls (HTML, theme, MathJax, fonts, the images on the first screen).
MAX_PAGE_WEIGHT = 2_500_000
#: Any other page (API reference, bibliography...).
MAX_OTHER_PAGE_WEIGHT = 4_000_000
#: A player's frame (explorer, animation) and a figure are drawn at least this many times their displayed width.
MIN_PIXEL_RATIO = 1.5
#: Widths at which the reader must reach the book's and the page's contents (phone, tablet, laptop, desktop).
WIDTHS = [390, 800, 1024, 1440]

pytestmark = pytest.mark.browser


def _toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [c["file"] for c in part["chapters"]]
    return pages


def _all_toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for e in entries:
            pages.append(e["file"])
            walk(e.get("sections", []))

    for part in toc.get("parts", []):
        walk(part["chapters"])
    return pages


PAGES = _toc_pages()
ALL_PAGES = _all_toc_pages()
NOTEBOOK_PAGES = [p for p in PAGES if (ROOT / p).with_suffix(".ipynb").exists()]
#: The landing page and every chapter: the pages a reader reads.
READING_PAGES = [PAGES[0]] + NOTEBOOK_PAGES
EXPLORER_PAGES = [p for p in NOTEBOOK_PAGES if "viz.explore(" in (ROOT / p).with_suffix(".ipynb").read_text()]
#: What the player's HTML (without its frames, which the build moves to files) may weigh.
MAX_PLAYER_HTML_BYTES = 200_000
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


def _open(context, url: str, *, dark: bool = False, width: int | None = None):
    """Open ``url`` in a fresh tab with the cache off (at ``width`` px, if given); return ``(page, errors)``.

    ``errors`` are console errors and uncaught exceptions whose source is this site; a resource
    that a closed network keeps out (a CDN) is not our code's error and is not collected.
    """
    page = context.new_page()
    if width is not None:
        page.set_viewport_size({"width": width, "height": 844 if width < 600 else 900})
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


def _settle(server, quiet: float = 1.0, limit: float = 15.0) -> None:
    """Wait until the server has had no request for ``quiet`` seconds (at most ``limit``)."""
    t0 = last_change = time.perf_counter()
    n = len(server.log)
    while time.perf_counter() - t0 < limit:
        time.sleep(0.2)
        if len(server.log) != n:
            n, last_change = len(server.log), time.perf_counter()
        elif time.perf_counter() - last_change >= quiet:
            return


# ----------------------------------------------------------------------------- per page
@pytest.mark.parametrize("name", ALL_PAGES)
def test_page_loads_typesets_and_stays_light(site, browser, name):
    """What a page loads before the reader scrolls: only local files, and at most 2.5 MB for a chapter."""
    base, html_dir, server = site
    start = len(server.log)
    page, errors = _open(browser, f"{base}/{name}.html")
    try:
        _settle(server)
        assert not errors, errors
        html = (html_dir / f"{name}.html").read_text()
        if "\\(" in html or "\\[" in html or "$$" in html or 'class="math' in html:
            n_math = page.locator("mjx-container").count()
            assert n_math > 0, "math was not typeset"
            assert page.locator("mjx-merror").count() == 0, "MathJax could not parse some math (undefined macro?)"
        served = [entry for entry in server.log[start:]]
        missing = sorted({p for p, status, _ in served if status >= 400})
        assert not missing, f"local resources not found: {missing}"
        outside = page.evaluate(
            "() => performance.getEntriesByType('resource').map(e => e.name).filter(u => !u.startsWith(location.origin))"
        )
        assert not outside, f"requests leave the site: {outside}"
        assert "base64," not in html or len(html.encode()) < 1_000_000, "frames are still embedded in the page"
        weight = sum(size for _, _, size in served)
        budget = MAX_PAGE_WEIGHT if name in READING_PAGES else MAX_OTHER_PAGE_WEIGHT
        print(f"{name}: {weight / 1e6:.2f} MB before scrolling, {len(served)} requests")
        assert weight <= budget, f"{name} loads {weight / 1e6:.2f} MB before the reader scrolls"
    finally:
        page.close()


#: Raw markup a reader must never see: what is left when MyST or MathJax did not do its work.
_RAW_MARKUP_JS = r"""() => {
  const root = document.querySelector("main article, article") || document.body;
  const skip = "mjx-container, script, style, pre, code, kbd, samp, textarea, svg, .cell_input, "
    + ".highlight, .flowlib-player, .MathJax, .headerlink, .copybtn";
  const patterns = [
    [/\$/, "a dollar sign"],
    [/\\[A-Za-z]+/, "a TeX command"],
    [/\{(doc|ref|numref|eq|prf:ref|cite|cite:p|cite:t|term|download|math|glue|glue:text|abbr)\}/, "a MyST role"],
    [/```/, "a code fence"],
    [/:::/, "a colon fence"],
    [/\*\*[^*\s][^*]*\*\*/, "Markdown bold"],
  ];
  const found = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    const el = node.parentElement;
    if (!el || el.closest(skip)) continue;
    const text = node.textContent;
    for (const [re, what] of patterns) {
      const m = text.match(re);
      if (m) {
        const i = m.index;
        found.push(`${what}: "...${text.slice(Math.max(0, i - 50), i + 60).replace(/\s+/g, " ")}..."`);
        break;
      }
    }
  }
  return found;
}"""


@pytest.mark.parametrize("name", READING_PAGES)
def test_no_raw_markup_after_typesetting(site, browser, name):
    """After MathJax has run, no text outside typeset math shows $, a TeX command or unrendered MyST."""
    base, _, _ = site
    page, _ = _open(browser, f"{base}/{name}.html")
    try:
        assert page.locator("mjx-merror").count() == 0
        found = page.evaluate(_RAW_MARKUP_JS)
        assert not found, f"{len(found)} places show raw markup, e.g.\n" + "\n".join(found[:8])
    finally:
        page.close()


def _visible(page, selector: str):
    loc = page.locator(selector)
    return [loc.nth(i) for i in range(loc.count()) if loc.nth(i).is_visible()]


def _check_toggles(page, width: int) -> None:
    # the book's contents
    toggles = _visible(page, "button.primary-toggle")
    assert len(toggles) == 1, f"{len(toggles)} visible sidebar toggles at {width} px"
    dialog = page.locator("#pst-primary-sidebar-modal")
    sidebar = page.locator("#pst-primary-sidebar")
    if width < 992:
        assert not sidebar.is_visible() or sidebar.bounding_box()["x"] < 0
        n_links = sidebar.locator("a.reference.internal").count()
        toggles[0].click()
        page.wait_for_function("() => document.querySelector('#pst-primary-sidebar-modal').open", timeout=5_000)
        links = dialog.locator("a.reference.internal")
        assert links.count() == n_links >= 3 and links.first.is_visible(), "the contents dialog shows no contents"
        page.keyboard.press("Escape")
        page.wait_for_function("() => !document.querySelector('#pst-primary-sidebar-modal').open", timeout=5_000)
    else:
        page.wait_for_function("() => document.querySelector('#pst-primary-sidebar').getBoundingClientRect().x >= 0")
        assert sidebar.is_visible()
        toggles[0].click()
        page.wait_for_function(
            "() => document.querySelector('#pst-primary-sidebar').classList.contains('pst-sidebar-hidden')",
            timeout=5_000,
        )
        toggles[0].click()
        page.wait_for_function(
            "() => !document.querySelector('#pst-primary-sidebar').classList.contains('pst-sidebar-hidden')",
            timeout=5_000,
        )
        page.wait_for_function("() => document.querySelector('#pst-primary-sidebar').getBoundingClientRect().x >= 0")
        assert sidebar.is_visible()
    # the page's contents
    if page.locator("#pst-page-navigation-heading-2, nav.page-toc, .page-toc").count() == 0:
        return  # a page without sections has no page contents
    toggles = _visible(page, "button.secondary-toggle")
    if width >= 1200:
        assert not toggles, "the page-contents toggle shows although the contents are on screen"
        assert page.locator("#pst-secondary-sidebar").is_visible()
        return
    assert len(toggles) == 1, f"{len(toggles)} visible page-contents toggles at {width} px"
    toggles[0].click()
    page.wait_for_function("() => document.querySelector('#pst-secondary-sidebar-modal').open", timeout=5_000)
    assert page.locator("#pst-secondary-sidebar-modal a").first.is_visible()
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.querySelector('#pst-secondary-sidebar-modal').open", timeout=5_000)


@pytest.mark.parametrize("name", READING_PAGES)
def test_contents_open_on_a_phone_and_one_search_box(site, browser, name):
    """At 390 px the toggles open and close the book's and the page's contents; one search box; no sideways scroll."""
    base, _, _ = site
    page, errors = _open(browser, f"{base}/{name}.html", width=390)
    try:
        assert len(_visible(page, ".search-button-field, .search-button, input[type=search]")) == 1
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 391, f"the page is {width} px wide on a 390 px screen"
        # a display equation wider than the screen scrolls inside its box, with a shadow as the cue
        no_cue = page.evaluate(
            """() => [...document.querySelectorAll('mjx-container[display="true"]')]
                 .filter(e => e.scrollWidth > e.clientWidth + 1)
                 .filter(e => getComputedStyle(e).overflowX !== 'auto'
                              || !getComputedStyle(e).backgroundImage.includes('gradient')).length"""
        )
        assert no_cue == 0, f"{no_cue} wide equations without a scroll cue"
        _check_toggles(page, 390)
        assert not errors, errors
    finally:
        page.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_contents_toggles_at_every_width(site, browser, width):
    base, _, _ = site
    for name in (PAGES[0], NOTEBOOK_PAGES[0]):
        page, errors = _open(browser, f"{base}/{name}.html", width=width)
        try:
            search = _visible(page, ".search-button-field, .search-button, input[type=search]")
            assert len(search) == 1, f"{len(search)} search boxes at {width} px"
            _check_toggles(page, width)
            assert not errors, errors
        finally:
            page.close()


@pytest.mark.parametrize("name", ALL_PAGES)
def test_no_page_is_wider_than_a_phone(site, browser, name):
    base, _, _ = site
    page, _ = _open(browser, f"{base}/{name}.html", width=390)
    try:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 391, f"{name} is {width} px wide on a 390 px screen"
    finally:
        page.close()


_RATIOS_JS = """async (sel) => {
  const out = [];
  for (const img of document.querySelectorAll(sel)) {
    img.loading = "eager";
    img.scrollIntoView();
    await img.decode().catch(() => null);
    const w = img.getBoundingClientRect().width;
    if (w > 0) out.push({src: img.currentSrc.split('/').pop().slice(0, 40), natural: img.naturalWidth, shown: w});
  }
  return out;
}"""


@pytest.mark.parametrize("name", NOTEBOOK_PAGES)
def test_frames_and_figures_are_crisp(site, browser, name):
    """Every player frame and every output figure has at least 1.5 image pixels per displayed pixel."""
    base, _, _ = site
    page, _ = _open(browser, f"{base}/{name}.html")
    try:
        ratios = page.evaluate(_RATIOS_JS, ".flowlib-player img.flowlib-frame, .cell_output img")
        assert ratios, "no figure"
        blurry = [r for r in ratios if r["natural"] < MIN_PIXEL_RATIO * r["shown"] - 1]
        assert not blurry, f"drawn at less than {MIN_PIXEL_RATIO}x their displayed width: {blurry}"
        square = page.evaluate(
            "() => [...document.querySelectorAll('.flowlib-player')].map(e => e.getBoundingClientRect().width)"
        )
        assert all(w <= 561 for w in square), f"players wider than 560 px: {square}"
    finally:
        page.close()


@pytest.mark.parametrize("name", NOTEBOOK_PAGES)
def test_chapter_widgets_in_the_browser(site, browser, name):
    base, _, _ = site
    page, errors = _open(browser, f"{base}/{name}.html")
    try:
        # theorem-like blocks and exercises render, numbered per chapter ("Exercise 8.4")
        assert page.locator("div.proof").count() >= 1
        assert page.locator("div.exercise, .exercise").count() >= 3
        titles = page.locator("div.exercise .admonition-title, .exercise p.admonition-title").all_inner_texts()
        assert titles and all(re.match(r"Exercise \d+\.\d+", t.strip()) for t in titles), titles[:3]
        # a solution dropdown starts closed and opens on click (sphinx-togglebutton)
        solution = page.locator("div.solution.dropdown").first
        solution.scroll_into_view_if_needed()
        body = solution.locator(":scope > :not(.admonition-title)").first
        assert not body.is_visible(), "the solution should start hidden"
        toggle = solution.locator("button.toggle-button")
        (toggle if toggle.count() else solution.locator(".admonition-title")).first.click()
        body.wait_for(state="visible", timeout=5_000)
        # every animation plays and pauses, and steps one frame on "Next frame"
        players = page.locator("div.flowlib-animation")
        assert players.count() >= 1
        for i in range(players.count()):
            player = players.nth(i)
            player.scroll_into_view_if_needed()
            img = player.locator("img.flowlib-frame")
            assert (img.get_attribute("alt") or "").strip()
            assert len(player.evaluate("e => e.outerHTML").encode()) <= MAX_PLAYER_HTML_BYTES
            slider = player.locator("input[data-depth]")
            player.locator("button[title='First frame']").click()
            assert int(slider.input_value()) == 0
            player.locator("button[data-play]").click()
            page.wait_for_function("s => Number(s.value) >= 2", arg=slider.element_handle(), timeout=10_000)
            player.locator("button[data-play]").click()  # pause
            paused = int(slider.input_value())
            page.wait_for_timeout(400)
            assert int(slider.input_value()) == paused, "the animation did not pause"
            player.locator("button[title='First frame']").click()
            before = img.get_attribute("src")
            player.locator("button[title='Next frame']").click()
            assert int(slider.input_value()) == 1 and img.get_attribute("src") != before
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
                img.loading = "eager";
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


def _set_control(page, control, index: int) -> None:
    if control.evaluate("e => e.tagName") == "SELECT":
        control.select_option(index=index)
    else:
        control.evaluate("(e, i) => { e.value = String(i); e.dispatchEvent(new Event('input')); }", index)


@pytest.mark.parametrize("name", EXPLORER_PAGES)
def test_explorers_work_without_a_kernel(site, browser, name):
    """viz.explore's static view: labelled for a reader, each control changes the picture, no kernel."""
    base, _, server = site
    start = len(server.log)
    page, errors = _open(browser, f"{base}/{name}.html")
    try:
        explorers = page.locator("div.flowlib-explorer")
        n = explorers.count()
        assert n >= 1, "no kernel-free explorer on the page (is text/html preferred in _config.yml?)"
        assert page.locator(".jupyter-widgets, .widget-subarea").count() == 0
        for i in range(n):
            ex = explorers.nth(i)
            ex.scroll_into_view_if_needed()
            assert len(ex.evaluate("e => e.outerHTML").encode()) <= MAX_PLAYER_HTML_BYTES
            img = ex.locator("img.flowlib-frame")
            assert img.count() == 1 and (img.get_attribute("alt") or "").strip()
            img.evaluate("e => e.decode()")
            assert img.evaluate("e => e.naturalWidth") > 0, "the opening frame did not load"
            controls = ex.locator("input[data-param], select[data-param]")
            assert controls.count() >= 1
            for j in range(controls.count()):
                c = controls.nth(j)
                label = ex.locator(f"label[for='{c.get_attribute('id')}']")
                text = label.inner_text()
                assert label.count() == 1 and "=" in text
                assert "_" not in text.split("=")[0], f"a Python name as a label: {text!r}"
                # a slider moves with the arrow keys, and the picture is the frame of the controls' state
                if c.evaluate("e => e.tagName") != "SELECT":
                    c.focus()
                    value = int(c.input_value())
                    page.keyboard.press("ArrowRight")
                    assert int(c.input_value()) == value + 1, "the arrow key did not move the slider"
                    assert img.get_attribute("src") == ex.evaluate(_FRAME_JS)
                    assert label.inner_text() != text
                # every control changes the picture at some setting (the others at their first value)
                n_values = int(c.evaluate("e => e.tagName === 'SELECT' ? e.options.length : Number(e.max) + 1"))
                _set_control(page, c, 0)
                first = img.get_attribute("src")
                changed = False
                for v in range(1, n_values):
                    _set_control(page, c, v)
                    assert img.get_attribute("src") == ex.evaluate(_FRAME_JS)
                    changed = changed or img.get_attribute("src") != first
                assert changed, f"control {text.split('=')[0].strip()!r} never changes the picture"
                _set_control(page, c, 0)
            depth = ex.locator("input[data-depth]")
            depth.focus()
            page.keyboard.press("End")
            value, before_src, before_alt = int(depth.input_value()), img.get_attribute("src"), img.get_attribute("alt")
            page.keyboard.press("ArrowLeft")
            assert int(depth.input_value()) == value - 1
            assert img.get_attribute("src") == ex.evaluate(_FRAME_JS) and img.get_attribute("alt") != before_alt
            page.keyboard.press("Home")  # (the last two depths may look alike once the tokens have settled)
            assert int(depth.input_value()) == 0
            assert img.get_attribute("src") == ex.evaluate(_FRAME_JS) != before_src, "the time slider did not move"
            assert ex.locator("button[data-play]").count() == 1
            if i == 0:
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.keyboard.press("End")
                img.evaluate("e => e.decode()")
                ex.screenshot(path=str(SCREENSHOTS / f"explorer-{Path(name).name}.png"))
        served = sum(size for _, _, size in server.log[start:])
        print(f"{name}: {n} explorer(s); {served / 1e6:.2f} MB served with every control moved")
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
    shots = [
        ("intro", False, 1440, "landing-1440"),
        ("intro", False, 390, "landing-390"),
        (NOTEBOOK_PAGES[0], False, None, Path(NOTEBOOK_PAGES[0]).name),
        (NOTEBOOK_PAGES[0], True, None, Path(NOTEBOOK_PAGES[0]).name + "-dark"),
        (NOTEBOOK_PAGES[-1], False, None, Path(NOTEBOOK_PAGES[-1]).name),
    ]
    brightness = {}
    for name, dark, width, stem in shots:
        page, _ = _open(browser, f"{base}/{name}.html", dark=dark, width=width)
        out = SCREENSHOTS / f"{stem}.png"
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
    # the landing page: a picture, a way in, the chapters linked in its body
    page, _ = _open(browser, f"{base}/intro.html", width=390)
    try:
        hero = page.locator("article img.tim-hero")
        assert hero.count() == 1 and hero.evaluate("e => e.decode().then(() => e.naturalWidth)") > 0
        assert page.locator("article a.tim-start").count() == 1
        chapter_links = {
            h.split("#")[0].rsplit("/", 1)[-1]
            for h in page.eval_on_selector_all("article a[href]", "els => els.map(e => e.href)")
        }
        assert {Path(p).name + ".html" for p in NOTEBOOK_PAGES} <= chapter_links
    finally:
        page.close()
    # chapter 8's masked attention section (a page that once showed raw LaTeX)
    ch8 = next((p for p in NOTEBOOK_PAGES if "08_" in p), None)
    if ch8:
        page, _ = _open(browser, f"{base}/{ch8}.html", width=1440)
        try:
            found = page.evaluate(
                """async () => {
                  const h = [...document.querySelectorAll('article h2, article h3')]
                    .find(e => /masked attention/i.test(e.textContent));
                  if (!h) return false;
                  for (let i = 0; i < 3; i++) {  // images that load above it move it: settle, then re-scroll
                    h.scrollIntoView({block: 'start'});
                    window.scrollBy(0, -70);
                    await new Promise(r => setTimeout(r, 700));
                    await Promise.all([...document.images].filter(im => {
                      const r = im.getBoundingClientRect();
                      return r.bottom > 0 && r.top < innerHeight;
                    }).map(im => im.decode().catch(() => null)));
                  }
                  return true;
                }"""
            )
            if found:
                page.screenshot(path=str(SCREENSHOTS / "ch08-masked-attention.png"))
        finally:
            page.close()
