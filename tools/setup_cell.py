"""The chapters' setup cell (and the assignments' install block): the one template, rendered by
``tools/sync_setup_cells.py`` (``make setup-cells``) into every chapter's first code cell.

What a reader gets:

* **Colab, or any Python without flowlib:** ``pip install "tokens-in-motion[notebooks]==<version>"``, the
  release this book was written against (``<version>`` is ``flowlib.__version__``, filled in when the cells
  are written, so bumping the version and running ``make setup-cells`` re-pins every chapter). When that
  release is not on PyPI (yet), the same version from the book's repository, its release tag
  ``v<version>`` (``tokens-in-motion[notebooks] @ git+<repository>@v<version>``). When both fail, one
  message says what failed and how to fix it (no pip log, no traceback).
* **A development checkout** (``make install``, ``pip install -e .``): flowlib is importable, so the cell
  installs nothing and the chapters run against the checkout.
* **A fork or a test** changes the one place, the environment variable ``FLOWLIB_REQUIREMENT`` (any pip
  requirement, e.g. ``tokens-in-motion[notebooks] @ git+https://github.com/<you>/<fork>``), or for a
  permanent change ``repository.url`` in ``_config.yml`` followed by ``make setup-cells``.

The repository's URL is read from ``_config.yml`` (``repository.url``), the one place it is written.
The cell also draws inline figures at twice their size (``retina``), so they stay crisp on the website.
On the website it is collapsed and its output removed (cell tags ``hide-input``, ``remove-output``).

Only the standard library is imported here (no torch), so the script and the tests read it cheaply.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST = "tokens-in-motion"  # flowlib's distribution name on PyPI (the import name is flowlib)
ENV_VAR = "FLOWLIB_REQUIREMENT"
REQUIREMENT = DIST + "[notebooks]=={version}"  # what a reader without flowlib installs
FALLBACK = DIST + "[notebooks] @ git+{repository}@v{version}"  # the release tag, when PyPI lacks the release
#: Cell tags of a chapter's setup cell: collapsed on the website, its output (the device line) removed.
TAGS = ("hide-input", "remove-output")


def repository() -> str:
    """``repository.url`` of ``_config.yml``, without a trailing slash (read without a YAML parser)."""
    text = (ROOT / "_config.yml").read_text()
    m = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*(\S+)", text, re.M)
    if not m:
        raise ValueError("_config.yml has no repository.url")
    return m.group(1).strip("\"'").rstrip("/")


_INSTALL = """\
# flowlib is on PyPI as tokens-in-motion: install the release this book was written against or, if PyPI
# does not have it, the same release from the book's repository. To install something else (a fork, a
# branch), set the environment variable {env_var} to a pip requirement.
FLOWLIB_REQUIREMENT = os.environ.get("{env_var}", "{requirement}")
FLOWLIB_FALLBACK = "{fallback}"
"""

_LOOP = """\
    _requirements = [FLOWLIB_REQUIREMENT] if "{env_var}" in os.environ else [FLOWLIB_REQUIREMENT, FLOWLIB_FALLBACK]
    for _requirement in _requirements:
        _pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", {extra}_requirement], capture_output=True, text=True)
        if _pip.returncode == 0:
            break
    else:
        raise SystemExit(
            f"Could not install flowlib ({{' or '.join(_requirements)}}): "
            f"{{(_pip.stderr.strip().splitlines() or ['pip failed'])[-1]}}\\n"
            "Fix: check the internet connection, or set {env_var} to a requirement pip can install "
            '(e.g. %env {env_var}=tokens-in-motion[notebooks] @ git+https://github.com/<you>/<fork>), '
            "then run this cell again."
        )
"""

CHAPTER_TEMPLATE = """\
# Setup (identical in every chapter; written by `make setup-cells` from tools/setup_cell.py): install
# flowlib if missing (e.g. on Colab), draw figures crisp, pick a device. flowlib sets no global state.
import importlib.util
import os
import subprocess
import sys

{install}if importlib.util.find_spec("flowlib") is None:  # a development checkout (pip install -e .) skips this
{loop}
import torch

import flowlib as fl

%matplotlib inline
%config InlineBackend.figure_formats = ["retina"]
from flowlib import viz

device = fl.default_device()
print(f"flowlib {{fl.__version__}} on {{fl.describe_device(device)}}")"""

# The assignments' first cell keeps its own head and tail (otter's grader); this block replaces the lines from
# the comment above `FLOWLIB_REQUIREMENT =` (or the `if` that checks for otter and flowlib) up to, not
# including, `os.makedirs(`.
ASSIGNMENT_BLOCK = """\
{install}if importlib.util.find_spec("otter") is None or importlib.util.find_spec("flowlib") is None:
{loop}"""


def version() -> str:
    """``flowlib.__version__``, read from the source without importing flowlib (and torch)."""
    text = (ROOT / "flowlib" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


def requirement(ver: str | None = None) -> str:
    """The pinned release: ``tokens-in-motion[notebooks]==<version>``."""
    return REQUIREMENT.format(version=ver or version())


def fallback(ver: str | None = None, repo: str | None = None) -> str:
    """The same release from the repository's tag: ``tokens-in-motion[notebooks] @ git+<repo>@v<version>``."""
    return FALLBACK.format(repository=repo or repository(), version=ver or version())


def _parts(ver: str | None, repo: str | None, extra: str) -> dict[str, str]:
    install = _INSTALL.format(env_var=ENV_VAR, requirement=requirement(ver), fallback=fallback(ver, repo))
    return {"install": install, "loop": _LOOP.format(env_var=ENV_VAR, extra=extra)}


def chapter_cell(ver: str | None = None, repo: str | None = None) -> str:
    """The source of every chapter's first code cell (``repo``: another repository, for tests)."""
    return CHAPTER_TEMPLATE.format(**_parts(ver, repo, ""))


def assignment_block(ver: str | None = None, repo: str | None = None) -> str:
    """The install block of every assignment's first code cell."""
    return ASSIGNMENT_BLOCK.format(**_parts(ver, repo, '"otter-grader", '))


if __name__ == "__main__":
    print(chapter_cell())
