"""Importers for the papers' own data files, for users who have them (nothing here downloads anything).

* Sudoku-Extreme and Maze-30x30-Hard as published with HRM: a folder holding ``train.csv`` and ``test.csv`` with the
  header ``source,question,answer,rating``. Sudoku rows hold 81-character strings (``.`` or ``0`` blank, digits
  1-9); maze rows hold ``n*n`` characters of the charset ``"# SGo"`` (the answer marks the path with ``o``).
  :func:`read_puzzle_csv` checks every line and names the file and line of the first problem.
  :func:`load_sudoku_extreme` / :func:`load_maze_hard` return (train, test) arrays; the papers' 1k training subset
  is drawn with a *fixed* seed (HRM's builder uses ``np.random.choice`` without one, so its subset is not
  reproducible), the test split is the whole ``test.csv`` as in the papers.
* ARC tasks in the ARC-AGI JSON layout (one ``{"train": [...], "test": [...]}`` file per task, each pair
  ``{"input": grid, "output": grid}``): :func:`load_arc_folder` reads a folder recursively. Files under a folder
  named ``training`` or ``evaluation`` get that split; every other task (ConceptARC's ``corpus/<Concept>/*.json``)
  is a ``"concept"`` task, which the papers put wholly into training.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recursionlab.data import maze as maze_data
from recursionlab.data.arc import ArcTask

__all__ = [
    "CSV_COLUMNS",
    "PuzzleRows",
    "load_arc_folder",
    "load_maze_hard",
    "load_sudoku_extreme",
    "read_puzzle_csv",
    "subsample",
]

CSV_COLUMNS = ("source", "question", "answer", "rating")


@dataclass
class PuzzleRows:
    """Rows of one CSV file: ``questions``/``answers`` (N, L) int64 (Sudoku: 0 blank, 1..9; maze: tokens 1..5),
    ``ratings`` (N,) float64, ``sources`` (list of str) and the file they came from."""

    questions: np.ndarray
    answers: np.ndarray
    ratings: np.ndarray
    sources: list[str]
    path: Path

    def __len__(self) -> int:
        return len(self.questions)

    def take(self, index) -> PuzzleRows:
        """The rows ``index`` (an int array) as a new :class:`PuzzleRows`."""
        idx = np.asarray(index, dtype=np.int64)
        return PuzzleRows(
            self.questions[idx], self.answers[idx], self.ratings[idx], [self.sources[i] for i in idx], self.path
        )


_SUDOKU_Q = {".": 0, "0": 0, **{str(d): d for d in range(1, 10)}}
_MAZE = {ch: i + 1 for i, ch in enumerate(maze_data.CHARSET)}


def _lookup(table: dict[str, int], no_blank: bool) -> np.ndarray:
    out = np.full(256, -1, dtype=np.int64)
    for ch, v in table.items():
        if not (no_blank and v == 0):
            out[ord(ch)] = v
    return out


_LOOKUPS = {
    ("sudoku", "question"): _lookup(_SUDOKU_Q, False),
    ("sudoku", "answer"): _lookup(_SUDOKU_Q, True),
    ("maze", "question"): _lookup(_MAZE, False),
    ("maze", "answer"): _lookup(_MAZE, False),
}


def _parse_cell_string(text: str, kind: str, length: int, where: str, field: str) -> np.ndarray:
    if len(text) != length:
        raise ValueError(f"{where}: {field} has {len(text)} characters, a {kind} needs {length}")
    raw = text.encode("utf-8")
    if len(raw) == length:  # plain ASCII: one vectorised lookup (Sudoku-Extreme's test file has 423k rows)
        values = _LOOKUPS[(kind, field)][np.frombuffer(raw, dtype=np.uint8)]
        if (values >= 0).all():
            return values
    table = _SUDOKU_Q if kind == "sudoku" else _MAZE
    out = np.empty(length, dtype=np.int64)
    for pos, ch in enumerate(text):
        v = table.get(ch)
        if v is None or (kind == "sudoku" and field == "answer" and v == 0):
            allowed = "digits 1-9" if field == "answer" else "'.', '0' and digits 1-9"
            if kind == "maze":
                allowed = f"the characters of {maze_data.CHARSET!r}"
            raise ValueError(f"{where}: bad character {ch!r} at position {pos} of the {field}; allowed {allowed}")
        out[pos] = v
    return out


def read_puzzle_csv(path: str | Path, kind: str, length: int | None = None) -> PuzzleRows:
    """Read a ``source,question,answer,rating`` CSV of Sudoku (``kind="sudoku"``, 81 cells) or mazes
    (``kind="maze"``, ``length`` cells, default 900).

    Every line is checked: the header, the number of columns, the length and characters of question and answer,
    the rating as a number, and that the answer keeps the question's givens (Sudoku) or only marks open cells
    (maze). The first problem raises ``ValueError`` naming the file and line.
    """
    if kind not in ("sudoku", "maze"):
        raise ValueError(f"kind must be 'sudoku' or 'maze', got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such CSV file: {path}")
    length = length or (81 if kind == "sudoku" else 900)
    qs, ans, ratings, sources = [], [], [], []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_COLUMNS:
            raise ValueError(f"{path}, line 1: header must be {','.join(CSV_COLUMNS)}, got {header!r}")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            if not row:
                continue
            if len(row) != len(CSV_COLUMNS):
                raise ValueError(f"{where}: {len(row)} columns, expected {len(CSV_COLUMNS)} ({','.join(CSV_COLUMNS)})")
            source, question, answer, rating = row
            q = _parse_cell_string(question, kind, length, where, "question")
            a = _parse_cell_string(answer, kind, length, where, "answer")
            if kind == "sudoku" and ((q > 0) & (q != a)).any():
                pos = int(np.flatnonzero((q > 0) & (q != a))[0])
                raise ValueError(f"{where}: the answer changes the given at position {pos}")
            if kind == "maze" and ((q != a) & ~((q == maze_data.OPEN) & (a == maze_data.PATH))).any():
                raise ValueError(f"{where}: the answer differs from the question outside open cells")
            try:
                value = float(rating)
            except ValueError:
                raise ValueError(f"{where}: rating {rating!r} is not a number") from None
            qs.append(q)
            ans.append(a)
            ratings.append(value)
            sources.append(source)
    if not qs:
        raise ValueError(f"{path}: no data rows after the header")
    return PuzzleRows(np.stack(qs), np.stack(ans), np.array(ratings), sources, path)


def subsample(rows: PuzzleRows, n: int | None, seed: int = 0) -> PuzzleRows:
    """``n`` rows drawn without replacement with ``numpy.random.default_rng(seed)`` (kept in file order), or all
    rows when ``n`` is None or at least the number of rows. The same seed always gives the same subset."""
    if n is None or n >= len(rows):
        return rows
    if n < 1:
        raise ValueError(f"subsample size must be >= 1, got {n}")
    idx = np.sort(np.random.default_rng(seed).choice(len(rows), size=int(n), replace=False))
    return rows.take(idx)


def _folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"data path {folder} is not a folder (expected train.csv and test.csv inside)")
    return folder


def load_sudoku_extreme(path: str | Path, n_train: int | None = 1000, seed: int = 0) -> tuple[PuzzleRows, PuzzleRows]:
    """(train, test) of a Sudoku-Extreme folder: ``n_train`` training rows drawn with ``seed`` (None: all of
    ``train.csv``, Sudoku-Extreme-Full) and the whole ``test.csv``. Grids are (N, 81) int64, 0 = blank."""
    folder = _folder(path)
    train = subsample(read_puzzle_csv(folder / "train.csv", "sudoku"), n_train, seed)
    return train, read_puzzle_csv(folder / "test.csv", "sudoku")


def load_maze_hard(
    path: str | Path, n_train: int | None = 1000, seed: int = 0, size: int = 30
) -> tuple[PuzzleRows, PuzzleRows]:
    """(train, test) of a Maze-30x30-Hard folder as maze tokens (N, size*size) int64 (1 wall .. 5 path)."""
    folder = _folder(path)
    train = subsample(read_puzzle_csv(folder / "train.csv", "maze", size * size), n_train, seed)
    return train, read_puzzle_csv(folder / "test.csv", "maze", size * size)


# ----------------------------------------------------------------------------------------------------------
# ARC JSON folders (ARC-AGI layout; ConceptARC corpus)
# ----------------------------------------------------------------------------------------------------------


def _grid(value, where: str) -> np.ndarray:
    try:
        g = np.array(value, dtype=np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: a grid must be a list of equal-length lists of integers") from None
    if g.ndim != 2 or g.size == 0:
        raise ValueError(f"{where}: a grid must be a non-empty 2-D list, got shape {g.shape}")
    if g.min() < 0 or g.max() > 9 or max(g.shape) > 30:
        raise ValueError(f"{where}: colours must be 0..9 and sides at most 30, got shape {g.shape}, "
                         f"values {g.min()}..{g.max()}")
    return g


def _read_task(path: Path, split: str) -> ArcTask:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict) or "train" not in data or "test" not in data:
        raise ValueError(f"{path}: an ARC task is an object with 'train' and 'test' lists of pairs")
    pairs = {}
    for part in ("train", "test"):
        out = []
        for i, pair in enumerate(data[part]):
            where = f"{path}, {part} pair {i}"
            if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
                raise ValueError(f"{where}: each pair needs 'input' and 'output' grids")
            out.append((_grid(pair["input"], where + " input"), _grid(pair["output"], where + " output")))
        pairs[part] = out
    if not pairs["train"] or not pairs["test"]:
        raise ValueError(f"{path}: a task needs at least one train and one test pair")
    return ArcTask(path.stem, split, pairs["train"], pairs["test"])


def load_arc_folder(path: str | Path) -> list[ArcTask]:
    """Every ``*.json`` task under ``path`` (recursively, sorted by path). A task's split is ``"training"`` or
    ``"evaluation"`` when a folder of that name is on its path below ``path``, else ``"concept"``."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"ARC data path {root} is not a folder of task JSON files")
    files = sorted(root.rglob("*.json"))
    if not files:
        raise ValueError(f"no *.json task files under {root}")
    tasks = []
    for f in files:
        parts = f.relative_to(root).parts[:-1]
        split = next((p for p in parts if p in ("training", "evaluation")), "concept")
        tasks.append(_read_task(f, split))
    return tasks
