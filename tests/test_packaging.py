"""flowlib as a distribution: ``tokens-in-motion`` on PyPI, ``import flowlib`` in Python.

* The version has one source, ``flowlib.__version__``, which pyproject reads (``dynamic = ["version"]``) and
  CHANGELOG.md documents.
* ``python -m build`` makes a wheel and an sdist that pass ``twine check --strict``; the wheel installs into a
  fresh virtual environment and passes a smoke test there. To avoid downloading PyTorch, the fresh venv gets
  the wheel with ``pip install --no-deps`` and finds torch, numpy, scipy and matplotlib through PYTHONPATH,
  which names the site-packages of the Python running the tests. That directory holds no ``flowlib``
  package (the development install is an editable finder, activated only by a ``.pth`` file, and PYTHONPATH
  entries' ``.pth`` files are not read), and the smoke test runs outside the checkout and asserts that the
  ``flowlib`` it imports lives in the fresh venv.
* The release workflow builds on a version tag and publishes with PyPI trusted publishing (checked
  structurally: no secret, the official action, ``id-token: write``).

About 20 s (most of it the build and importing torch twice).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DIST = "tokens-in-motion"
WHEEL_PREFIX = "tokens_in_motion-"
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def _version() -> str:
    return re.search(r'^__version__ = "([^"]+)"$', (ROOT / "flowlib" / "__init__.py").read_text(), re.M).group(1)


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_has_one_source_and_a_changelog_entry():
    project = _pyproject()["project"]
    assert project["name"] == DIST
    assert "version" not in project and project["dynamic"] == ["version"]
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "flowlib.__version__"}
    version = _version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{version}]" in changelog and "## [0.1.0]" in changelog
    assert {"build", "twine"} <= {re.split(r"[<>=\[ ;]", r)[0] for r in project["optional-dependencies"]["dev"]}


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory):
    """Wheel and sdist built from a copy of the files that make the distribution (not in the checkout, which
    other people edit: the build writes an egg-info and build/ folder next to the sources)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "flowlib", src / "flowlib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with this environment's setuptools instead of downloading one (works offline).
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return out


def test_build_makes_a_wheel_and_an_sdist_that_twine_accepts(dist_dir):
    version = _version()
    wheel = dist_dir / f"{WHEEL_PREFIX}{version}-py3-none-any.whl"
    sdist = dist_dir / f"{WHEEL_PREFIX}{version}.tar.gz"
    assert wheel.exists() and sdist.exists(), sorted(p.name for p in dist_dir.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.count("PASSED") == 2, proc.stdout + proc.stderr
    names = zipfile.ZipFile(wheel).namelist()
    assert "flowlib/__init__.py" in names and "flowlib/fields/base.py" in names
    assert "flowlib/book/training.py" in names and "flowlib/py.typed" in names  # the book layer; PEP 561
    assert not any(n.startswith(("tests/", "chapters/")) for n in names)
    meta = zipfile.ZipFile(wheel).read(f"{WHEEL_PREFIX}{version}.dist-info/METADATA").decode()
    assert f"Name: {DIST}" in meta and f"Version: {version}" in meta and "Requires-Dist: torch>=2.2" in meta
    print(f"wheel {wheel.stat().st_size / 1024:.0f} KiB, sdist {sdist.stat().st_size / 1024:.0f} KiB")
    assert wheel.stat().st_size < 1_000_000


SMOKE = r"""
import importlib.metadata as md, sys
import torch
import flowlib as fl
print("FILE", fl.__file__)
assert md.version("{dist}") == fl.__version__ == "{version}", (md.version("{dist}"), fl.__version__)
x0 = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
study = fl.convergence_study(fl.SoftmaxAttention(beta=1.0), x0, t1=1.0, layers=[4, 8, 16, 32], method="rk4")
assert 3.5 < study.order < 4.5, study.order
traj = fl.simulate(fl.SphereAttention(beta=2.0), fl.unit_normalize(x0), t1=2.0, n_steps=20)
assert traj.x.shape == (21, 6, 3) and (traj.final.norm(dim=-1) - 1).abs().max() < 0.05  # near the sphere
from flowlib import gaussian, measures, pde, viz  # every submodule imports
print("SMOKE OK")
"""


def test_wheel_installs_into_a_fresh_venv_and_passes_a_smoke_test(dist_dir, tmp_path):
    version = _version()
    wheel = dist_dir / f"{WHEEL_PREFIX}{version}-py3-none-any.whl"
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=300,
    )
    # torch and the other dependencies come from this interpreter's site-packages (no download; see the module
    # docstring), the checkout stays out of sys.path: run from tmp_path, no PYTHONPATH entry for ROOT.
    deps = sysconfig.get_paths()["purelib"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = deps
    proc = subprocess.run(
        [str(py), "-c", SMOKE.format(dist=DIST, version=version)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0 and "SMOKE OK" in proc.stdout, (proc.stdout + proc.stderr)[-4000:]
    installed = Path(re.search(r"^FILE (.+)$", proc.stdout, re.M).group(1)).resolve()
    assert installed.is_relative_to(env_dir.resolve()), f"imported {installed}, not the installed wheel"
    assert not installed.is_relative_to(ROOT)


def test_release_workflow_builds_on_a_tag_and_publishes_with_trusted_publishing():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on:` key as True
    assert set(on) == {"push"} and on["push"]["tags"] == ["v*"], on  # a tag, not every push
    assert wf["permissions"] == {"contents": "read"}  # least privilege by default
    jobs = wf["jobs"]
    build_steps = jobs["build"]["steps"]
    runs = "\n".join(s.get("run", "") for s in build_steps)
    assert "python -m build" in runs and "twine check" in runs
    assert any(s.get("uses", "").startswith("actions/upload-artifact@") for s in build_steps)

    publish = jobs["publish"]
    assert publish["needs"] == "build"
    assert publish["permissions"] == {"id-token": "write"}  # only the job that publishes gets an OIDC token
    assert publish["environment"]["name"] == "pypi" and DIST in publish["environment"]["url"]
    steps = publish["steps"]
    action = [s for s in steps if s.get("uses", "").startswith("pypa/gh-action-pypi-publish@")]
    assert len(action) == 1
    assert not set(action[0].get("with", {})) & {"password", "user", "username", "api-token", "token"}
    text = WORKFLOW.read_text()
    assert "secrets." not in text and "PYPI_API_TOKEN" not in text  # trusted publishing stores no token
    assert any(s.get("uses", "").startswith("actions/download-artifact@") for s in steps)
