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
    assert 'class="anim-buttons"' in html, "no animation player (matplotlib's JavaScript controls)"
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
    assert "Tokens in Motion" in intro and "withdrawn" in intro  # the book's own title, and the note on the old one
    bib = (html_dir / "bibliography.html").read_text()
    for key in ["Castin", "Geshkovski", "Sinkformers", "Fein-Ashley"]:
        assert key in bib
    assert (html_dir / "index.html").exists()


@pytest.mark.parametrize("hide", [False, True])
def test_student_edition_hides_gated_and_plain_solutions(tmp_path, hide):
    """``hide_solutions`` (``make book-student``) with both kinds of solution, on a one-page Sphinx project.

    sphinx-exercise alone crashes on a gated solution when hiding, and would leave its body on the page;
    ``_ext/site_fixes.py`` removes it. (The whole student book takes minutes to build; this takes seconds.)
    """
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / '_ext')!r})\n"
        "extensions = ['myst_parser', 'sphinx_exercise', 'site_fixes']\n"
        "myst_enable_extensions = ['colon_fence']\n"
        f"hide_solutions = {hide}\n"
    )
    (src / "index.md").write_text(
        "# Page\n\n:::{exercise}\n:label: ex1\nAdd.\n:::\n\n"
        ":::{solution} ex1\nPLAIN_SOLUTION_TEXT\n:::\n\n"
        ":::{exercise}\n:label: ex2\nCode it.\n:::\n\n"
        "```{solution-start} ex2\n```\nGATED_SOLUTION_TEXT\n\n```python\nx = 42  # GATED_SOLUTION_CODE\n```\n\n"
        "```{solution-end}\n```\n\nAFTER_TEXT\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(src), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tmp_path / "out" / "index.html").read_text()
    assert "AFTER_TEXT" in html and "Code it." in html
    for secret in ("PLAIN_SOLUTION_TEXT", "GATED_SOLUTION_TEXT", "GATED_SOLUTION_CODE"):
        assert (secret in html) != hide, secret
