"""Textbook numbering and the "List of results" page (issue 20).

Numbering per chapter ("Figure 5.2", "Theorem 3.1", "Exercise 8.4") comes from Sphinx's own machinery:
the book's Parts are ``numbered`` in ``_toc.yml`` (sphinx-multitoc-numbering continues the count across
Parts), ``numfig`` is on and ``numfig_secnum_depth`` is 1, so every numbered object (myst-nb's
``mystnb.figure`` captions, sphinx-proof's theorems, sphinx-exercise's exercises, equations) carries its
chapter's number, in its title and in every reference to it. This extension adds what that leaves:

* **Chapter titles.** A chapter notebook's title keeps its own number for Jupyter and Colab
  ("# 5. Clustering on the sphere"); on the website Sphinx numbers the chapter, so the source's number
  is dropped from the title (otherwise "5. 5. Clustering...").
* **The "List of results"** (``results.md``, directive ``results-list``): per chapter, every theorem,
  proposition, lemma, corollary and exercise with its number, its title and a link.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import yaml
from docutils import nodes
from sphinx.util.docutils import SphinxDirective

#: Object types listed on the results page, in this order within a chapter (then by number).
RESULT_TYPES = ("theorem", "proposition", "lemma", "corollary", "exercise")
_LEADING_NUMBER = re.compile(r"^\s*\d+(\.\d+)*\.?\s+")


class results_list(nodes.General, nodes.Element):
    """Placeholder for the list of results, filled in when the page is resolved."""


class ResultsListDirective(SphinxDirective):
    has_content = False

    def run(self):
        return [results_list()]


def _chapters(app) -> list[str]:
    """The docnames of the numbered Parts' chapters, in reading order (from ``_toc.yml``)."""
    toc = yaml.safe_load((Path(app.srcdir) / "_toc.yml").read_text())
    out = []
    for part in toc.get("parts", []):
        if part.get("numbered"):
            out += [re.sub(r"\.(md|ipynb)$", "", c["file"]) for c in part.get("chapters", [])]
    return out


def _strip_chapter_number(app, doctree):
    """Drop "5. " from the first title of a numbered chapter (Sphinx prints its own number)."""
    if app.env.docname not in _chapters(app):
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None or not section.children or not isinstance(section[0], nodes.title):
        return
    title = section[0]
    first = title[0] if title.children else None
    if isinstance(first, nodes.Text) and _LEADING_NUMBER.match(first.astext()):
        title.replace(first, nodes.Text(_LEADING_NUMBER.sub("", first.astext(), count=1)))


def _kind_and_label(node) -> tuple[str, str, str] | None:
    """``(type, label, title)`` of a sphinx-proof or sphinx-exercise node, or None."""
    kind = node.get("realtype") or node.get("type")
    if kind not in RESULT_TYPES or not node.get("label"):
        return None
    title = node.get("title", "") if "realtype" in node.attributes else ""
    if not title and node.children and isinstance(node[0], nodes.title):
        text = node[0].astext().strip()
        text = re.sub(rf"^{kind}\b\s*", "", text, flags=re.I).strip()
        title = text[1:-1] if text.startswith("(") and text.endswith(")") else text
    if not title and kind == "exercise":
        title = _teaser(node)
    return kind, node["label"], title.strip()


def _teaser(node, limit: int = 90) -> str:
    """The opening words of an untitled exercise, up to its first formula (no raw TeX on the page)."""
    body = next((c for c in node.children if isinstance(c, nodes.section)), None)
    if body is None:
        return ""
    words = []
    for piece in body.findall(lambda n: isinstance(n, (nodes.Text, nodes.math, nodes.math_block))):
        if not isinstance(piece, nodes.Text):
            break
        if piece.parent is not None and isinstance(piece.parent, (nodes.math, nodes.math_block, nodes.literal_block)):
            break
        words.append(piece.astext())
        if sum(map(len, words)) > limit:
            break
    text = " ".join(" ".join(words).split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0]
    text = text.rstrip(" ,;:")
    return (text + " …") if len(text) >= 12 else ""


def collect_results(app) -> list[tuple[str, str, list[tuple[tuple[int, ...], str, str, str]]]]:
    """``[(docname, chapter title, [(number, type, label, title), ...]), ...]`` for the numbered chapters."""
    env = app.env
    out = []
    for doc in _chapters(app):
        if doc not in env.found_docs:
            continue
        numbers = env.toc_fignumbers.get(doc, {})
        items = []
        for node in env.get_doctree(doc).findall(nodes.Element):
            found = _kind_and_label(node)
            if found is None:
                continue
            kind, label, title = found
            counter = "exercise" if kind == "exercise" else kind
            for ctype, table in numbers.items():
                if label in table and (ctype == counter or ctype.endswith(counter)):
                    items.append((tuple(table[label]), kind, label, title))
                    break
        items.sort(key=lambda it: it[1] == "exercise")  # stable: results in reading order, then exercises
        out.append((doc, env.titles[doc].astext() if doc in env.titles else doc, items))
    return out


def _fill_results(app, doctree, docname):
    for placeholder in list(doctree.findall(results_list)):
        content = []
        for doc, title, items in collect_results(app):
            secnum = app.env.toc_secnumbers.get(doc, {})
            number = next(iter(secnum.values()), ()) if secnum else ()
            heading = (".".join(map(str, number[:1])) + ". " if number else "") + title
            rubric = nodes.rubric("", "")
            link = nodes.reference("", heading, internal=True, refuri=app.builder.get_relative_uri(docname, doc))
            rubric += link
            content.append(rubric)
            if not items:
                content.append(nodes.paragraph("", "No numbered results."))
                continue
            blist = nodes.bullet_list(classes=["results-list"])
            for num, kind, label, rtitle in items:
                text = f"{kind.capitalize()} {'.'.join(map(str, num))}"
                para = nodes.paragraph()
                ref = nodes.reference(
                    "", "", internal=True, refuri=app.builder.get_relative_uri(docname, doc) + "#" + label
                )
                ref += nodes.strong("", text)
                para += ref
                if rtitle:
                    para += nodes.Text(f" {rtitle}")
                blist += nodes.list_item("", para)
            content.append(blist)
        placeholder.replace_self(content)


DESCRIPTION = (
    "Tokens in Motion: the mathematics of deep transformers as dynamical systems, from one residual layer "
    "to the mean-field limit, with runnable code and a test for every claim."
)


def _meta(app, pagename, templatename, context, doctree):
    """A description and an Open Graph title for link previews."""
    title = context.get("title") or ""
    tags = context.get("metatags", "")
    if 'name="description"' not in tags:
        tags += f'\n<meta name="description" content="{DESCRIPTION}" />'
    title = html.escape(html.unescape(re.sub(r"<[^>]+>", "", title)), quote=True)
    tags += f'\n<meta property="og:title" content="{title}" />'
    tags += f'\n<meta property="og:description" content="{DESCRIPTION}" />'
    context["metatags"] = tags


def setup(app):
    app.add_node(results_list)
    app.add_directive("results-list", ResultsListDirective)
    # before Sphinx's TitleCollector (priority 500) records the title for the navigation
    app.connect("doctree-read", _strip_chapter_number, priority=100)
    app.connect("doctree-resolved", _fill_results)
    app.connect("html-page-context", _meta)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
