"""Sphinx extension of the course website: the library docstrings' short cross-references, verbatim docstrings.

The docstrings say ``:class:`History``` or ``:func:`recursionlab.solvers.anderson``` (a name re-exported by a
package) and carry type hints such as ``torch.Tensor``; the site is built offline, without intersphinx. A Python
reference Sphinx cannot resolve on its own goes through :func:`resolve`:

1. a unique documented object whose full name ends with the target (``History`` ->
   ``recursionlab.train.history.History``) gets a link to it;
2. else the target is looked up as a real Python object (from the docstring's module, then as an absolute dotted
   name): an object of the library that is documented under its defining module (a re-export) gets a link there;
   any other real object (torch, NumPy, the standard library, an undocumented constant) is shown as code, unlinked;
3. a name that is no Python object at all stays a warning, and the warnings-as-errors build fails on it.

The docstrings of the objects listed in the config value ``recursionlab_verbatim_docstrings`` are shown as
preformatted text instead of being parsed as reStructuredText (for a docstring that is being rewritten elsewhere
and that Sphinx cannot parse yet; keep the list short).
"""

from __future__ import annotations

import importlib
from typing import Any

from docutils import nodes
from sphinx.util.nodes import make_refnode


def _lookup(dotted: str) -> tuple[bool, Any]:
    """The object a dotted name names, importing its longest importable module prefix; (found, object)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # not a module (or not importable): try a shorter prefix
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False, None
        return True, obj
    return False, None


def _canonical(obj: Any) -> str | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str) else None


def resolve(app, env, node, contnode):
    """The ``missing-reference`` handler described in the module docstring."""
    if node.get("refdomain") != "py":
        return None
    domain, target, kind = env.get_domain("py"), node["reftarget"], node["reftype"]
    module, cls = node.get("py:module"), node.get("py:class")
    matches = domain.find_obj(env, module, cls, target, None, 1)  # searchmode 1: unique suffix match, any type
    if len(matches) == 1:
        name, entry = matches[0]
        return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, name)
    scopes = [f"{module}.{cls}.{target}", f"{module}.{target}"] if module and cls else []
    scopes += [f"{module}.{target}"] if module else []
    for dotted in scopes + [target]:
        found, obj = _lookup(dotted)
        if not found:
            continue
        canonical = _canonical(obj)
        if canonical and canonical in domain.objects:
            entry = domain.objects[canonical]
            return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, canonical)
        return contnode if kind != "mod" else nodes.literal(target, target)
    return None


def verbatim(app, what, name, obj, options, lines: list[str]) -> None:
    """``autodoc-process-docstring``: show the listed objects' docstrings as a literal block."""
    if name in app.config.recursionlab_verbatim_docstrings and lines:
        lines[:] = ["::", ""] + ["    " + line for line in lines] + [""]


def setup(app):
    app.add_config_value("recursionlab_verbatim_docstrings", [], "env")
    app.connect("autodoc-process-docstring", verbatim, priority=100)  # before napoleon reads sections
    app.connect("missing-reference", resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
