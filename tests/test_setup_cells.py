"""The chapters' setup cell is one template, ``tools/setup_cell.py``, written into the notebooks by
``tools/sync_setup_cells.py`` (``make setup-cells``).

It installs the pinned release ``tokens-in-motion[notebooks]==<flowlib.__version__>`` when flowlib is missing
(Colab), or the repository's release tag when PyPI does not have that release, and otherwise stops with one
message that says how to fix it; nothing in a development checkout (flowlib importable), and whatever
``FLOWLIB_REQUIREMENT`` names when that environment variable is set (a fork; the Colab test points it at this
checkout). The install paths are tested offline with real pip in a fresh virtual environment: a local
wheel directory stands in for PyPI, a local git repository with a release tag for GitHub.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

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
    # the fallback is the same release from the repository named in _config.yml (the one place it is written)
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    assert f'"tokens-in-motion[notebooks] @ git+{repo}@v{flowlib.__version__}"' in cell
    assert setup_cell.repository() == repo
    ast.parse("\n".join(ln for ln in cell.splitlines() if not ln.startswith("%")))
    assert '%config InlineBackend.figure_formats = ["retina"]' in cell  # figures drawn at 2x


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_chapter_starts_with_the_template(path):
    """Fails until ``make setup-cells`` has written the current template into the chapters."""
    assert _first_code_cell(path) == setup_cell.chapter_cell(), f"{path.name}: run `make setup-cells`"
    # collapsed on the website with its output removed (Jupyter Book's hide-input and remove-output tags),
    # still a plain cell in Jupyter and Colab
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    tags = first.metadata.get("tags", [])
    assert all(t in tags for t in setup_cell.TAGS), f"{path.name}: run `make setup-cells`"


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
        "subprocess.run = lambda args, **kw: calls.append(args) or subprocess.CompletedProcess(args, 0, '', '')\n"
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


_BACKEND = """\
# A PEP 517 build backend with no dependencies (the tests run offline): a wheel is a zip file.
import base64, hashlib, zipfile

NAME, VERSION = "tokens_in_motion", "{version}"
META = "Metadata-Version: 2.1\\nName: tokens-in-motion\\nVersion: {version}\\nProvides-Extra: notebooks\\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = f"{{NAME}}-{{VERSION}}-py3-none-any.whl"
    info = f"{{NAME}}-{{VERSION}}.dist-info"
    files = {{
        "flowlib/__init__.py": open("flowlib/__init__.py").read(),
        f"{{info}}/METADATA": META,
        f"{{info}}/WHEEL": "Wheel-Version: 1.0\\nGenerator: fake\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }}
    record = []
    with zipfile.ZipFile(f"{{wheel_directory}}/{{name}}", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append(f"{{path}},sha256={{digest}},{{len(text.encode())}}")
        z.writestr(f"{{info}}/RECORD", "\\n".join(record + [f"{{info}}/RECORD,,"]) + "\\n")
    return name
"""


def _fake_release(root: Path, version: str) -> Path:
    """A git repository of a tiny ``tokens-in-motion`` (package ``flowlib``) tagged ``v<version>``."""
    repo = root / "repo"
    (repo / "flowlib").mkdir(parents=True)
    (repo / "flowlib" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (repo / "fake_backend.py").write_text(_BACKEND.format(version=version))
    (repo / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "fake_backend"\nbackend-path = ["."]\n'
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "release"], check=True)
    subprocess.run([*git, "tag", f"v{version}"], check=True)
    return repo


def test_install_paths_offline_release_then_tag_then_one_message(tmp_path):
    """Real pip, no network: the release from an index (a local wheel folder), else the repository's tag,
    else one message with the fix."""
    import shutil
    import venv

    if shutil.which("git") is None:
        pytest.skip("git is needed for the release-tag path")
    version = "9.8.7"
    repo = _fake_release(tmp_path, version)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    wheels = tmp_path / "wheels"
    offline = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PIP_CONFIG_FILE": os.devnull,  # this machine's pip configuration (extra indexes, links) does not count
        "PIP_NO_INDEX": "1",  # no PyPI: only --find-links, if any
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    # file://localhost/...: a PEP 508 direct reference needs a host (as https://github.com/... has)
    url = "file://localhost" + repo.as_posix()
    logic = setup_cell.chapter_cell(ver=version, repo=url).split("import torch", 1)[0]
    script = tmp_path / "setup_logic.py"
    script.write_text(logic + "\nimport flowlib\nprint('INSTALLED', flowlib.__version__)\n")

    def run(extra_env):
        return subprocess.run(
            [py, str(script)], capture_output=True, text=True, cwd=tmp_path, env={**offline, **extra_env}, timeout=600
        )

    # 1. the release is on the index: installed from there
    subprocess.run(
        [py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(repo)],
        check=True,
        env=offline,
        capture_output=True,
    )
    proc = run({"PIP_FIND_LINKS": str(wheels)})
    assert proc.returncode == 0 and f"INSTALLED {version}" in proc.stdout, proc.stderr[-2000:]
    subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", "tokens-in-motion"], check=True, env=offline)
    # 2. not on the index: the repository's release tag v<version>
    proc = run({})
    assert proc.returncode == 0 and f"INSTALLED {version}" in proc.stdout, proc.stderr[-2000:]
    subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", "tokens-in-motion"], check=True, env=offline)
    # 3. neither: one message that names what failed and the fix, no traceback
    subprocess.run(["git", "-C", str(repo), "tag", "-d", f"v{version}"], check=True, capture_output=True)
    proc = run({})
    assert proc.returncode == 1
    assert "Could not install flowlib" in proc.stderr and "Fix:" in proc.stderr and "FLOWLIB_REQUIREMENT" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 2, proc.stderr
