"""Exercise 06's graders accept the master solutions and reject a catalogue of known-wrong ones."""

import numpy as np
import pytest
import torch

from recursionlab.course.checks import assert_rejected
from recursionlab.course.graders import l06_puzzles as g


def valid_right(grid, br, bc):
    n = grid.shape[0]
    full = set(range(1, n + 1))
    units = [grid[r] for r in range(n)] + [grid[:, c] for c in range(n)]
    units += [grid[r:r + br, c:c + bc].ravel() for r in range(0, n, br) for c in range(0, n, bc)]
    return all(set(u.tolist()) == full for u in units)


def valid_no_boxes(grid, br, bc):
    # rows and columns only: a Latin square passes
    n = grid.shape[0]
    full = set(range(1, n + 1))
    return all(set(grid[r].tolist()) == full and set(grid[:, r].tolist()) == full for r in range(n))


def valid_by_sums(grid, br, bc):
    # the classic shortcut: right sums everywhere (and no blanks) does not mean right digits
    n = grid.shape[0]
    total = n * (n + 1) // 2
    sums = [grid[r].sum() for r in range(n)] + [grid[:, c].sum() for c in range(n)]
    sums += [grid[r:r + br, c:c + bc].sum() for r in range(0, n, br) for c in range(0, n, bc)]
    return bool((grid > 0).all() and all(s == total for s in sums))


def valid_boxes_transposed(grid, br, bc):
    # boxes of bc rows x br columns: wrong for 6x6
    return valid_right(grid, bc, br)


def valid_rows_only_distinct(grid, br, bc):
    # "no repeats" without "every digit present": a blank (0) passes
    n = grid.shape[0]
    units = [grid[r] for r in range(n)] + [grid[:, c] for c in range(n)]
    units += [grid[r:r + br, c:c + bc].ravel() for r in range(0, n, br) for c in range(0, n, bc)]
    return all(len(set(u.tolist())) == n for u in units)


WRONG_VALID = [valid_no_boxes, valid_by_sums, valid_boxes_transposed, valid_rows_only_distinct]


def canon_by_value(grid):
    # the identity: not invariant under relabelling
    n = grid.shape[0]
    return grid.copy(), np.arange(n + 1)


def canon_map_backwards(grid):
    # right canonical form, but the map goes grid -> canonical instead of canonical -> grid
    canon, digit_map = g.reference_canonical_relabel(grid)
    inverse = np.zeros_like(digit_map)
    inverse[digit_map] = np.arange(len(digit_map))
    return canon, inverse


def canon_by_frequency(grid):
    # relabel by how often a digit occurs: ties make it depend on the digits' names
    n = grid.shape[0]
    counts = np.bincount(grid.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-counts, kind="stable") + 1
    to_canon = np.zeros(n + 1, dtype=np.int64)
    to_canon[order] = np.arange(1, n + 1)
    digit_map = np.zeros(n + 1, dtype=np.int64)
    digit_map[to_canon] = np.arange(n + 1)
    return to_canon[grid], digit_map


def canon_labels_blanks(grid):
    # blanks take part in the first-appearance order
    flat, seen, out = grid.ravel(), {}, []
    for v in flat:
        seen.setdefault(int(v), len(seen))
        out.append(seen[int(v)])
    return np.array(out).reshape(grid.shape), np.arange(grid.shape[0] + 1)


WRONG_CANON = [canon_by_value, canon_map_backwards, canon_by_frequency, canon_labels_blanks]


@pytest.fixture(scope="module")
def sets():
    from recursionlab.data.puzzles import sudoku_dataset

    return sudoku_dataset(4, n_train=60, n_test=30, difficulty="easy", seed=0)




def test_master_solutions_pass(sets, capsys):
    train, test = sets
    assert g.check_is_valid_solution(valid_right)
    assert g.check_canonical_relabel(g.reference_canonical_relabel)
    assert g.check_majority_blank_accuracy(
        lambda tr, te: g.reference_majority_blank_accuracy(tr.labels, te.inputs, te.labels), train, test)
    assert g.check_shortcut(lambda: g.measured_shortcut(train, test, 4), train, test, 4)
    assert capsys.readouterr().out.count("\u2705") == 4


@pytest.mark.parametrize("wrong", WRONG_VALID, ids=lambda f: f.__name__)
def test_wrong_validity_checks_are_rejected(wrong, capsys):
    assert_rejected(g.check_is_valid_solution, wrong)


@pytest.mark.parametrize("wrong", WRONG_CANON, ids=lambda f: f.__name__)
def test_wrong_canonical_forms_are_rejected(wrong, capsys):
    assert_rejected(g.check_canonical_relabel, wrong)


def test_wrong_experiment_answers_are_rejected(sets, capsys):
    train, test = sets

    def all_cells(tr, te):  # counts the givens too
        majority = torch.mode(tr.labels, dim=0).values
        return (majority.expand_as(te.labels) == te.labels).float().mean().item()

    def test_majority(tr, te):  # the majority of the TEST solutions: peeks at the answers
        return g.reference_majority_blank_accuracy(te.labels, te.inputs, te.labels)

    for wrong in (all_cells, test_majority, lambda tr, te: 1 / 4):
        assert_rejected(g.check_majority_blank_accuracy, wrong, train, test)
    right = g.measured_shortcut(train, test, 4)
    for option in g.SHORTCUT_OPTIONS:
        if option != right:
            assert_rejected(g.check_shortcut, lambda o=option: o, train, test, 4)
