"""Strip outputs and execution counts from notebooks in place: ``python tests/strip_outputs.py chapters``."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def has_outputs(cell) -> bool:
    """True for a code cell that carries outputs or an execution count."""
    return cell.cell_type == "code" and bool(cell.outputs or cell.execution_count is not None)


def strip(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if has_outputs(cell):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(nb, path)
    return changed


if __name__ == "__main__":
    for root in sys.argv[1:] or ["chapters"]:
        for p in sorted(Path(root).rglob("*.ipynb")):
            if ".ipynb_checkpoints" not in p.parts and strip(p):
                print("stripped", p)
