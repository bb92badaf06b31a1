"""Small fixes to the generated HTML, each found by the browser tests (tests/test_browser.py).

* sphinx-thebe registers its inline configuration script once per read phase; when Sphinx reads
  twice in one build (it does here), the page declares ``const THEBE_JS_URL`` twice and the browser
  throws a SyntaxError. Identical scripts are de-duplicated, keeping the first.
* sphinx-exercise's ``hide_solutions`` (the student edition, ``make book-student``) drops a gated
  solution's ``solution-start`` but keeps its ``solution-end`` node, which no writer can render (the
  build crashes), and leaves everything between the two, i.e. the solution itself, on the page. In
  such a build ``solution-start`` leaves a marker, and the marker, the end node and everything
  between them are removed.
* pydata-sphinx-theme's first inline script falls back to the template variable ``default_mode``,
  which nothing sets, so every first visit logs "Got invalid theme mode". We set it to ``auto``
  (follow the reader's system preference), the theme's own default.
"""

from __future__ import annotations

from docutils import nodes
from sphinx_exercise.directive import SolutionStartDirective
from sphinx_exercise.nodes import solution_end_node


class hidden_solution_start(nodes.Element):
    """Where a gated solution began, in a build that hides solutions (removed before writing)."""


class _SolutionStart(SolutionStartDirective):
    def run(self):
        out = super().run()  # registers the start for sphinx-exercise's pairing checks
        return [hidden_solution_start()] if self.env.app.config.hide_solutions else out


def _drop_hidden_gated_solutions(app, doctree):
    if not app.config.hide_solutions:
        return
    for end in list(doctree.findall(solution_end_node)):
        siblings = end.parent.children
        i = siblings.index(end)
        j = next((k for k in range(i - 1, -1, -1) if isinstance(siblings[k], hidden_solution_start)), i)
        del siblings[j : i + 1]
    for marker in list(doctree.findall(hidden_solution_start)):
        marker.parent.remove(marker)


def _skip(self, node):
    raise nodes.SkipNode


def _default_mode(app, pagename, templatename, context, doctree):
    if not context.get("default_mode"):
        context["default_mode"] = "auto"


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts:
        seen, kept = set(), []
        for js in scripts:
            # inline scripts come back with filename None or "" depending on how they were registered
            attrs = tuple(sorted((k, str(v)) for k, v in (getattr(js, "attributes", None) or {}).items()))
            key = (getattr(js, "filename", None) or "", getattr(js, "priority", 500), attrs)
            if key not in seen:
                seen.add(key)
                kept.append(js)
        scripts[:] = kept


def setup(app):
    app.setup_extension("sphinx_exercise")
    app.add_node(hidden_solution_start, html=(_skip, None), latex=(_skip, None), text=(_skip, None))
    app.add_directive("solution-start", _SolutionStart, override=True)
    app.connect("doctree-read", _drop_hidden_gated_solutions)
    app.connect("html-page-context", _default_mode, priority=100)
    # Last, after the themes have added their assets to the page's script list.
    app.connect("html-page-context", _dedupe_scripts, priority=950)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
