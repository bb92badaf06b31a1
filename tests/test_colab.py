"""Colab and Binder readiness (markers ``colab`` and ``slow``: ``make test-colab``, several minutes).

Colab starts a notebook in an environment that has PyTorch and Jupyter but not flowlib; the
chapters' identical setup cell (tools/setup_cell.py) then installs the pinned release
``tokens-in-motion[notebooks]==<version>`` (or, when PyPI lacks it, the repository's tag ``v<version>``; that
path is tested offline in tests/test_setup_cells.py), or the requirement named by ``FLOWLIB_REQUIREMENT``. The test
rebuilds that situation: a fresh virtual environment with only the CPU build of PyTorch and the
kernel (what Colab provides), then every chapter notebook, copied alone and unchanged into an empty
folder, executed top to bottom with ``FLOWLIB_REQUIREMENT`` pointing the setup cell at this checkout
(``tokens-in-motion[notebooks] @ file://...``; the release on PyPI is not what is being tested).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import setup_cell  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").rglob("*.ipynb"))
TORCH_SPEC = "torch==2.13.0"

RUNNER = r"""
import json, sys, time
import nbformat
from nbclient import NotebookClient
times = {}
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(__import__("pathlib").Path(path).parent)}}).execute()
    times[path] = round(time.perf_counter() - t0, 1)
    print(path, times[path], flush=True)
print("TIMES", json.dumps(times))
"""


def test_binder_environment_is_cpu_torch_and_flowlib():
    req = (ROOT / "binder" / "requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in req
    lines = [ln.strip() for ln in req.splitlines() if ln.strip() and not ln.startswith(("#", "-"))]
    names = {re.split(r"[<>=\[ ;]", ln)[0].lower() for ln in lines}
    root = {
        re.split(r"[<>=\[ ;]", ln.strip())[0].lower()
        for ln in (ROOT / "requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    assert "torch" in names and root <= names, f"binder/requirements.txt lacks {sorted(root - names)}"
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install" in post and "-e ." in post


def test_setup_cell_installs_the_pinned_release():
    """Fails until `make setup-cells` has written tools/setup_cell.py into the chapters."""
    for path in CHAPTERS:
        setup = next(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert setup == setup_cell.chapter_cell(), f"{path.name}: run `make setup-cells`"
        assert f'os.environ.get("{setup_cell.ENV_VAR}", "{setup_cell.requirement()}")' in setup
        assert f'FLOWLIB_FALLBACK = "{setup_cell.fallback()}"' in setup


@pytest.mark.slow
@pytest.mark.colab
def test_every_chapter_runs_in_a_fresh_colab_like_environment(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # What Colab already has: PyTorch and a Jupyter kernel (and a client to run notebooks with).
    subprocess.run([*pip, TORCH_SPEC], check=True, timeout=900)
    subprocess.run([*pip, "ipykernel", "nbclient", "nbformat"], check=True, timeout=900)
    probe = subprocess.run(
        [str(py), "-c", "import importlib.util as u; print(u.find_spec('flowlib'))"],
        text=True,
        capture_output=True,
        cwd=tmp_path,  # not the checkout, whose flowlib/ would be importable from the working directory
    )
    assert probe.stdout.strip() == "None", "the fresh environment must not see flowlib yet"

    copies = []
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        setup = next(c for c in nb.cells if c.cell_type == "code")
        assert setup.source == setup_cell.chapter_cell(), f"{path.name}: run `make setup-cells`"
        folder = tmp_path / "colab" / path.stem  # alone, as Colab opens it: no checkout around it
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / path.name)
        copies.append(str(folder / path.name))
    (tmp_path / "runner.py").write_text(RUNNER)
    # The kernels inherit this environment: the setup cell installs this checkout instead of the release.
    env = {**os.environ, setup_cell.ENV_VAR: f"{setup_cell.DIST}[notebooks] @ {ROOT.as_uri()}"}
    proc = subprocess.run(
        [str(py), str(tmp_path / "runner.py"), *copies],
        text=True,
        capture_output=True,
        timeout=3000,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    times = json.loads(proc.stdout.split("TIMES", 1)[1])
    print({Path(k).stem: v for k, v in times.items()})
    assert len(times) == len(CHAPTERS)
    show = subprocess.run(
        [str(py), "-m", "pip", "show", setup_cell.DIST, "pot", "ipywidgets"],
        text=True,
        capture_output=True,
        cwd=tmp_path,
    )
    assert show.stdout.count("Name:") == 3, show.stdout  # installed by the setup cell, not by us
