"""flowlib 0.3's layout: a curated, lazily loaded core, the book layer, and deprecated aliases for moved names."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import flowlib

ROOT = Path(__file__).resolve().parents[1]
BOOK_MODULES = flowlib._BOOK_MODULES


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_the_top_level_is_curated():
    names = [n for n in flowlib.__all__ if n != "__version__" and n not in flowlib._SUBMODULES]
    assert 40 <= len(names) <= 60, len(names)
    for name in flowlib.__all__:
        getattr(flowlib, name)  # every advertised name resolves
    assert not set(BOOK_MODULES) & set(flowlib.__all__)


def test_import_flowlib_loads_neither_torch_nor_matplotlib_until_used():
    out = _run(
        "import sys; import flowlib as fl; a = ('torch' in sys.modules, 'matplotlib' in sys.modules); "
        "fl.SoftmaxAttention; b = ('torch' in sys.modules, 'matplotlib' in sys.modules); "
        "fl.viz; c = 'matplotlib' in sys.modules; print(a, b, c)"
    )
    assert out == "(False, False) (True, False) True", out


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        flowlib.no_such_thing  # noqa: B018
    with pytest.raises(AttributeError, match="no_such_thing"):
        flowlib.book.no_such_thing  # noqa: B018


@pytest.mark.parametrize("name", BOOK_MODULES)
def test_old_module_paths_are_deprecated_aliases_of_the_book_layer(name):
    new = importlib.import_module(f"flowlib.book.{name}")
    code = (
        "import warnings, importlib; warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        f"    old = importlib.import_module('flowlib.{name}')\n"
        f"new = importlib.import_module('flowlib.book.{name}')\n"
        "print(old is new, [str(x.message) for x in w if issubclass(x.category, DeprecationWarning)])"
    )
    out = _run(code)
    assert out.startswith("True [") and f"flowlib.book.{name}" in out, out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert getattr(flowlib, name) is new
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_names_that_left_the_top_level_warn_and_resolve():
    for name, where in flowlib._MOVED_NAMES.items():
        with pytest.warns(DeprecationWarning, match=f"flowlib.{where}.{name}"):
            value = getattr(flowlib, name)
        assert value is getattr(importlib.import_module(f"flowlib.{where}"), name)


def test_the_core_never_imports_the_book_layer():
    """Layering: flowlib/book may import the core, never the reverse (and no core file imports a chapter module)."""
    offenders = []
    for path in (ROOT / "flowlib").rglob("*.py"):
        rel = path.relative_to(ROOT / "flowlib")
        if rel.parts[0] == "book" or rel.name in {f"{m}.py" for m in BOOK_MODULES} and len(rel.parts) == 1:
            continue
        if rel == Path("__init__.py"):  # the package root names the book layer (lazily), nothing else does
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = ("." * node.level) + (node.module or "")
                names = [a.name for a in node.names]
                if "book" in mod.split(".") or any(n in BOOK_MODULES for n in names) and mod in {".", ".."}:
                    offenders.append(f"{rel}: from {mod} import {names}")
    assert not offenders, offenders
