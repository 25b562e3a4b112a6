"""The shared puzzle-dataset interface, its builders, the one-pass baseline and its recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recursionlab.data import arc as A
from recursionlab.data import maze as M
from recursionlab.data import sudoku as S
from recursionlab.data.puzzles import (
    PuzzleDataset,
    arc_dataset,
    maze_dataset,
    puzzle_accuracy,
    sudoku_dataset,
)
from recursionlab.models.baselines import OnePassConfig, OnePassTransformer, count_parameters, match_param_count


def _toy(n=10, L=4, vocab=5, **kw) -> PuzzleDataset:
    x = torch.arange(n * L).reshape(n, L) % vocab
    return PuzzleDataset("toy", x, x.clone(), torch.zeros(n, dtype=torch.long), vocab, **kw)


# ---------------------------------------------------------------- the interface
def test_dataset_validates_its_fields():
    x = torch.zeros(3, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="inputs and labels"):
        PuzzleDataset("bad", x, torch.zeros(3, 5, dtype=torch.long), torch.zeros(3, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="puzzle_ids"):
        PuzzleDataset("bad", x, x, torch.zeros(2, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="input tokens"):
        PuzzleDataset("bad", x + 7, x, torch.zeros(3, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="labels"):
        PuzzleDataset("bad", x, x - 3, torch.zeros(3, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="puzzle_ids must lie"):
        PuzzleDataset("bad", x, x, torch.ones(3, dtype=torch.long), 5, num_puzzle_ids=1)
    with pytest.raises(ValueError, match="grid_shape"):
        PuzzleDataset("bad", x, x, torch.zeros(3, dtype=torch.long), 5, grid_shape=(3, 3))
    ok = PuzzleDataset("ok", np.zeros((3, 4)), np.full((3, 4), -100), np.zeros(3), 5)  # numpy is converted
    assert ok.inputs.dtype == torch.long and ok.seq_len == 4 and len(ok) == 3


def test_train_batches_are_deterministic_and_cover_each_epoch_once():
    data = _toy(n=10)
    a = data.train_batch(7, 4, seed=1)
    b = data.train_batch(7, 4, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in ("inputs", "labels", "puzzle_ids"))
    assert not torch.equal(data.train_batch(7, 4, seed=2)["inputs"], a["inputs"])
    assert a["inputs"].shape == (4, 4) and a["puzzle_ids"].shape == (4,) and a["inputs"].dtype == torch.long
    # 5 steps of 4 = 2 epochs of 10: every example exactly twice, once in each epoch
    idx = np.concatenate([data.batch_indices(s, 4, seed=0) for s in range(5)])
    assert sorted(idx[:10].tolist()) == list(range(10)) and sorted(idx[10:].tolist()) == list(range(10))
    assert not np.array_equal(idx[:10], idx[10:])  # a fresh permutation per epoch
    with pytest.raises(ValueError, match="step"):
        data.train_batch(-1, 4)
    with pytest.raises(ValueError, match="batch_size"):
        data.train_batch(0, 0)


def test_augment_flag_and_eval_batches():
    calls = []

    def flip(x, y, rng):
        calls.append(rng.integers(1000))
        return x[:, ::-1], y[:, ::-1]

    data = _toy(n=9, augmenter=flip)
    raw = data.train_batch(3, 5, augment=False)
    aug = data.train_batch(3, 5, augment=True)
    assert torch.equal(aug["inputs"], raw["inputs"].flip(1)) and len(calls) == 1
    batches = list(data.eval_batches(4))
    assert [len(b["inputs"]) for b in batches] == [4, 4, 1]
    assert torch.equal(torch.cat([b["inputs"] for b in batches]), data.inputs)
    sub = data.subset([2, 5])
    assert len(sub) == 2 and torch.equal(sub.inputs[1], data.inputs[5]) and sub.augmenter is flip


def test_puzzle_accuracy_on_a_hand_made_case():
    labels = torch.tensor([[1, 2, -100], [3, 4, 5]])
    preds = torch.tensor([[1, 2, 0], [3, 0, 5]])
    acc = puzzle_accuracy(preds, labels)
    assert acc["cell_acc"] == pytest.approx(4 / 5) and acc["exact_acc"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        puzzle_accuracy(preds[:, :2], labels)


# ---------------------------------------------------------------- builders
def test_sudoku_dataset_layout_and_augmented_batches_stay_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("RECURSIONLAB_CACHE", str(tmp_path))
    train, test = sudoku_dataset(6, n_train=24, n_test=8, difficulty="easy", seed=0)
    assert (train.seq_len, train.vocab_size, train.num_puzzle_ids, train.grid_shape) == (36, 8, 1, (6, 6))
    assert len(train) == 24 and 1 <= len(test) <= 8 and train.meta["backtracks"].shape == (24,)
    train_keys = {bytes(r.numpy()) for r in train.inputs}
    assert not any(bytes(r.numpy()) in train_keys for r in test.inputs)
    batch = train.train_batch(0, 16, seed=3)
    for x, y in zip(batch["inputs"].numpy(), batch["labels"].numpy()):
        assert S.is_solution(S.decode_tokens(x), S.decode_tokens(y))
        assert S.solve(S.decode_tokens(x), limit=2).count == 1


def test_maze_dataset_layout(tmp_path):
    train, test = maze_dataset(6, 3, size=12, hard=True, seed=0, dihedral=True)
    assert (train.seq_len, train.vocab_size, train.grid_shape) == (144, 6, (12, 12))
    assert (train.meta["path_lengths"] >= M.HARD_MIN_PATH(12)).all()
    batch = train.train_batch(0, 6)
    for x, y in zip(batch["inputs"].numpy(), batch["labels"].numpy()):
        assert M.check_maze_answer(x, y)
    assert test.augmenter is not None and maze_dataset(2, 2, size=10, hard=False)[0].augmenter is None


def test_arc_dataset_follows_the_hrm_split_rule():
    train, test = arc_dataset(canvas=10)
    names = train.meta["task_names"]
    assert names[0] is None and train.num_puzzle_ids == len(names)
    tasks = A.load_arc_tasks()
    fitting = {t.task_id: t for split in tasks.values() for t in split if t.max_side() <= 10}
    assert len(names) - 1 == len(fitting)
    n_eval_tests = sum(len(t.test) for t in fitting.values() if t.split == "evaluation")
    n_dropped = len(test.meta["dropped_test_pairs"])  # symmetries of training pairs (tests/test_paper_files.py)
    assert len(test) == n_eval_tests - n_dropped and test.meta["is_test_pair"].all()
    # evaluation tasks contribute only their demonstrations to training
    eval_ids = {i for i, n in enumerate(names) if n and fitting[n].split == "evaluation"}
    in_train = train.puzzle_ids.numpy()
    assert not train.meta["is_test_pair"][np.isin(in_train, list(eval_ids))].any()
    # rows decode back to the task's grids
    row = 0
    task = fitting[names[int(train.puzzle_ids[row])]]
    a, b = task.train[int(train.meta["pair_index"][row])]
    assert np.array_equal(A.decode_grid(train.inputs[row].numpy()), a)
    assert np.array_equal(A.decode_grid(train.labels[row].clamp(min=0).numpy()), b)
    batch = train.train_batch(0, 8)
    assert batch["inputs"].shape == (8, 100) and (batch["labels"] == -100).any()


# ---------------------------------------------------------------- the one-pass baseline
@pytest.mark.parametrize("positions", ["rope", "learned", "none"])
def test_one_pass_transformer_shapes_and_puzzle_prefix(positions):
    torch.manual_seed(0)
    cfg = OnePassConfig(vocab_size=12, seq_len=20, num_puzzle_ids=3, dim=32, n_layers=2, n_heads=2, positions=positions)
    model = OnePassTransformer(cfg)
    x = torch.randint(0, 12, (5, 20))
    ids = torch.tensor([0, 1, 2, 1, 0])
    logits = model(x, ids)
    assert logits.shape == (5, 20, 12) and torch.isfinite(logits).all()
    assert cfg.prefix_len == 1 and model.puzzle_emb is not None
    with pytest.raises(ValueError, match="inputs must be"):
        model(torch.zeros(5, 21, dtype=torch.long))
    with pytest.raises(ValueError, match="heads"):
        OnePassTransformer(OnePassConfig(vocab_size=5, seq_len=4, dim=30, n_heads=4))


def test_one_pass_is_permutation_equivariant_without_positions():
    # With no positions and no prefix a transformer cannot tell cells apart: permuting the input permutes the output.
    torch.manual_seed(0)
    model = OnePassTransformer(OnePassConfig(vocab_size=6, seq_len=16, dim=32, n_layers=2, n_heads=2, positions="none"))
    x = torch.randint(0, 6, (3, 16))
    perm = torch.randperm(16)
    assert torch.allclose(model(x)[:, perm], model(x[:, perm]), atol=1e-5)


def test_match_param_count_lands_close_to_the_target():
    reference = OnePassTransformer(OnePassConfig(vocab_size=11, seq_len=81, dim=96, n_layers=2, n_heads=3))
    cfg = match_param_count(reference, vocab_size=11, seq_len=81, n_layers=4, n_heads=2)
    matched, want = count_parameters(OnePassTransformer(cfg)), count_parameters(reference)
    assert cfg.n_layers == 4 and cfg.n_heads == 2 and abs(matched - want) / want < 0.05
    with pytest.raises(ValueError, match="positive"):
        match_param_count(0, 11, 81)


def test_baseline_recipe_learns_4x4_sudoku(tmp_path, monkeypatch):
    monkeypatch.setenv("RECURSIONLAB_CACHE", str(tmp_path))
    from recursionlab.train.recipes import run_recipe

    result = run_recipe(
        "baseline-sudoku",
        profile="smoke",
        overrides={"train.steps": 150, "n_train": 300, "n_test": 100, "train.progress": False},
    )
    m = result.metrics
    # Copying the 8 givens and guessing the 8 blanks uniformly scores about 0.5 + 0.5 / 4 = 0.625 per cell.
    assert m["test_cell_acc"] > 0.8, m
    assert result.history.series("loss")[1][-1] < result.history.series("loss")[1][0]
