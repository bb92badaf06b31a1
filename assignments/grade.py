"""Grade submissions locally with Otter (no Docker) and export the grades as CSV.

    python assignments/grade.py AUTOGRADER_ZIP SUBMISSION [SUBMISSION ...] [--csv grades.csv] [--jobs 2]

Each submission (a student's ``.ipynb``, or a folder of them) is executed and graded by
``otter run`` with the autograder zip from ``build.py``; the CSV has one row per submission with
the total, the maximum and every question's score. Submissions run in the current environment,
so grade trusted code only, or use ``otter grade`` (Docker) for isolation.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def otter() -> str:
    return shutil.which("otter", path=str(Path(sys.executable).parent)) or "otter"


def _wait(proc: subprocess.Popen, results: Path, timeout: float, grace: float = 20.0) -> None:
    """Wait for ``otter run`` to exit, at most ``timeout`` seconds.

    Otter 7.0's log receiver can spin forever when the kernel closes its socket in the middle of a
    record at shutdown; the results are written by then and only the exit hangs (seen once in about
    forty gradings). So once ``results.json`` exists the process gets ``grace`` seconds to exit and
    is then killed.
    """
    start = time.perf_counter()
    written = None
    while proc.poll() is None:
        now = time.perf_counter()
        if written is None and results.exists():
            written = now
        if now - start > timeout or (written is not None and now - written > grace):
            proc.kill()
            proc.wait()
            return
        time.sleep(0.2)


def grade(autograder: Path, submission: Path, *, timeout: float = 600.0) -> dict:
    """Grade one notebook; return ``{"submission", "score", "max_score", "seconds", <question>: score}``."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        results = Path(tmp) / "results.json"
        log_path = Path(tmp) / "otter.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [otter(), "run", "--no-logo", "-a", str(autograder), "-o", tmp, str(submission)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            _wait(proc, results, timeout)
        seconds = time.perf_counter() - t0
        if not results.exists():
            raise RuntimeError(f"grading stopped for {submission}:\n{log_path.read_text()[-3000:]}")
        tests = json.loads(results.read_text())["tests"]
    row = {"submission": str(submission), "seconds": round(seconds, 1)}
    scored = [t for t in tests if t.get("max_score") is not None]
    for t in scored:
        row[t["name"]] = t["score"]
    row["score"] = sum(t["score"] for t in scored)
    row["max_score"] = sum(t["max_score"] for t in scored)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("autograder", type=Path)
    p.add_argument("submissions", type=Path, nargs="+")
    p.add_argument("--csv", type=Path, default=Path("grades.csv"))
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    files = []
    for s in args.submissions:
        files += sorted(s.rglob("*.ipynb")) if s.is_dir() else [s]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda f: grade(args.autograder, f), files))
    fields = (
        ["submission", "score", "max_score"]
        + sorted({k for r in rows for k in r} - {"submission", "score", "max_score", "seconds"})
        + ["seconds"]
    )
    with open(args.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        print(f"{r['submission']}: {r['score']:g} / {r['max_score']:g} ({r['seconds']} s)")
    print(f"grades written to {args.csv}")
    return rows


if __name__ == "__main__":
    main()
