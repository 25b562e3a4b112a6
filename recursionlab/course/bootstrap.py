"""The first code cell of every notebook, written so that it also works where recursionlab is not installed.

On Colab, Kaggle or Binder a notebook opens in a Python that lacks the course library. The cell
:data:`BOOTSTRAP_CELL` therefore starts with a plain ``try: import recursionlab`` and, if that fails, installs the
package with pip -- from ``RECURSIONLAB_INSTALL_FROM`` when set (a wheel, a folder, a ``git+`` URL), else from PyPI,
else from the repository :data:`REPO_URL` -- and says so in one line. Then ``setup_notebook()`` picks the profile
(``gpu`` when CUDA is present), the device and the thread count, and prints them.

This module cannot run inside that cell (it is part of what the cell installs); it holds the cell's text and the
tool that writes it into notebooks::

    python -m recursionlab.course.bootstrap stamp notebooks/*.ipynb solutions/*.ipynb           # dry run: prints
    python -m recursionlab.course.bootstrap stamp --write notebooks/*.ipynb solutions/*.ipynb   # writes

``stamp`` puts :data:`INSTALL_BLOCK` at the top of each notebook's first code cell that calls ``setup_notebook``
(replacing an older install block), so the cell's own imports and extra lines stay as they were.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The one place the repository's address is written in code; tests/test_packaging.py checks it equals
# pyproject.toml's [project.urls] Repository.
REPO_URL = "https://github.com/recursionlab/recursionlab"
INSTALL_ENV_VAR = "RECURSIONLAB_INSTALL_FROM"
MARKER = "# recursionlab set-up:"

INSTALL_BLOCK = f'''{MARKER} installs the course library where it is missing (Colab, Kaggle, Binder), once
try:
    import recursionlab
except ImportError:
    import importlib, os, subprocess, sys
    src = os.environ.get("{INSTALL_ENV_VAR}", "recursionlab")
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    if subprocess.call(pip + [src]) != 0:  # not on PyPI (yet): from the repository; a bad path raises here
        src = "git+{REPO_URL}" if src == "recursionlab" else src
        subprocess.check_call(pip + [src])
    importlib.invalidate_caches()
    print(f"installed recursionlab from {{src}}")
'''

BOOTSTRAP_CELL = INSTALL_BLOCK + '''
from recursionlab.course import setup_notebook

env = setup_notebook()  # seeds everything, picks the profile, device and threads, and prints them
'''


def _strip_install_block(lines: list[str]) -> list[str]:
    """``lines`` without a previously stamped install block (and the blank lines after it)."""
    if not lines or not lines[0].startswith(MARKER):
        return lines
    i = 1  # the block is its marker line, `try:`, `except ImportError:` and indented lines
    while i < len(lines) and (lines[i].startswith((" ", "\t")) or lines[i] in ("try:", "except ImportError:")):
        i += 1
    rest = lines[i:]
    while rest and not rest[0].strip():
        rest = rest[1:]
    return rest


def stamp_source(source: str) -> str:
    """The first cell's new source: :data:`INSTALL_BLOCK`, a blank line, then the cell's own lines."""
    rest = _strip_install_block(source.splitlines())
    return INSTALL_BLOCK + "\n" + "\n".join(rest).rstrip("\n")


def _setup_cell(notebook: dict) -> dict | None:
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            return cell if "setup_notebook" in src else None
    return None


def stamp(paths: list[Path], write: bool = False) -> list[str]:
    """Stamp the install block into each notebook's first code cell; returns one report line per notebook.

    Without ``write`` nothing is written and the new cells are printed. A notebook whose first code cell does not
    call ``setup_notebook`` is left alone and reported.
    """
    report = []
    for path in paths:
        notebook = json.loads(Path(path).read_text(encoding="utf-8"))
        cell = _setup_cell(notebook)
        if cell is None:
            report.append(f"{path}: skipped (the first code cell does not call setup_notebook)")
            continue
        old = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        new = stamp_source(old)
        if new == old:
            report.append(f"{path}: unchanged")
            continue
        if write:
            cell["source"] = new.splitlines(keepends=True)
            text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
            Path(path).write_text(text, encoding="utf-8")
            report.append(f"{path}: stamped")
        else:
            report.append(f"{path}: would become\n" + "\n".join("    " + line for line in new.splitlines()))
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m recursionlab.course.bootstrap stamp [--write] NOTEBOOK...`` (also ``cell``: print the cell)."""
    parser = argparse.ArgumentParser(prog="python -m recursionlab.course.bootstrap", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("stamp", help="put the install block into each notebook's first cell (dry run by default)")
    st.add_argument("notebooks", nargs="+", type=Path)
    st.add_argument("--write", action="store_true", help="write the notebooks (default: print what would change)")
    sub.add_parser("cell", help="print the bootstrap cell")
    args = parser.parse_args(argv)
    if args.command == "cell":
        print(BOOTSTRAP_CELL, end="")
        return 0
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    for line in stamp(args.notebooks, write=args.write):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
