"""Mazes on an N x N grid with a start, a goal and the shortest path between them as the label.

A maze is carved on the lattice of odd cells ``(2i+1, 2j+1)`` by a randomized depth-first search (long
winding corridors) or randomized Prim (many short branches), then ``extra_openings`` knocks out a fraction of
the remaining inner walls between lattice cells, which creates loops so that "shortest" is a real constraint.
Start and goal are open lattice cells; the label is the breadth-first-search shortest path. A hard split keeps
mazes whose shortest path is long, in the spirit of Maze-Hard (HRM paper, arXiv 2506.21734: 30x30, length >
110).

Path length here counts *moves* (cells on the path minus one). With ``unique_path=True`` (default) a goal
whose shortest path is not unique is never chosen, so the label is the only correct answer.

Tokens follow the papers' charset ``"# SGo"``: 1 wall, 2 open, 3 start, 4 goal, 5 path; 0 is PAD; vocab 6.
Inputs carry walls/open/start/goal; labels are the same grid with the path's inner cells set to 5.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from recursionlab.data.arc import dihedral

__all__ = [
    "CHARSET",
    "PAD",
    "WALL",
    "OPEN",
    "START",
    "GOAL",
    "PATH",
    "VOCAB_SIZE",
    "HARD_MIN_PATH",
    "Maze",
    "MazeSet",
    "augment_token_batch",
    "bfs_distances",
    "check_maze_answer",
    "generate_maze",
    "generate_mazes",
    "maze_from_text",
    "maze_to_text",
]

CHARSET = "# SGo"  # token = index in this string + 1
PAD, WALL, OPEN, START, GOAL, PATH = 0, 1, 2, 3, 4, 5
VOCAB_SIZE = 6
# Maze-Hard's bar for 30x30 is path length > 110; for other sizes scale with the number of cells.
HARD_MIN_PATH_30 = 111


def HARD_MIN_PATH(size: int) -> int:  # noqa: N802 - reads as a constant that depends on the size
    """Minimum shortest-path length (moves) of the hard split for an ``size x size`` maze (111 at 30x30)."""
    return max(2, int(round(HARD_MIN_PATH_30 * (size / 30) ** 2)))


@dataclass(frozen=True, eq=False)
class Maze:
    """One maze. ``walls`` (n, n) bool; ``start``/``goal`` (row, col); ``path`` (L+1, 2) int: the cells of the
    shortest path from start to goal inclusive (``path_length = L`` moves)."""

    walls: np.ndarray
    start: tuple[int, int]
    goal: tuple[int, int]
    path: np.ndarray

    @property
    def size(self) -> int:
        return int(self.walls.shape[0])

    @property
    def path_length(self) -> int:
        """Number of moves on the shortest path."""
        return len(self.path) - 1

    def input_tokens(self) -> np.ndarray:
        """(n*n,) int64: 1 wall, 2 open, 3 start, 4 goal."""
        grid = np.where(self.walls, WALL, OPEN).astype(np.int64)
        grid[self.start] = START
        grid[self.goal] = GOAL
        return grid.ravel()

    def label_tokens(self) -> np.ndarray:
        """(n*n,) int64: the input with the path's inner cells set to 5."""
        grid = self.input_tokens().reshape(self.size, self.size)
        inner = self.path[1:-1]
        grid[inner[:, 0], inner[:, 1]] = PATH
        return grid.ravel()


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 5 <= size <= 64:
        raise ValueError(f"maze size must be an int in 5..64, got {size!r}")
    return int(size)


@lru_cache(maxsize=8)
def _neighbours(n_rows: int, n_cols: int) -> tuple[tuple[int, ...], ...]:
    """Flat indices of the up/down/left/right neighbours of every cell of an (n_rows, n_cols) grid."""
    out = []
    for r in range(n_rows):
        for c in range(n_cols):
            nb = [(r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)]
            out.append(tuple(rr * n_cols + cc for rr, cc in nb if 0 <= rr < n_rows and 0 <= cc < n_cols))
    return tuple(out)


def _carve(size: int, rng: np.random.Generator, algorithm: str, extra_openings: float) -> np.ndarray:
    """(n, n) bool walls: a random spanning tree of the lattice of odd cells, plus random extra openings.

    Lattice cell (i, j) sits at grid cell (2i+1, 2j+1); opening the edge between two lattice neighbours clears
    the wall cell between them. For an even n the last row and column are lattice cells on the grid's edge.
    """
    m = size // 2  # lattice cells per side
    walls = np.ones((size, size), dtype=bool)
    walls[1 : 2 * m : 2, 1 : 2 * m : 2] = False
    lattice_nb = _neighbours(m, m)
    visited = [False] * (m * m)
    opened = []  # pairs of lattice cells joined by the spanning tree

    first = int(rng.integers(m * m))
    visited[first] = True
    if algorithm == "dfs":
        stack = [first]
        while stack:
            cell = stack[-1]
            fresh = [v for v in lattice_nb[cell] if not visited[v]]
            if not fresh:
                stack.pop()
                continue
            nxt = fresh[int(rng.integers(len(fresh)))]
            visited[nxt] = True
            opened.append((cell, nxt))
            stack.append(nxt)
    elif algorithm == "prim":
        frontier = [(first, v) for v in lattice_nb[first]]
        while frontier:
            k = int(rng.integers(len(frontier)))
            frontier[k], frontier[-1] = frontier[-1], frontier[k]
            a, b = frontier.pop()
            if visited[b]:
                continue
            visited[b] = True
            opened.append((a, b))
            frontier.extend((b, v) for v in lattice_nb[b] if not visited[v])
    else:
        raise ValueError(f"algorithm must be 'dfs' or 'prim', got {algorithm!r}")
    for a, b in opened:
        (i, j), (k, l) = divmod(a, m), divmod(b, m)
        walls[i + k + 1, j + l + 1] = False  # the wall cell between two neighbouring lattice cells
    if extra_openings > 0:
        # Inner wall cells between two lattice cells: one odd and one even coordinate, inside the lattice.
        inner = np.zeros_like(walls)
        inner[1 : 2 * m, 1 : 2 * m] = True
        rr, cc = np.indices(walls.shape)
        cand = walls & inner & ((rr % 2) != (cc % 2))
        walls &= ~(cand & (rng.random(walls.shape) < extra_openings))
    return walls


def _bfs(walls_flat: list[bool], neighbours, source: int) -> tuple[list[int], list[int]]:
    """Distances (moves; -1 unreachable) and number of shortest paths (capped at 2) from ``source``."""
    dist = [-1] * len(walls_flat)
    ways = [0] * len(walls_flat)
    dist[source], ways[source] = 0, 1
    queue = deque([source])
    while queue:
        u = queue.popleft()
        du = dist[u] + 1
        for v in neighbours[u]:
            if walls_flat[v]:
                continue
            if dist[v] < 0:
                dist[v], ways[v] = du, ways[u]
                queue.append(v)
            elif dist[v] == du:
                ways[v] = min(2, ways[v] + ways[u])
    return dist, ways


def bfs_distances(walls: np.ndarray, source: tuple[int, int]) -> np.ndarray:
    """(n_rows, n_cols) int64 breadth-first distances (moves) from ``source`` over open cells (-1: none)."""
    walls = np.asarray(walls, dtype=bool)
    n_rows, n_cols = walls.shape
    if walls[source]:
        raise ValueError(f"source {source} is a wall")
    dist, _ = _bfs(walls.ravel().tolist(), _neighbours(n_rows, n_cols), source[0] * n_cols + source[1])
    return np.array(dist, dtype=np.int64).reshape(n_rows, n_cols)


def _walk_back(dist: list[int], neighbours, start: int, goal: int) -> list[int]:
    """Cells of a shortest path start -> goal (flat indices), following decreasing distance from the goal."""
    path = [goal]
    cell = goal
    while cell != start:
        cell = next(v for v in neighbours[cell] if dist[v] == dist[cell] - 1)
        path.append(cell)
    return path[::-1]


def generate_maze(
    size: int = 30,
    rng=None,
    *,
    algorithm: str = "dfs",
    extra_openings: float = 0.05,
    min_path: int = 1,
    max_path: int | None = None,
    unique_path: bool = True,
    max_tries: int = 200,
) -> Maze:
    """Generate one maze whose shortest start-goal path has between ``min_path`` and ``max_path`` moves.

    size: grid side n (5..64); algorithm: "dfs" or "prim" carving; extra_openings: probability of removing
    each remaining inner wall (0 = a perfect maze: exactly one path between any two cells). The start is the
    lattice cell farthest from a random one (so long paths are available); the goal is a random lattice cell
    at an allowed distance whose shortest path is unique (if ``unique_path``); else a new maze is carved.
    """
    size = _check_size(size)
    if not 0.0 <= float(extra_openings) <= 1.0:
        raise ValueError(f"extra_openings must be a probability in [0, 1], got {extra_openings}")
    if max_path is not None and max_path < min_path:
        raise ValueError(f"max_path ({max_path}) is below min_path ({min_path})")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    m = size // 2
    nbrs = _neighbours(size, size)
    lattice = np.zeros((size, size), dtype=bool)
    lattice[1 : 2 * m : 2, 1 : 2 * m : 2] = True
    lattice_cells = np.flatnonzero(lattice)
    for _ in range(max_tries):
        walls = _carve(size, gen, algorithm, float(extra_openings))
        flat = walls.ravel().tolist()
        probe = int(lattice_cells[gen.integers(len(lattice_cells))])
        dist0, _ = _bfs(flat, nbrs, probe)
        far = lattice_cells[np.array(dist0)[lattice_cells] == max(dist0[c] for c in lattice_cells)]
        start = int(far[gen.integers(len(far))])
        dist, ways = _bfs(flat, nbrs, start)
        d = np.array(dist)[lattice_cells]
        ok = d >= max(1, min_path)
        if max_path is not None:
            ok &= d <= max_path
        if unique_path:
            ok &= np.array(ways)[lattice_cells] == 1
        goals = lattice_cells[ok]
        if len(goals) == 0:
            continue
        goal = int(goals[gen.integers(len(goals))])
        path = _walk_back(dist, nbrs, start, goal)
        return Maze(
            walls=walls,
            start=divmod(start, size),
            goal=divmod(goal, size),
            path=np.array([divmod(c, size) for c in path], dtype=np.int64),
        )
    raise RuntimeError(
        f"no {size}x{size} maze with a (unique) shortest path of {min_path}..{max_path} moves after "
        f"{max_tries} tries; lower min_path or extra_openings"
    )


@dataclass
class MazeSet:
    """Mazes as token arrays: ``inputs``/``labels`` (N, n*n) int64 and ``path_lengths`` (N,) int64."""

    inputs: np.ndarray
    labels: np.ndarray
    path_lengths: np.ndarray
    size: int

    def __len__(self) -> int:
        return len(self.inputs)


def generate_mazes(
    n: int,
    size: int = 30,
    seed: int = 0,
    *,
    hard: bool = False,
    stream: int = 0,
    **kwargs,
) -> MazeSet:
    """``n`` mazes, maze ``i`` seeded by ``(seed, size, stream, i)``; ``hard=True`` sets ``min_path`` to
    :func:`HARD_MIN_PATH` (111 moves at 30x30). Other keyword arguments go to :func:`generate_maze`."""
    size = _check_size(size)
    if hard:
        kwargs.setdefault("min_path", HARD_MIN_PATH(size))
    mazes = [
        generate_maze(size, np.random.default_rng([int(seed), size, int(stream), i]), **kwargs)
        for i in range(n)
    ]
    return MazeSet(
        inputs=np.stack([m.input_tokens() for m in mazes]) if mazes else np.zeros((0, size * size), np.int64),
        labels=np.stack([m.label_tokens() for m in mazes]) if mazes else np.zeros((0, size * size), np.int64),
        path_lengths=np.array([m.path_length for m in mazes], dtype=np.int64),
        size=size,
    )


def maze_to_text(tokens: np.ndarray, size: int | None = None) -> str:
    """Tokens (n*n,) -> n lines in the charset ``"# SGo"``."""
    t = np.asarray(tokens).ravel()
    size = size or int(round(np.sqrt(t.size)))
    if size * size != t.size or ((t < 1) | (t > 5)).any():
        raise ValueError("tokens must be a square grid of values 1..5 (see CHARSET)")
    return "\n".join("".join(CHARSET[v - 1] for v in t[r * size : (r + 1) * size]) for r in range(size))


def maze_from_text(text: str) -> np.ndarray:
    """n lines of ``"# SGo"`` characters -> tokens (n*n,) int64; a bad character or shape is a ValueError."""
    lines = [line for line in text.splitlines() if line]
    n = len(lines)
    for r, line in enumerate(lines):
        if len(line) != n:
            raise ValueError(f"row {r} has {len(line)} characters; a square maze of {n} rows needs {n}")
        for c, ch in enumerate(line):
            if ch not in CHARSET:
                raise ValueError(f"bad character {ch!r} at row {r}, column {c}; allowed {CHARSET!r}")
    return np.array([CHARSET.index(ch) + 1 for line in lines for ch in line], dtype=np.int64)


def check_maze_answer(input_tokens, answer_tokens) -> bool:
    """True when ``answer_tokens`` (n*n,) marks *a* shortest start-goal path of maze ``input_tokens`` (n*n,).

    The papers count a maze correct when the path is valid and shortest; with ties any shortest path counts.
    Every non-path cell must equal the input.
    """
    x = np.asarray(input_tokens).ravel()
    y = np.asarray(answer_tokens).ravel()
    if x.shape != y.shape:
        return False
    n = int(round(np.sqrt(x.size)))
    if n * n != x.size:
        raise ValueError(f"input of {x.size} tokens is not a square grid")
    if ((y != x) & ~((x == OPEN) & (y == PATH))).any():
        return False  # only open cells may turn into path cells
    grid = y.reshape(n, n)
    start = tuple(int(v) for v in np.argwhere(grid == START)[0])
    goal = tuple(int(v) for v in np.argwhere(grid == GOAL)[0])
    on_path = (grid == PATH) | (grid == START) | (grid == GOAL)
    # The marked cells must form one simple chain start -> ... -> goal.
    best = bfs_distances(x.reshape(n, n) == WALL, start)[goal]
    if best < 0 or on_path.sum() != best + 1:
        return False
    reach = bfs_distances(~on_path, start)
    return bool(reach[goal] == best)


def _dihedral_index_maps(size: int) -> np.ndarray:
    """(8, n*n) int: flat source cell of every output cell, for each of the 8 dihedral transforms."""
    idx = np.arange(size * size).reshape(size, size)
    return np.stack([dihedral(idx, k).ravel() for k in range(8)])


def augment_token_batch(inputs: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator):
    """One random dihedral transform (of 8) per row of a token batch (B, n*n), same for input and label."""
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    if inputs.shape != labels.shape or inputs.ndim != 2 or inputs.shape[1] != size * size:
        raise ValueError(f"inputs and labels must both have shape (B, {size * size})")
    src = _dihedral_index_maps(size)[rng.integers(0, 8, len(inputs))]
    return np.take_along_axis(inputs, src, axis=1), np.take_along_axis(labels, src, axis=1)
