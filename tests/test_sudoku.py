"""Sudoku: solver, generator (uniqueness, ratings, determinism, cache), augmentation, tokens and parsing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recursionlab.data import sudoku as S

# A well-known very hard published puzzle (unique solution, needs search).
HARD_TEXT = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."


# ---------------------------------------------------------------- an independent reference, written differently
def _box(n: int, r: int, c: int) -> list[tuple[int, int]]:
    br, bc = S.BOX_SHAPES[n]
    r0, c0 = r - r % br, c - c % bc
    return [(r0 + i, c0 + j) for i in range(br) for j in range(bc)]


def _valid_complete(grid: np.ndarray) -> bool:
    """Every row, column and box holds 1..n exactly once (plain set checks)."""
    n = len(grid)
    want = set(range(1, n + 1))
    rows = all(set(grid[r].tolist()) == want for r in range(n))
    cols = all(set(grid[:, c].tolist()) == want for c in range(n))
    br, bc = S.BOX_SHAPES[n]
    boxes = all(
        {int(grid[i, j]) for i, j in _box(n, r, c)} == want for r in range(0, n, br) for c in range(0, n, bc)
    )
    return rows and cols and boxes


def _count_solutions(puzzle: np.ndarray, limit: int = 2) -> int:
    """Naked-single-free plain backtracking with sets (fewest-candidates cell first), counting up to ``limit``."""
    n = len(puzzle)
    g = puzzle.tolist()

    def options(r, c):
        used = set(g[r]) | {g[i][c] for i in range(n)} | {g[i][j] for i, j in _box(n, r, c)}
        return [d for d in range(1, n + 1) if d not in used]

    def rec() -> int:
        best = None
        for r in range(n):
            for c in range(n):
                if g[r][c] == 0:
                    opts = options(r, c)
                    if not opts:
                        return 0
                    if best is None or len(opts) < len(best[2]):
                        best = (r, c, opts)
        if best is None:
            return 1
        r, c, opts = best
        total = 0
        for d in opts:
            g[r][c] = d
            total += rec()
            g[r][c] = 0
            if total >= limit:
                break
        return min(total, limit)

    return rec()


# ---------------------------------------------------------------- solver
def test_solver_finds_the_unique_solution_of_a_hard_puzzle():
    puzzle = S.parse_sudoku(HARD_TEXT)
    result = S.solve(puzzle, limit=2)
    assert result.count == 1 and result.unique
    sol = result.solutions[0]
    assert _valid_complete(sol)
    assert np.all((puzzle == 0) | (puzzle == sol))
    assert S.is_solution(puzzle, sol)
    assert result.stats.backtracks > 0 and result.stats.guesses > 0  # it really had to search


def test_solver_counts_all_288_grids_of_the_empty_4x4():
    # A classical count: there are exactly 288 valid 4x4 Sudoku grids.
    result = S.solve(np.zeros((4, 4), dtype=int), limit=1000)
    assert result.count == 288
    assert len({s.tobytes() for s in result.solutions}) == 288
    assert all(_valid_complete(s) for s in result.solutions)


def test_solver_limit_and_clashing_givens():
    empty9 = np.zeros((9, 9), dtype=int)
    assert S.solve(empty9, limit=3).count == 3
    clash = empty9.copy()
    clash[0, 0] = clash[0, 5] = 7  # only reachable through the array API, which skips parsing
    assert S.solve(clash).count == 0
    with pytest.raises(ValueError, match="limit"):
        S.solve(empty9, limit=0)


def test_solver_is_exact_on_random_puzzles_against_an_independent_counter():
    rng = np.random.default_rng(5)
    for size in (4, 6):
        for _ in range(20):
            grid = S.random_full_grid(size, rng)
            puzzle = np.where(rng.random((size, size)) < 0.6, 0, grid)
            assert min(S.solve(puzzle, limit=3).count, 3) == _count_solutions(puzzle, limit=3)


# ---------------------------------------------------------------- generator
@pytest.mark.parametrize(
    "size, difficulty",
    # 9x9 hard is hill-climbed for a second or more per puzzle: test_hard_9x9_puzzles_... covers it with one puzzle
    [(s, d) for s in S.SIZES for d in S.DIFFICULTIES if (s, d) != (9, "hard")],
)
def test_generated_puzzles_have_exactly_one_solution(size, difficulty):
    n = 4
    data = S.generate_puzzles(n, size, difficulty, seed=11, cache=False)
    for puzzle, solution, backtracks in zip(data.puzzles, data.solutions, data.backtracks):
        assert _valid_complete(solution)
        assert np.all((puzzle == 0) | (puzzle == solution))
        assert S.solve(puzzle, limit=2).count == 1
        if size < 9 or difficulty == "easy":
            assert _count_solutions(puzzle, limit=2) == 1  # independent check (fast enough below 9x9-hard)
        if difficulty == "easy":
            assert backtracks == 0
            assert (puzzle == 0).sum() == round(S.EASY_BLANK_FRACTION[size] * size * size)
        if difficulty == "hard" and size < 9:
            assert backtracks >= S.HARD_MIN_BACKTRACKS[size]
        assert backtracks == S.rate_puzzle(puzzle).backtracks  # the stored rating is reproducible
    from recursionlab.data.sudoku_rating import rate

    assert [rate(p) for p in data.puzzles] == data.ratings.tolist()


def test_minimal_puzzles_lose_uniqueness_when_any_given_is_removed():
    p = S.generate_puzzle(6, "medium", rng=3)
    for r, c in np.argwhere(p.puzzle > 0):
        fewer = p.puzzle.copy()
        fewer[r, c] = 0
        assert S.solve(fewer, limit=2).count == 2


def test_hard_9x9_puzzles_are_rated_harder_than_easy_ones():
    hard = S.generate_puzzle(9, "hard", rng=1)
    easy = S.generate_puzzle(9, "easy", rng=1)
    assert hard.rating >= S.HARD_MIN_RATING_9 > easy.rating == 0
    assert hard.stats.backtracks > easy.stats.backtracks == 0
    assert S.solve(hard.puzzle, limit=2).count == 1
    assert hard.n_givens < easy.n_givens
    assert _valid_complete(hard.solution)


def test_generation_is_deterministic_prefix_stable_and_worker_independent():
    a = S.generate_puzzles(16, 6, "medium", seed=4, cache=False, workers=1)
    b = S.generate_puzzles(16, 6, "medium", seed=4, cache=False, workers=2)
    c = S.generate_puzzles(9, 6, "medium", seed=4, cache=False)
    d = S.generate_puzzles(9, 6, "medium", seed=4, stream=1, cache=False)
    assert np.array_equal(a.puzzles, b.puzzles) and np.array_equal(a.backtracks, b.backtracks)
    assert np.array_equal(a.puzzles[:9], c.puzzles)
    assert not np.array_equal(c.puzzles, d.puzzles)


def test_cache_extends_and_serves_subsets(tmp_path, monkeypatch):
    monkeypatch.setenv("RECURSIONLAB_CACHE", str(tmp_path))
    first = S.generate_puzzles(5, 4, "easy", seed=2)
    assert not first.from_cache and first.meta["generated"] == 5
    more = S.generate_puzzles(8, 4, "easy", seed=2)
    assert more.meta["generated"] == 3 and np.array_equal(more.puzzles[:5], first.puzzles)
    fewer = S.generate_puzzles(4, 4, "easy", seed=2)
    assert fewer.from_cache and fewer.meta["generated"] == 0 and np.array_equal(fewer.puzzles, first.puzzles[:4])
    files = list((tmp_path / "sudoku").glob("*.npz"))
    assert len(files) == 1 and f"v{S.GENERATOR_VERSION}" in files[0].name
    assert np.array_equal(fewer.ratings, first.ratings[:4])
    # a cache written before ratings existed is rated on load and rewritten with them
    with np.load(files[0]) as f:
        old = {k: f[k] for k in f.files if k != "ratings"}
    np.savez_compressed(files[0], **old)
    again = S.generate_puzzles(8, 4, "easy", seed=2)
    assert np.array_equal(again.ratings, more.ratings)
    with np.load(files[0]) as f:
        assert "ratings" in f.files


def test_generator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        S.generate_puzzle(5)
    with pytest.raises(ValueError, match="difficulty"):
        S.generate_puzzle(4, "extreme")
    with pytest.raises(ValueError, match="max_backtracks"):
        S.generate_puzzle(4, "medium", min_backtracks=3, max_backtracks=1)
    with pytest.raises(ValueError, match="workers"):
        S.generate_puzzles(3, 4, workers=0)


# ---------------------------------------------------------------- augmentation
@settings(max_examples=60, deadline=None)
@given(size=st.sampled_from(S.SIZES), seed=st.integers(0, 2**32 - 1), blanks=st.floats(0.0, 0.9))
def test_transform_preserves_validity_and_inverse_is_identity(size, seed, blanks):
    rng = np.random.default_rng(seed)
    solution = S.random_full_grid(size, rng)
    puzzle = np.where(rng.random((size, size)) < blanks, 0, solution)
    t = S.random_transform(size, rng)
    new_puzzle, new_solution = t.apply(puzzle), t.apply(solution)
    assert _valid_complete(new_solution)
    assert S.is_solution(new_puzzle, new_solution)
    assert (new_puzzle == 0).sum() == (puzzle == 0).sum()
    inv = t.inverse()
    assert np.array_equal(inv.apply(new_puzzle), puzzle)
    assert np.array_equal(inv.apply(new_solution), solution)
    assert np.array_equal(t.apply(inv.apply(solution)), solution)
    # Uniqueness is a property of the puzzle's structure, so it survives the symmetry.
    if blanks < 0.5:
        assert S.solve(new_puzzle, limit=2).count == S.solve(puzzle, limit=2).count


def test_transposition_is_refused_for_6x6_boxes():
    with pytest.raises(ValueError, match="transposition"):
        S.random_transform(6, 0, transpose=True)
    assert not any(S.random_transform(6, s).transpose for s in range(20))
    assert any(S.random_transform(9, s).transpose for s in range(20))


@pytest.mark.parametrize("size", S.SIZES)
def test_token_batch_augmentation_keeps_every_pair_valid(size):
    data = S.generate_puzzles(6, size, "easy", seed=0, cache=False)
    x, y = S.encode_tokens(data.puzzles), S.encode_tokens(data.solutions)
    ax, ay = S.augment_token_batch(x, y, size, np.random.default_rng(0))
    assert ax.shape == x.shape and ay.shape == y.shape
    assert not np.array_equal(ax, x)
    for p, s, p0 in zip(S.decode_tokens(ax), S.decode_tokens(ay), data.puzzles):
        assert S.is_solution(p, s) and _valid_complete(s)
        assert (p == 0).sum() == (p0 == 0).sum()
    # ignored labels stay ignored
    ignored = np.where(np.arange(size * size) % 3 == 0, -100, y)
    _, ay2 = S.augment_token_batch(x, ignored, size, np.random.default_rng(1))
    assert (ay2 == -100).sum() == (ignored == -100).sum()


# ---------------------------------------------------------------- tokens and text
def test_token_layout_and_round_trip():
    puzzle = S.parse_sudoku(HARD_TEXT)
    tokens = S.encode_tokens(puzzle)
    assert tokens.shape == (81,) and tokens[0] == 9 and tokens[1] == S.BLANK_TOKEN
    assert tokens.min() >= 1 and tokens.max() <= 10 and S.vocab_size(9) == 11
    assert np.array_equal(S.decode_tokens(tokens), puzzle)
    batch = S.encode_tokens(np.stack([puzzle, puzzle]))
    assert batch.shape == (2, 81)
    with pytest.raises(ValueError, match="PAD"):
        S.decode_tokens(np.zeros(81, dtype=int))


def test_parse_accepts_dots_zeros_and_whitespace_and_formats_back():
    text = HARD_TEXT.replace(".", "0")
    grid = S.parse_sudoku(text[:40] + "\n " + text[40:])
    assert S.format_sudoku(grid) == HARD_TEXT
    assert S.parse_sudoku("1.3..4..........").shape == (4, 4)


@pytest.mark.parametrize(
    "text, message",
    [
        ("." * 80, "bad length.*got 80"),
        ("x" + "." * 80, "bad character 'x' at position 0 \\(row 1, column 1\\)"),
        ("." * 40 + "a" + "." * 40, "position 40 \\(row 5, column 5\\)"),
        ("5" + "." * 7 + "5" + "." * 72, "duplicate digit 5 in row 1"),
        ("3" + "." * 9 + "3" + "." * 70, "duplicate digit 3 in box 1"),
        ("." * 4 + "7" + "." * 44 + "7" + "." * 31, "duplicate digit 7 in column 5"),
        ("5" + "." * 15, "duplicate|bad character '5'"),
    ],
)
def test_malformed_puzzles_are_rejected_with_a_message_naming_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        S.parse_sudoku(text)


def test_wrong_length_for_an_explicit_size_and_bad_types():
    with pytest.raises(ValueError, match="4x4 Sudoku has 16"):
        S.parse_sudoku("." * 81, size=4)
    with pytest.raises(TypeError):
        S.parse_sudoku(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="value 10"):
        S.solve(np.full((9, 9), 10))


def test_propagation_rounds_counts_parallel_deduction_steps():
    grid = S.random_full_grid(9, 0)
    one_blank = grid.copy()
    one_blank[4, 4] = 0
    assert S.propagation_rounds(one_blank) == (1, 0)
    assert S.propagation_rounds(grid) == (0, 0)
    assert S.propagation_rounds(S.parse_sudoku(HARD_TEXT))[1] > 0  # singles get stuck: search is needed
    easy = S.generate_puzzles(5, 9, "easy", seed=0, cache=False)
    for p in easy.puzzles:
        rounds, left = S.propagation_rounds(p)
        assert left == 0 and 1 <= rounds <= (p == 0).sum()
    # a chain: blanking a whole row of a solved grid needs one round (each cell is a hidden single of its column)
    row_blank = grid.copy()
    row_blank[0] = 0
    assert S.propagation_rounds(row_blank) == (1, 0)


def test_propagation_schedule_marks_givens_rounds_and_stuck_cells():
    p = S.generate_puzzle(6, "easy", rng=2).puzzle
    when = S.propagation_schedule(p)
    assert ((when == 0) == (p > 0)).all() and (when[p == 0] >= 1).all()
    hard = S.propagation_schedule(S.parse_sudoku(HARD_TEXT))
    assert (hard < 0).any()
    with pytest.raises(ValueError, match="duplicate"):
        S.propagation_schedule(np.array([[1, 1, 0, 0], [0] * 4, [0] * 4, [0] * 4]))


def _notebook_function(tag: str, name: str):
    """Run the code cell tagged ``tag`` of lesson 06 and return the function ``name`` it defines."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "notebooks" / "06_reasoning_puzzles.ipynb"
    cells = json.loads(path.read_text())["cells"]
    (source,) = ["".join(c["source"]) for c in cells if tag in c.get("metadata", {}).get("tags", [])]
    namespace: dict = {"np": np, "sudoku": S}  # the notebook imported these in earlier cells
    exec(compile(source, f"{path.name}[{tag}]", "exec"), namespace)
    return namespace[name]


def test_notebook_scratch_solver_equals_the_library():
    solve_scratch = _notebook_function("sudoku-scratch", "solve_scratch")
    sols, _ = solve_scratch(np.zeros((4, 4), dtype=int), limit=300)
    assert {s.tobytes() for s in sols} == {s.tobytes() for s in S.solve(np.zeros((4, 4), int), limit=300).solutions}
    rng = np.random.default_rng(8)
    for size in (4, 6, 9):
        for _ in range(6):
            grid = S.random_full_grid(size, rng)
            puzzle = np.where(rng.random((size, size)) < (0.6 if size < 9 else 0.45), 0, grid)
            mine, _ = solve_scratch(puzzle, limit=3)
            lib = S.solve(puzzle, limit=3)
            assert {s.tobytes() for s in mine} == {s.tobytes() for s in lib.solutions}
