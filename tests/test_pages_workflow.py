"""The GitHub Pages workflow (.github/workflows/pages.yml) builds the book with the Makefile's commands
and deploys ``_build/html`` with GitHub's Pages actions."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "pages.yml"


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    targets = set()
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-$() ]+?)\s*:(?!=)", line)
        if m and not line.startswith("\t"):
            targets.update(m.group(1).split())
    return targets


def _steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def test_pages_workflow_builds_with_make_and_deploys_to_pages():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True
    assert on["push"]["branches"] == ["main"] and "workflow_dispatch" in on
    jobs = wf["jobs"]
    build, deploy = jobs["build"], jobs["deploy"]
    uses = {s["uses"].split("@")[0]: s for s in _steps(build) if "uses" in s}
    assert "actions/checkout" in uses and "actions/setup-python" in uses
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    # the build runs the Makefile's own commands, and only targets that exist
    runs = "\n".join(s["run"] for s in _steps(build) if "run" in s)
    commands = re.findall(r"\bmake\s+([A-Za-z0-9_\-]+)", runs)
    assert "book" in commands
    missing = set(commands) - _make_targets()
    assert not missing, f"pages.yml runs make targets the Makefile lacks: {missing}"
    assert str(build.get("env", {}).get("CI", wf.get("env", {}).get("CI"))).lower() == "true"  # no browser opens
    # the deployment: GitHub's action, with the permissions it needs, after the build
    assert deploy["needs"] == "build" or deploy["needs"] == ["build"]
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in _steps(deploy))
    perms = deploy.get("permissions", wf.get("permissions", {}))
    assert perms.get("pages") == "write" and perms.get("id-token") == "write"
    assert deploy["environment"]["name"] == "github-pages"


def test_make_targets_parser_sees_the_makefile():
    targets = _make_targets()
    assert {"book", "test", "install", "lint", "clean"} <= targets
    assert "VENV" not in targets and "PY" not in targets  # variables, not targets
