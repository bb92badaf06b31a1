"""Shared fixtures. No global seeds or dtypes: every test makes its own generator."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Keep the default suite fast and deterministic on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

#: Set by ``make test-gpu``: CUDA must be there, and a gpu test that skips is a failure.
REQUIRE_GPU = os.environ.get("FLOWLIB_REQUIRE_GPU") == "1"


def pytest_sessionstart(session):
    if REQUIRE_GPU and not torch.cuda.is_available():
        pytest.exit(
            f"FLOWLIB_REQUIRE_GPU=1 but torch {torch.__version__} sees no CUDA device: the GPU tests cannot run",
            returncode=3,
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_GPU and report.skipped and item.get_closest_marker("gpu") is not None:
        report.outcome = "failed"
        report.longrepr = f"a gpu test skipped under FLOWLIB_REQUIRE_GPU=1 (make test-gpu): {report.longrepr}"


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded per test."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=[torch.float64, torch.float32], ids=["f64", "f32"])
def dtype(request) -> torch.dtype:
    return request.param


def randn(*shape, gen, dtype=torch.float64, device="cpu", scale=1.0):
    return (scale * torch.randn(*shape, generator=gen, dtype=dtype)).to(device)


def _warm_kernel() -> float:
    """Start one kernel and import what the chapters import, outside the timed chapter runs.

    In a brand-new virtual environment the very first kernel has been seen to stall for minutes
    once (and not on re-runs); the per-chapter budget of test_book is about the chapters' own work.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import torch, matplotlib, flowlib")]
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=900, kernel_name="python3").execute()
    return time.perf_counter() - t0


@pytest.fixture(scope="session")
def book_build(tmp_path_factory):
    """The real ``jupyter-book build -W --keep-going`` of this checkout, once per session.

    Returns ``(html_dir, log)``. Shared by the site checks (marker ``book``) and the browser tests
    (marker ``browser``). ``FLOWLIB_SITE=<.../_build/html>`` reuses a build made by this fixture
    earlier (its ``build.log`` sits two levels up), e.g. to rerun only the browser tests.
    """
    reuse = os.environ.get("FLOWLIB_SITE")
    if reuse:
        html = Path(reuse)
        log_file = html.parents[1] / "build.log"
        if not (html / "index.html").exists() or not log_file.exists():
            raise FileNotFoundError(f"FLOWLIB_SITE={reuse} is not a build made by this fixture")
        return html, log_file.read_text()
    out = tmp_path_factory.mktemp("book")
    warm = _warm_kernel()
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or "jupyter-book"
    proc = subprocess.run(
        [jb, "build", str(ROOT), "-W", "--keep-going", "--path-output", str(out)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    log = proc.stdout + proc.stderr
    (out / "build.log").write_text(f"kernel warm-up: {warm:.1f} s\n" + log)
    assert proc.returncode == 0, log[-5000:]
    return out / "_build" / "html", log
