"""Small fixes to the generated HTML, each found by the browser tests (tests/test_browser.py).

* sphinx-thebe registers its inline configuration script once per read phase; when Sphinx reads
  twice in one build (it does here), the page declares ``const THEBE_JS_URL`` twice and the browser
  throws a SyntaxError. Identical scripts are de-duplicated, keeping the first.
* pydata-sphinx-theme's first inline script falls back to the template variable ``default_mode``,
  which nothing sets, so every first visit logs "Got invalid theme mode". We set it to ``auto``
  (follow the reader's system preference), the theme's own default.
"""

from __future__ import annotations


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
    app.connect("html-page-context", _default_mode, priority=100)
    # Last, after the themes have added their assets to the page's script list.
    app.connect("html-page-context", _dedupe_scripts, priority=950)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
