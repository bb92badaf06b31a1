"""Otter-Grader assignments (marker ``assignments``; part of README's test command).

For every master notebook in ``assignments/``: ``otter assign`` builds the student and autograder
editions (and itself checks the solutions against every test); the master's solution scores full
marks under the autograder; the student notebook, executed exactly as handed out, is graded
without stopping and scores below full marks; no hidden test reaches the student edition.
"""

from __future__ import annotations

import csv
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "assignments"))

import build  # noqa: E402
import grade  # noqa: E402

pytestmark = pytest.mark.assignments
MASTERS = build.MASTERS


def _hidden_tests(master: Path) -> list[str]:
    """The body of every hidden test cell of a master notebook."""
    nb = nbformat.read(master, as_version=4)
    bodies = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "# BEGIN TEST CONFIG" in cell.source and "hidden: true" in cell.source:
            bodies.append(cell.source.split("# END TEST CONFIG", 1)[1].strip())
    return bodies


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    with ThreadPoolExecutor(max_workers=3) as pool:
        built = dict(pool.map(lambda m: build.build_one(m, out), MASTERS))
    jobs = [(m.stem, ed) for m in MASTERS for ed in ("autograder", "student")]

    def run(job):
        name, edition = job
        return job, grade.grade(build.autograder_zip(out, name), out / name / edition / f"{name}.ipynb")

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(pool.map(run, jobs))
    timing = {
        name: {
            "assign": round(built[name], 1),
            **{ed: results[(name, ed)]["seconds"] for ed in ("autograder", "student")},
        }
        for name in built
    }
    print("seconds per assignment:", json.dumps(timing))
    return out, results


def test_there_are_three_assignments_with_hidden_tests():
    assert len(MASTERS) >= 3
    for master in MASTERS:
        nb = nbformat.read(master, as_version=4)
        questions = sum(1 for c in nb.cells if c.cell_type == "raw" and c.source.startswith("# BEGIN QUESTION"))
        assert questions >= 3, master.name
        assert len(_hidden_tests(master)) >= questions, f"{master.name}: every question needs a hidden test"
        setup = next(c.source for c in nb.cells if c.cell_type == "code")
        # the Colab install cell (tools/setup_cell.py, make setup-cells)
        assert "pip" in setup and "otter-grader" in setup and "tokens-in-motion[notebooks]" in setup


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_master_solution_scores_full_marks(graded, master):
    _, results = graded
    row = results[(master.stem, "autograder")]
    assert row["max_score"] >= 8
    assert row["score"] == row["max_score"], row


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_untouched_student_edition_scores_zero_on_every_question(graded, master):
    _, results = graded
    row = results[(master.stem, "student")]
    full = results[(master.stem, "autograder")]
    assert row["max_score"] == full["max_score"]  # every question was graded
    questions = set(full) - {"submission", "score", "max_score", "seconds"}
    assert len(questions) >= 3 and questions <= set(row), row
    # an untouched student edition earns nothing: 0 points on every question (a question that gives
    # points for the handed-out code would be a free question)
    assert all(row[q] == 0 for q in questions), {q: row[q] for q in questions}
    assert row["score"] == 0, row


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_hidden_tests_are_absent_from_the_student_edition(graded, master):
    out, _ = graded
    student = out / master.stem / "student"
    text = "\n".join(p.read_text(errors="replace") for p in student.rglob("*") if p.is_file())
    assert "BEGIN SOLUTION" not in text and "# SOLUTION" not in text
    assert (student / "tests").is_dir() and any((student / "tests").glob("q*.py"))
    for body in _hidden_tests(master):
        for line in body.splitlines():
            if line.strip().startswith("assert"):
                assert line.strip() not in text, f"hidden test leaked into the student edition: {line.strip()}"
    assert (out / f"{master.stem}-student.zip").exists()


def test_grades_export_as_csv(graded, tmp_path):
    out, _ = graded
    name = MASTERS[0].stem
    csv_path = tmp_path / "grades.csv"
    rows = grade.main(
        [str(build.autograder_zip(out, name)), str(out / name / "autograder" / f"{name}.ipynb"), "--csv", str(csv_path)]
    )
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 1 and float(table[0]["score"]) == rows[0]["max_score"]
    assert {"q1", "q2", "q3"} <= set(table[0])
