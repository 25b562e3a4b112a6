"""One-pass transformer baselines on reasoning puzzles (lesson 06).

* ``baseline-sudoku`` -- :class:`~recursionlab.models.baselines.OnePassTransformer` on generated Sudoku
  (:func:`~recursionlab.data.puzzles.sudoku_dataset`), trained with per-cell cross-entropy on on-the-fly
  augmented batches; evaluated on held-out puzzles by cell accuracy and exact-puzzle accuracy (every cell
  right, the papers' metric). ``--set size=4 --set difficulty=easy`` gives the case it can learn,
  ``size=9 difficulty=hard`` the one where it breaks (HRM paper, arXiv 2506.21734: "Direct pred" 0.0 on
  Sudoku-Extreme).

    python -m recursionlab train baseline-sudoku --profile laptop --set size=6 --set difficulty=easy
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from recursionlab.data.puzzles import PuzzleDataset, puzzle_accuracy, sudoku_dataset
from recursionlab.models.baselines import OnePassConfig, OnePassTransformer
from recursionlab.profiles import by_profile
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import StepOutput
from recursionlab.train.losses import softmax_cross_entropy, stablemax_cross_entropy
from recursionlab.train.recipes import Job, register_recipe

__all__ = ["BaselineSudokuConfig", "evaluate_puzzles", "predict_tokens", "puzzle_loss_fn"]

LOSSES = {"softmax": softmax_cross_entropy, "stablemax": stablemax_cross_entropy}


@dataclass
class BaselineSudokuConfig:
    """Settings of ``baseline-sudoku``: data (size, difficulty, n_train, n_test, data_seed, workers), model
    (dim, n_layers, n_heads, positions, norm), training (batch_size, augment, loss "softmax"/"stablemax", train)."""

    size: int = 9
    difficulty: str = "hard"
    n_train: int = 1000
    n_test: int = 200
    data_seed: int = 0
    workers: int = 1
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    # Learned positions: in our runs RoPE's 1-D relative positions learned even 4x4 grids far more slowly.
    positions: str = "learned"
    # Pre-norm: in our short CPU runs it learned 9x9 cells faster than HRM/TRM's post-norm ("post" still works).
    norm: str = "pre"
    batch_size: int = 64
    augment: bool = True
    loss: str = "softmax"
    eval_batch_size: int = 256
    train: TrainConfig = field(default_factory=TrainConfig)


@torch.no_grad()
def predict_tokens(model: nn.Module, dataset: PuzzleDataset, batch_size: int = 256) -> torch.Tensor:
    """Argmax predictions (N, L) long, on CPU, of a model with ``forward(inputs, puzzle_ids) -> logits``."""
    device = next(model.parameters()).device
    out = [
        model(b["inputs"].to(device), b["puzzle_ids"].to(device)).argmax(-1).cpu()
        for b in dataset.eval_batches(batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, dataset.seq_len, dtype=torch.long)


def evaluate_puzzles(model: nn.Module, dataset: PuzzleDataset, batch_size: int = 256) -> dict[str, float]:
    """``{"cell_acc", "exact_acc"}`` of the model's one-pass predictions on ``dataset`` (unaugmented)."""
    was_training = model.training
    model.eval()
    try:
        return puzzle_accuracy(predict_tokens(model, dataset, batch_size), dataset.labels)
    finally:
        model.train(was_training)


def puzzle_loss_fn(loss: str = "softmax"):
    """A ``loss_fn(model, batch) -> StepOutput`` for puzzle batches: per-cell cross-entropy (ignoring -100)
    with the batch's cell and exact accuracy as metrics."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}")
    ce = LOSSES[loss]

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        logits = model(batch["inputs"], batch["puzzle_ids"])  # (B, L, V)
        labels = batch["labels"]
        value = ce(logits.float(), labels, ignore_index=-100)
        with torch.no_grad():
            acc = puzzle_accuracy(logits.argmax(-1), labels)
        return StepOutput(value, {"cell_acc": acc["cell_acc"], "exact_acc": acc["exact_acc"]})

    return loss_fn


@register_recipe("baseline-sudoku", "one-pass transformer on generated Sudoku (lesson 06)")
def baseline_sudoku(profile: str) -> BaselineSudokuConfig:
    return BaselineSudokuConfig(
        size=by_profile(4, 9, 9, profile=profile),
        difficulty=by_profile("easy", "hard", "hard", profile=profile),
        n_train=by_profile(200, 300, 3000, profile=profile),
        n_test=by_profile(50, 100, 500, profile=profile),
        workers=by_profile(1, 2, 8, profile=profile),
        dim=by_profile(32, 64, 256, profile=profile),
        n_layers=by_profile(2, 4, 8, profile=profile),
        n_heads=by_profile(2, 4, 8, profile=profile),
        batch_size=by_profile(32, 64, 256, profile=profile),
        train=TrainConfig(
            steps=by_profile(40, 600, 20000, profile=profile),
            lr=by_profile(3e-3, 1e-3, 3e-4, profile=profile),
            weight_decay=0.1,
            betas=(0.9, 0.95),
            warmup_steps=by_profile(5, 50, 1000, profile=profile),
            schedule="cosine",
            eval_every=by_profile(0, 200, 2000, profile=profile),
            log_every=by_profile(10, 20, 100, profile=profile),
        ),
    )


@baseline_sudoku.builder
def build_baseline_sudoku(cfg: BaselineSudokuConfig) -> Job:
    train_set, test_set = sudoku_dataset(
        cfg.size, cfg.n_train, cfg.n_test, cfg.difficulty, seed=cfg.data_seed, workers=cfg.workers
    )
    torch.manual_seed(cfg.train.seed)
    model = OnePassTransformer(
        OnePassConfig(
            vocab_size=train_set.vocab_size,
            seq_len=train_set.seq_len,
            num_puzzle_ids=train_set.num_puzzle_ids,
            dim=cfg.dim,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            positions=cfg.positions,
            norm=cfg.norm,
        )
    )
    train_probe = train_set.subset(range(min(len(train_set), len(test_set))))

    def batch_fn(step: int):
        return train_set.train_batch(step, cfg.batch_size, seed=cfg.train.seed, augment=cfg.augment)

    def eval_fn(m: nn.Module) -> dict[str, float]:
        test = evaluate_puzzles(m, test_set, cfg.eval_batch_size)
        train = evaluate_puzzles(m, train_probe, cfg.eval_batch_size)
        return {
            "test_cell_acc": test["cell_acc"],
            "test_exact_acc": test["exact_acc"],
            "train_cell_acc": train["cell_acc"],
            "train_exact_acc": train["exact_acc"],
        }

    return Job(model, puzzle_loss_fn(cfg.loss), batch_fn, cfg.train, eval_fn=eval_fn)
