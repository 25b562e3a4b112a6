"""Build the course website (Jupyter Book 1.x) from the committed, executed notebooks, without executing them.

    python book/build.py            # what `make book` runs; the site lands in _build/book/html

The sources are staged into ``_build/book-src`` (so that Sphinx never scans .venv/, tests/ or solutions/):
``notebooks/`` (lessons), ``exercises/`` (never ``solutions/``), ``docs/``, this folder's ``_config.yml`` and
``intro.md``, plus two generated parts: the table of contents and one API reference page per subpackage of
``recursionlab`` (sphinx autodoc, from the docstrings). While staging:

* ``repository.url`` in the config is set from pyproject.toml's ``[project.urls] Repository``, the one place the
  repository's address is set; the Colab and Binder launch buttons and the repository button derive from it.
* Widget outputs (``application/vnd.jupyter.widget-view+json``) need a kernel, and a static site would have to load
  the widget JavaScript from a CDN. Each one is replaced by a static rendering of the widget state the notebook was
  saved with: the controls' values, progress bars as text, and an interactive widget's output (its figure) as an
  ordinary output, with a one-line note saying where to move the controls.
* A Markdown link to a repository file that is not part of the site (CONTRIBUTING.md, a source file) points to
  that file in the repository instead.

The build treats every Sphinx warning as an error (nitpicky, keep going, then fail), so a broken reference, a
docstring Sphinx cannot parse or a missing page fails ``make book`` and the test that calls :func:`build_book`.
"""

from __future__ import annotations

import argparse
import html
import json
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
SUBPACKAGES = ["data", "nn", "solvers", "models", "train", "course"]
STATIC_NOTE = ("Interactive widget, shown here in the state the notebook was saved with. "
               "Move its controls in JupyterLab, Colab or Binder (launch buttons at the top of the page).")

# Runs in a fresh interpreter: jupyter-book patches docutils' global state, which a test process should not inherit.
_SPHINX = """
import sys
from jupyter_book.sphinx import build_sphinx
src, out, config, toc = sys.argv[1:5]
result = build_sphinx(src, out, noconfig=True, path_config=config,
                      confoverrides={"external_toc_path": toc, "nitpicky": True, "latex_individualpages": False},
                      warningiserror=True, keep_going=True, freshenv=True, force_all=True, quiet=True)
sys.exit(0 if result == 0 else 1)
"""


def repository_url(root: Path = ROOT) -> str:
    """The ``Repository`` entry of pyproject.toml's ``[project.urls]`` (a regex: tomllib needs Python 3.11)."""
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    urls = re.search(r"^\[project\.urls\]\n(.*?)(?:\n\[|\Z)", text, re.M | re.S)
    found = urls and re.search(r'^Repository = "(.+)"$', urls.group(1), re.M)
    if not found:
        raise ValueError(f"{root / 'pyproject.toml'} has no `Repository = \"...\"` line in [project.urls]")
    return found.group(1)


# ---------------------------------------------------------------------------------------------------------------
# widgets: static renderings of the saved widget state


def _widget_html(model_id: str, state: dict, outputs: list) -> tuple[str, bool]:
    """HTML for one widget model and its children; appends an Output widget's outputs to ``outputs``.

    Returns the HTML and whether the widget (or a child) is a control a learner would move."""
    model = state.get(model_id)
    if model is None:
        return "", False
    name, values = model["model_name"], model["state"]
    if name in ("HBoxModel", "VBoxModel", "BoxModel", "GridBoxModel"):
        parts = [_widget_html(child.removeprefix("IPY_MODEL_"), state, outputs) for child in values.get("children", [])]
        css = "rl-widget-row" if name == "HBoxModel" else "rl-widget-column"
        inner = "".join(f"<span>{part}</span>" if name == "HBoxModel" else f"<div>{part}</div>"
                        for part, _ in parts if part)
        return f'<div class="{css}">{inner}</div>', any(control for _, control in parts)
    if name == "OutputModel":
        outputs.extend(values.get("outputs", []))
        return "", False
    if name == "HTMLModel":  # tqdm's text around its bar; the value is HTML already
        return str(values.get("value", "")), False
    if name in ("LabelModel", "HTMLMathModel"):
        return html.escape(str(values.get("value", ""))), False
    if name in ("FloatProgressModel", "IntProgressModel"):
        value, top = values.get("value", 0), values.get("max", 100)
        return f'<progress value="{value}" max="{top}"></progress>', False
    if name in ("DropdownModel", "RadioButtonsModel", "SelectModel", "ToggleButtonsModel"):
        labels, index = values.get("_options_labels", []), values.get("index")
        value = labels[index] if isinstance(index, int) and 0 <= index < len(labels) else ""
    else:  # sliders, checkboxes, text boxes: a description and a value
        value = values.get("value", "")
    if isinstance(value, float):
        value = f"{value:.4g}"
    label = html.escape(str(values.get("description", "")))
    return f'<span class="rl-widget-control"><b>{label}</b> = <code>{html.escape(str(value))}</code></span>', True


def static_widget_outputs(output: dict, state: dict) -> list[dict]:
    """The outputs that replace one widget-view output: a text/html rendering, then any Output widget's outputs.

    ``state`` maps model ids to the saved ``{"model_name", "state"}`` entries of the notebook's widget metadata.
    Without saved state, the widget's text/plain representation stays (it is what a kernel-less viewer shows)."""
    model_id = output["data"][WIDGET_VIEW]["model_id"]
    if model_id not in state:
        data = {key: value for key, value in output["data"].items() if key != WIDGET_VIEW}
        return [dict(output, data=data)] if data else []
    inner: list[dict] = []
    body, interactive = _widget_html(model_id, state, inner)
    note = f'<p class="rl-widget-note">{html.escape(STATIC_NOTE)}</p>' if interactive else ""
    rendering = {"output_type": "display_data", "metadata": {},
                 "data": {"text/html": f'<div class="rl-widget-static">{body}{note}</div>'}}
    return [rendering] + [dict(o) for o in inner]


def staticize_widgets(notebook: dict) -> int:
    """Replace every widget-view output of ``notebook`` in place; drop the saved state. Returns how many."""
    saved = notebook.get("metadata", {}).pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    replaced = 0
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        new = []
        for output in cell.get("outputs", []):
            if WIDGET_VIEW in output.get("data", {}):
                new += static_widget_outputs(output, saved)
                replaced += 1
            else:
                new.append(output)
        cell["outputs"] = new
    return replaced


# ---------------------------------------------------------------------------------------------------------------
# links and pages

_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s#]+)(#[^)\s]*)?\)")


def retarget_links(text: str, page: Path, src: Path, root: Path, repo_url: str) -> str:
    """Point Markdown links from ``page`` (a staged file under ``src``) that leave the site to the repository."""

    def fix(match: re.Match) -> str:
        target, anchor = match.group(1), match.group(2) or ""
        staged = (page.parent / target).resolve()
        if staged.exists() and staged.is_file():
            return match.group(0)
        try:
            in_repo = (root / page.parent.relative_to(src) / target).resolve().relative_to(root)
        except ValueError:
            return match.group(0)  # outside the repository: leave it for Sphinx to report
        kind = "tree" if (root / in_repo).is_dir() else "blob"
        return f"]({repo_url}/{kind}/main/{in_repo.as_posix()}{anchor})"

    return _LINK.sub(fix, text)


def api_pages(src: Path) -> list[str]:
    """Write one autodoc page per subpackage (and one for ``profiles``); return their document names."""
    import recursionlab

    (src / "api").mkdir(parents=True, exist_ok=True)
    names = []
    for sub in SUBPACKAGES + ["profiles"]:
        module = f"recursionlab.{sub}"
        blocks = [f".. automodule:: {module}\n   :members:\n" if sub == "profiles" else f".. automodule:: {module}\n"]
        if sub != "profiles":
            package = __import__(module, fromlist=["__path__"])
            for info in sorted(pkgutil.walk_packages(package.__path__, prefix=module + "."), key=lambda i: i.name):
                if not info.name.rsplit(".", 1)[-1].startswith("_"):
                    blocks.append(f".. automodule:: {info.name}\n   :members:\n")
        body = "\n".join(blocks)
        (src / "api" / f"{sub}.md").write_text(f"# `{module}`\n\n```{{eval-rst}}\n{body}```\n", encoding="utf-8")
        names.append(f"api/{sub}")
    top = recursionlab.__doc__.strip().splitlines()[0]
    (src / "api" / "index.md").write_text(
        "# API reference\n\n" + top + "\n\nGenerated from the docstrings of the installed `recursionlab` package. "
        "Layers, from bottom to top (an import only ever points down this list): "
        + ", ".join(f"[`{s}`]({s}.md)" for s in SUBPACKAGES) + "; [`profiles`](profiles.md) sits beside them.\n",
        encoding="utf-8")
    return names


def stage(root: Path = ROOT, src: Path | None = None) -> Path:
    """Copy the site's sources into ``src`` (default ``root/_build/book-src``), transformed as the module says."""
    src = src or root / "_build" / "book-src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    repo_url = repository_url(root)
    for folder in ("notebooks", "exercises", "docs"):
        shutil.copytree(root / folder, src / folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(BOOK / "intro.md", src / "intro.md")
    shutil.copytree(BOOK / "_static", src / "_static")  # Jupyter Book adds the CSS files it finds there
    (src / "_ext").mkdir()
    shutil.copy(BOOK / "recursionlab_sphinx.py", src / "_ext" / "recursionlab_sphinx.py")
    config = (BOOK / "_config.yml").read_text(encoding="utf-8")
    config, count = re.subn(r'^(  url: )""', rf'\g<1>"{repo_url}"', config, flags=re.M)
    if count != 1:
        raise ValueError("book/_config.yml must hold exactly one `  url: \"\"` line under repository:")
    (src / "_config.yml").write_text(config, encoding="utf-8")

    for page in sorted(src.rglob("*.md")):
        page.write_text(retarget_links(page.read_text(encoding="utf-8"), page, src, root, repo_url), encoding="utf-8")
    for path in sorted(src.rglob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        staticize_widgets(notebook)
        for cell in notebook["cells"]:
            if cell["cell_type"] == "markdown":
                text = "".join(cell["source"])
                cell["source"] = retarget_links(text, path, src, root, repo_url)
        path.write_text(json.dumps(notebook, ensure_ascii=False, indent=1), encoding="utf-8")

    api = api_pages(src)
    lessons = sorted(p.relative_to(src).with_suffix("").as_posix() for p in (src / "notebooks").glob("*.ipynb"))
    exercises = sorted(p.relative_to(src).with_suffix("").as_posix() for p in (src / "exercises").glob("*.ipynb"))
    papers = sorted(p.relative_to(src).with_suffix("").as_posix() for p in (src / "docs" / "papers").glob("*.md"))
    toc = ["format: jb-book", "root: intro", "parts:"]
    for caption, files, sections in (("Lessons", lessons, None), ("Exercises", exercises, None),
                                     ("Design and papers", ["docs/README", "docs/design"], papers),
                                     ("API reference", ["api/index"], api)):
        toc += [f"  - caption: {caption}", "    chapters:"] + [f"      - file: {name}" for name in files]
        if sections:  # the paper pages and API pages hang under the last chapter of their part
            toc += ["        sections:"] + [f"          - file: {name}" for name in sections]
    (src / "_toc.yml").write_text("\n".join(toc) + "\n", encoding="utf-8")
    return src


def build_book(root: Path = ROOT, out: Path | None = None) -> Path:
    """Stage the sources and build the HTML site into ``out`` (default ``root/_build/book/html``); return ``out``.

    Raises :class:`RuntimeError` with Sphinx's warnings when the build warns or fails."""
    out = out or root / "_build" / "book" / "html"
    src = stage(root)
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-c", _SPHINX, str(src), str(out), str(src / "_config.yml"), str(src / "_toc.yml")]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    log = out.parent / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        warnings = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", done.stderr).splitlines() if line.strip()]
        shown = "\n".join(warnings[:60]) + (f"\n... {len(warnings) - 60} more lines" if len(warnings) > 60 else "")
        raise RuntimeError(f"book build failed (warnings are errors; full log: {log}):\n{shown}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default _build/book/html)")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:  # `python book/build.py` puts book/ first; the API pages import this checkout
        sys.path.insert(0, str(ROOT))
    start = time.perf_counter()
    try:
        out = build_book(ROOT, args.out)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"site built in {time.perf_counter() - start:.0f} s: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
