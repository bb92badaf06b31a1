"""Write the setup cell of tools/setup_cell.py into the notebooks (``make setup-cells``).

    python tools/sync_setup_cells.py            # every chapter and every assignment
    python tools/sync_setup_cells.py --check    # exit 1 and list the notebooks that differ; write nothing
    python tools/sync_setup_cells.py PATH ...   # only these notebooks

A chapter's first code cell is replaced by ``chapter_cell()``; in an assignment's first code cell, the block
from the ``if`` that checks for otter and flowlib up to ``os.makedirs(`` is replaced by ``assignment_block()``.
Only that cell's source changes: outputs, metadata and every other cell are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from setup_cell import ROOT, TAGS, assignment_block, chapter_cell  # noqa: E402


def notebooks() -> list[Path]:
    return sorted((ROOT / "chapters").rglob("*.ipynb")) + sorted((ROOT / "assignments").glob("*.ipynb"))


def is_assignment(path: Path) -> bool:
    return path.resolve().parent.name == "assignments"


def new_source(path: Path, source: str) -> str:
    if not is_assignment(path):
        return chapter_cell()
    lines = source.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.startswith("FLOWLIB_REQUIREMENT = ")), None)
    if start is not None:  # already synced once: the block starts at its comment
        while start > 0 and lines[start - 1].startswith("# "):
            start -= 1
        if start > 0 and lines[start - 1].startswith("#"):
            start -= 1
    else:
        start = next(i for i, ln in enumerate(lines) if ln.startswith("if importlib.util.find_spec("))
    end = next(i for i, ln in enumerate(lines) if ln.startswith("os.makedirs("))
    head = "".join(lines[:start])
    return head + assignment_block() + "".join(lines[end:])


#: Cell tags of a chapter's setup cell (setup_cell.TAGS): collapsed on the website (Jupyter Book's "click to
#: show" toggle) and its output removed there; Jupyter and Colab ignore them, so the cell stays visible and
#: runnable there.
HIDE_TAG = TAGS[0]


def sync(path: Path, write: bool = True) -> bool:
    """Bring one notebook's setup cell up to date; returns True if it changed (or would change)."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    src = new_source(path, cell.source)
    tags = list(cell.metadata.get("tags", []))
    missing = [] if is_assignment(path) else [t for t in TAGS if t not in tags]
    if src == cell.source and not missing:
        return False
    if write:
        cell.source = src
        if missing:
            cell.metadata["tags"] = tags + missing
        nbformat.write(nb, path)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", type=Path)
    ap.add_argument("--check", action="store_true", help="report, do not write")
    args = ap.parse_args(argv)
    changed = [p for p in (args.paths or notebooks()) if sync(p, write=not args.check)]
    for p in changed:
        print(("differs: " if args.check else "updated: ") + str(p))
    if not changed:
        print("every setup cell is up to date")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
