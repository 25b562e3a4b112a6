"""Graders for exercise 06 (reasoning puzzles): a Sudoku solution checker, a relabelling-invariant canonical
form (how one detects a test puzzle that is a disguised training puzzle), and a shortcut check of the
evaluation set (does answering the most common digit per cell score well?)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from recursionlab.course.checks import Verdict, call_learner, check_choice, check_value, verdict
from recursionlab.data.sudoku import BOX_SHAPES, random_full_grid

# ---------------------------------------------------------------------------------------------------------------
# Core: is this a valid Sudoku solution?


def reference_is_valid_solution(grid: np.ndarray, box_rows: int, box_cols: int) -> bool:
    """True when ``grid`` (n, n) int holds every digit 1..n exactly once in each row, column and
    ``box_rows`` x ``box_cols`` box."""
    g = np.asarray(grid)
    n = g.shape[0]
    want = set(range(1, n + 1))
    units = [g[r, :] for r in range(n)] + [g[:, c] for c in range(n)]
    units += [g[r:r + box_rows, c:c + box_cols].ravel() for r in range(0, n, box_rows) for c in range(0, n, box_cols)]
    return all(set(u.tolist()) == want and len(u) == n for u in units)


def _latin_not_sudoku(n: int) -> np.ndarray:
    # rows and columns are permutations, but the boxes repeat digits
    return (np.arange(n)[:, None] + np.arange(n)[None, :]) % n + 1


def _same_sums(n: int, rng: np.random.Generator) -> np.ndarray:
    # every row, column and box keeps its sum, yet digits repeat: +s at (r, c), (r+1, c+1) and -s at (r, c+1),
    # (r+1, c) inside one box leaves every row, column and box sum unchanged
    br, bc = BOX_SHAPES[n]
    for _ in range(50):  # not every grid allows it (4x4 often does not): draw another
        g = random_full_grid(n, rng)
        for r in range(n - 1):
            for c in range(n - 1):
                if r // br != (r + 1) // br or c // bc != (c + 1) // bc:
                    continue
                for s in [k for k in range(1 - n, n) if k]:
                    bad = g.copy()
                    bad[r, c] += s
                    bad[r + 1, c + 1] += s
                    bad[r, c + 1] -= s
                    bad[r + 1, c] -= s
                    if bad.min() >= 1 and bad.max() <= n and not reference_is_valid_solution(bad, br, bc):
                        return bad
    raise RuntimeError("no sum-preserving corruption found")


def validity_cases(seed: int = 0) -> list[tuple[np.ndarray, int, int, str]]:
    """``(grid, box_rows, box_cols, what it is)`` cases: valid 4x4/6x6/9x9 solutions and known invalid grids."""
    rng = np.random.default_rng(seed)
    cases = []
    for n in (4, 6, 9):
        br, bc = BOX_SHAPES[n]
        good = random_full_grid(n, rng)
        cases.append((good, br, bc, f"a valid {n}x{n} solution"))
        swapped = good.copy()
        swapped[0, [0, 1]] = swapped[0, [1, 0]]
        cases.append((swapped, br, bc, f"a {n}x{n} solution with two cells of row 0 swapped"))
        cases.append((_latin_not_sudoku(n), br, bc, f"a {n}x{n} grid whose rows and columns are fine but boxes not"))
        cases.append((_same_sums(n, rng), br, bc, f"a {n}x{n} grid with every sum right but repeated digits"))
        blank = good.copy()
        blank[n - 1, n - 1] = 0
        cases.append((blank, br, bc, f"a {n}x{n} solution with one blank (0) cell"))
    # 6x6 boxes are 2 rows x 3 columns: a grid valid with 3x2 boxes must be rejected
    tall = random_full_grid(6, rng).T.copy()
    cases.append((tall, 2, 3, "a 6x6 grid that is valid only with 3x2 boxes"))
    return cases


def check_is_valid_solution(is_valid_solution: Callable) -> Verdict:
    """Grade ``is_valid_solution(grid, box_rows, box_cols) -> bool`` on valid and known-invalid grids."""
    for i, (grid, br, bc, what) in enumerate(validity_cases()):
        want = reference_is_valid_solution(grid, br, bc)
        case = f"case {i} ({what}; to rerun: `grid, br, bc, _ = grader.validity_cases()[{i}]`)"
        ok, got = call_learner("is_valid_solution", is_valid_solution, grid.copy(), br, bc, case=case)
        if not ok:
            return got
        if not isinstance(got, (bool, np.bool_)):
            return verdict("is_valid_solution", False, f"return True or False, got {got!r} on {case}")
        if bool(got) != want:
            return verdict("is_valid_solution", False, f"you said {bool(got)} for {case}; it is {want}.")
    return verdict("is_valid_solution", True, f"all {len(validity_cases())} grids judged right")


# ---------------------------------------------------------------------------------------------------------------
# Transfer: a canonical form under digit relabelling


def reference_canonical_relabel(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel digits in order of first appearance (row-major; 0 = blank stays 0).

    Returns ``(canonical (n, n), digit_map (n + 1,))`` with ``digit_map[canonical] == grid``.
    """
    g = np.asarray(grid)
    n = g.shape[0]
    to_canon = np.zeros(n + 1, dtype=np.int64)
    next_label = 1
    for v in g.ravel():
        if v > 0 and to_canon[v] == 0:
            to_canon[v] = next_label
            next_label += 1
    for d in range(1, n + 1):  # digits that never appear: the remaining labels, in increasing order
        if to_canon[d] == 0:
            to_canon[d] = next_label
            next_label += 1
    canon = to_canon[g]
    digit_map = np.zeros(n + 1, dtype=np.int64)
    digit_map[to_canon] = np.arange(n + 1)
    return canon, digit_map


def canonical_cases(seed: int = 0) -> list[np.ndarray]:
    """Puzzles (with blanks, some digits absent) of sizes 4, 6 and 9."""
    rng = np.random.default_rng(seed)
    cases = []
    for n in (4, 6, 9, 9):
        g = random_full_grid(n, rng)
        g[rng.random(g.shape) < 0.55] = 0
        cases.append(g)
    g = random_full_grid(9, rng)
    g[g == 5] = 0  # a digit that never appears
    cases.append(g)
    return cases


def check_canonical_relabel(canonical_relabel: Callable) -> Verdict:
    """Grade ``canonical_relabel(grid) -> (canonical, digit_map)``: the reference canonical form, a map that
    restores the grid, and invariance under random relabellings."""
    rng = np.random.default_rng(1)
    name = "canonical_relabel"
    for i, grid in enumerate(canonical_cases()):
        case = f"puzzle {i} (to rerun: `grid = grader.canonical_cases()[{i}]`)"
        ok, got = call_learner(name, canonical_relabel, grid.copy(), case=case)
        if not ok:
            return got
        if not (isinstance(got, tuple) and len(got) == 2):
            return verdict(name, False, f"return a pair (canonical, digit_map), got {type(got).__name__}")
        canon, digit_map = (np.asarray(x) for x in got)
        want_canon, _ = reference_canonical_relabel(grid)
        if canon.shape != grid.shape or not np.array_equal(canon, want_canon):
            return verdict(name, False, f"canonical form of {case} differs from the first-appearance relabelling "
                           f"(first row yours {canon[0].tolist()}, expected {want_canon[0].tolist()}).")
        if digit_map.shape != (grid.shape[0] + 1,) or not np.array_equal(digit_map[canon], grid):
            return verdict(name, False, f"digit_map[canonical] must give back the grid for {case} (a map of "
                           f"length n + 1 with digit_map[0] == 0); yours does not.")
        relabel = np.concatenate([[0], 1 + rng.permutation(grid.shape[0])])
        ok, again = call_learner(name, canonical_relabel, relabel[grid], case=f"a relabelled copy of {case}")
        if not ok:
            return again
        if not np.array_equal(np.asarray(again[0]), canon):
            return verdict(name, False, f"a relabelled copy of {case} gets another canonical form: the form must "
                           "not depend on which digits are used.")
    return verdict(name, True, "canonical forms, inverse maps and relabelling invariance all right")


# ---------------------------------------------------------------------------------------------------------------
# Experiment: a shortcut check of the evaluation set


def reference_majority_blank_accuracy(train_labels: torch.Tensor, test_inputs: torch.Tensor,
                                      test_labels: torch.Tensor, blank_token: int = 1) -> float:
    """Accuracy on the blank cells of the test puzzles of "answer the most common training label of this cell".

    train_labels (N, L), test_inputs (M, L), test_labels (M, L) int tokens -> float.
    """
    majority = torch.mode(train_labels, dim=0).values
    blanks = test_inputs == blank_token
    return ((majority.expand_as(test_labels) == test_labels) & blanks).sum().item() / blanks.sum().item()


def check_majority_blank_accuracy(majority_blank_accuracy: Callable, train, test) -> Verdict:
    """Grade ``majority_blank_accuracy(train, test) -> float`` by measuring it again on the same sets."""
    ok, got = call_learner("majority_blank_accuracy", majority_blank_accuracy, train, test,
                           case="the notebook's train and test sets")
    if not ok:
        return got
    want = reference_majority_blank_accuracy(train.labels, test.inputs, test.labels)
    return check_value("majority_blank_accuracy", got, want, rtol=0.0, atol=1e-6, what="your accuracy",
                       hint="Count only blank cells of the TEST puzzles (input token 1), and use the most common "
                            "label of each cell over the TRAINING solutions.")


SHORTCUT_OPTIONS = ("near chance (within 0.05 of 1/size)", "clearly above chance", "below chance")


def measured_shortcut(train, test, size: int) -> str:
    """The grader's own reading: one of :data:`SHORTCUT_OPTIONS`."""
    acc = reference_majority_blank_accuracy(train.labels, test.inputs, test.labels)
    chance = 1.0 / size
    if abs(acc - chance) <= 0.05:
        return SHORTCUT_OPTIONS[0]
    return SHORTCUT_OPTIONS[1] if acc > chance else SHORTCUT_OPTIONS[2]


def check_shortcut(answer: Callable[[], str], train, test, size: int) -> Verdict:
    """Grade ``answer() -> str`` against the grader's reading of the same measurement."""
    ok, got = call_learner("shortcut", answer)
    if not ok:
        return got
    return check_choice("shortcut", got, measured_shortcut(train, test, size), SHORTCUT_OPTIONS,
                        explain=f"Compare your accuracy with 1/size = {1 / size:.3f}.")
