"""Generate the student and autograder editions of every master notebook with Otter-Grader.

    python assignments/build.py [--out _build/assignments] [NAME ...]

For each ``assignments/<name>.ipynb`` (an Otter Assign master: questions, solutions, public and
hidden tests), ``otter assign`` writes ``<out>/<name>/student/`` (the notebook to hand out, with
the solutions replaced by ``...`` and only the public tests in ``tests/``) and
``<out>/<name>/autograder/`` (the solution notebook, every test, and the autograder zip that
``otter run`` and ``grade.py`` use). ``otter assign`` also runs every test against the solutions
and fails if one does not pass. The student folder is zipped as ``<out>/<name>-student.zip``.
The autograder zip also receives ``tim_grading.json`` (the handed-out setup cell, which grade.py's scan allows, and
the manually graded questions with their points), and its ``environment.yml`` installs CPU PyTorch and flowlib
from ``assignments/requirements.txt`` (the masters' ``requirements:``), so that ``otter grade`` (Docker) works.
Nothing here is committed: the output lives under ``_build/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import yaml

HERE = Path(__file__).resolve().parent
MASTERS = sorted(p for p in HERE.glob("*.ipynb"))


def otter() -> str:
    return shutil.which("otter", path=str(Path(sys.executable).parent)) or "otter"


def build_one(master: Path, out: Path) -> tuple[str, float]:
    target = out / master.stem
    shutil.rmtree(target, ignore_errors=True)
    t0 = time.perf_counter()
    # A timeout turns a hang (Otter's log receiver can spin at exit, see grade.py) into a clear error.
    proc = subprocess.run([otter(), "assign", str(master), str(target)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"otter assign failed for {master.name}:\n{(proc.stdout + proc.stderr)[-4000:]}")
    shutil.make_archive(str(out / f"{master.stem}-student"), "zip", target / "student")
    student = nbformat.read(target / "student" / master.name, as_version=4)
    extra = {
        "assignment_name": master.stem,
        "setup_cell": next(c.source for c in student.cells if c.cell_type == "code"),
        "manual": manual_questions(master),
    }
    with zipfile.ZipFile(autograder_zip(out, master.stem), "a") as z:
        z.writestr("tim_grading.json", json.dumps(extra, indent=1))
    return master.stem, time.perf_counter() - t0


def manual_questions(master: Path) -> dict[str, float]:
    """``{question: points}`` of the master's manually graded questions (``manual: true``)."""
    found = {}
    for cell in nbformat.read(master, as_version=4).cells:
        if cell.cell_type == "raw" and cell.source.startswith("# BEGIN QUESTION"):
            conf = yaml.safe_load(cell.source.split("\n", 1)[1])
            if conf.get("manual"):
                found[conf["name"]] = conf.get("points", 0)
    return found


def autograder_zip(out: Path, name: str) -> Path:
    (zip_path,) = (out / name / "autograder").glob("*-autograder_*.zip")
    return zip_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="assignment names (default: all)")
    p.add_argument("--out", type=Path, default=HERE.parent / "_build" / "assignments")
    args = p.parse_args(argv)
    masters = [m for m in MASTERS if not args.names or m.stem in args.names]
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=3) as pool:
        for name, secs in pool.map(lambda m: build_one(m, args.out), masters):
            print(f"{name}: {secs:.1f} s -> {args.out / name}")


if __name__ == "__main__":
    main()
