"""The API reference (``api/``) and the runnable examples in flowlib's docstrings.

* Every public function and class of the core modules has an *Examples* section, and every example runs
  and prints what it shows (the doctests, run here, so ``make test`` runs them).
* The API pages document every one of them (Sphinx autodoc, NumPy docstrings through napoleon) and build
  with ``-W``: a docstring that Sphinx cannot render fails here in seconds, not only in the book build.
* ``_ext/flowlib_xref.py`` turns the chapters' inline mentions (``fl.simulate``, ``viz.plot_tokens``...)
  into links to those pages, and leaves everything else alone.

"Public" means the objects of ``flowlib.__all__``, of the ``__all__`` of every submodule listed there, and of
``flowlib.fields``, ``flowlib.integrate`` and ``flowlib.viz``, functions and classes (not constants). The chapter
modules still being written (``CHAPTER_MODULES_IN_PROGRESS``) are left out until they are finished.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import matplotlib
import pytest

import flowlib

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_MODULES_IN_PROGRESS: set[str] = set()
EXTRA_NAMESPACES = ("flowlib.fields", "flowlib.integrate", "flowlib.viz")
# the deprecated aliases of 0.2's chapter modules (flowlib.approximation -> flowlib.book.approximation)
DEPRECATED_ALIASES = {f"flowlib.{name}" for name in flowlib._BOOK_MODULES}
CORE_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(flowlib.__path__, "flowlib.")
    if m.name.split(".")[-1] not in CHAPTER_MODULES_IN_PROGRESS and m.name not in DEPRECATED_ALIASES
)


def public_objects() -> dict[str, object]:
    """Public functions and classes by qualified name, each object once (first name wins)."""
    found: dict[int, tuple[str, object]] = {}

    def add(name, obj):
        if inspect.isfunction(obj) or inspect.isclass(obj):
            found.setdefault(id(obj), (name, obj))

    namespaces = []

    def walk(module):
        namespaces.append(module)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType) and obj.__name__.startswith(module.__name__ + "."):
                if name not in CHAPTER_MODULES_IN_PROGRESS:
                    walk(obj)

    walk(flowlib)
    namespaces += [importlib.import_module(n) for n in EXTRA_NAMESPACES]
    for module in namespaces:
        for name in module.__all__:
            obj = getattr(module, name)
            if not isinstance(obj, types.ModuleType):
                add(f"{module.__name__}.{name}", obj)
    return dict(found.values())


def test_every_public_object_has_an_examples_section():
    objects = public_objects()
    missing = [
        name
        for name, obj in objects.items()
        if not re.search(r"^\s*Examples\n\s*-{8}\n\s*>>> ", inspect.getdoc(obj) or "", re.M)
    ]
    print(f"{len(objects)} public objects, {len(objects) - len(missing)} with a doctest")
    assert len(objects) >= 100
    assert not missing, f"no Examples section with a doctest: {missing}"


@pytest.mark.parametrize("module", CORE_MODULES)
def test_doctests(module, monkeypatch):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in finder.find(mod, module):
        runner.run(test, out=report.append)
    plt.close("all")
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)[-6000:]


def _documented_names() -> tuple[set[str], set[str]]:
    """Names the API pages document (autofunction/autoclass/autodata under their currentmodule) and the
    modules they document whole (automodule :members:)."""
    names, modules = set(), set()
    for page in sorted((ROOT / "api").glob("*.md")):
        current = None
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if m := re.match(r"\.\. currentmodule:: (\S+)", line):
                current = m.group(1)
            elif m := re.match(r"\.\. auto(function|class|data):: (\S+)", line):
                name = m.group(2)
                names.add(name if name.startswith("flowlib.") else f"{current}.{name}")
            elif m := re.match(r"\.\. automodule:: (\S+)", line):
                if i + 1 < len(lines) and ":members:" in lines[i + 1]:
                    modules.add(m.group(1))
    return names, modules


def test_api_pages_document_every_public_object_and_are_in_the_toc():
    import yaml

    names, modules = _documented_names()
    by_identity = {}
    for name in names:
        module, _, attr = name.rpartition(".")
        by_identity[id(getattr(importlib.import_module(module), attr))] = name
    missing = [
        name
        for name, obj in public_objects().items()
        if id(obj) not in by_identity and obj.__module__ not in modules and name.rpartition(".")[0] not in modules
    ]
    assert not missing, f"not in any api/ page: {missing}"
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    reference = next(p for p in toc["parts"] if p["caption"] == "Reference")
    api = next(c for c in reference["chapters"] if c["file"] == "api/index")
    listed = {s["file"] for s in api["sections"]}
    assert listed == {f"api/{p.stem}" for p in (ROOT / "api").glob("*.md") if p.stem != "index"}
    for area in ("fields", "integrators", "measures", "gaussian", "pde", "stability", "viz", "devices"):
        assert f"api/{area}" in listed


CHAPTER_PAGE = """# A chapter

Mentions: `fl.simulate`, `flowlib.SoftmaxAttention`, `fl.simulate(field, x0, t1=1.0)`, `fl.pde.make_grid`,
`viz.plot_tokens`, `fl.SoftmaxAttention.replace`.

Left alone: `fl.no_such_function`, `field.beta`, `simulate`, `x.simulate`.

```python
fl.simulate(field, x0, t1=1.0, n_steps=8)  # code blocks are not touched
```
"""


@pytest.fixture(scope="module")
def api_site(tmp_path_factory):
    """The real api/ pages plus a chapter page, built with Sphinx -W (warnings are errors)."""
    tmp = tmp_path_factory.mktemp("apidocs")
    src = tmp / "src"
    shutil.copytree(ROOT / "api", src / "api")
    pages = sorted(p.stem for p in (ROOT / "api").glob("*.md"))
    (src / "conf.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / '_ext')!r})\n"
        "extensions = ['myst_parser', 'sphinx.ext.autodoc', 'sphinx.ext.napoleon', 'sphinx.ext.mathjax',"
        " 'flowlib_xref']\n"
        "myst_enable_extensions = ['dollarmath', 'amsmath']\n"
        "napoleon_google_docstring = False\n"
        "napoleon_numpy_docstring = True\n"
        "autodoc_member_order = 'bysource'\n"
    )
    (src / "chapter.md").write_text(CHAPTER_PAGE)
    toctree = "\n".join(["chapter", *[f"api/{p}" for p in pages]])
    (src / "index.md").write_text(f"# Book\n\n```{{toctree}}\n{toctree}\n```\n")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(src), str(tmp / "out")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp / "out"


def test_api_pages_build_without_warnings_and_show_examples(api_site):
    for area in ("fields", "integrators", "measures", "gaussian", "pde", "stability", "viz", "devices"):
        html = (api_site / "api" / f"{area}.html").read_text()
        assert 'id="flowlib.' in html, area
        assert "Examples" in html and "&gt;&gt;&gt;" in html, area
    fields = (api_site / "api" / "fields.html").read_text()
    assert 'id="flowlib.SoftmaxAttention"' in fields and 'id="flowlib.softmax_average"' in fields


def test_chapter_mentions_link_to_the_api_reference(api_site):
    html = (api_site / "chapter.html").read_text()
    link = re.compile(r'<a class="flowlib-api[^"]*" href="([^"]+)"[^>]*><code[^>]*>(.*?)</code>')
    targets = {re.sub(r"<[^>]+>", "", m.group(2)): m.group(1) for m in link.finditer(html)}
    assert targets["fl.simulate"] == "api/integrators.html#flowlib.simulate"
    assert targets["fl.simulate(field, x0, t1=1.0)"] == "api/integrators.html#flowlib.simulate"
    assert targets["flowlib.SoftmaxAttention"] == "api/fields.html#flowlib.SoftmaxAttention"
    assert targets["fl.pde.make_grid"] == "api/pde.html#flowlib.make_grid"  # the same object, another path
    assert targets["viz.plot_tokens"] == "api/viz.html#flowlib.viz.plot_tokens"
    assert targets["fl.SoftmaxAttention.replace"].startswith("api/fields.html#flowlib.")
    assert len(targets) == 6
    for plain in ("fl.no_such_function", "field.beta", "x.simulate"):
        assert plain in html and plain not in targets
    # the code block keeps its text and gets no link
    assert html.count('class="flowlib-api') == 6
