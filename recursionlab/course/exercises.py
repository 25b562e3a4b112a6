"""Generate ``exercises/`` from the solution notebooks in ``solutions/`` (nbgrader-style markers).

In a code cell of a solution notebook, every block ::

    ### BEGIN SOLUTION
    ...the answer...
    ### END SOLUTION

becomes ``# YOUR CODE HERE`` plus ``raise NotImplementedError(...)`` at the same indentation, and blocks between
``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` disappear. Outputs are cleared. Run::

    python -m recursionlab.course.exercises          # (re)write exercises/
    python -m recursionlab.course.exercises --check  # exit 1 if exercises/ is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB_MESSAGE = "exercise not solved yet: replace this line with your code"
ROOT = Path(__file__).resolve().parents[2]


class MarkerError(ValueError):
    """A solution cell with unbalanced or nested markers."""


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every solution block in ``source`` by a stub; remove hidden-test blocks."""
    out: list[str] = []
    state = None  # None, "solution" or "hidden"
    for lineno, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped == BEGIN or stripped == BEGIN_HIDDEN:
            if state is not None:
                raise MarkerError(f"{where}, line {lineno}: {stripped!r} inside an open block")
            state = "solution" if stripped == BEGIN else "hidden"
            if state == "solution":
                indent = re.match(r"\s*", line).group(0)
                out.append(f"{indent}# YOUR CODE HERE")
                out.append(f'{indent}raise NotImplementedError("{STUB_MESSAGE}")')
            continue
        if stripped == END or stripped == END_HIDDEN:
            expected = "solution" if stripped == END else "hidden"
            if state != expected:
                raise MarkerError(f"{where}, line {lineno}: {stripped!r} without a matching BEGIN")
            state = None
            continue
        if state is None:
            out.append(line)
    if state is not None:
        raise MarkerError(f"{where}: a {state} block is never closed")
    return "\n".join(out)


def make_exercise(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The student version of a solution notebook (a new notebook; the input is not modified)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata = {k: v for k, v in solution.metadata.items() if k == "kernelspec"}
    nb.metadata["recursionlab"] = {"generated_from": f"solutions/{name}", "do_not_edit": True}
    note = nbformat.v4.new_markdown_cell(
        f"> **Exercise notebook.** Generated from `solutions/{name}` by `python -m recursionlab.course.exercises`; "
        "edit the solution notebook, not this file. Fill in every `# YOUR CODE HERE`, run the cell, then run the "
        "check below it."
    )
    note.metadata = {}
    cells = [note]
    for i, cell in enumerate(solution.cells):
        source = cell.source
        if cell.cell_type == "code":
            source = strip_solutions(source, where=f"solutions/{name}, cell {i}")
            new = nbformat.v4.new_code_cell(source)
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(source)
        else:
            new = nbformat.v4.new_raw_cell(source)
        new.metadata = {k: v for k, v in cell.metadata.items() if k in ("tags",)}
        cells.append(new)
    for j, cell in enumerate(cells):
        cell["id"] = f"cell-{j}"
    nb.cells = cells
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def expected_exercises(root: Path = ROOT) -> dict[Path, str]:
    """Map of exercise path -> the text it should have, for every solution notebook."""
    result = {}
    for path in sorted((root / "solutions").glob("*.ipynb")):
        solution = nbformat.read(path, as_version=4)
        result[root / "exercises" / path.name] = render(make_exercise(solution, path.name))
    return result


def stale_exercises(root: Path = ROOT) -> list[str]:
    """Exercise notebooks that are missing, out of date, or without a solution."""
    problems = []
    expected = expected_exercises(root)
    for path, text in expected.items():
        if not path.exists():
            problems.append(f"{path.relative_to(root)} is missing")
        elif path.read_text() != text:
            problems.append(f"{path.relative_to(root)} differs from its solution notebook")
    for path in sorted((root / "exercises").glob("*.ipynb")):
        if path not in expected:
            problems.append(f"{path.relative_to(root)} has no solutions/{path.name}")
    return problems


def write_exercises(root: Path = ROOT) -> list[Path]:
    written = []
    (root / "exercises").mkdir(exist_ok=True)
    for path, text in expected_exercises(root).items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report whether exercises/ is up to date")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_exercises()
        for p in problems:
            print(p)
        print("exercises/ is up to date" if not problems else "run: python -m recursionlab.course.exercises")
        return 1 if problems else 0
    for path in write_exercises():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
