"""Generate the student and autograder editions of every master notebook with Otter-Grader.

    python assignments/build.py [--out _build/assignments] [NAME ...]

For each ``assignments/<name>.ipynb`` (an Otter Assign master: questions, solutions, public and
hidden tests), ``otter assign`` writes ``<out>/<name>/student/`` (the notebook to hand out, with
the solutions replaced by ``...`` and only the public tests in ``tests/``) and
``<out>/<name>/autograder/`` (the solution notebook, every test, and the autograder zip that
``otter run`` and ``grade.py`` use). ``otter assign`` also runs every test against the solutions
and fails if one does not pass. The student folder is zipped as ``<out>/<name>-student.zip``.
Nothing here is committed: the output lives under ``_build/``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
    return master.stem, time.perf_counter() - t0


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
