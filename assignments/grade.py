"""Grade a class's submissions locally with Otter (no Docker) and export the grades as CSV.

    python assignments/grade.py AUTOGRADER_ZIP SUBMISSION [SUBMISSION ...] [--csv grades.csv] [--jobs 2]
        [--timeout 300] [--feedback DIR] [--lms-csv FILE] [--lms generic|canvas] [--scan-only]

A SUBMISSION is a student's ``.ipynb`` or a folder of them (searched recursively; ``.ipynb_checkpoints`` are
skipped). Every notebook is graded the same way, whatever its file name:

1. it is checked first: a file that is not a notebook (truncated, not JSON), a notebook without Otter's metadata
   (answers pasted into a new notebook) or a notebook of another assignment gets an ``error`` row and the batch
   goes on;
2. its code is scanned for what an honest submission never does (``flags`` column): importing or patching Otter,
   assigning to attributes of a library (``torch.allclose = ...``), shadowing a builtin (``abs = ...``),
   rebinding the grader or a setup name, ``exec``/``eval``/``__builtins__``, file, process or network access;
3. it is copied under the assignment's own name (``<assignment>.ipynb``) into a fresh folder and run by
   ``otter run`` in a separate process, killed after ``--timeout`` seconds (an ``error`` row says "timed out");
4. the autograder runs with a few *integrity checks* added, test cases that can only pass if the grading itself was
   tampered with (``assert False``, ``torch.allclose`` of different tensors, ``abs(-1) == 0``, ...). If one passes,
   the row is flagged ``grader tampered`` and its score set to 0 (``--keep-tampered-scores`` keeps it).

The CSV has one row per notebook: ``student`` (the sub-folder under the folder given, or the file's stem for a flat
folder), ``submission``, ``score``, ``max_score``, one column per question in natural order, one empty column per
manually graded question (to fill in by hand, from the rubric), ``flags``, ``error``, ``seconds``. For each student,
``--feedback DIR`` (default: next to the CSV) receives the executed notebook and ``feedback.txt`` (scores, the
failing tests' messages, flags). ``--lms-csv`` writes a second CSV for an LMS import (``--lms generic``:
``student_id,score,max_score,comment``; ``--lms canvas``: Canvas's gradebook columns).

Student code runs in your environment with your permissions: grade untrusted submissions in a container (see the
instructor's guide, ``instructors.md``). Nothing here can stop a submission from subverting its own grading from
inside the kernel; the flags and the integrity checks make the known ways visible.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

#: File added to the autograder zip by build.py: the handed-out setup cell and the manually graded questions.
INTEGRITY_FILE = "tim_grading.json"
#: The name of the integrity-check test file added to the autograder (never shown to students).
CANARY = "zz_integrity"
CANARY_CASES = [
    "assert False, 'integrity check'",
    "import torch\nassert torch.allclose(torch.zeros(3), torch.ones(3))",
    "import torch\nassert torch.equal(torch.zeros(3), torch.ones(3))",
    "import torch\nassert bool(torch.isclose(torch.zeros(3), torch.ones(3)).all())",
    "import numpy\nassert numpy.allclose(numpy.zeros(3), numpy.ones(3))",
    "import math\nassert math.isclose(0.0, 1.0)",
    "assert abs(-1.0) == 0.0",
    "assert all([False])",
    "assert any([False])",
    "assert len([1, 2]) == 5",
    "assert max([1, 2]) < 0 and min([1, 2]) > 5",
    "assert isinstance(1, str)",
    "assert float('1.5') < 0",
]
META_COLUMNS = ["student", "submission", "score", "max_score"]
TAIL_COLUMNS = ["flags", "error", "seconds"]

# What a submission has no reason to touch. Modules whose attributes must never be assigned to:
LIBRARIES = {"torch", "np", "numpy", "fl", "flowlib", "otter", "math", "builtins", "sys", "nn", "F", "scipy"}
SUSPICIOUS_CALLS = {
    "exec",
    "eval",
    "compile",
    "__import__",
    "globals",
    "locals",
    "vars",
    "setattr",
    "delattr",
    "open",
    "breakpoint",
}
SUSPICIOUS_MODULES = {
    "os",
    "subprocess",
    "shutil",
    "pathlib",
    "glob",
    "socket",
    "urllib",
    "requests",
    "http",
    "importlib",
    "inspect",
    "gc",
    "ctypes",
    "pickle",
    "dill",
    "builtins",
    "sys",
    "io",
    "tempfile",
}
DUNDERS = {"__dict__", "__globals__", "__builtins__", "__code__", "__subclasses__", "__closure__", "__defaults__"}
BUILTIN_NAMES = {n for n in dir(builtins) if not n.startswith("_")} | {"__builtins__", "__import__"}


def otter() -> str:
    return shutil.which("otter", path=str(Path(sys.executable).parent)) or "otter"


def natural_key(name: str) -> list:
    """Sort ``q2`` before ``q10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


# ---------------------------------------------------------------------------------------------------- the autograder
def read_zip_info(autograder: Path) -> dict:
    """The assignment's name, its handed-out setup cell and its manual questions, from the autograder zip."""
    with zipfile.ZipFile(autograder) as z:
        names = set(z.namelist())
        config = json.loads(z.read("otter_config.json")) if "otter_config.json" in names else {}
        extra = json.loads(z.read(INTEGRITY_FILE)) if INTEGRITY_FILE in names else {}
    name = config.get("assignment_name") or extra.get("assignment_name")
    if not name:
        raise ValueError(
            f"{autograder}: no assignment_name in otter_config.json (not an autograder zip from build.py?)"
        )
    return {"name": name, "setup_cell": extra.get("setup_cell"), "manual": extra.get("manual", {})}


def with_integrity_checks(autograder: Path, folder: Path) -> Path:
    """A copy of the autograder zip with the integrity-check test file added."""
    cases = [{"code": ">>> " + c.replace("\n", "\n>>> ") + "\n", "hidden": True, "locked": False} for c in CANARY_CASES]
    spec = {
        "name": CANARY,
        "points": len(cases),
        "suites": [{"cases": cases, "scored": True, "setup": "", "teardown": "", "type": "doctest"}],
    }
    target = folder / autograder.name
    shutil.copy(autograder, target)
    with zipfile.ZipFile(target, "a") as z:
        z.writestr(f"tests/{CANARY}.py", "OK_FORMAT = True\n\ntest = " + repr(spec) + "\n")
    return target


# -------------------------------------------------------------------------------------------- finding submissions
def is_checkpoint(path: Path) -> bool:
    return ".ipynb_checkpoints" in path.parts or path.name.endswith("-checkpoint.ipynb")


def collect(paths: list[Path]) -> list[tuple[str, Path]]:
    """``(student id, notebook)`` for every submission; the id is the sub-folder, or the stem for flat files."""
    found = []
    for s in paths:
        if s.is_dir():
            for f in sorted(s.rglob("*.ipynb")):
                if is_checkpoint(f.relative_to(s)):
                    continue
                rel = f.relative_to(s)
                found.append((rel.parts[0] if len(rel.parts) > 1 else f.stem, f))
        elif not is_checkpoint(s):
            found.append((s.stem, s))
    seen: dict[str, int] = {}
    out = []
    for sid, f in found:
        seen[sid] = seen.get(sid, 0) + 1
        out.append((sid if seen[sid] == 1 else f"{sid}~{seen[sid]}", f))
    return out


# ------------------------------------------------------------------------------------------------- static scan
def _code_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _parse(source: str) -> ast.Module | None:
    lines = ["" if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _dotted(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - ast.unparse handles every expression
        return "?"


def scan(nb, setup_cell: str | None = None) -> list[str]:
    """Flags for code an honest submission has no reason to contain (an empty list for a clean notebook).

    The handed-out setup cell (``setup_cell``; default: the notebook's first code cell) is allowed as it is: each of
    its top-level statements is skipped wherever it appears, every other statement is scanned.
    """
    cells = _code_cells(nb)
    if setup_cell is None and cells:
        setup_cell = cells[0]
    allowed = set()
    setup_tree = _parse(setup_cell or "")
    setup_names = {"grader", "F64", "otter", "torch", "fl"}
    if setup_tree is not None:
        for stmt in setup_tree.body:
            allowed.add(ast.dump(stmt))
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    setup_names.add(node.id)
    imported: set[str] = set()
    flags: list[str] = []

    def flag(msg: str) -> None:
        if msg not in flags:
            flags.append(msg)

    for source in cells:
        tree = _parse(source)
        if tree is None:
            continue
        for stmt in tree.body:
            if ast.dump(stmt) in allowed:
                continue
            for node in ast.walk(stmt):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for alias in node.names:
                        mod = alias.name if isinstance(node, ast.Import) else f"{node.module or ''}.{alias.name}"
                        top = mod.split(".")[0]
                        imported.add((alias.asname or alias.name).split(".")[0])
                        if top == "otter":
                            flag(f"imports Otter ({mod})")
                        elif top in SUSPICIOUS_MODULES:
                            flag(f"imports {mod} (files, processes or interpreter internals)")
                elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                    targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                    for t in targets:
                        for sub in ast.walk(t):
                            _check_target(sub, imported, setup_names, flag)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    if node.name in BUILTIN_NAMES:
                        flag(f"shadows the builtin {node.name!r}")
                    elif node.name in setup_names | LIBRARIES:
                        flag(f"rebinds {node.name!r} from the setup cell")
                elif isinstance(node, (ast.For, ast.comprehension, ast.With, ast.NamedExpr)):
                    for t in (
                        [node.target]
                        if isinstance(node, (ast.For, ast.comprehension, ast.NamedExpr))
                        else [i.optional_vars for i in node.items if i.optional_vars is not None]
                    ):
                        for sub in ast.walk(t):
                            _check_target(sub, imported, setup_names, flag)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                    if node.id in SUSPICIOUS_CALLS or node.id == "__builtins__":
                        flag(f"uses {node.id} (dynamic code, namespaces or files)")
                elif isinstance(node, ast.Attribute) and _root(node) == "otter" and _dotted(node) != "otter.Notebook":
                    flag(f"uses Otter internals ({_dotted(node)})")
                elif isinstance(node, ast.Attribute) and _root(node) in SUSPICIOUS_MODULES - {"sys", "io"}:
                    flag(f"uses {_dotted(node)} (files, processes or interpreter internals)")
                elif isinstance(node, ast.Attribute) and node.attr in DUNDERS:
                    flag(f"uses {_dotted(node)} (interpreter internals)")
    return flags


def _check_target(node: ast.AST, imported: set[str], setup_names: set[str], flag) -> None:
    if isinstance(node, (ast.Attribute, ast.Subscript)):
        root = _root(node)
        if root in LIBRARIES or root in imported or root in {"grader", "__builtins__"}:
            flag(f"assigns to {_dotted(node)} (patches a library or the grader)")
    elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
        if node.id in BUILTIN_NAMES:
            flag(f"shadows the builtin {node.id!r}")
        elif node.id in setup_names | LIBRARIES:
            flag(f"rebinds {node.id!r} from the setup cell")


# ------------------------------------------------------------------------------------------------------ grading
_WORKER = r"""
import json, sys, nbformat
from otter.run import main
results = main(sys.argv[2], autograder=sys.argv[1], output_dir=sys.argv[3], no_logo=True)
if getattr(results, "notebook", None) is not None:
    nbformat.write(results.notebook, sys.argv[3] + "/executed.ipynb")
"""


def _run(cmd: list[str], log: Path, results: Path, timeout: float, grace: float = 20.0) -> str | None:
    """Run ``cmd`` in its own process group; return None, or why it was stopped.

    Otter 7.0's log receiver can spin forever when the kernel closes its socket in the middle of a record at
    shutdown; the results are written by then and only the exit hangs (seen once in about forty gradings). So once
    ``results.json`` exists the process gets ``grace`` seconds to exit and is then killed.
    """
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    start, written, why = time.perf_counter(), None, None
    while proc.poll() is None:
        now = time.perf_counter()
        if written is None and results.exists():
            written = now
        if written is not None and now - written > grace:
            why = "hung after writing results"
        elif now - start > timeout:
            why = f"timed out after {timeout:g} s (an infinite loop or a very slow cell?)"
        if why:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the kernel too: it is in the same process group
            except ProcessLookupError:
                pass
            proc.wait()
            return None if why.startswith("hung") else why
        time.sleep(0.2)
    return None


def check_notebook(path: Path, assignment: str):
    """The notebook, or raise ValueError saying why it cannot be graded."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # nbformat raises several kinds: NotJSONError, JSONDecodeError, ValidationError ...
        raise ValueError(f"not a readable notebook (truncated or not JSON): {type(e).__name__}") from None
    name = nb.metadata.get("otter", {}).get("assignment_name")
    if name is None:
        raise ValueError(
            "no Otter metadata (otter.assignment_name): not a copy of the handed-out notebook; "
            "ask for the handed-out notebook with the answers, or grade by hand"
        )
    if name != assignment:
        raise ValueError(f"this is a notebook of assignment {name!r}, not {assignment!r}")
    return nb


def grade(
    autograder: Path,
    submission: Path,
    *,
    timeout: float = 300.0,
    student: str | None = None,
    info: dict | None = None,
    keep: Path | None = None,
    keep_tampered_scores: bool = False,
) -> dict:
    """Grade one notebook; return its CSV row (never raises for a bad submission: see ``error``).

    Parameters
    ----------
    autograder : Path
        The zip from build.py (with or without the integrity checks added by :func:`with_integrity_checks`).
    submission : Path
        The student's notebook, under any name.
    timeout : float
        Seconds before the execution is stopped and recorded as timed out.
    student : str, optional
        Student id for the row (default: the file's stem).
    info : dict, optional
        :func:`read_zip_info` of the autograder (read when omitted).
    keep : Path, optional
        Folder that receives the executed notebook, ``results.json`` and ``feedback.txt``.
    keep_tampered_scores : bool
        Keep the score of a submission whose integrity checks passed (default: set it to 0).
    """
    info = info or read_zip_info(autograder)
    row: dict = {"student": student or submission.stem, "submission": str(submission), "flags": "", "error": ""}
    t0 = time.perf_counter()
    try:
        nb = check_notebook(submission, info["name"])
    except ValueError as e:
        row["error"] = str(e)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        _write_feedback(keep, row, None, [])
        return row
    flags = scan(nb, info.get("setup_cell"))
    tests: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "sub").mkdir()
        (tmp / "out").mkdir()
        copy = tmp / "sub" / f"{info['name']}.ipynb"  # the handed-out name, whatever the student called it
        shutil.copy(submission, copy)
        results = tmp / "out" / "results.json"
        cmd = [sys.executable, "-c", _WORKER, str(autograder), str(copy), str(tmp / "out")]
        why = _run(cmd, tmp / "out" / "otter.log", results, timeout)
        if results.exists():
            tests = json.loads(results.read_text())["tests"]
        elif why is None:
            why = "grading failed: " + " ".join((tmp / "out" / "otter.log").read_text()[-600:].split())
        executed = tmp / "out" / "executed.ipynb"
        if executed.exists():
            flags += _setup_errors(executed)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for f in ("executed.ipynb", "results.json", "otter.log"):
                if (tmp / "out" / f).exists():
                    shutil.copy(tmp / "out" / f, keep / (f"{info['name']}.ipynb" if f == "executed.ipynb" else f))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    if why:
        row["error"] = why
    scored = [t for t in tests if t.get("max_score") is not None and t["name"] != CANARY]
    for t in scored:
        row[t["name"]] = t["score"]
    if scored or not why:
        row["score"] = sum(t["score"] for t in scored)
        row["max_score"] = sum(t["max_score"] for t in scored)
    canary = next((t for t in tests if t["name"] == CANARY), None)
    if canary is not None and canary.get("score"):
        n = round(canary["score"])
        flags.insert(0, f"grader tampered: {n} of {len(CANARY_CASES)} impossible integrity checks passed")
        if not keep_tampered_scores:
            flags.insert(1, f"score set to 0 (raw score {row['score']:g})")
            row["score"] = 0
    for q, pts in info.get("manual", {}).items():
        row[f"{q} (manual, /{pts:g})"] = ""
    row["flags"] = "; ".join(flags)
    _write_feedback(keep, row, tests, flags)
    return row


def _setup_errors(executed: Path) -> list[str]:
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            errs = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            return [f"setup cell raised {errs[0].get('ename')}: {errs[0].get('evalue', '')[:120]}"] if errs else []
    return []


def _write_feedback(keep: Path | None, row: dict, tests: list[dict] | None, flags: list[str]) -> None:
    if keep is None:
        return
    keep.mkdir(parents=True, exist_ok=True)
    lines = [f"student: {row['student']}", f"submission: {row['submission']}"]
    if row.get("error"):
        lines.append(f"ERROR: {row['error']}")
    if "score" in row:
        lines.append(f"score: {row['score']:g} / {row['max_score']:g}")
    # Only the public tests' messages: the per-question outputs of Otter also show the hidden tests' code.
    public = next((t.get("output", "") for t in tests or [] if t.get("max_score") is None), "")
    blocks = dict(re.findall(r"^(\S+) results:(.*?)(?=^\S+ results:|\Z)", public, flags=re.M | re.S))
    for t in sorted(tests or [], key=lambda t: natural_key(t["name"])):
        if t["name"] == CANARY or t.get("max_score") is None:
            continue
        lines.append(f"\n{t['name']}: {t['score']:g} / {t['max_score']:g}")
        if t["score"] < t["max_score"]:
            lines.append("  public tests:" + blocks.get(t["name"], " (none failed)").rstrip())
            lines.append("  hidden tests: some failed (they check the same ideas on other inputs)")
    if flags:
        lines.append("\nflags (for the instructor to review): " + "; ".join(flags))
    (keep / "feedback.txt").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------------------- CSV
def columns(rows: list[dict]) -> list[str]:
    extra = {k for r in rows for k in r} - set(META_COLUMNS) - set(TAIL_COLUMNS)
    auto = sorted((k for k in extra if "(manual" not in k), key=natural_key)
    manual = sorted((k for k in extra if "(manual" in k), key=natural_key)
    return META_COLUMNS + auto + manual + TAIL_COLUMNS


def write_lms(rows: list[dict], path: Path, kind: str, assignment: str) -> None:
    """An LMS import: ``generic`` (student_id, score, max_score, comment) or ``canvas`` (gradebook columns)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if kind == "canvas":
            max_score = max((r.get("max_score", 0) for r in rows), default=0)
            w.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", f"{assignment} ({max_score:g})"])
            w.writerow(["    Points Possible", "", "", "", "", f"{max_score:g}"])
            for r in rows:
                w.writerow([r["student"], "", r["student"], "", "", "" if r.get("error") else f"{r['score']:g}"])
        else:
            w.writerow(["student_id", "score", "max_score", "comment"])
            for r in rows:
                comment = r.get("error") or ("flagged for review" if r.get("flags") else "")
                score = "" if "score" not in r else f"{r['score']:g}"
                w.writerow([r["student"], score, f"{r.get('max_score', '')}", comment])


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("autograder", type=Path)
    p.add_argument("submissions", type=Path, nargs="+")
    p.add_argument("--csv", type=Path, default=Path("grades.csv"))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per notebook (default 300)")
    p.add_argument("--feedback", type=Path, help="folder for executed notebooks and feedback (default: next to CSV)")
    p.add_argument("--lms-csv", type=Path, help="also write a CSV for an LMS import")
    p.add_argument("--lms", choices=["generic", "canvas"], default="generic")
    p.add_argument("--scan-only", action="store_true", help="only check and scan the notebooks (no grading)")
    p.add_argument("--keep-tampered-scores", action="store_true")
    args = p.parse_args(argv)
    info = read_zip_info(args.autograder)
    subs = collect(args.submissions)
    feedback = args.feedback or args.csv.with_name(args.csv.stem + "-feedback")
    if args.scan_only:
        rows = []
        for sid, f in subs:
            row = {"student": sid, "submission": str(f), "flags": "", "error": ""}
            try:
                row["flags"] = "; ".join(scan(check_notebook(f, info["name"]), info.get("setup_cell")))
            except ValueError as e:
                row["error"] = str(e)
            rows.append(row)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            zip_path = with_integrity_checks(args.autograder, Path(tmp))
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                rows = list(
                    pool.map(
                        lambda job: grade(
                            zip_path,
                            job[1],
                            timeout=args.timeout,
                            student=job[0],
                            info=info,
                            keep=feedback / job[0],
                            keep_tampered_scores=args.keep_tampered_scores,
                        ),
                        subs,
                    )
                )
    with open(args.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(rows), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if args.lms_csv and not args.scan_only:
        write_lms(rows, args.lms_csv, args.lms, info["name"])
    for r in rows:
        result = f"ERROR {r['error']}" if r.get("error") and "score" not in r else ""
        if "score" in r:
            result = f"{r['score']:g} / {r['max_score']:g} ({r['seconds']} s)" + (
                f" [{r['error']}]" if r["error"] else ""
            )
        print(f"{r['student']}: {result}" + (f"  FLAGS: {r['flags']}" if r.get("flags") else ""))
    print(f"grades written to {args.csv}" + ("" if args.scan_only else f"; feedback in {feedback}/"))
    return rows


if __name__ == "__main__":
    main()
