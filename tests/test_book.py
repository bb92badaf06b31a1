"""Build the real Jupyter Book (``jupyter-book build -W --keep-going``) and check the site.

Marked ``book``; part of README's test command. The build executes every chapter notebook, so
this is also the test that the chapters run, and run fast enough (2 minutes each on the CPU).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.book

CHAPTERS = sorted(p.relative_to(ROOT).with_suffix("") for p in (ROOT / "chapters").rglob("*.ipynb"))
#: owner/name of the repository (``repository.url`` in _config.yml, the one place it is written)
REPO = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
REPO = REPO.removeprefix("https://github.com/")
MAX_CHAPTER_SECONDS = 60  # per chapter (DEVELOPERS.md); chapter 10, the trained networks: 120
CHAPTER_BUDGET = {"10_trained_transformers": 120}
#: A chapter's HTML, now that the players' frames are image files of their own (_ext/site_assets.py).
MAX_PAGE_BYTES = 1_000_000


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
    slow = {k: v for k, v in times.items() if v > CHAPTER_BUDGET.get(k, MAX_CHAPTER_SECONDS)}
    assert not slow, f"chapters over their budget ({MAX_CHAPTER_SECONDS} s; {CHAPTER_BUDGET}): {slow}"


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
    assert 'class="flowlib-player flowlib-animation"' in html, "no animation player"
    imgs = re.findall(r"<img [^>]*>", html)
    figures = [i for i in imgs if "_images/" in i]
    assert len(figures) >= 2, "expected a static figure and an animation"
    assert all(re.search(r'alt="[^"]+"', i) for i in imgs), "image without alt text"
    # frames are image files loaded when shown, not base64 in the page; nothing from a CDN
    assert "data:image/png;base64" not in html and "font-awesome" not in html and "fontawesome.js" not in html
    assert all('loading="lazy"' in i for i in figures)
    assert "Traceback" not in html
    # numbered per chapter: "Figure 5.2", "Exercise 8.4"
    number = int(re.match(r"(\d+)_", chapter.name).group(1))
    assert re.search(rf'<span class="caption-number">Exercise {number}\.1 ', html)
    assert not re.search(r'<span class="caption-number">(Exercise|Theorem|Figure) \d+ ', html)
    # launch buttons point at the configured repository
    assert f"colab.research.google.com/github/{REPO}/blob/main/{chapter.as_posix()}.ipynb" in html
    assert "launch-order.js" in html  # puts Colab first in the launch menu


def test_intro_about_results_and_references(built):
    html_dir, _ = built
    intro = (html_dir / "intro.html").read_text()
    assert "Tokens in Motion" in intro and "hero.svg" in intro and "Start reading" in intro
    for chapter in CHAPTERS:  # the landing page links every chapter
        assert f'href="{chapter.as_posix()}.html' in intro, chapter
    about = (html_dir / "about.html").read_text()
    assert "withdrawn" in about  # the note on the old title lives on the About page
    results = (html_dir / "results.html").read_text()
    for chapter in CHAPTERS:
        number = int(re.match(r"(\d+)_", chapter.name).group(1))
        assert re.search(rf"Exercise {number}\.1</strong>", results), f"no exercises of chapter {number} listed"
    assert re.search(r"Theorem \d+\.\d+</strong></a> \(?\w", results)  # numbered, with a title
    bib = (html_dir / "bibliography.html").read_text()
    for key in ["Castin", "Geshkovski", "Sinkformers", "Fein-Ashley"]:
        assert key in bib
    assert (html_dir / "index.html").exists()


def test_the_repository_url_is_written_once():
    """The repository is named after the book, in _config.yml; everything else derives from it."""
    import sys

    assert REPO == "tokens-in-motion/tokens-in-motion"
    sys.path.insert(0, str(ROOT / "tools"))
    import setup_cell

    assert setup_cell.repository() == f"https://github.com/{REPO}"
    assert f"git+https://github.com/{REPO}@v" in setup_cell.fallback()
    stale = [
        p.relative_to(ROOT).as_posix()
        for pattern in ("*.md", "*.yml", "*.toml", "_ext/*.py", "_static/*", "binder/*", "tools/*.py")
        for p in ROOT.glob(pattern)
        if p.is_file() and "flowing-through-layers/flowing-through-layers" in p.read_text(errors="replace")
    ]
    assert not stale, f"the old repository name in {stale}"
    import tomllib

    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert all(u.startswith(f"https://github.com/{REPO}") for u in urls.values()), urls


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
