"""Recipes for the recurrent-network lessons (01 and 02).

* ``rnn-adding``: a recurrent regressor on the adding problem (the long-range task where gating matters);
* ``rnn-copy``:   a per-step recurrent classifier that recalls symbols after a delay (optionally truncated BPTT);
* ``char-rnn``:   a character language model on the Python documentation corpus.

    python -m recursionlab train rnn-adding --profile laptop --set cell=rnn --set param_budget=4417
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.data.sequences import IGNORE_INDEX, adding_batch, copy_batch
from recursionlab.data.text import CharVocab, encode_corpus, lm_batch, load_corpus
from recursionlab.models.rnn import CharRNN, RNNClassifier, RNNRegressor, matched_hidden_size
from recursionlab.profiles import by_profile
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import StepOutput
from recursionlab.train.recipes import Job, register_recipe

ADDING_TOLERANCE = 0.04  # Hochreiter & Schmidhuber (1997) count an answer right within 0.04 of the sum
_VAL_SEED = 10**6  # validation sets use a seed that no training step uses


def _hidden_size(hidden_size: int, param_budget: int | None, cell: str, input_size: int, output_size: int) -> int:
    """``hidden_size``, or the one that matches ``param_budget`` parameters for this cell when a budget is set."""
    if param_budget is None:
        return hidden_size
    return matched_hidden_size(cell, param_budget, input_size, output_size)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ----------------------------------------------------------------------------------------------- adding problem
@dataclass
class AddingConfig:
    seq_len: int = 50
    cell: str = "gru"
    hidden_size: int = 32
    param_budget: int | None = None  # if set, overrides hidden_size with the size matching this many parameters
    batch_size: int = 64
    n_val: int = 1000
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


@register_recipe("rnn-adding", "recurrent regressor on the adding problem (lesson 02: gating vs. a plain RNN)")
def rnn_adding(profile: str) -> AddingConfig:
    steps = by_profile(30, 400, 6000, profile=profile)
    return AddingConfig(
        seq_len=by_profile(20, 50, 200, profile=profile),
        hidden_size=by_profile(16, 32, 128, profile=profile),
        batch_size=by_profile(32, 64, 256, profile=profile),
        n_val=by_profile(200, 1000, 4000, profile=profile),
        train=TrainConfig(steps=steps, lr=1e-2 if profile != "gpu" else 3e-3, grad_clip=1.0,
                          eval_every=max(steps // 10, 1), log_every=10),
    )


@rnn_adding.builder
def build_rnn_adding(cfg: AddingConfig) -> Job:
    torch.manual_seed(cfg.seed)
    hidden = _hidden_size(cfg.hidden_size, cfg.param_budget, cfg.cell, 2, 1)
    model = RNNRegressor(2, hidden, cell=cfg.cell)
    x_val, y_val = adding_batch(cfg.n_val, cfg.seq_len, generator=_VAL_SEED + cfg.seed)

    def batch_fn(step: int):
        return adding_batch(cfg.batch_size, cfg.seq_len, generator=cfg.seed * 10**7 + step)

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        x, y = batch
        pred = model(x).float()
        return StepOutput(F.mse_loss(pred, y), {"acc": ((pred - y).abs() < ADDING_TOLERANCE).float().mean()})

    def eval_fn(model: nn.Module) -> dict:
        pred = model(x_val.to(_model_device(model))).float().cpu()
        return {"val_mse": float(F.mse_loss(pred, y_val)),
                "val_acc": float(((pred - y_val).abs() < ADDING_TOLERANCE).float().mean())}

    return Job(model, loss_fn, batch_fn, cfg.train, eval_fn=eval_fn)


# ----------------------------------------------------------------------------------------------- copy with delay
@dataclass
class CopyConfig:
    length: int = 3
    delay: int = 8
    n_symbols: int = 8
    cell: str = "elman"
    hidden_size: int = 48
    param_budget: int | None = None
    truncation: int | None = None  # truncated BPTT window (None: full BPTT)
    truncation_align: str = "end"  # windows counted back from the last step, where the recall loss sits
    batch_size: int = 64
    n_val: int = 500
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


@register_recipe("rnn-copy", "recurrent classifier recalling symbols after a delay (lessons 01 and 02)")
def rnn_copy(profile: str) -> CopyConfig:
    steps = by_profile(30, 400, 4000, profile=profile)
    return CopyConfig(
        length=by_profile(2, 3, 5, profile=profile),
        delay=by_profile(3, 8, 20, profile=profile),
        hidden_size=by_profile(16, 48, 128, profile=profile),
        batch_size=by_profile(32, 64, 256, profile=profile),
        n_val=by_profile(100, 500, 2000, profile=profile),
        train=TrainConfig(steps=steps, lr=1e-2 if profile != "gpu" else 3e-3, grad_clip=1.0,
                          eval_every=max(steps // 10, 1), log_every=10),
    )


def copy_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Accuracy over the graded (recall) positions: ``logits (B, T, C)``, ``targets (B, T)`` -> 0-d tensor."""
    graded = targets != IGNORE_INDEX
    return (logits.argmax(-1)[graded] == targets[graded]).float().mean()


@rnn_copy.builder
def build_rnn_copy(cfg: CopyConfig) -> Job:
    torch.manual_seed(cfg.seed)
    vocab = cfg.n_symbols + 2  # blank, symbols, go marker
    hidden = _hidden_size(cfg.hidden_size, cfg.param_budget, cfg.cell, vocab, cfg.n_symbols)
    model = RNNClassifier(vocab, hidden, cfg.n_symbols, cell=cfg.cell, per_step=True, truncation=cfg.truncation,
                          truncation_align=cfg.truncation_align)
    x_val, y_val = copy_batch(cfg.n_val, cfg.length, cfg.delay, cfg.n_symbols, generator=_VAL_SEED + cfg.seed)

    def batch_fn(step: int):
        return copy_batch(cfg.batch_size, cfg.length, cfg.delay, cfg.n_symbols, generator=cfg.seed * 10**7 + step)

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        x, y = batch
        logits = model(x).float()
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
        return StepOutput(loss, {"acc": copy_accuracy(logits, y)})

    def eval_fn(model: nn.Module) -> dict:
        logits = model(x_val.to(_model_device(model))).float().cpu()
        return {"val_acc": float(copy_accuracy(logits, y_val))}

    return Job(model, loss_fn, batch_fn, cfg.train, eval_fn=eval_fn)


# ----------------------------------------------------------------------------------------------- character LM
@dataclass
class CharRNNConfig:
    context: int = 64
    cell: str = "gru"
    hidden_size: int = 128
    truncation: int | None = None
    batch_size: int = 32
    val_fraction: float = 0.1
    val_batches: int = 4
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


@register_recipe("char-rnn", "character-level recurrent language model on the pydoc topics corpus (lesson 01)")
def char_rnn(profile: str) -> CharRNNConfig:
    steps = by_profile(20, 800, 5000, profile=profile)
    return CharRNNConfig(
        context=by_profile(16, 64, 128, profile=profile),
        hidden_size=by_profile(32, 128, 512, profile=profile),
        batch_size=by_profile(8, 32, 128, profile=profile),
        val_batches=by_profile(1, 4, 16, profile=profile),
        train=TrainConfig(steps=steps, lr=by_profile(1e-2, 1e-2, 2e-3, profile=profile), grad_clip=1.0,
                          schedule="cosine", warmup_steps=by_profile(0, 20, 200, profile=profile),
                          eval_every=max(steps // 5, 1), log_every=10),
    )


@char_rnn.builder
def build_char_rnn(cfg: CharRNNConfig) -> Job:
    torch.manual_seed(cfg.seed)
    text = load_corpus()
    vocab = CharVocab.from_text(text)
    train_ids, val_ids = encode_corpus(vocab, text, cfg.val_fraction)
    model = CharRNN(vocab.size, cfg.hidden_size, cell=cfg.cell, truncation=cfg.truncation)
    model.vocab = vocab  # plain data for decoding samples (not a parameter)
    val_gen = torch.Generator().manual_seed(_VAL_SEED + cfg.seed)
    val_batches = [lm_batch(val_ids, cfg.batch_size, cfg.context, val_gen) for _ in range(cfg.val_batches)]

    def batch_fn(step: int):
        return lm_batch(train_ids, cfg.batch_size, cfg.context, torch.Generator().manual_seed(cfg.seed * 10**7 + step))

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        x, y = batch
        logits = model(x).float()
        return StepOutput(F.cross_entropy(logits.flatten(0, 1), y.flatten()))

    def eval_fn(model: nn.Module) -> dict:
        device = _model_device(model)
        losses = [F.cross_entropy(model(x.to(device)).float().flatten(0, 1), y.to(device).flatten())
                  for x, y in val_batches]
        val_loss = float(torch.stack(losses).mean())
        return {"val_loss": val_loss, "val_bpc": val_loss / math.log(2)}

    return Job(model, loss_fn, batch_fn, cfg.train, eval_fn=eval_fn)
