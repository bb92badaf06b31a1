"""Build the real Jupyter Book (``jupyter-book build -W --keep-going``) and check the site.

Marked ``book``; part of README's test command. The build executes every chapter notebook, so
this is also the test that the chapters run, and run fast enough (2 minutes each on the CPU).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.book

CHAPTERS = sorted(p.relative_to(ROOT).with_suffix("") for p in (ROOT / "chapters").rglob("*.ipynb"))
MAX_CHAPTER_SECONDS = 120
MAX_PAGE_BYTES = 3_000_000


@pytest.fixture(scope="module")
def built(book_build):
    return book_build


def test_build_has_no_warnings(built):
    _, log = built
    assert "WARNING" not in log.replace("[IPKernelApp] WARNING", "")


def test_every_chapter_executes_within_budget(built):
    _, log = built
    times = {Path(p).stem: float(t) for p, t in re.findall(r"(\S+\.ipynb): Executed notebook in ([\d.]+) seconds", log)}
    assert set(times) == {c.name for c in CHAPTERS}, times
    slow = {k: v for k, v in times.items() if v > MAX_CHAPTER_SECONDS}
    assert not slow, f"chapters over {MAX_CHAPTER_SECONDS}s: {slow}"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda c: c.name)
def test_chapter_page(built, chapter):
    html_dir, _ = built
    page = html_dir / chapter.with_suffix(".html")
    html = page.read_text()
    assert page.stat().st_size < MAX_PAGE_BYTES
    assert re.search(r'class="[^"]*proof (theorem|proposition)', html), "no theorem block"
    assert re.search(r'class="[^"]*exercise', html), "no exercise"
    assert re.search(r'class="[^"]*solution[^"]*dropdown|class="[^"]*dropdown[^"]*solution', html), (
        "no dropdown solution"
    )
    assert "anim-buttons" in html or "animation" in html, "no animation player"
    imgs = re.findall(r"<img [^>]*>", html)
    figures = [i for i in imgs if "_images/" in i or "data:image" in i or "_anim_img" in i]
    assert len(figures) >= 2, "expected a static figure and an animation"
    assert all(re.search(r'alt="[^"]+"', i) for i in imgs), "image without alt text"
    assert "Traceback" not in html
    # launch buttons point at the configured repository
    assert "colab.research.google.com/github/flowing-through-layers/flowing-through-layers" in html
    assert "launch-order.js" in html  # puts Colab first in the launch menu


def test_intro_and_references(built):
    html_dir, _ = built
    intro = (html_dir / "intro.html").read_text()
    assert "Flowing Through Layers" in intro and "withdrawn" in intro
    bib = (html_dir / "bibliography.html").read_text()
    for key in ["Castin", "Geshkovski", "Sinkformers", "Fein-Ashley"]:
        assert key in bib
    assert (html_dir / "index.html").exists()
