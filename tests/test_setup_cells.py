"""The chapters' setup cell is one template, ``tools/setup_cell.py``, written into the notebooks by
``tools/sync_setup_cells.py`` (``make setup-cells``).

It installs the pinned release ``tokens-in-motion[notebooks]==<flowlib.__version__>`` when flowlib is missing
(Colab), nothing in a development checkout (flowlib importable), and whatever ``FLOWLIB_REQUIREMENT`` names
when that environment variable is set (a fork; the Colab test points it at this checkout).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import setup_cell  # noqa: E402
import sync_setup_cells  # noqa: E402

import flowlib  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").rglob("*.ipynb"))
ASSIGNMENTS = sorted((ROOT / "assignments").glob("*.ipynb"))


def _first_code_cell(path: Path) -> str:
    return next(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")


def test_the_template_pins_this_version_of_the_distribution():
    assert setup_cell.version() == flowlib.__version__
    assert setup_cell.requirement() == f"tokens-in-motion[notebooks]=={flowlib.__version__}"
    cell = setup_cell.chapter_cell()
    assert f'"tokens-in-motion[notebooks]=={flowlib.__version__}"' in cell
    assert "git+" not in cell.replace("git+https://github.com/<you>/<fork>", "")  # no repository URL to edit
    ast.parse(cell.replace("%matplotlib inline", "pass"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_starts_with_the_template(path):
    """Fails until ``make setup-cells`` has written the current template into the chapters."""
    assert _first_code_cell(path) == setup_cell.chapter_cell(), f"{path.name}: run `make setup-cells`"
    # collapsed on the website (Jupyter Book's hide-input toggle), still a plain cell in Jupyter and Colab
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "hide-input" in first.metadata.get("tags", []), f"{path.name}: run `make setup-cells`"


@pytest.mark.parametrize("path", ASSIGNMENTS, ids=lambda p: p.name)
def test_every_assignment_installs_with_the_template(path):
    src = _first_code_cell(path)
    assert setup_cell.assignment_block() in src and "otter.Notebook(" in src, f"{path.name}: run `make setup-cells`"


def _requirement_and_install(env: dict[str, str], flowlib_importable: bool) -> tuple[str, bool]:
    """Run the chapter cell's install logic with pip replaced by a recorder: what would it install?"""
    cell = setup_cell.chapter_cell()
    logic = cell.split("import torch", 1)[0]  # the imports and the install, not the rest (torch, viz, device)
    probe = (
        "import importlib.util, os, subprocess, sys\n"
        f"os.environ.clear(); os.environ.update({env!r})\n"
        f"importlib.util.find_spec = lambda name: object() if {flowlib_importable!r} else None\n"
        "calls = []\n"
        "subprocess.run = lambda args, check: calls.append(args)\n"
        + logic
        + "\nprint(repr((FLOWLIB_REQUIREMENT, bool(calls) and calls[0][-1] == FLOWLIB_REQUIREMENT)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return ast.literal_eval(out.strip())


def test_colab_gets_the_pinned_release_a_checkout_nothing_a_fork_its_own():
    pinned = f"tokens-in-motion[notebooks]=={flowlib.__version__}"
    assert _requirement_and_install({}, flowlib_importable=False) == (pinned, True)  # Colab
    assert _requirement_and_install({}, flowlib_importable=True) == (pinned, False)  # development checkout
    fork = "tokens-in-motion[notebooks] @ git+https://github.com/someone/fork"
    assert _requirement_and_install({"FLOWLIB_REQUIREMENT": fork}, flowlib_importable=False) == (fork, True)


def test_sync_script_writes_only_the_setup_cell_and_is_idempotent(tmp_path):
    (tmp_path / "assignments").mkdir()
    chapter = tmp_path / CHAPTERS[0].name
    assignment = tmp_path / "assignments" / ASSIGNMENTS[0].name
    for src, dst in ((CHAPTERS[0], chapter), (ASSIGNMENTS[0], assignment)):
        nb = nbformat.read(src, as_version=4)
        code = next(c for c in nb.cells if c.cell_type == "code")
        code.source = code.source.replace("tokens-in-motion[notebooks]==", "tokens-in-motion[notebooks]==0.0.")
        nbformat.write(nb, dst)
    before = [nbformat.read(p, as_version=4) for p in (chapter, assignment)]
    assert sync_setup_cells.main(["--check", str(chapter), str(assignment)]) == 1
    assert sync_setup_cells.main([str(chapter), str(assignment)]) == 0
    assert sync_setup_cells.main(["--check", str(chapter), str(assignment)]) == 0  # nothing left to change
    after = [nbformat.read(p, as_version=4) for p in (chapter, assignment)]
    assert _first_code_cell(chapter) == setup_cell.chapter_cell()
    assert setup_cell.assignment_block() in _first_code_cell(assignment)
    for old, new in zip(before, after):
        assert len(old.cells) == len(new.cells)
        first = next(i for i, c in enumerate(old.cells) if c.cell_type == "code")
        assert [c for i, c in enumerate(old.cells) if i != first] == [c for i, c in enumerate(new.cells) if i != first]
