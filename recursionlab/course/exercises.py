"""Make the masters in ``solutions/`` nbgrader source notebooks and generate ``exercises/`` from them.

Authors write plain markers (see the exercise contract); this module turns them into nbgrader cell metadata
(schema version 3) and produces the student version exactly as nbgrader's ``generate_assignment`` would:

* a cell with a ``### BEGIN SOLUTION`` / ``### END SOLUTION`` block is an *autograded answer* (solution) cell;
  in the student version each block becomes ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` at the
  block's indentation. The block must sit inside a function body, so that the stub does not crash "Run all";
* a code cell whose first line is ``# CHECK (N points)`` is a graded *autograder test* cell worth N points
  (locked). ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` blocks inside it are removed from the student
  version and restored by nbgrader's autograder;
* every other cell is locked read-only.

grade_ids are stable: ``lNN-answer-<first function defined>``, ``lNN-check-<X of the first check_X(...) called>`` and
``lNN-cell-<position>`` for read-only cells. Run::

    python -m recursionlab.course.exercises          # tag solutions/, (re)write exercises/
    python -m recursionlab.course.exercises --check  # exit 1 if a master's tags or exercises/ are out of date

The student version differs from nbgrader's output only by what this module adds or drops on purpose: a header
cell (no nbgrader metadata), the notebook metadata key ``recursionlab`` and the dropped notebook ``widgets`` state and
cell ``execution`` timestamps (see :func:`normalise_for_comparison`).
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import re
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
# nbgrader matches its delimiters anywhere in a line (ClearSolutions / ClearHiddenTests); so do we.
SOLUTION_DELIMITERS = ("BEGIN SOLUTION", "END SOLUTION")
HIDDEN_DELIMITERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")  # nbgrader's default python stub
CHECK_LINE = re.compile(r"^# CHECK \((\d+) points?\)\s*$")
SCHEMA_VERSION = 3
ROOT = Path(__file__).resolve().parents[2]


class MarkerError(ValueError):
    """A cell with unbalanced or nested markers, or markers where nbgrader does not allow them."""


# ---------------------------------------------------------------------------------------------------------------
# Stripping solution and hidden-test blocks (nbgrader's ClearSolutions / ClearHiddenTests)


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every solution block in ``source`` by nbgrader's stub; remove hidden-test blocks."""
    out: list[str] = []
    state = None  # None, "solution" or "hidden"
    for lineno, line in enumerate(source.split("\n"), start=1):
        begins = "solution" if SOLUTION_DELIMITERS[0] in line else "hidden" if HIDDEN_DELIMITERS[0] in line else None
        ends = "solution" if SOLUTION_DELIMITERS[1] in line else "hidden" if HIDDEN_DELIMITERS[1] in line else None
        if begins:
            if state is not None:
                raise MarkerError(f"{where}, line {lineno}: {line.strip()!r} inside an open block")
            state = begins
            if state == "solution":
                indent = re.match(r"\s*", line).group(0)
                out.extend(indent + stub for stub in CODE_STUB)
            continue
        if ends:
            if state != ends:
                raise MarkerError(f"{where}, line {lineno}: {line.strip()!r} without a matching BEGIN")
            state = None
            continue
        if state is None:
            out.append(line)
    if state is not None:
        raise MarkerError(f"{where}: a {state} block is never closed")
    return "\n".join(out)


def solution_blocks(source: str) -> list[tuple[int, list[str]]]:
    """The solution blocks of a cell: ``(line number of BEGIN, the block's lines)`` for each."""
    blocks, current, start = [], None, 0
    for lineno, line in enumerate(source.split("\n"), start=1):
        if SOLUTION_DELIMITERS[0] in line:
            current, start = [], lineno
        elif SOLUTION_DELIMITERS[1] in line and current is not None:
            blocks.append((start, current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def top_level_solution_blocks(source: str) -> list[int]:
    """Line numbers of solution blocks NOT inside a function body (their stub would crash "Run all")."""
    stripped = strip_solutions(source)
    try:
        tree = ast.parse(stripped)
    except SyntaxError:
        return [lineno for lineno, _ in solution_blocks(source)]
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(range(node.body[0].lineno, (node.end_lineno or node.lineno) + 1))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.lineno not in inside:
            line = stripped.split("\n")[node.lineno - 1].strip()
            if line == CODE_STUB[1]:
                bad.append(node.lineno)
    return sorted(bad)


# ---------------------------------------------------------------------------------------------------------------
# Tagging the masters with nbgrader metadata


def _has(source: str, delimiters: tuple[str, str]) -> bool:
    return any(d in source for d in delimiters)


def cell_role(cell: nbformat.NotebookNode, where: str = "cell") -> str:
    """``"solution"``, ``"check"`` or ``"readonly"`` for a master's cell (see the module docstring)."""
    first = cell.source.split("\n", 1)[0].strip()
    is_check = cell.cell_type == "code" and CHECK_LINE.match(first) is not None
    if first.startswith("# CHECK") and not is_check:
        raise MarkerError(f"{where}: first line {first!r} should read exactly '# CHECK (N points)', N an integer")
    if _has(cell.source, SOLUTION_DELIMITERS):
        if cell.cell_type != "code":
            raise MarkerError(f"{where}: a {cell.cell_type} cell mentions a solution delimiter "
                              f"({SOLUTION_DELIMITERS[0]!r}); nbgrader would replace it. Reword the text.")
        if is_check:
            raise MarkerError(f"{where}: a '# CHECK' cell must not contain a solution block; split the cell")
        return "solution"
    if _has(cell.source, HIDDEN_DELIMITERS) and not is_check:
        raise MarkerError(f"{where}: hidden tests are only allowed in a '# CHECK (N points)' cell")
    return "check" if is_check else "readonly"


def _short(name: str) -> str:
    match = re.match(r"(\d+)", name)
    return f"l{match.group(1)}" if match else re.sub(r"[^A-Za-z0-9_-]", "_", Path(name).stem)


def _first_name(source: str, pattern: str) -> str | None:
    match = re.search(pattern, source, flags=re.MULTILINE)
    return match.group(1) if match else None


def nbgrader_metadata(cell: nbformat.NotebookNode, index: int, name: str, taken: set[str]) -> dict:
    """The nbgrader metadata (schema 3) the tagger gives cell ``index`` of master ``name``."""
    where = f"solutions/{name}, cell {index}"
    role = cell_role(cell, where)
    prefix = _short(name)
    if role == "solution":
        key = _first_name(cell.source, r"^\s*def\s+(\w+)")
        grade_id = f"{prefix}-answer-{key}" if key else f"{prefix}-answer-cell{index}"
    elif role == "check":
        key = _first_name(cell.source, r"\bcheck_(\w+)\s*\(") or _first_name(cell.source, r"\bcheck\(\s*\"([\w ]+)\"")
        grade_id = f"{prefix}-check-{re.sub(r'[^A-Za-z0-9_]', '_', key)}" if key else f"{prefix}-check-cell{index}"
    else:
        grade_id = f"{prefix}-cell-{index:02d}"
    if grade_id in taken:
        grade_id = f"{grade_id}-{index}"
    taken.add(grade_id)
    meta = {"grade": role == "check", "grade_id": grade_id, "locked": role != "solution",
            "schema_version": SCHEMA_VERSION, "solution": role == "solution", "task": False}
    if role == "check":
        meta["points"] = int(CHECK_LINE.match(cell.source.split("\n", 1)[0].strip()).group(1))
    return meta


def tag_master(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """A copy of master ``nb`` whose every cell carries the nbgrader metadata derived from its markers."""
    nb = copy.deepcopy(nb)
    taken: set[str] = set()
    for i, cell in enumerate(nb.cells):
        cell.metadata["nbgrader"] = nbgrader_metadata(cell, i, name, taken)
    return nb


# ---------------------------------------------------------------------------------------------------------------
# The student version (nbgrader's generate_assignment pipeline, re-done without nbgrader)


def compute_checksum(cell: nbformat.NotebookNode) -> str:
    """nbgrader's cell checksum (``nbgrader.utils.compute_checksum``), so the exercise equals its output."""
    meta = cell.metadata["nbgrader"]
    m = hashlib.md5()
    for part in (cell.source, cell.cell_type, str(bool(meta.get("grade"))), str(bool(meta.get("solution"))),
                 str(bool(meta.get("locked")) and not meta.get("solution")), meta["grade_id"]):
        m.update(part.encode("utf-8"))
    if meta.get("grade"):
        m.update(str(float(meta["points"])).encode("utf-8"))
    return m.hexdigest()


def student_cell(cell: nbformat.NotebookNode, where: str) -> nbformat.NotebookNode:
    """One tagged master cell as generate_assignment releases it (locks, stubs, no outputs, checksum)."""
    new = copy.deepcopy(cell)
    meta = new.metadata.get("nbgrader", {})
    if meta.get("solution"):
        new.metadata["deletable"] = False
    elif meta.get("grade") or meta.get("locked"):
        new.metadata["deletable"] = False
        new.metadata["editable"] = False
    new.source = strip_solutions(new.source, where=where)
    if new.cell_type == "code":
        new.outputs = []
        new.execution_count = None
        for field in ("collapsed", "scrolled"):
            new.metadata.pop(field, None)
    new.metadata.pop("execution", None)  # run timestamps: noise in a student notebook
    if meta:
        meta["checksum"] = compute_checksum(new)
        meta["cell_type"] = new.cell_type
    return new


def make_exercise(solution: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The student version of a master (a new notebook; the input is not modified). Tags the master first."""
    tagged = tag_master(solution, name)
    nb = copy.deepcopy(tagged)
    nb.metadata = {k: v for k, v in tagged.metadata.items() if k not in ("widgets", "recursionlab", "celltoolbar")}
    nb.metadata["recursionlab"] = {"generated_from": f"solutions/{name}", "do_not_edit": True}
    note = nbformat.v4.new_markdown_cell(
        f"> **Exercise notebook.** Generated from `solutions/{name}` by `python -m recursionlab.course.exercises`; "
        "edit the solution notebook, not this file. Fill in every `# YOUR CODE HERE`, run the cell, then run the "
        "check below it."
    )
    note.metadata = {}
    note["id"] = "exercise-header"
    nb.cells = [note] + [student_cell(c, f"solutions/{name}, cell {i}") for i, c in enumerate(tagged.cells)]
    return nb


def normalise_for_comparison(nb: nbformat.NotebookNode) -> dict:
    """What must agree between our exercise and nbgrader's ``generate_assignment`` release of the same master:
    drops our header cell, the notebook metadata keys ``recursionlab``/``widgets`` and cell ``execution``
    timestamps; everything else (sources, stubs, cell ids, nbgrader metadata with checksums, locks) is compared."""
    data = copy.deepcopy(dict(nb))
    data["metadata"] = {k: v for k, v in nb.metadata.items() if k not in ("recursionlab", "widgets")}
    cells = []
    for cell in nb.cells:
        if cell.get("id") == "exercise-header":
            continue
        cell = copy.deepcopy(cell)
        cell.metadata.pop("execution", None)
        cells.append(cell)
    data["cells"] = cells
    return data


# ---------------------------------------------------------------------------------------------------------------
# Files


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def masters(root: Path = ROOT) -> list[Path]:
    return sorted((root / "solutions").glob("*.ipynb"))


def expected_masters(root: Path = ROOT) -> dict[Path, str]:
    """Map of master path -> its text with up-to-date nbgrader metadata."""
    return {path: render(tag_master(nbformat.read(path, as_version=4), path.name)) for path in masters(root)}


def expected_exercises(root: Path = ROOT) -> dict[Path, str]:
    """Map of exercise path -> the text it should have, for every master."""
    result = {}
    for path in masters(root):
        solution = nbformat.read(path, as_version=4)
        result[root / "exercises" / path.name] = render(make_exercise(solution, path.name))
    return result


def stale_masters(root: Path = ROOT) -> list[str]:
    """Masters whose nbgrader metadata is missing or out of date."""
    return [f"{path.relative_to(root)} has missing or stale nbgrader metadata"
            for path, text in expected_masters(root).items() if path.read_text() != text]


def stale_exercises(root: Path = ROOT) -> list[str]:
    """Exercise notebooks that are missing, out of date, or without a master."""
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


def write_masters(root: Path = ROOT) -> list[Path]:
    written = []
    for path, text in expected_masters(root).items():
        if path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


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
    parser.add_argument("--check", action="store_true",
                        help="only report whether the masters' nbgrader tags and exercises/ are up to date")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_masters() + stale_exercises()
        for p in problems:
            print(p)
        print("solutions/ and exercises/ are up to date" if not problems
              else "run: python -m recursionlab.course.exercises")
        return 1 if problems else 0
    for path in write_masters() + write_exercises():
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
