"""Hygiene of the chapter notebooks (fast; the book build itself is in test_book.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
import yaml
from strip_outputs import has_outputs

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").rglob("*.ipynb"))


def _toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


def test_every_chapter_is_in_the_toc_and_exists():
    files = _toc_files()
    assert CHAPTERS, "no chapter notebooks found"
    for nb in CHAPTERS:
        assert str(nb.relative_to(ROOT).with_suffix("")) in files
    for f in files:
        assert any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb")), f


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if has_outputs(cell)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run make strip"


def _setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


def test_setup_cell_is_identical_across_chapters():
    cells = {p.name: _setup_cell(p) for p in CHAPTERS}
    first = next(iter(cells.values()))
    assert "flowlib" in first and "default_device" in first
    assert all(src == first for src in cells.values()), "the first code cell differs between chapters"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_structure(path):
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "Learning goals" in text
    assert "{prf:theorem}" in text or "{prf:proposition}" in text
    assert text.count("{exercise}") >= 3
    assert text.count("{solution}") + text.count("{solution-start}") >= 3
    assert "animate_tokens" in code and "explore(" in code
    assert "assert " in code  # a coding exercise checked by an assertion
    assert "manual_seed(" not in code.replace("Generator().manual_seed(", "")  # no global seeds
    for cell in nb.cells:
        if cell.cell_type == "code" and "%" not in cell.source:
            ast.parse(cell.source)  # valid Python
        last = cell.source.rstrip().splitlines()[-1] if cell.cell_type == "code" and cell.source.strip() else ""
        if last == "fig" or last.startswith("viz.plot"):  # the cell displays a figure
            assert cell.metadata.get("mystnb", {}).get("image", {}).get("alt"), (
                f"figure without alt text in {path.name}"
            )
