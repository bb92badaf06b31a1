"""Otter-Grader assignments (marker ``assignments``; part of README's test command).

For every master notebook in ``assignments/``: ``otter assign`` builds the student and autograder editions (and
itself checks the solutions against every test); the master's solution, saved under a student's file name, scores
full marks; the untouched student edition, also renamed, is graded without stopping and scores zero; no hidden test
reaches the student edition; public tests are worth little. The Colab path (the notebook is not on disk next to
its tests) passes every public check. Then a simulated class for assignment 1 goes through ``grade.py`` as an
instructor would run it (renamed files, a folder per student, a checkpoint folder, a notebook of another assignment,
missing metadata, a truncated file, a partial and a crashing submission, and the cheats of the instructor's trial:
patching Otter, shadowing ``torch.allclose``, hard-coding the public answers), plus assignment 2's fake results and an
infinite loop against ``--timeout``.
"""

from __future__ import annotations

import copy
import csv
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "assignments"))
sys.path.insert(0, str(ROOT / "tools"))

import build  # noqa: E402
import grade  # noqa: E402
import setup_cell  # noqa: E402

pytestmark = pytest.mark.assignments
MASTERS = build.MASTERS
QUESTION = re.compile(r"^q\d+$")


def _tests(master: Path) -> list[dict]:
    """``{"question", "hidden", "points", "body"}`` of every test cell of a master."""
    nb = nbformat.read(master, as_version=4)
    found, question = [], None
    for cell in nb.cells:
        if cell.cell_type == "raw" and cell.source.startswith("# BEGIN QUESTION"):
            question = yaml.safe_load(cell.source.split("\n", 1)[1])
        if cell.cell_type == "code" and "# BEGIN TEST CONFIG" in cell.source:
            conf = yaml.safe_load(cell.source.split('"""', 2)[1].replace("# BEGIN TEST CONFIG", ""))
            body = cell.source.split("# END TEST CONFIG", 1)[1].strip()
            found.append(
                {"question": question["name"], "hidden": conf["hidden"], "points": conf["points"], "body": body}
            )
    return found


def _questions(master: Path) -> list[dict]:
    nb = nbformat.read(master, as_version=4)
    return [
        yaml.safe_load(c.source.split("\n", 1)[1])
        for c in nb.cells
        if c.cell_type == "raw" and c.source.startswith("# BEGIN QUESTION")
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    with ThreadPoolExecutor(max_workers=3) as pool:
        seconds = dict(pool.map(lambda m: build.build_one(m, out), MASTERS))
    print("otter assign seconds:", json.dumps({k: round(v, 1) for k, v in seconds.items()}))
    return out


@pytest.fixture(scope="module")
def graded(built, tmp_path_factory):
    """Each master's solution saved as a student's file, and the untouched handout renamed as LMS downloads do."""
    out, subs = built, tmp_path_factory.mktemp("renamed")
    jobs = []
    for m in MASTERS:
        sol = subs / f"smith_alice_12345_{m.stem}_solution.ipynb"
        sol.write_bytes((out / m.stem / "autograder" / m.name).read_bytes())
        blank = subs / f"{m.stem} (1).ipynb"
        blank.write_bytes((out / m.stem / "student" / m.name).read_bytes())
        jobs += [((m.stem, "autograder"), sol), ((m.stem, "student"), blank)]
    zips = {m.stem: grade.with_integrity_checks(build.autograder_zip(out, m.stem), subs) for m in MASTERS}

    def run(job):
        key, path = job
        return key, grade.grade(zips[key[0]], path, timeout=600)

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(pool.map(run, jobs))
    print("grading seconds:", json.dumps({f"{k[0]}/{k[1]}": r.get("seconds") for k, r in results.items()}))
    return out, results


def test_there_are_five_assignments_with_hidden_tests_and_cheap_public_tests():
    assert len(MASTERS) >= 5
    for master in MASTERS:
        nb = nbformat.read(master, as_version=4)
        questions = _questions(master)
        auto = [q for q in questions if not q.get("manual")]
        assert len(auto) >= 3, master.name
        tests = _tests(master)
        for q in auto:
            mine = [t for t in tests if t["question"] == q["name"]]
            assert any(t["hidden"] for t in mine), f"{master.name} {q['name']}: every question needs a hidden test"
            assert sum(t["points"] for t in mine) == q["points"], f"{master.name} {q['name']}: points do not add up"
        public = sum(t["points"] for t in tests if not t["hidden"])
        total = sum(q["points"] for q in auto)
        assert public <= 0.2 * total, f"{master.name}: public tests are worth {public} of {total}"
        setup = next(c.source for c in nb.cells if c.cell_type == "code")
        # the Colab install cell (tools/setup_cell.py, make setup-cells), and a grader that ignores the file name
        assert "pip" in setup and "otter-grader" in setup and "tokens-in-motion[notebooks]" in setup
        assert "grader = otter.Notebook()" in setup and 'otter.Notebook("' not in setup
        config = yaml.safe_load(nb.cells[0].source.split("\n", 1)[1])
        assert config["name"] == master.stem and config["requirements"] == "requirements.txt"


def test_autograder_environment_has_cpu_torch_and_the_pinned_flowlib(built):
    req = (ROOT / "assignments" / "requirements.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in req
    assert setup_cell.requirement() in req and any(ln.startswith("torch==") for ln in req)
    import zipfile

    with zipfile.ZipFile(build.autograder_zip(built, MASTERS[-1].stem)) as z:
        env = yaml.safe_load(z.read("environment.yml"))
        extra = json.loads(z.read(grade.INTEGRITY_FILE))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert setup_cell.requirement() in pip and "--extra-index-url https://download.pytorch.org/whl/cpu" in pip
    assert extra["assignment_name"] == MASTERS[-1].stem and "otter.Notebook()" in extra["setup_cell"]


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_master_solution_under_another_name_scores_full_marks(graded, master):
    _, results = graded
    row = results[(master.stem, "autograder")]
    assert row["max_score"] >= 8 and not row["error"], row
    assert row["score"] == row["max_score"], row
    assert row["flags"] == "", row  # the integrity checks all failed and the scan found nothing
    manual = [q for q in _questions(master) if q.get("manual")]
    assert all(f"{q['name']} (manual, /{q['points']:g})" in row for q in manual)


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_untouched_student_edition_scores_zero_on_every_question(graded, master):
    _, results = graded
    row = results[(master.stem, "student")]
    full = results[(master.stem, "autograder")]
    assert row["max_score"] == full["max_score"] and not row["error"], row  # every question was graded
    questions = {k for k in full if QUESTION.match(k)}
    assert len(questions) >= 3 and questions <= set(row), row
    # an untouched student edition earns nothing: 0 points on every question (a question that gives
    # points for the handed-out code would be a free question)
    assert all(row[q] == 0 for q in questions), {q: row[q] for q in questions}
    assert row["score"] == 0, row


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_hidden_tests_and_rubrics_are_absent_from_the_student_edition(built, master):
    student = built / master.stem / "student"
    text = "\n".join(p.read_text(errors="replace") for p in student.rglob("*") if p.is_file())
    assert "BEGIN SOLUTION" not in text and "# SOLUTION" not in text and "Rubric" not in text
    assert (student / "tests").is_dir() and any((student / "tests").glob("q*.py"))
    for t in _tests(master):
        if t["hidden"]:
            for line in t["body"].splitlines():
                if line.strip().startswith("assert"):
                    assert line.strip() not in text, f"hidden test leaked into the student edition: {line.strip()}"
    assert (built / f"{master.stem}-student.zip").exists()


@pytest.mark.colab
def test_colab_path_every_public_check_passes_without_the_notebook_on_disk(built, tmp_path):
    """On Colab the notebook is not in the working folder: only the uploaded tests/ are. The solution passes."""
    from nbclient import NotebookClient

    def run(master):
        folder = tmp_path / master.stem
        folder.mkdir()
        (folder / "tests").mkdir()
        for t in (built / master.stem / "student" / "tests").glob("*.py"):
            (folder / "tests" / t.name).write_bytes(t.read_bytes())
        nb = nbformat.read(built / master.stem / "autograder" / master.name, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
        outputs = [
            o.get("text", "") + json.dumps(o.get("data", {}))
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
        ]
        errors = [
            o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
        ]
        return master.stem, errors, outputs

    with ThreadPoolExecutor(max_workers=3) as pool:
        for name, errors, outputs in pool.map(run, MASTERS):
            assert not errors, (name, errors[:1])
            checks = [o for o in outputs if "results" in o or "passed" in o]
            assert checks and not any("failed" in o.lower() for o in checks), (name, checks)
            assert not any(f"{name}.ipynb" in o and "No such file" in o for o in outputs)


# ------------------------------------------------------------------------------------------------ the class
def _handout(built: Path, name: str):
    return nbformat.read(built / name / "student" / f"{name}.ipynb", as_version=4)


def _answer(nb, **answers):
    """A copy of the handout with the code cell starting with each key's text replaced by its value."""
    nb = copy.deepcopy(nb)
    for start, source in answers.items():
        cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(start))
        cell.source = source
    return nb


def _solution_cells(built: Path, name: str) -> dict[str, str]:
    nb = nbformat.read(built / name / "autograder" / f"{name}.ipynb", as_version=4)
    return {c.source.split("\n", 1)[0]: c.source for c in nb.cells if c.cell_type == "code"}


A1 = "a1_euler_layers"
A1_Q1 = "def euler_step(field, x, h):"
A1_Q2 = "def residual_network(field, x0, n_layers, t1):"
A1_Q3 = "import numpy as np"
A1_Q4 = "def euler_factor(h, lam):"


def _class_a1(built: Path, folder: Path) -> None:
    handout = _handout(built, A1)
    sol = _solution_cells(built, A1)

    def cells(**kw):
        return {
            start: src
            for start, src in (
                (A1_Q1, kw.get("q1")),
                (A1_Q2, kw.get("q2")),
                (A1_Q3, kw.get("q3")),
                (A1_Q4, kw.get("q4")),
            )
            if src
        }

    def save(path: Path, nb) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)

    q = {k: sol[k] for k in (A1_Q1, A1_Q2, A1_Q3, A1_Q4)}
    master = nbformat.read(built / A1 / "autograder" / f"{A1}.ipynb", as_version=4)
    save(folder / "alice" / f"{A1}.ipynb", master)  # one folder per student, the handed-out name
    save(folder / "alice" / ".ipynb_checkpoints" / f"{A1}-checkpoint.ipynb", handout)  # opened in Jupyter: skipped
    save(folder / "bob_smith_12345_late_a1.ipynb", master)  # an LMS download name
    frobenius = q[A1_Q3].replace(".norm(dim=-1).max().item()", ".norm().item()")
    save(folder / "carol" / "Copy of a1 (2).ipynb", _answer(handout, **cells(q1=q[A1_Q1], q2=q[A1_Q2], q3=frobenius)))
    crash = 'raise RuntimeError("shape mismatch")\n' + q[A1_Q2]
    save(folder / "dave.ipynb", _answer(handout, **cells(q1=q[A1_Q1], q2=crash, q3=q[A1_Q3], q4=q[A1_Q4])))
    patch = "import otter.test_files.ok_test as _ok\n_ok.run_doctest = lambda *a, **k: (True, '')\n"
    save(folder / "eve_patch_otter.ipynb", _answer(handout, **cells(q1=patch + handout.cells[3].source)))
    shadow = "torch.allclose = lambda *a, **k: True\nabs = lambda v: 0.0\nall = lambda it: True\n\n\n"
    save(
        folder / "frank_shadow.ipynb",
        _answer(
            handout,
            **cells(q1=shadow + "def euler_step(field, x, h):\n    return x", q4=q[A1_Q4].replace("2 / lam", "1.0")),
        ),
    )
    hard = cells(
        q1="def euler_step(field, x, h):\n    return 0.5 * x",
        q2="def residual_network(field, x0, n_layers, t1):\n    return 0.75**4 * x0",
        q3=handout.cells[9].source.replace("...", "errors = [0.1 / 2**k for k in range(5)]\norder = 1.0"),
        q4="def euler_factor(h, lam):\n    return 1.5\n\n\ndef largest_contracting_step(lam):\n    return 0.4",
    )
    hard_nb = _answer(handout, **hard)
    next(
        c for c in hard_nb.cells if c.source == 'grader.check("q1")'
    ).source = "grader.check = lambda *a, **k: print('All tests passed!')"
    save(folder / "gina_hardcode.ipynb", hard_nb)
    save(
        folder / "henry.ipynb",
        nbformat.read(built / "a2_attention_particles" / "autograder" / "a2_attention_particles.ipynb", as_version=4),
    )
    no_meta = copy.deepcopy(master)
    no_meta.metadata.pop("otter")
    save(folder / "ivan_new_notebook.ipynb", no_meta)
    (folder / "judy_truncated.ipynb").write_text(nbformat.writes(master)[:2000])
    save(folder / "zed_blank.ipynb", handout)


@pytest.fixture(scope="module")
def a1_class(built, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("class")
    _class_a1(built, tmp / "subs")
    csv_path, lms = tmp / "grades-a1.csv", tmp / "canvas-a1.csv"
    argv = [str(build.autograder_zip(built, A1)), str(tmp / "subs"), "--csv", str(csv_path), "--jobs", "3"]
    rows = grade.main([*argv, "--timeout", "600", "--lms-csv", str(lms), "--lms", "canvas"])
    print("\nsimulated class, a1:")
    for r in rows:
        qs = " ".join(f"{k}={r[k]:g}" for k in sorted(r, key=grade.natural_key) if QUESTION.match(k))
        print(
            f"  {r['student']:<22} {r.get('score', '-')!s:>5} / {r.get('max_score', '-')!s:<5} {qs:<28} {r['seconds']:>5} s "
            f"{r['error'][:60]} {r['flags'][:110]}"
        )
    return {r["student"]: r for r in rows}, csv_path, lms, tmp / "grades-a1-feedback"


def test_class_renamed_files_and_folders_grade_correctly(a1_class):
    rows, csv_path, _, feedback = a1_class
    assert rows["alice"]["score"] == rows["bob_smith_12345_late_a1"]["score"] == 10
    assert not rows["alice"]["flags"] and not rows["bob_smith_12345_late_a1"]["flags"]
    assert "alice~2" not in rows and not any("checkpoint" in r["submission"] for r in rows.values())
    assert rows["zed_blank"]["score"] == 0 and not rows["zed_blank"]["error"]
    # each student keeps the executed notebook and a feedback file
    assert (feedback / "alice" / f"{A1}.ipynb").exists() and "10 / 10" in (
        feedback / "alice" / "feedback.txt"
    ).read_text()
    with open(csv_path) as f:
        header = next(csv.reader(f))
    assert header[:4] == ["student", "submission", "score", "max_score"] and header[-3:] == [
        "flags",
        "error",
        "seconds",
    ]
    assert header[4:-3] == ["q1", "q2", "q3", "q4"]


def test_class_partial_and_crashing_submissions_get_partial_credit(a1_class, built):
    rows, _, _, feedback = a1_class
    carol, dave = rows["carol"], rows["dave"]
    assert (carol["q1"], carol["q2"], carol["q4"]) == (2, 3, 0) and 0 < carol["q3"] < 3, carol
    assert (dave["q1"], dave["q2"], dave["q4"]) == (2, 0, 2) and not dave["error"], dave
    text = (feedback / "carol" / "feedback.txt").read_text()
    assert "q3: 0.5 / 3" in text or "q3: 1 / 3" in text or "q3:" in text
    # feedback shows public test messages only, never the code of a hidden test
    for t in _tests(ROOT / "assignments" / f"{A1}.ipynb"):
        if t["hidden"]:
            for line in t["body"].splitlines():
                if line.strip().startswith("assert") and len(line.strip()) > 25:
                    assert line.strip() not in text, line


def test_class_bad_files_get_an_error_row_and_the_batch_goes_on(a1_class):
    rows, csv_path, lms, _ = a1_class
    assert "a2_attention_particles" in rows["henry"]["error"] and "score" not in rows["henry"]
    assert "no Otter metadata" in rows["ivan_new_notebook"]["error"]
    assert "truncated" in rows["judy_truncated"]["error"]
    with open(csv_path) as f:
        assert len(list(csv.DictReader(f))) == len(rows) == 11
    with open(lms) as f:
        table = list(csv.reader(f))
    assert table[0][:3] == ["Student", "ID", "SIS User ID"] and table[0][-1] == f"{A1} (10)"
    assert {r[0] for r in table[2:]} == set(rows) and dict((r[0], r[-1]) for r in table[2:])["henry"] == ""


def test_class_cheats_score_low_and_are_flagged(a1_class):
    rows, *_ = a1_class
    eve, frank, gina = rows["eve_patch_otter"], rows["frank_shadow"], rows["gina_hardcode"]
    # patching Otter: every test would pass; the integrity checks catch it and the scan names it
    assert "grader tampered" in eve["flags"] and "imports Otter" in eve["flags"] and eve["score"] == 0, eve
    # shadowing torch.allclose, abs and all
    assert "grader tampered" in frank["flags"] and frank["score"] == 0, frank
    assert "torch.allclose" in frank["flags"] and "'abs'" in frank["flags"] and "'all'" in frank["flags"]
    # hard-coded public answers (and a fake grader.check): public tests are worth 0.5 each, hidden tests catch the rest
    assert gina["score"] <= 2 and "grader tampered" not in gina["flags"], gina
    assert "grader.check" in gina["flags"]


def test_fake_results_without_simulating_score_low(built, tmp_path):
    name = "a2_attention_particles"
    handout = _handout(built, name)
    sol = _solution_cells(built, name)
    fake_q2 = (
        "x0 = fl.uniform_sphere(16, 3, generator=torch.Generator().manual_seed(5), dtype=F64)\n"
        "x_final = x0[:1].repeat(16, 1)\nmin_inner = 0.999\nprint(min_inner)"
    )
    fake_q3 = (
        "e0 = fl.interaction_energy(x0, 4.0)\nenergies = e0 + torch.linspace(0, 1, 201, dtype=F64)\nmonotone = True\n"
        "print(energies[0].item(), energies[-1].item(), monotone)"
    )
    nb = _answer(
        handout,
        **{"def attention_velocity": sol["def attention_velocity(x, beta):"], "x0 = fl": fake_q2, "...": fake_q3},
    )
    path = tmp_path / "mallory.ipynb"
    nbformat.write(nb, path)
    row = grade.grade(build.autograder_zip(built, name), path)
    print("fake a2 results:", row)
    assert row["q1"] == 4 and row["q2"] <= 0.5 and row["q3"] <= 0.5, row


def test_an_infinite_loop_is_recorded_as_a_timeout(built, tmp_path):
    nb = _answer(_handout(built, A1), **{A1_Q1: "while True:\n    pass"})
    path = tmp_path / "loop.ipynb"
    nbformat.write(nb, path)
    row = grade.grade(build.autograder_zip(built, A1), path, timeout=30)
    assert "timed out after 30 s" in row["error"] and "score" not in row, row


def test_scan_flags_what_honest_code_never_does():
    master = nbformat.read(ROOT / "assignments" / f"{A1}.ipynb", as_version=4)
    assert grade.scan(master) == []  # the solutions themselves are clean
    for m in MASTERS:
        assert grade.scan(nbformat.read(m, as_version=4)) == [], m.name
    cases = {
        "import otter.test_files.ok_test as t\nt.run_doctest = f": ["imports Otter (otter.test_files.ok_test)"],
        "from otter.test_files import ok_test": ["imports Otter (otter.test_files.ok_test)"],
        "torch.allclose = lambda *a, **k: True": ["assigns to torch.allclose"],
        "setattr(torch, 'allclose', f)": ["uses setattr"],
        "abs = lambda v: 0.0": ["shadows the builtin 'abs'"],
        "def all(it):\n    return True": ["shadows the builtin 'all'"],
        "grader.check = print": ["assigns to grader.check"],
        "F64 = torch.float32": ["rebinds 'F64'"],
        "print(open('tests/q1.py').read())": ["uses open"],
        "os.listdir('tests')": ["uses os.listdir"],
        "exec('x = 1')": ["uses exec"],
        "torch.Tensor.__eq__ = f": ["assigns to torch.Tensor.__eq__"],
        "fl.softmax_average = f": ["assigns to fl.softmax_average"],
    }
    for code, expected in cases.items():
        nb = copy.deepcopy(master)
        nb.cells.append(nbformat.v4.new_code_cell(code))
        flags = grade.scan(nb)
        for e in expected:
            assert any(e in f for f in flags), (code, flags)
    honest = copy.deepcopy(master)
    honest.cells.append(
        nbformat.v4.new_code_cell("import numpy as np\nx = np.zeros(3)\nx[0] = 1.0\nresult = {}\nresult['a'] = 2")
    )
    assert grade.scan(honest) == []


def test_syllabus_cites_real_exercises_chapters_and_all_five_assignments():
    text = (ROOT / "syllabus.md").read_text()
    labels = set(re.findall(r"\{ref\}`[^<`]*<([^>]+)>`", text)) - {"instructors-guide", "syllabus"}
    defined = set()
    for path in (ROOT / "chapters").rglob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            defined |= set(re.findall(r"^:label: (\S+)", cell.source, flags=re.M))
    assert len(labels) >= 30 and labels <= defined, sorted(labels - defined)
    for doc in re.findall(r"\{doc\}`[^<`]*<([^>]+)>`", text):
        assert (ROOT / f"{doc}.ipynb").exists(), doc
    weeks = re.findall(r"^\| (\d+) \|", text, flags=re.M)
    assert [int(w) for w in weeks] == list(range(1, 14)) + list(range(1, 7))  # 13 weeks, then the 6-week course
    for a in ("A1", "A2", "A3", "A4", "A5"):
        assert f"**{a} out**" in text or f"**{a}** as" in text, a
