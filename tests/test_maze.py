"""Mazes: labels are shortest paths (checked by an independent Dijkstra), hard split, tokens, augmentation."""

from __future__ import annotations

import heapq

import numpy as np
import pytest

from recursionlab.data import maze as M


def _dijkstra(tokens: np.ndarray) -> tuple[int, int]:
    """Shortest start->goal distance and number of shortest paths, by Dijkstra with a heap (unit weights)."""
    n = int(round(np.sqrt(tokens.size)))
    grid = tokens.reshape(n, n)
    start = tuple(np.argwhere(grid == M.START)[0])
    goal = tuple(np.argwhere(grid == M.GOAL)[0])
    best = {start: 0}
    count = {start: 1}
    heap = [(0, start)]
    done = set()
    while heap:
        d, (r, c) = heapq.heappop(heap)
        if (r, c) in done:
            continue
        done.add((r, c))
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            q = (r + dr, c + dc)
            if not (0 <= q[0] < n and 0 <= q[1] < n) or grid[q] == M.WALL:
                continue
            if d + 1 < best.get(q, 10**9):
                best[q], count[q] = d + 1, count[(r, c)]
                heapq.heappush(heap, (d + 1, q))
            elif d + 1 == best[q]:
                count[q] += count[(r, c)]
    return best.get(goal, -1), count.get(goal, 0)


def _is_chain(label: np.ndarray) -> bool:
    """Path, start and goal cells form one chain: start and goal have one marked neighbour, inner cells two."""
    n = int(round(np.sqrt(label.size)))
    grid = label.reshape(n, n)
    marked = np.isin(grid, (M.PATH, M.START, M.GOAL))
    for r, c in np.argwhere(marked):
        k = sum(
            1
            for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))
            if 0 <= r + dr < n and 0 <= c + dc < n and marked[r + dr, c + dc]
        )
        if k != (1 if grid[r, c] in (M.START, M.GOAL) else 2):
            return False
    return True


@pytest.mark.parametrize("size, algorithm, openings", [(30, "dfs", 0.05), (15, "prim", 0.2), (12, "dfs", 0.0)])
def test_labels_are_unique_shortest_paths(size, algorithm, openings):
    data = M.generate_mazes(12, size, seed=3, algorithm=algorithm, extra_openings=openings)
    assert data.inputs.shape == (12, size * size) and data.labels.shape == (12, size * size)
    for x, y, length in zip(data.inputs, data.labels, data.path_lengths):
        assert set(np.unique(x)) <= {M.WALL, M.OPEN, M.START, M.GOAL}
        assert (x == M.START).sum() == 1 and (x == M.GOAL).sum() == 1
        dist, n_paths = _dijkstra(x)
        assert dist == length and n_paths == 1
        assert (y == M.PATH).sum() == length - 1  # inner cells of the path
        assert _is_chain(y)
        assert np.array_equal(np.where(y == M.PATH, M.OPEN, y), x)  # only open cells were marked
        assert M.check_maze_answer(x, y)


def test_hard_split_has_long_paths_at_30x30():
    assert M.HARD_MIN_PATH(30) == 111
    data = M.generate_mazes(4, 30, seed=0, hard=True)
    assert (data.path_lengths > 110).all()
    for x, length in zip(data.inputs, data.path_lengths):
        assert _dijkstra(x)[0] == length


def test_generation_is_deterministic_and_streams_differ():
    a = M.generate_mazes(3, 14, seed=1)
    b = M.generate_mazes(3, 14, seed=1)
    c = M.generate_mazes(3, 14, seed=1, stream=1)
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.inputs, c.inputs)


def test_check_maze_answer_rejects_wrong_answers():
    maze = M.generate_maze(16, rng=5, min_path=20)
    x, y = maze.input_tokens(), maze.label_tokens()
    assert M.check_maze_answer(x, y)
    broken = y.copy()
    broken[np.flatnonzero(y == M.PATH)[3]] = M.OPEN  # a gap in the path
    assert not M.check_maze_answer(x, broken)
    extra = y.copy()
    extra[np.flatnonzero((x == M.OPEN) & (y != M.PATH))[0]] = M.PATH  # a stray path cell
    assert not M.check_maze_answer(x, extra)
    through_wall = y.copy()
    through_wall[np.flatnonzero(x == M.WALL)[0]] = M.PATH
    assert not M.check_maze_answer(x, through_wall)
    assert not M.check_maze_answer(x, x)  # no path at all


def test_dihedral_augmentation_keeps_labels_shortest_paths():
    data = M.generate_mazes(8, 12, seed=2)
    ax, ay = M.augment_token_batch(data.inputs, data.labels, 12, np.random.default_rng(0))
    assert not np.array_equal(ax, data.inputs)
    for x, y, length in zip(ax, ay, data.path_lengths):
        assert M.check_maze_answer(x, y)
        assert _dijkstra(x)[0] == length


def test_text_round_trip_and_errors():
    maze = M.generate_maze(10, rng=0)
    text = M.maze_to_text(maze.label_tokens())
    assert len(text.splitlines()) == 10 and set(text) <= set(M.CHARSET + "\n")
    assert np.array_equal(M.maze_from_text(text), maze.label_tokens())
    with pytest.raises(ValueError, match="bad character 'x' at row 0, column 0"):
        M.maze_from_text("x" + text[1:])
    with pytest.raises(ValueError, match="row 1 has"):
        M.maze_from_text("###\n##\n###")


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="maze size"):
        M.generate_maze(3)
    with pytest.raises(ValueError, match="extra_openings"):
        M.generate_maze(10, extra_openings=1.5)
    with pytest.raises(ValueError, match="algorithm"):
        M.generate_maze(10, algorithm="kruskal")
    with pytest.raises(RuntimeError, match="lower min_path"):
        M.generate_maze(8, min_path=500, max_tries=3)
