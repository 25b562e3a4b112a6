"""The field-standard Sudoku rating: exact solution counts, guesses, canonical forms, invariance, hard puzzles."""

from __future__ import annotations

import numpy as np
import pytest

from recursionlab.data import sudoku as S
from recursionlab.data import sudoku_rating as R

HARD_TEXT = "8..........36......7..9.2...5...7.......457.....1...3...1....68..85...1..9....4.."


def _two_solution_puzzle(rng) -> tuple[np.ndarray, np.ndarray]:
    """A solved 9x9 grid with the four cells of a swappable rectangle blanked: exactly two solutions.

    Cells (r1, c1), (r1, c2), (r2, c1), (r2, c2) with r1, r2 in one band, c1, c2 in different stacks, holding a b / b a:
    swapping a and b keeps every row, column and box valid, and nothing else is blank."""
    while True:
        grid = S.random_full_grid(9, rng)
        for r1 in range(9):
            for r2 in range(r1 + 1, r1 // 3 * 3 + 3):
                for c1 in range(9):
                    for c2 in range((c1 // 3 + 1) * 3, 9):
                        if grid[r1, c1] == grid[r2, c2] and grid[r1, c2] == grid[r2, c1]:
                            puzzle = grid.copy()
                            puzzle[[r1, r1, r2, r2], [c1, c2, c1, c2]] = 0
                            return puzzle, grid


def test_solution_counts_on_puzzles_with_known_counts():
    assert R.count_solutions(np.zeros((4, 4), dtype=int), limit=1000) == 288  # all 4x4 grids
    count, _, sols = R.dpll(np.zeros((4, 4), dtype=int), limit=1000)
    assert len({s.tobytes() for s in sols}) == 288
    puzzle, grid = _two_solution_puzzle(np.random.default_rng(0))
    count, _, sols = R.dpll(puzzle, limit=5)
    assert count == 2 and any(np.array_equal(s, grid) for s in sols)
    assert R.count_solutions(S.parse_sudoku(HARD_TEXT), limit=5) == 1
    clash = np.zeros((9, 9), dtype=int)
    clash[0, 0] = clash[0, 8] = 4
    assert R.count_solutions(clash) == 0
    # against the course's independent solver on random partial grids of every size
    rng = np.random.default_rng(1)
    for size in (4, 6, 9):
        for _ in range(10):
            full = S.random_full_grid(size, rng)
            p = np.where(rng.random((size, size)) < (0.6 if size < 9 else 0.5), 0, full)
            assert R.count_solutions(p, limit=3) == S.solve(p, limit=3).count
    with pytest.raises(ValueError, match="limit"):
        R.dpll(clash, limit=0)
    with pytest.raises(ValueError, match="shape"):
        R.rate(np.zeros((5, 5), dtype=int))


def test_guesses_are_zero_exactly_when_singles_suffice():
    easy = S.generate_puzzles(5, 9, "easy", seed=0, cache=False)
    for p in easy.puzzles:
        assert R.dpll(p)[1] == 0 and R.rate(p) == 0
        assert S.propagation_rounds(p)[1] == 0  # singles really do finish it
    hard = S.parse_sudoku(HARD_TEXT)
    assert S.propagation_rounds(hard)[1] > 0 and R.rate(hard) > 0
    # excluding the true digit of a blank leaves no solution for a unique puzzle
    sol = R.dpll(hard)[2][0]
    blank = int(np.flatnonzero(hard.ravel() == 0)[0])
    assert R.dpll(hard, exclude=(blank, int(sol.ravel()[blank])))[0] == 0


def test_canonical_form_and_rating_are_invariant_under_random_symmetries():
    rng = np.random.default_rng(3)
    puzzles = [S.parse_sudoku(HARD_TEXT)] + [S.generate_puzzle(9, "medium", rng=s).puzzle for s in range(3)]
    puzzles += [S.generate_puzzle(6, "medium", rng=s).puzzle for s in range(2)]
    keys = set()
    for p in puzzles:
        canon, rating = R.canonical_form(p), R.rate(p)
        assert (canon > 0).sum() == (p > 0).sum() and R.count_solutions(canon) == 1
        for _ in range(8):
            t = S.random_transform(p.shape[0], rng)
            q = t.apply(p)
            assert np.array_equal(R.canonical_form(q), canon)
            assert R.rate(q) == rating
        keys.add(R.canonical_key(p))
    assert len(keys) == len(puzzles)  # different puzzles keep different canonical forms


def test_hill_climbed_puzzles_are_unique_minimal_and_reach_the_target():
    rng = np.random.default_rng(7)
    puzzle, solution, rating, _ = R.generate_hard(9, rng, target=6)
    assert rating >= 6 and rating == R.rate(puzzle)
    assert R.count_solutions(puzzle) == 1 and S.is_solution(puzzle, solution)
    for r, c in np.argwhere(puzzle > 0):  # minimal: every given is needed
        fewer = puzzle.copy()
        fewer[r, c] = 0
        assert R.count_solutions(fewer) == 2
