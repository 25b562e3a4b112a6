"""Sudoku of size 4x4, 6x6 and 9x9: an exact solver, a generator rated by search effort, augmentation, tokens.

Grids are NumPy integer arrays of shape ``(n, n)`` with ``0`` for a blank and ``1..n`` for a digit.
Boxes are ``2x2`` (n=4), ``2x3`` (n=6: two rows by three columns) and ``3x3`` (n=9).

* :func:`solve` -- depth-first search over bitmask candidate sets with naked and hidden singles, branching on
  the cell with the fewest candidates (MRV). It counts solutions up to a limit (``limit=2`` proves uniqueness)
  and reports its effort in :class:`SearchStats` (``nodes``, ``guesses``, ``backtracks`` = dead ends).
* :func:`generate_puzzle` / :func:`generate_puzzles` -- unique-solution puzzles at a difficulty. Every puzzle
  carries two ratings: ``backtracks`` of this solver's *complete* search tree, and the field-standard ``rating``
  of :mod:`recursionlab.data.sudoku_rating` (DPLL guesses as tdoku counts them for Sudoku-Extreme, HRM paper
  arXiv 2506.21734; symmetry-invariant). ``"easy"``: half the cells blank, singles solve it; ``"medium"``: minimal
  puzzles; ``"hard"``: minimal puzzles with ``backtracks >= HARD_MIN_BACKTRACKS`` at 4x4/6x6, and at 9x9 minimal
  puzzles hill-climbed until ``rating >= HARD_MIN_RATING_9`` (20; Sudoku-Extreme averages about 22).
  Puzzle ``i`` of a set depends only on ``(seed, size, difficulty, i)``, so sets are reproducible, prefixes of
  bigger sets, and identical with 1 or 2 worker processes. Sets are cached on disk (see :func:`cache_dir`).
* :class:`SudokuTransform` -- validity-preserving augmentation (digit relabelling, row permutations inside
  bands, band permutations, the same for columns/stacks, transposition for square boxes) with its inverse;
  :func:`augment_token_batch` applies fresh random transforms to a batch of token sequences.
* :func:`encode_tokens` / :func:`decode_tokens` -- the papers' layout: 0 PAD, 1 blank, 2..n+1 digits, so
  ``tokens = grid + 1``; labels are ``solution + 1`` on all cells.
* :func:`parse_sudoku` / :func:`format_sudoku` -- the 81-character text format (``.`` or ``0`` for a blank).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "SIZES",
    "BOX_SHAPES",
    "DIFFICULTIES",
    "PAD_TOKEN",
    "BLANK_TOKEN",
    "GENERATOR_VERSION",
    "SearchStats",
    "SolveResult",
    "SudokuPuzzle",
    "SudokuSet",
    "SudokuTransform",
    "augment_token_batch",
    "cache_dir",
    "check_givens",
    "decode_tokens",
    "encode_tokens",
    "format_sudoku",
    "generate_puzzle",
    "generate_puzzles",
    "is_solution",
    "parse_sudoku",
    "propagation_rounds",
    "propagation_schedule",
    "random_full_grid",
    "random_transform",
    "rate_puzzle",
    "solve",
    "vocab_size",
]

SIZES: tuple[int, ...] = (4, 6, 9)
BOX_SHAPES: dict[int, tuple[int, int]] = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # (rows, cols) of one box
DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")
PAD_TOKEN = 0
BLANK_TOKEN = 1
# Bump when the generator's output for a given (seed, index) changes; it is part of every cache key.
GENERATOR_VERSION = 1

# Difficulty presets. "easy": dig only until this fraction of cells is blank and keep puzzles that singles
# alone solve (0 backtracks). "medium": minimal puzzles (no given can be removed), any rating. "hard": minimal
# puzzles whose complete search tree has at least this many dead ends (per size; chosen from measured
# distributions of our solver, see lesson 06).
EASY_BLANK_FRACTION: dict[int, float] = {4: 0.5, 6: 0.5, 9: 0.5}
HARD_MIN_BACKTRACKS: dict[int, int] = {4: 0, 6: 2, 9: 10}
# 9x9 "hard" is instead rated by the field-standard rating of recursionlab.data.sudoku_rating (DPLL guesses as
# tdoku counts them, symmetry-invariant): every hard 9x9 puzzle rates at least this (Sudoku-Extreme averages ~22).
HARD_MIN_RATING_9 = 20
HARD9_GENERATOR_VERSION = 2  # the cache version of 9x9 hard sets (hill-climbed on the rating)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or int(size) not in BOX_SHAPES:
        raise ValueError(f"Sudoku size must be one of {SIZES}, got {size!r}")
    return int(size)


def vocab_size(size: int) -> int:
    """Token vocabulary of a size-``n`` Sudoku: PAD, blank and ``n`` digits -> ``n + 2`` (11 for 9x9)."""
    return _check_size(size) + 2


# ----------------------------------------------------------------------------------------------------------
# Geometry and bit tables (built once per size)
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    size: int
    box_rows: int
    box_cols: int
    full: int  # bitmask with the n digit bits set
    row_of: tuple[int, ...]
    col_of: tuple[int, ...]
    box_of: tuple[int, ...]
    rcb: tuple[tuple[int, int, int], ...]  # (row, column, box) of every cell
    units: tuple[tuple[int, ...], ...]  # rows, then columns, then boxes (cell indices)
    popcount: tuple[int, ...]
    digit_of_bit: dict[int, int]  # single-bit mask -> digit 1..n
    digits_of_mask: tuple[tuple[int, ...], ...]  # mask -> its digits, ascending


_GEOMETRIES: dict[int, _Geometry] = {}


def _geometry(size: int) -> _Geometry:
    size = _check_size(size)
    geo = _GEOMETRIES.get(size)
    if geo is None:
        br, bc = BOX_SHAPES[size]
        cells = range(size * size)
        row_of = tuple(i // size for i in cells)
        col_of = tuple(i % size for i in cells)
        box_of = tuple((r // br) * (size // bc) + c // bc for r, c in zip(row_of, col_of))
        rows = tuple(tuple(r * size + c for c in range(size)) for r in range(size))
        cols = tuple(tuple(r * size + c for r in range(size)) for c in range(size))
        boxes = tuple(tuple(i for i in cells if box_of[i] == b) for b in range(size))
        masks = range(1 << size)
        geo = _Geometry(
            size=size,
            box_rows=br,
            box_cols=bc,
            full=(1 << size) - 1,
            row_of=row_of,
            col_of=col_of,
            box_of=box_of,
            rcb=tuple(zip(row_of, col_of, box_of)),
            units=rows + cols + boxes,
            popcount=tuple(bin(m).count("1") for m in masks),
            digit_of_bit={1 << d: d + 1 for d in range(size)},
            digits_of_mask=tuple(tuple(d + 1 for d in range(size) if m >> d & 1) for m in masks),
        )
        _GEOMETRIES[size] = geo
    return geo


# ----------------------------------------------------------------------------------------------------------
# Validation and text format
# ----------------------------------------------------------------------------------------------------------


def _as_grid(grid, name: str = "grid") -> np.ndarray:
    """Return ``grid`` as an ``(n, n)`` int64 array after checking its shape and value range."""
    arr = np.asarray(grid)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] not in BOX_SHAPES:
        raise ValueError(f"{name} must have shape (n, n) with n in {SIZES}, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integers (0 = blank, 1..n = digit), got dtype {arr.dtype}")
    n = arr.shape[0]
    bad = np.argwhere((arr < 0) | (arr > n))
    if len(bad):
        r, c = bad[0]
        raise ValueError(f"{name} has value {int(arr[r, c])} at row {r + 1}, column {c + 1}; allowed 0..{n}")
    return arr.astype(np.int64)


def check_givens(grid) -> np.ndarray:
    """Raise ``ValueError`` naming the first repeated digit among the givens of ``grid`` (row, column or box).

    grid: (n, n) int, 0 = blank. Returns the grid as an int64 array when it is consistent.
    """
    arr = _as_grid(grid)
    n = arr.shape[0]
    br, bc = BOX_SHAPES[n]
    for kind in ("row", "column", "box"):
        for u in range(n):
            if kind == "row":
                vals = arr[u, :]
            elif kind == "column":
                vals = arr[:, u]
            else:
                r0, c0 = (u // (n // bc)) * br, (u % (n // bc)) * bc
                vals = arr[r0 : r0 + br, c0 : c0 + bc].ravel()
            given = vals[vals > 0]
            uniq, counts = np.unique(given, return_counts=True)
            if (counts > 1).any():
                d = int(uniq[np.argmax(counts > 1)])
                raise ValueError(f"duplicate digit {d} in {kind} {u + 1} of the givens")
    return arr


def parse_sudoku(text: str, size: int | None = None) -> np.ndarray:
    """Parse the one-line text format into an ``(n, n)`` int64 grid (0 = blank).

    The text has ``n*n`` characters in row-major order (16, 36 or 81; whitespace is ignored), ``.`` or ``0``
    for a blank and ``1..n`` for a digit. Raises ``ValueError`` naming the problem: a bad length, a bad
    character (with its position, row and column) or a digit repeated in a row, column or box of the givens.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_sudoku expects a str, got {type(text).__name__}")
    chars = "".join(text.split())
    by_length = {s * s: s for s in SIZES}
    if size is None:
        if len(chars) not in by_length:
            raise ValueError(
                f"bad length: a Sudoku string has {', '.join(map(str, by_length))} characters "
                f"(for {', '.join(f'{s}x{s}' for s in SIZES)}), got {len(chars)}"
            )
        size = by_length[len(chars)]
    size = _check_size(size)
    if len(chars) != size * size:
        raise ValueError(f"bad length: a {size}x{size} Sudoku has {size * size} characters, got {len(chars)}")
    values = np.zeros(size * size, dtype=np.int64)
    for pos, ch in enumerate(chars):
        if ch in ".0":
            continue
        if ch.isdigit() and 1 <= int(ch) <= size:
            values[pos] = int(ch)
        else:
            raise ValueError(
                f"bad character {ch!r} at position {pos} (row {pos // size + 1}, column {pos % size + 1}); "
                f"allowed '.', '0' and digits 1..{size}"
            )
    return check_givens(values.reshape(size, size))


def format_sudoku(grid) -> str:
    """The one-line text form of ``grid`` (``(n, n)`` int, 0 = blank), blanks written as ``.``."""
    arr = _as_grid(grid)
    return "".join("." if v == 0 else str(v) for v in arr.ravel())


def is_solution(puzzle, solution) -> bool:
    """True when ``solution`` (n, n) is a complete valid grid that keeps every given of ``puzzle`` (n, n)."""
    p, s = _as_grid(puzzle, "puzzle"), _as_grid(solution, "solution")
    if p.shape != s.shape or (s == 0).any():
        return False
    if ((p > 0) & (p != s)).any():
        return False
    try:
        check_givens(s)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# The solver
# ----------------------------------------------------------------------------------------------------------


@dataclass
class SearchStats:
    """Search effort: ``nodes`` (search states visited), ``guesses`` (branches tried at choice points),
    ``backtracks`` (dead ends: states where some cell or digit had no place left)."""

    nodes: int = 0
    guesses: int = 0
    backtracks: int = 0


@dataclass
class SolveResult:
    """``solutions``: list of (n, n) int64 grids (at most ``limit``); ``stats``: the effort spent."""

    solutions: list[np.ndarray]
    stats: SearchStats

    @property
    def count(self) -> int:
        """Number of solutions found (capped at the limit the search was given)."""
        return len(self.solutions)

    @property
    def unique(self) -> bool:
        """True when exactly one solution was found (meaningful for a search run with ``limit >= 2``)."""
        return len(self.solutions) == 1


def _search(grid, rowm, colm, boxm, excl, geo, limit, solutions, stats, rng) -> None:
    """Depth-first search; ``grid`` (list, 0 = blank) and the used-digit masks are modified in place.

    Propagates naked singles (a cell with one candidate) and hidden singles (a digit with one place in a
    unit), then branches on the cell with the fewest candidates. ``excl[i]`` removes extra candidates from
    cell ``i`` (the generator uses it to ask "is there a solution *other than* this one?").
    """
    stats.nodes += 1
    full = geo.full
    rcb = geo.rcb
    popcount, digit_of_bit = geo.popcount, geo.digit_of_bit
    empties = [i for i, v in enumerate(grid) if v == 0]
    cand = [0] * len(grid)
    while empties:
        placed = False
        best_cell, best_count = -1, 99
        remaining = []
        push = remaining.append
        for i in empties:
            r, c, b = rcb[i]
            m = full & ~(rowm[r] | colm[c] | boxm[b] | excl[i])
            if m & (m - 1):  # two or more candidates: remember the most constrained cell
                push(i)
                cand[i] = m
                if popcount[m] < best_count:
                    best_cell, best_count = i, popcount[m]
            elif m:  # naked single: place it now, later cells in this pass see it
                grid[i] = digit_of_bit[m]
                rowm[r] |= m
                colm[c] |= m
                boxm[b] |= m
                placed = True
            else:  # no candidate left: dead end
                stats.backtracks += 1
                return
        empties = remaining
        if placed or not empties:
            continue
        # Hidden singles: a digit that fits in only one empty cell of a unit must go there.
        for unit in geo.units:
            once = twice = used = 0
            for i in unit:
                v = grid[i]
                if v:
                    used |= 1 << (v - 1)
                else:
                    m = cand[i]
                    twice |= once & m
                    once |= m
            if (once | used) != full:  # some digit has no place left in this unit
                stats.backtracks += 1
                return
            hidden = once & ~twice & ~used  # digits placed during this sweep are not hidden singles
            while hidden:
                bit = hidden & -hidden
                hidden ^= bit
                for i in unit:
                    if grid[i] == 0 and cand[i] & bit:
                        r, c, b = rcb[i]
                        if (rowm[r] | colm[c] | boxm[b] | excl[i]) & bit:  # taken by a placement just made
                            stats.backtracks += 1
                            return
                        grid[i] = digit_of_bit[bit]
                        rowm[r] |= bit
                        colm[c] |= bit
                        boxm[b] |= bit
                        placed = True
                        break
        if placed:
            empties = [i for i in empties if grid[i] == 0]
            continue
        # No forced move: branch on the most constrained cell.
        digits = geo.digits_of_mask[cand[best_cell]]
        if rng is not None:
            digits = [digits[k] for k in rng.permutation(len(digits))]
        r, c, b = rcb[best_cell]
        for d in digits:
            stats.guesses += 1
            bit = 1 << (d - 1)
            g2 = grid[:]
            g2[best_cell] = d
            rm, cm, bm = rowm[:], colm[:], boxm[:]
            rm[r] |= bit
            cm[c] |= bit
            bm[b] |= bit
            _search(g2, rm, cm, bm, excl, geo, limit, solutions, stats, rng)
            if len(solutions) >= limit:
                return
        return
    solutions.append(grid[:])


def _prepare(flat: list[int], geo: _Geometry) -> tuple[list[int], list[int], list[int]] | None:
    """Used-digit masks per row/column/box of a flat grid, or None if a given repeats."""
    n = geo.size
    rowm, colm, boxm = [0] * n, [0] * n, [0] * n
    for i, v in enumerate(flat):
        if v:
            bit = 1 << (v - 1)
            r, c, b = geo.row_of[i], geo.col_of[i], geo.box_of[i]
            if (rowm[r] | colm[c] | boxm[b]) & bit:
                return None
            rowm[r] |= bit
            colm[c] |= bit
            boxm[b] |= bit
    return rowm, colm, boxm


def _solve_flat(flat, geo, limit, rng=None, excl=None) -> tuple[list[list[int]], SearchStats]:
    stats = SearchStats()
    solutions: list[list[int]] = []
    masks = _prepare(flat, geo)
    if masks is None:
        stats.backtracks += 1
        return solutions, stats
    excl = excl if excl is not None else [0] * len(flat)
    _search(list(flat), *masks, excl, geo, limit, solutions, stats, rng)
    return solutions, stats


def solve(grid, limit: int = 2, rng: np.random.Generator | None = None) -> SolveResult:
    """Find up to ``limit`` solutions of ``grid`` ((n, n) int, 0 = blank) and report the search effort.

    ``limit=1`` finds one solution; ``limit=2`` decides uniqueness (``result.unique``) and explores the
    complete search tree of a unique puzzle. ``rng`` shuffles the order digits are tried (used to make random
    grids). Givens that already clash give zero solutions. Returns :class:`SolveResult`, (n, n) int64 grids.
    """
    arr = _as_grid(grid)
    if not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    geo = _geometry(arr.shape[0])
    sols, stats = _solve_flat([int(v) for v in arr.ravel()], geo, int(limit), rng)
    n = geo.size
    return SolveResult([np.array(s, dtype=np.int64).reshape(n, n) for s in sols], stats)


def propagation_schedule(grid) -> np.ndarray:
    """When each blank gets filled by *parallel* rounds of single-digit deductions.

    Each round looks at the current grid, finds every naked single (a cell with one candidate) and every
    hidden single (a digit with one place in a row, column or box) and fills them all at once, as one layer of
    a network that sees the whole grid could. grid: (n, n) int. Returns (n, n) int64: 0 for a given, k for a
    cell filled in round k, -1 for a cell singles never reach (search, i.e. guessing, is needed there).
    """
    arr = check_givens(grid)
    geo = _geometry(arr.shape[0])
    flat = [int(v) for v in arr.ravel()]
    when = [0 if v else -1 for v in flat]
    rounds = 0
    while True:
        masks = _prepare(flat, geo)
        if masks is None:
            raise ValueError("the deductions ran into a contradiction: the puzzle has no solution")
        rowm, colm, boxm = masks
        cand = {i: geo.full & ~(rowm[r] | colm[c] | boxm[b]) for i, (r, c, b) in enumerate(geo.rcb) if not flat[i]}
        moves: dict[int, int] = {i: m for i, m in cand.items() if geo.popcount[m] == 1}
        for unit in geo.units:
            for bit in (1 << d for d in range(geo.size)):
                spots = [i for i in unit if i in cand and cand[i] & bit]
                if len(spots) == 1:
                    moves.setdefault(spots[0], bit)
        if not moves:
            return np.array(when, dtype=np.int64).reshape(arr.shape)
        rounds += 1
        for i, bit in moves.items():
            flat[i] = geo.digit_of_bit[bit]
            when[i] = rounds


def propagation_rounds(grid) -> tuple[int, int]:
    """``(rounds, blanks_left)`` of :func:`propagation_schedule`: the number of parallel rounds of singles used,
    and how many blanks they leave (``blanks_left > 0``: singles get stuck and search is needed)."""
    when = propagation_schedule(grid)
    return int(when.max(initial=0)), int((when < 0).sum())


def rate_puzzle(grid) -> SearchStats:
    """Difficulty of a puzzle ((n, n) int): the effort of the complete search (``limit=2``) of :func:`solve`.

    Because the whole tree is explored, the rating does not depend on the order digits are tried;
    ``backtracks == 0`` means naked and hidden singles alone solve it.
    """
    return solve(grid, limit=2).stats


# ----------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------


def _rng(rng) -> np.random.Generator:
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be None, an int seed or a numpy Generator, got {type(rng).__name__}")


def random_full_grid(size: int, rng=None) -> np.ndarray:
    """A uniformly-shuffled search's random complete valid grid, shape (n, n) int64."""
    geo = _geometry(size)
    sols, _ = _solve_flat([0] * (geo.size * geo.size), geo, 1, _rng(rng))
    return np.array(sols[0], dtype=np.int64).reshape(geo.size, geo.size)


def _dig(solution: list[int], geo: _Geometry, rng: np.random.Generator, max_blanks: int) -> list[int]:
    """Blank cells of ``solution`` in random order while the puzzle keeps a unique solution.

    Blanking cell i (value v) keeps uniqueness iff no solution has a digit other than v there, which one
    existence search with v excluded at i decides (cheaper than counting two solutions).
    """
    return _minimize(list(solution), geo, rng, max_blanks)


def _minimize(puzzle: list[int], geo: _Geometry, rng: np.random.Generator, max_blanks: int | None = None):
    """Blank givens of a unique ``puzzle`` (in place, random order) while it stays unique; ``max_blanks`` caps
    the number of blanks in the result."""
    excl = [0] * len(puzzle)
    blanks = puzzle.count(0)
    for i in rng.permutation(len(puzzle)):
        if max_blanks is not None and blanks >= max_blanks:
            break
        v = puzzle[i]
        if v == 0:
            continue
        puzzle[i] = 0
        excl[i] = 1 << (v - 1)
        other, _ = _solve_flat(puzzle, geo, 1, None, excl)
        excl[i] = 0
        if other:
            puzzle[i] = v  # another solution appears: v must stay a given
        else:
            blanks += 1
    return puzzle


def _neighbour(puzzle: list[int], solution: list[int], geo: _Geometry, rng: np.random.Generator) -> list[int]:
    """A nearby minimal puzzle with the same solution: blank one random given, then add givens from the
    solution where a competing solution differs until the solution is unique again, then re-minimize."""
    q = puzzle[:]
    givens = [i for i, v in enumerate(q) if v]
    g = givens[rng.integers(len(givens))]
    q[g] = 0
    while True:
        sols, _ = _solve_flat(q, geo, 2, rng)
        if len(sols) == 1:
            break
        other = sols[0] if sols[0] != solution else sols[1]
        differ = [i for i in range(len(q)) if other[i] != solution[i] and i != g]
        if not differ:  # only the removed given separates them: undo the move
            q[g] = solution[g]
            break
        c = differ[rng.integers(len(differ))]
        q[c] = solution[c]
    return _minimize(q, geo, rng)


@dataclass(frozen=True, eq=False)
class SudokuPuzzle:
    """One generated puzzle: ``puzzle``, ``solution`` (n, n) int64 (0 = blank), its rating and its tries."""

    puzzle: np.ndarray
    solution: np.ndarray
    stats: SearchStats
    tries: int = 1
    rating: int = -1  # recursionlab.data.sudoku_rating.rate (set by the generator)

    @property
    def size(self) -> int:
        return int(self.puzzle.shape[0])

    @property
    def n_givens(self) -> int:
        return int((self.puzzle > 0).sum())


def _difficulty_bounds(size: int, difficulty: str, min_backtracks, max_backtracks, n_blanks):
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    cells = size * size
    if difficulty == "easy":
        lo, hi, blanks = 0, 0, int(round(EASY_BLANK_FRACTION[size] * cells))
    elif difficulty == "medium":
        lo, hi, blanks = 0, None, cells
    else:
        lo, hi, blanks = HARD_MIN_BACKTRACKS[size], None, cells
    if min_backtracks is not None:
        lo = int(min_backtracks)
    if max_backtracks is not None:
        hi = int(max_backtracks)
    if n_blanks is not None:
        if not 0 <= int(n_blanks) <= cells:
            raise ValueError(f"n_blanks must be in 0..{cells} for a {size}x{size} Sudoku, got {n_blanks}")
        blanks = int(n_blanks)
    if hi is not None and hi < lo:
        raise ValueError(f"max_backtracks ({hi}) is below min_backtracks ({lo})")
    return lo, hi, blanks


def generate_puzzle(
    size: int = 9,
    difficulty: str = "easy",
    rng=None,
    *,
    min_backtracks: int | None = None,
    max_backtracks: int | None = None,
    n_blanks: int | None = None,
    max_tries: int = 1000,
    climb_steps: int = 100,
) -> SudokuPuzzle:
    """Generate one unique-solution puzzle of the given size and difficulty.

    A random complete grid is dug (cells blanked in random order while the solution stays unique) up to
    ``n_blanks`` blanks: "easy" half the cells; "medium" and "hard" as many as possible (a minimal puzzle).
    The puzzle is rated by :func:`rate_puzzle` and kept if its backtracks lie in
    ``[min_backtracks, max_backtracks]`` (presets: easy 0..0, medium any, hard at least
    ``HARD_MIN_BACKTRACKS[size]``). Hard puzzles are rare among random minimal ones, so a minimal puzzle below
    the bar first hill-climbs (up to ``climb_steps`` moves: drop a given, add givens where a rival solution
    differs, re-minimize; keep if not easier). Failing that, a new grid is tried (up to ``max_tries``).
    Returns :class:`SudokuPuzzle` with (n, n) int64 arrays.
    """
    size = _check_size(size)
    lo, hi, blanks = _difficulty_bounds(size, difficulty, min_backtracks, max_backtracks, n_blanks)
    gen = _rng(rng)
    if size == 9 and difficulty == "hard" and (min_backtracks, max_backtracks, n_blanks) == (None, None, None):
        # hill-climbed on the field-standard rating until it reaches HARD_MIN_RATING_9
        from recursionlab.data import sudoku_rating

        p, s, score, steps = sudoku_rating.generate_hard(9, gen, HARD_MIN_RATING_9)
        return SudokuPuzzle(p, s, rate_puzzle(p), tries=steps + 1, rating=score)
    geo = _geometry(size)
    cells = size * size
    for attempt in range(1, max_tries + 1):
        sol = _solve_flat([0] * cells, geo, 1, gen)[0][0]
        puzzle = _dig(sol, geo, gen, blanks)
        stats = _solve_flat(puzzle, geo, 2)[1]
        if blanks == cells and lo > 0:
            # Hard puzzles are rare among random minimal ones: hill-climb on the rating instead of waiting for
            # one (greedy, accepting equal ratings so the walk can cross plateaus).
            for _ in range(climb_steps):
                if stats.backtracks >= lo:
                    break
                cand = _neighbour(puzzle, sol, geo, gen)
                cand_stats = _solve_flat(cand, geo, 2)[1]
                if cand_stats.backtracks >= stats.backtracks and (hi is None or cand_stats.backtracks <= hi):
                    puzzle, stats = cand, cand_stats
        if stats.backtracks >= lo and (hi is None or stats.backtracks <= hi):
            from recursionlab.data import sudoku_rating

            grid = np.array(puzzle, dtype=np.int64).reshape(size, size)
            return SudokuPuzzle(
                puzzle=grid,
                solution=np.array(sol, dtype=np.int64).reshape(size, size),
                stats=stats,
                tries=attempt,
                rating=sudoku_rating.rate(grid),
            )
    raise RuntimeError(
        f"no {size}x{size} puzzle with backtracks in [{lo}, {hi}] after {max_tries} tries; "
        "lower min_backtracks or raise max_tries"
    )


@dataclass
class SudokuSet:
    """A set of puzzles as arrays: ``puzzles``/``solutions`` (N, n, n) int8 (0 = blank), ``backtracks``,
    ``nodes``, ``tries`` and ``ratings`` (N,) int64 (``ratings``: the symmetry-invariant field-standard rating of
    :func:`recursionlab.data.sudoku_rating.rate`), plus how it was made and how long generation took
    (``seconds``, 0 when read from the cache)."""

    puzzles: np.ndarray
    solutions: np.ndarray
    backtracks: np.ndarray
    nodes: np.ndarray
    tries: np.ndarray
    ratings: np.ndarray
    size: int
    difficulty: str
    seed: int
    seconds: float = 0.0
    from_cache: bool = False
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.puzzles)


def _puzzle_seed(seed: int, size: int, difficulty: str, index: int, stream: int) -> np.random.Generator:
    code = DIFFICULTIES.index(difficulty)
    return np.random.default_rng([int(seed), size, code, int(stream), int(index)])


def _generate_range(args) -> list[tuple[np.ndarray, np.ndarray, int, int, int, int]]:
    size, difficulty, seed, stream, start, stop = args
    out = []
    for index in range(start, stop):
        p = generate_puzzle(size, difficulty, _puzzle_seed(seed, size, difficulty, index, stream))
        out.append((p.puzzle, p.solution, p.stats.backtracks, p.stats.nodes, p.tries, p.rating))
    return out


def cache_dir() -> Path:
    """Where generated data sets are cached: ``$RECURSIONLAB_CACHE`` or ``~/.cache/recursionlab``."""
    root = os.environ.get("RECURSIONLAB_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "recursionlab"


def _cache_path(size: int, difficulty: str, seed: int, stream: int) -> Path:
    version = HARD9_GENERATOR_VERSION if (size, difficulty) == (9, "hard") else GENERATOR_VERSION
    key = f"sudoku-v{version}-{size}x{size}-{difficulty}-seed{seed}-stream{stream}"
    presets: tuple = (EASY_BLANK_FRACTION[size], HARD_MIN_BACKTRACKS[size])
    if (size, difficulty) == (9, "hard"):
        presets += (HARD_MIN_RATING_9,)
    key += "-" + hashlib.sha1(repr(presets).encode()).hexdigest()[:8]
    return cache_dir() / "sudoku" / f"{key}.npz"


def generate_puzzles(
    n: int,
    size: int = 9,
    difficulty: str = "easy",
    seed: int = 0,
    *,
    stream: int = 0,
    workers: int = 1,
    cache: bool = True,
) -> SudokuSet:
    """Generate ``n`` puzzles (deterministic in ``seed``, ``stream`` and the index; see the module docstring).

    ``stream`` separates independent sets with the same seed (the builders use 0 for train and 1 for test).
    ``workers > 1`` spreads the work over processes (same result as 1 worker). With ``cache=True`` the set is
    read from / written to :func:`cache_dir` (a key with :data:`GENERATOR_VERSION`); a cached larger set
    serves any smaller ``n`` and a smaller one is extended. Returns :class:`SudokuSet`.
    """
    size = _check_size(size)
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    path = _cache_path(size, difficulty, seed, stream)
    have: dict[str, np.ndarray] = {}
    if cache and path.exists():
        try:
            with np.load(path) as f:
                have = {k: f[k] for k in ("puzzles", "solutions", "backtracks", "nodes", "tries")}
                if "ratings" in f.files:
                    have["ratings"] = f["ratings"]
        except (OSError, ValueError, KeyError):
            have = {}  # a damaged cache file is regenerated
    rated_now = bool(have) and "ratings" not in have
    if rated_now:  # a cache written before the rating existed: rate it now (about a millisecond a puzzle)
        from recursionlab.data import sudoku_rating

        have["ratings"] = sudoku_rating.rate_many(have["puzzles"])
    done = len(have["puzzles"]) if have else 0
    t0 = time.perf_counter()
    rows: list = []
    if done < n:
        todo = n - done
        if workers == 1 or todo < 8:
            rows = _generate_range((size, difficulty, seed, stream, done, n))
        else:
            import multiprocessing as mp

            chunk = max(1, min(64, todo // (4 * workers)))
            jobs = [(size, difficulty, seed, stream, s, min(s + chunk, n)) for s in range(done, n, chunk)]
            # fork is cheap and safe here on Linux (workers run pure Python); elsewhere use the platform default
            ctx = mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context()
            with ctx.Pool(int(workers)) as pool:
                for part in pool.imap(_generate_range, jobs):
                    rows.extend(part)
    seconds = time.perf_counter() - t0
    dtype = np.int8
    new = {
        "puzzles": np.array([r[0] for r in rows], dtype=dtype).reshape(-1, size, size),
        "solutions": np.array([r[1] for r in rows], dtype=dtype).reshape(-1, size, size),
        "backtracks": np.array([r[2] for r in rows], dtype=np.int64),
        "nodes": np.array([r[3] for r in rows], dtype=np.int64),
        "tries": np.array([r[4] for r in rows], dtype=np.int64),
        "ratings": np.array([r[5] for r in rows], dtype=np.int64),
    }
    data = {k: np.concatenate([have[k], new[k]]) if have else new[k] for k in new}
    if cache and (rows or rated_now):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, **data)
        os.replace(tmp, path)  # atomic: concurrent readers never see half a file
    return SudokuSet(
        **{k: v[:n] for k, v in data.items()},
        size=size,
        difficulty=difficulty,
        seed=int(seed),
        seconds=seconds,
        from_cache=done >= n,
        meta={"generated": len(rows), "workers": int(workers), "stream": int(stream)},
    )


# ----------------------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SudokuTransform:
    """A validity-preserving symmetry of a size-``n`` Sudoku.

    ``digit_map`` (n+1,) int with ``digit_map[0] == 0``: relabels digits; ``row_perm``, ``col_perm`` (n,)
    int: output row r is input row ``row_perm[r]`` (bands permuted, rows permuted inside bands; likewise
    columns); ``transpose``: then swap rows and columns (only for square boxes, n = 4 or 9).
    ``apply(g)[r, c] = digit_map[g[row_perm[r], col_perm[c]]]``, transposed afterwards if ``transpose``.
    """

    digit_map: np.ndarray
    row_perm: np.ndarray
    col_perm: np.ndarray
    transpose: bool = False

    @property
    def size(self) -> int:
        return len(self.row_perm)

    def source_index(self) -> np.ndarray:
        """(n*n,) int: flat output cell k is read from flat input cell ``source_index()[k]``."""
        n = self.size
        src = self.row_perm[:, None] * n + self.col_perm[None, :]
        return (src.T if self.transpose else src).ravel()

    def apply(self, grid) -> np.ndarray:
        """Transform a grid (..., n, n) int (0 = blank stays 0)."""
        g = np.asarray(grid)
        n = self.size
        if g.shape[-2:] != (n, n):
            raise ValueError(f"grid must end in shape ({n}, {n}), got {g.shape}")
        flat = g.reshape(*g.shape[:-2], n * n)[..., self.source_index()]
        return self.digit_map[flat].reshape(g.shape)

    def inverse(self) -> SudokuTransform:
        """The transform that undoes this one: ``t.inverse().apply(t.apply(g)) == g``."""
        inv_digits = np.empty_like(self.digit_map)
        inv_digits[self.digit_map] = np.arange(len(self.digit_map))
        # Forward: out = T(P_r in P_c) (T = optional transpose). Undoing it permutes back with the inverse
        # permutations, and a transposed forward swaps the roles of rows and columns.
        inv_rows, inv_cols = np.argsort(self.row_perm), np.argsort(self.col_perm)
        if self.transpose:
            # Forward is "permute, then transpose"; its inverse "transpose, then un-permute" equals
            # "un-permute with the row and column roles swapped, then transpose".
            return SudokuTransform(inv_digits, inv_cols, inv_rows, True)
        return SudokuTransform(inv_digits, inv_rows, inv_cols, False)


def _band_permutations(rng: np.random.Generator, batch: int, n_bands: int, band: int) -> np.ndarray:
    """(batch, n_bands*band) int: random band order, and a random order of the lines inside each band."""
    band_order = np.argsort(rng.random((batch, n_bands)), axis=1)
    inside = np.argsort(rng.random((batch, n_bands, band)), axis=2)
    return (band_order[:, :, None] * band + inside).reshape(batch, n_bands * band)


def random_transform(size: int, rng=None, *, transpose: bool | None = None) -> SudokuTransform:
    """A uniformly random :class:`SudokuTransform` (transposed with p = 0.5 for square boxes, never 6x6)."""
    size = _check_size(size)
    gen = _rng(rng)
    br, bc = BOX_SHAPES[size]
    digit_map = np.concatenate([[0], 1 + gen.permutation(size)]).astype(np.int64)
    rows = _band_permutations(gen, 1, size // br, br)[0]
    cols = _band_permutations(gen, 1, size // bc, bc)[0]
    can_transpose = br == bc
    if transpose is None:
        transpose = bool(gen.random() < 0.5) and can_transpose
    elif transpose and not can_transpose:
        raise ValueError(f"transposition breaks the {br}x{bc} boxes of a {size}x{size} Sudoku")
    return SudokuTransform(digit_map, rows, cols, bool(transpose))


def augment_token_batch(
    inputs: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply an independent random symmetry to each (input, label) pair of a token batch.

    inputs, labels: (B, n*n) int tokens (0 PAD, 1 blank, 2..n+1 digits; labels may hold -100 = ignored).
    Each row gets its own digit relabelling, band/row and stack/column permutation and (square boxes) a
    transposition, the same for its input and label. Returns new arrays of the same shapes.
    """
    size = _check_size(size)
    inputs, labels = np.asarray(inputs), np.asarray(labels)
    if inputs.shape != labels.shape or inputs.ndim != 2 or inputs.shape[1] != size * size:
        raise ValueError(
            f"inputs and labels must both have shape (B, {size * size}), "
            f"got {inputs.shape} and {labels.shape}"
        )
    batch = inputs.shape[0]
    br, bc = BOX_SHAPES[size]
    rows = _band_permutations(rng, batch, size // br, br)
    cols = _band_permutations(rng, batch, size // bc, bc)
    src = rows[:, :, None] * size + cols[:, None, :]  # (B, n, n)
    if br == bc:
        flip = rng.random(batch) < 0.5
        src = np.where(flip[:, None, None], src.transpose(0, 2, 1), src)
    src = src.reshape(batch, size * size)
    # Token map per row: PAD and blank fixed, digit tokens 2..n+1 permuted.
    fixed = np.tile([PAD_TOKEN, BLANK_TOKEN], (batch, 1))
    token_map = np.concatenate([fixed, 2 + np.argsort(rng.random((batch, size)), axis=1)], axis=1)
    new_inputs = np.take_along_axis(token_map, np.take_along_axis(inputs, src, axis=1), axis=1)
    moved = np.take_along_axis(labels, src, axis=1)
    ignored = moved < 0
    new_labels = np.where(ignored, moved, np.take_along_axis(token_map, np.where(ignored, 0, moved), axis=1))
    return new_inputs, new_labels


# ----------------------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------------------


def encode_tokens(grid) -> np.ndarray:
    """Grid(s) (..., n, n) int (0 = blank) -> tokens (..., n*n) int64: 1 blank, d + 1 for digit d."""
    g = np.asarray(grid)
    if g.ndim < 2 or g.shape[-1] != g.shape[-2] or g.shape[-1] not in BOX_SHAPES:
        raise ValueError(f"grid must have shape (..., n, n) with n in {SIZES}, got {g.shape}")
    n = g.shape[-1]
    if ((g < 0) | (g > n)).any():
        raise ValueError(f"grid values must be in 0..{n} (0 = blank)")
    return g.reshape(*g.shape[:-2], n * n).astype(np.int64) + 1


def decode_tokens(tokens, size: int | None = None) -> np.ndarray:
    """Tokens (..., n*n) -> grid(s) (..., n, n) int64 (0 = blank). PAD (0) or out-of-range tokens raise."""
    t = np.asarray(tokens)
    by_length = {s * s: s for s in SIZES}
    if size is None:
        if t.ndim < 1 or t.shape[-1] not in by_length:
            raise ValueError(f"token sequences must have length 16, 36 or 81, got shape {t.shape}")
        size = by_length[t.shape[-1]]
    size = _check_size(size)
    if t.shape[-1] != size * size:
        raise ValueError(f"a {size}x{size} Sudoku has {size * size} tokens, got shape {t.shape}")
    bad = (t < BLANK_TOKEN) | (t > size + 1)
    if bad.any():
        raise ValueError(
            f"token {int(t[bad].ravel()[0])} is not a Sudoku token (1 blank, 2..{size + 1} digits; 0 is PAD)"
        )
    return (t.astype(np.int64) - 1).reshape(*t.shape[:-1], size, size)
