"""The chapters' setup cell (and the assignments' install block): the one template, rendered by
``tools/sync_setup_cells.py`` (``make setup-cells``) into every chapter's first code cell.

What a reader gets:

* **Colab, or any Python without flowlib:** ``pip install "tokens-in-motion[notebooks]==<version>"``, the
  release this book was written against (``<version>`` is ``flowlib.__version__``, filled in when the cells
  are written, so bumping the version and running ``make setup-cells`` re-pins every chapter).
* **A development checkout** (``make install``, ``pip install -e .``): flowlib is importable, so the cell
  installs nothing and the chapters run against the checkout.
* **A fork or a test** changes the one place, the environment variable ``FLOWLIB_REQUIREMENT`` (any pip
  requirement, e.g. ``tokens-in-motion[notebooks] @ git+https://github.com/<you>/<fork>``), or for a
  permanent change ``REQUIREMENT`` below followed by ``make setup-cells``.

Only the standard library is imported here (no torch), so the script and the tests read it cheaply.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIST = "tokens-in-motion"  # flowlib's distribution name on PyPI (the import name is flowlib)
ENV_VAR = "FLOWLIB_REQUIREMENT"
REQUIREMENT = DIST + "[notebooks]=={version}"  # what a reader without flowlib installs

_INSTALL = """\
# flowlib is published on PyPI as tokens-in-motion. To install something else (a fork, a branch, a local
# checkout), set the environment variable {env_var} to a pip requirement, e.g.
# "tokens-in-motion[notebooks] @ git+https://github.com/<you>/<fork>".
FLOWLIB_REQUIREMENT = os.environ.get("{env_var}", "{requirement}")
"""

CHAPTER_TEMPLATE = """\
# Setup (identical in every chapter; written by `make setup-cells` from tools/setup_cell.py): install
# flowlib if missing (e.g. on Colab), show figures inline, pick a device. flowlib sets no global state.
import importlib.util
import os
import subprocess
import sys

{install}if importlib.util.find_spec("flowlib") is None:  # a development checkout (pip install -e .) skips this
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", FLOWLIB_REQUIREMENT], check=True)

import torch

import flowlib as fl

%matplotlib inline
from flowlib import viz

device = fl.default_device()
print(f"flowlib {{fl.__version__}} on {{fl.describe_device(device)}}")"""

# The assignments' first cell keeps its own head and tail (otter's grader); this block replaces the lines from
# the `if` that checks for otter and flowlib up to, not including, `os.makedirs(`.
ASSIGNMENT_BLOCK = """\
{install}if importlib.util.find_spec("otter") is None or importlib.util.find_spec("flowlib") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "otter-grader", FLOWLIB_REQUIREMENT], check=True)
"""


def version() -> str:
    """``flowlib.__version__``, read from the source without importing flowlib (and torch)."""
    text = (ROOT / "flowlib" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


def requirement(ver: str | None = None) -> str:
    return REQUIREMENT.format(version=ver or version())


def _install(ver: str | None) -> str:
    return _INSTALL.format(env_var=ENV_VAR, requirement=requirement(ver))


def chapter_cell(ver: str | None = None) -> str:
    """The source of every chapter's first code cell."""
    return CHAPTER_TEMPLATE.format(install=_install(ver))


def assignment_block(ver: str | None = None) -> str:
    """The install block of every assignment's first code cell."""
    return ASSIGNMENT_BLOCK.format(install=_install(ver))


if __name__ == "__main__":
    print(chapter_cell())
