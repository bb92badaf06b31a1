"""The student edition of the book (``make book-student``): no exercise solution anywhere in the site.

    python assignments/student_edition.py config OUT.yml   # _config.yml -> the student edition's configuration
    python assignments/student_edition.py scrub HTML_DIR   # delete every downloadable source from a built site
    python assignments/student_edition.py check HTML_DIR   # exit 1 if any solution's text is found in the site

Hiding the solutions on the pages (sphinx-exercise's ``hide_solutions``) is not enough: Sphinx copies every source
notebook to ``_sources/`` and the download button serves it, and the Colab and Binder buttons open the full
notebooks. So the student configuration also turns off ``html_copy_source``, the download, launch, repository,
issue and edit buttons; ``scrub`` then deletes any ``_sources`` folder and any ``.ipynb`` left in the site, and
``check`` extracts word sequences that occur only inside solutions (``{solution}`` blocks and gated
``{solution-start}``/``{solution-end}`` spans, prose and code) from the chapters and searches every file of the site
for them (tags stripped, entities decoded).
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
N_WORDS = 7  # a leak is a run of this many consecutive words of a solution that occurs nowhere else in the book


def student_config(config: dict) -> dict:
    """The student edition's Jupyter Book configuration, from the book's own."""
    config = dict(config)
    sphinx = dict(config.get("sphinx") or {})
    conf = dict(sphinx.get("config") or {})
    conf.update(hide_solutions=True, html_copy_source=False, html_show_sourcelink=False)
    sphinx["config"] = conf
    config["sphinx"] = sphinx
    page = dict(config.get("html") or {})
    page.update(
        use_download_button=False, use_repository_button=False, use_issues_button=False, use_edit_page_button=False
    )
    config["html"] = page
    config["launch_buttons"] = {"notebook_interface": "classic", "binderhub_url": "", "colab_url": "", "thebe": False}
    # Jupyter Book 1 passes no download-button setting to the theme: set the theme's options here, as Jupyter Book
    # would compute them (sphinx.config replaces its html_theme_options as a whole), plus use_download_button.
    theme = {
        "search_bar_text": "Search this book...",
        "launch_buttons": config["launch_buttons"],
        "analytics": {},
        "use_download_button": False,
        "use_repository_button": False,
        "use_issues_button": False,
        "use_edit_page_button": False,
    }
    repo = config.get("repository") or {}
    for spx_key, yml_key in (
        ("path_to_docs", "path_to_book"),
        ("repository_url", "url"),
        ("repository_branch", "branch"),
    ):
        if yml_key in repo:
            theme[spx_key] = repo[yml_key]
    for spx_key, yml_key in (
        ("navbar_footer_text", "navbar_footer_text"),
        ("extra_footer", "extra_footer"),
        ("home_page_in_toc", "home_page_in_navbar"),
        ("announcement", "announcement"),
    ):
        if yml_key in page:
            theme[spx_key] = page[yml_key]
    conf["html_theme_options"] = {**theme, **(conf.get("html_theme_options") or {}), "use_download_button": False}
    return config


def scrub(site: Path) -> list[Path]:
    """Delete the downloadable sources (``_sources`` folders, notebooks) from a built site; return what went."""
    gone = []
    for p in sorted(site.rglob("_sources"), reverse=True):
        if p.is_dir():
            shutil.rmtree(p)
            gone.append(p)
    for p in sorted(site.rglob("*.ipynb")):
        p.unlink()
        gone.append(p)
    return gone


# ------------------------------------------------------------------------------------------- finding solutions
_FENCE = re.compile(r"^(?P<fence>:{3,}|`{3,})\{(?P<name>[a-z-]+)\}", re.M)


def split_solutions(cells: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """``(solution texts, other texts)`` of a notebook given as ``(cell_type, source)`` pairs."""
    solutions, others = [], []
    gated = False
    for _, source in cells:
        lines = source.splitlines()
        i, buf_sol, buf_other = 0, [], []
        while i < len(lines):
            line = lines[i]
            m = _FENCE.match(line)
            if m and m["name"] == "solution-start":
                gated = True
                i += 1
                while i < len(lines) and not lines[i].startswith(m["fence"][:3]):
                    i += 1  # the directive's closing fence
                i += 1
                continue
            if m and m["name"] == "solution-end":
                gated = False
                i += 1
                while i < len(lines) and not lines[i].startswith(m["fence"][:3]):
                    i += 1
                i += 1
                continue
            if m and m["name"] == "solution" and not gated:
                fence = m["fence"]
                i += 1
                while i < len(lines) and lines[i].strip() != fence:
                    buf_sol.append(lines[i])
                    i += 1
                i += 1
                continue
            (buf_sol if gated else buf_other).append(line)
            i += 1
        solutions.append("\n".join(buf_sol))
        others.append("\n".join(buf_other))
    return [s for s in solutions if s.strip()], others


def _segments(text: str) -> list[list[str]]:
    """Runs of plain words, cut at math, inline code markers and directive options."""
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$|\{[a-z-]+\}`[^`]*`|^:[a-z-]+:.*$", " | ", text, flags=re.S | re.M)
    return [re.findall(r"[a-z]+", seg.lower()) for seg in text.split("|")]


def _ngrams(text: str, n: int = N_WORDS) -> set[str]:
    out = set()
    for words in _segments(text):
        out |= {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}
    return out


def solution_phrases(notebooks: list[Path]) -> dict[str, set[str]]:
    """``{notebook: phrases}``: word runs of the solutions that occur nowhere else in any of the notebooks."""
    sol, elsewhere = {}, set()
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        solutions, others = split_solutions([(c.cell_type, c.source) for c in nb.cells])
        sol[str(path)] = set().union(*(_ngrams(s) for s in solutions)) if solutions else set()
        for o in others:
            elsewhere |= _ngrams(o)
    # the rest of the site: pages in Markdown and the API reference (flowlib's docstrings)
    for extra in [*ROOT.glob("*.md"), *(ROOT / "api").rglob("*.md"), *(ROOT / "flowlib").rglob("*.py")]:
        elsewhere |= _ngrams(extra.read_text(errors="replace"))
    return {k: v - elsewhere for k, v in sol.items()}


def site_text(path: Path) -> str:
    text = path.read_text(errors="replace")
    if path.suffix in {".html", ".htm", ".xml", ".svg"}:
        text = re.sub(r"<[^>]+>", " ", text)
    text = html.unescape(text).replace("\\n", " ")
    return " " + " ".join(re.findall(r"[a-z]+", text.lower())) + " "


def leaks(site: Path, phrases: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """``(site file, notebook, phrase)`` for every solution phrase found in a text file of the site."""
    found = []
    wanted = [(nb, p) for nb, ps in phrases.items() for p in ps]
    for f in sorted(site.rglob("*")):
        if not f.is_file() or f.suffix in {".png", ".jpg", ".jpeg", ".gif", ".woff", ".woff2", ".ttf", ".ico", ".pdf"}:
            continue
        text = site_text(f)
        found += [(str(f), nb, p) for nb, p in wanted if f" {p} " in text]
    return found


def chapters() -> list[Path]:
    return sorted((ROOT / "chapters").rglob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["config", "scrub", "check"])
    ap.add_argument("path", type=Path)
    ap.add_argument("--chapters", type=Path, default=ROOT / "chapters", help="the notebooks the site was built from")
    args = ap.parse_args(argv)
    if args.command == "config":
        config = yaml.safe_load((ROOT / "_config.yml").read_text())
        args.path.write_text(yaml.safe_dump(student_config(config), sort_keys=False))
        print(f"student configuration written to {args.path}")
        return 0
    if args.command == "scrub":
        gone = scrub(args.path)
        print(f"removed {len(gone)} downloadable sources from {args.path}")
        return 0
    phrases = solution_phrases(sorted(args.chapters.rglob("*.ipynb")))
    found = leaks(args.path, phrases)
    n = sum(len(v) for v in phrases.values())
    if found:
        for f, nb, p in found[:20]:
            print(f"LEAK {f}: '{p}' (a solution of {Path(nb).name})")
        print(f"{len(found)} solution phrases found in the student site")
        return 1
    print(f"no solution text in {args.path} ({n} solution phrases from {len(phrases)} chapters checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
