"""The student edition of the book has no solution anywhere (``make book-student``; issue 24).

The fast tests (markers ``assignments`` and ``book``) build a one-chapter book with the student configuration of
``assignments/student_edition.py`` (plain and gated solutions, prose and code, secret words in each), and search every
file of the site: pages, search index, ``_sources``, notebooks. The slow test builds the whole student edition as
``make book-student`` does and searches it for every solution of every chapter.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "assignments"))

import student_edition  # noqa: E402

SECRETS = ("PLAINSOLUTIONWORD", "GATEDSOLUTIONWORD", "GATEDSOLUTIONCODE")
CHAPTER = [
    ("markdown", "# A chapter\n\nSome prose that everyone may read, AFTERTEXTWORD."),
    (
        "markdown",
        ":::{exercise}\n:label: ex-one\nAdd one and one.\n:::\n\n:::{solution} ex-one\nThe answer is two, "
        "PLAINSOLUTIONWORD, because one and one make two in every ring of characteristic zero.\n:::",
    ),
    (
        "markdown",
        ":::{exercise}\n:label: ex-two\nCode it.\n:::\n\n```{solution-start} ex-two\n```\n"
        "GATEDSOLUTIONWORD: run the following cell and compare the printed value with your own computation.",
    ),
    ("code", "x = 42  # GATEDSOLUTIONCODE\nprint(x)"),
    ("markdown", "```{solution-end}\n```\n\nMore prose after the solutions."),
]


def _notebook(path: Path) -> None:
    cells = [nbformat.v4.new_markdown_cell(s) if t == "markdown" else nbformat.v4.new_code_cell(s) for t, s in CHAPTER]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _mini_book(tmp: Path, student: bool) -> Path:
    book = tmp / ("student" if student else "full")
    book.mkdir()
    for d in ("_ext", "_static", "_vendor"):
        shutil.copytree(ROOT / d, book / d)
    shutil.copy(ROOT / "references.bib", book / "references.bib")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    config["only_build_toc_files"] = True
    if student:
        config = student_edition.student_config(config)
    (book / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (book / "_toc.yml").write_text("format: jb-book\nroot: chapter\n")
    _notebook(book / "chapter.ipynb")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(book)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return book / "_build" / "html"


def _all_text(site: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in site.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("books")
    full = _mini_book(tmp, student=False)
    student = _mini_book(tmp, student=True)
    removed = student_edition.scrub(student)
    return full, student, removed


pytestmark = [pytest.mark.assignments, pytest.mark.book]


def test_the_full_edition_serves_the_solutions(sites):
    """The control: without the student configuration the secrets are in the site (pages and _sources)."""
    full, _, _ = sites
    text = _all_text(full)
    assert all(s in text for s in SECRETS) and (full / "_sources").is_dir()


def test_the_student_edition_has_no_solution_in_any_file(sites):
    _, student, removed = sites
    text = _all_text(student)
    assert "AFTERTEXTWORD" in text and "Add one and one." in text and "More prose after the solutions" in text
    for secret in SECRETS:
        assert secret not in text, secret
    assert not any(p.name == "_sources" for p in student.rglob("*")) and not list(student.rglob("*.ipynb"))
    page = (student / "chapter.html").read_text()
    for button in ("colab.research.google.com", "mybinder.org", ".ipynb", "_sources"):
        assert button not in page, button
    assert isinstance(removed, list)


def test_the_phrase_search_finds_a_leak_and_only_a_leak(sites, tmp_path):
    full, student, _ = sites
    nb = tmp_path / "chapter.ipynb"
    _notebook(nb)
    phrases = student_edition.solution_phrases([nb])
    assert phrases[str(nb)], "no solution phrase extracted"
    assert student_edition.leaks(full, phrases)  # the full edition leaks (pages and _sources)
    assert student_edition.leaks(student, phrases) == []


def test_student_configuration_turns_off_every_source_download():
    config = student_edition.student_config(yaml.safe_load((ROOT / "_config.yml").read_text()))
    conf = config["sphinx"]["config"]
    assert conf["hide_solutions"] is True and conf["html_copy_source"] is False
    assert config["html"]["use_download_button"] is False and config["html"]["use_repository_button"] is False
    assert config["launch_buttons"]["colab_url"] == "" and config["launch_buttons"]["binderhub_url"] == ""
    assert conf["html_theme_options"]["use_download_button"] is False
    assert "student_edition.py scrub" in (ROOT / "Makefile").read_text()
    assert "student_edition.py check" in (ROOT / "Makefile").read_text()


@pytest.mark.slow
def test_the_whole_student_edition_has_no_solution(tmp_path):
    """``make book-student`` in full (minutes): every solution phrase of every chapter is absent from the site."""
    cfg = tmp_path / "_config_student.yml"
    assert student_edition.main(["config", str(cfg)]) == 0
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "jupyter-book"),
            "build",
            str(ROOT),
            "--config",
            str(cfg),
            "--path-output",
            str(tmp_path / "student"),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    site = tmp_path / "student" / "_build" / "html"
    student_edition.scrub(site)
    assert student_edition.main(["check", str(site)]) == 0
