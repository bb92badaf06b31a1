"""Link the book's inline mentions of flowlib to the API reference, without touching the notebooks.

Inline code such as ```fl.simulate```, ```flowlib.SoftmaxAttention```, ```viz.plot_tokens```,
```fl.pde.solve_transformer_pde``` or ```fl.simulate(field, x0, t1=1.0)``` becomes a link to the object's entry
in the API pages (``api/``), when the name is documented there (Sphinx autodoc). A name is documented either
under the path written (``flowlib.simulate``) or under another path to the same object: ``fl.pde.make_grid``
links to the entry of ``flowlib.make_grid``. Anything else (an unknown name, a variable's attribute such as
``field.beta``, code blocks) is left alone.

The prefixes are the chapters' own: ``import flowlib as fl`` and ``from flowlib import viz``.
"""

from __future__ import annotations

import importlib
import re

from docutils import nodes
from sphinx.application import Sphinx

# fl.name, flowlib.name, viz.name, with dotted attributes and an optional call: `fl.simulate(field, x0)`.
MENTION = re.compile(r"^(fl|flowlib|viz)((?:\.[A-Za-z_]\w*)+)(?:\(.*\))?$", re.S)
PREFIX = {"fl": "flowlib", "flowlib": "flowlib", "viz": "flowlib.viz"}


def _resolve(dotted: str):
    """The Python object at ``flowlib.a.b`` (importing submodules on the way), or None."""
    parts = dotted.split(".")
    try:
        obj = importlib.import_module(parts[0])
    except ImportError:
        return None
    for i, part in enumerate(parts[1:], start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            try:
                obj = importlib.import_module(".".join(parts[: i + 1]))
            except ImportError:
                return None
    return obj


def _documented(env) -> tuple[dict, dict]:
    """Documented flowlib objects: by full name, and by the identity of the Python object they describe."""
    objects = {k: v for k, v in env.get_domain("py").objects.items() if k.startswith("flowlib.")}
    by_id: dict[int, str] = {}
    for name in sorted(objects, key=lambda n: (n.count("."), n)):  # the shortest path wins: flowlib.simulate
        obj = _resolve(name)
        if obj is not None and not isinstance(obj, (int, float, str, bool, tuple)):
            by_id.setdefault(id(obj), name)
    return objects, by_id


def target(text: str, objects: dict, by_id: dict) -> str | None:
    """The documented full name an inline mention refers to, or None."""
    m = MENTION.match(text.strip())
    if not m:
        return None
    name = PREFIX[m.group(1)] + m.group(2)
    if name in objects:
        return name
    obj = _resolve(name)
    return by_id.get(id(obj)) if obj is not None else None


def link_mentions(app: Sphinx, doctree: nodes.document, docname: str) -> None:
    if app.builder.format != "html":
        return
    objects, by_id = None, None
    for node in list(doctree.findall(nodes.literal)):
        if isinstance(node.parent, nodes.reference) or not MENTION.match(node.astext().strip()):
            continue
        if objects is None:
            objects, by_id = _documented(app.env)
        name = target(node.astext(), objects, by_id)
        if name is None:
            continue
        entry = objects[name]
        uri = app.builder.get_relative_uri(docname, entry.docname) + "#" + entry.node_id
        ref = nodes.reference("", "", internal=True, refuri=uri, reftitle=name, classes=["flowlib-api"])
        node.replace_self(ref)
        ref.append(node)


def setup(app: Sphinx) -> dict:
    app.connect("doctree-resolved", link_mentions)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
