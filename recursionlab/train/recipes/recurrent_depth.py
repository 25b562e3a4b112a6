"""Recipes for lesson 09: a Huginn-style recurrent-depth model on chain roots and on character-level text.

* ``recurrent-depth-chains``        random depth (log-normal Poisson, truncated backprop) on parent-pointer chains;
* ``recurrent-depth-chains-fixed``  the fixed-depth twin (same model, r fixed at the mean);
* ``recurrent-depth-text``          a character language model on the offline corpus (Python's pydoc topics);
* ``recurrent-depth-text-fixed``    its fixed-depth twin.

Several GPUs: the training engine does DDP through ``torchrun``, e.g.
``torchrun --nproc_per_node=4 -m recursionlab train recurrent-depth-text --profile gpu``. The recurrence count is a
function of the step (:func:`~recursionlab.models.recurrent_depth.sample_recurrences`), so every rank draws the same
``r`` without communication (the paper's "lockstep"); each rank takes its slice of the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.data.latent_tasks import make_chain_batch
from recursionlab.models.recurrent_depth import RecurrentDepthConfig, RecurrentDepthModel
from recursionlab.profiles import by_profile
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import StepOutput
from recursionlab.train.recipes import Job, register_recipe

__all__ = [
    "ChainsConfig",
    "TextConfig",
    "chain_model_config",
    "text_model_config",
    "recurrent_depth_loss",
    "recurrences_tensor",
]


def recurrences_tensor(model: RecurrentDepthModel, step: int, batch_size: int) -> torch.Tensor:
    """The step's (no_grad_steps, grad_steps), repeated per example: (B, 2) long.

    Carried inside the batch so that it survives the engine's per-rank slicing and the move to the device.
    """
    n_free, n_grad = model.training_recurrences(step)
    return torch.tensor([[n_free, n_grad]], dtype=torch.long).repeat(batch_size, 1)


def recurrent_depth_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> StepOutput:
    """Next-token (or per-position) cross-entropy at the step's sampled depth.

    batch: tokens (B, T) long, targets (B, T) long, recurrences (B, 2) long (all rows equal).
    """
    tokens, targets, recurrences = batch
    n_free, n_grad = (int(v) for v in recurrences[0].tolist())
    logits = model(tokens, (n_free, n_grad))
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    acc = (logits.argmax(-1) == targets).float().mean()
    return StepOutput(loss, {"acc": acc, "recurrences": float(n_free + n_grad)})


# ------------------------------------------------------------------------------------------------------------
# Chain roots
# ------------------------------------------------------------------------------------------------------------
@dataclass
class ChainsConfig:
    """Chain-root task + recurrent-depth model + training settings."""

    num_nodes: int = 24
    train_max_chain: int = 8
    test_max_chain: int = 24
    batch_size: int = 64
    dim: int = 64
    n_heads: int = 4
    mlp_inner: int | None = None
    prelude_layers: int = 1
    core_layers: int = 1
    coda_layers: int = 1
    norm: str = "sandwich"
    mean_recurrence: float = 8.0
    recurrence_sigma: float = 0.5
    backprop_k: int = 4
    schedule: str = "lognormal-poisson"
    eval_size: int = 256
    eval_steps: tuple[int, ...] = (1, 4, 8, 16)
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


def chain_model_config(cfg: ChainsConfig) -> RecurrentDepthConfig:
    """The model configuration a :class:`ChainsConfig` describes (tokens and targets are positions)."""
    return RecurrentDepthConfig(
        vocab_size=cfg.num_nodes,
        dim=cfg.dim,
        n_heads=cfg.n_heads,
        mlp_inner=cfg.mlp_inner,
        prelude_layers=cfg.prelude_layers,
        core_layers=cfg.core_layers,
        coda_layers=cfg.coda_layers,
        norm=cfg.norm,
        max_positions=cfg.num_nodes,
        absolute_positions=True,  # tokens point at absolute positions
        mean_recurrence=cfg.mean_recurrence,
        recurrence_sigma=cfg.recurrence_sigma,
        backprop_k=cfg.backprop_k,
        schedule=cfg.schedule,
    )


def _chains_profile(profile: str, schedule: str) -> ChainsConfig:
    return ChainsConfig(
        num_nodes=by_profile(12, 24, 32, profile=profile),
        train_max_chain=by_profile(6, 12, 12, profile=profile),
        test_max_chain=by_profile(12, 24, 32, profile=profile),
        batch_size=by_profile(16, 32, 256, profile=profile),
        dim=by_profile(32, 64, 128, profile=profile),
        mlp_inner=by_profile(64, 128, 256, profile=profile),
        mean_recurrence=by_profile(3.0, 6.0, 8.0, profile=profile),
        backprop_k=by_profile(2, 3, 4, profile=profile),
        schedule=schedule,
        eval_size=by_profile(32, 256, 1024, profile=profile),
        eval_steps=by_profile((1, 3), (1, 2, 6, 12, 24), (1, 2, 4, 8, 16, 32), profile=profile),
        train=TrainConfig(
            steps=by_profile(30, 500, 4000, profile=profile),
            lr=by_profile(3e-3, 2e-3, 1e-3, profile=profile),
            optimizer="adamw",
            weight_decay=0.01,
            betas=(0.9, 0.95),
            warmup_steps=by_profile(3, 30, 200, profile=profile),
            schedule="cosine",
            grad_clip=1.0,
            log_every=by_profile(5, 25, 50, profile=profile),
            eval_every=0,
        ),
    )


@register_recipe("recurrent-depth-chains", "Huginn-style recurrent depth, random r, on chain roots (lesson 09)")
def recurrent_depth_chains(profile: str) -> ChainsConfig:
    return _chains_profile(profile, "lognormal-poisson")


@register_recipe("recurrent-depth-chains-fixed", "the fixed-depth twin (r = mean) on chain roots (lesson 09)")
def recurrent_depth_chains_fixed(profile: str) -> ChainsConfig:
    return _chains_profile(profile, "fixed")


def build_chains(cfg: ChainsConfig) -> Job:
    """Model, loss, data and evaluation of a chain-roots run."""
    torch.manual_seed(cfg.seed)
    model = RecurrentDepthModel(chain_model_config(cfg))
    val_in = make_chain_batch(cfg.eval_size, cfg.num_nodes, cfg.train_max_chain, generator=cfg.seed + 10**6)
    val_long = make_chain_batch(cfg.eval_size, cfg.num_nodes, cfg.test_max_chain, generator=cfg.seed + 2 * 10**6)

    def batch_fn(step: int):
        b = make_chain_batch(cfg.batch_size, cfg.num_nodes, cfg.train_max_chain, generator=cfg.seed * 10**7 + step)
        return b.tokens, b.targets, recurrences_tensor(model, step, cfg.batch_size)

    def eval_fn(m: nn.Module) -> dict:
        device = next(m.parameters()).device
        out = {}
        for tag, val in (("in", val_in), ("long", val_long)):
            logits = m.step_logits(val.tokens.to(device), max(cfg.eval_steps), noise_seed=0)
            for r in cfg.eval_steps:
                out[f"acc_{tag}@{r}"] = float((logits[r - 1].argmax(-1).cpu() == val.targets).float().mean())
        return out

    return Job(model, recurrent_depth_loss, batch_fn, cfg.train, eval_fn=eval_fn)


recurrent_depth_chains.builder(build_chains)
recurrent_depth_chains_fixed.builder(build_chains)


# ------------------------------------------------------------------------------------------------------------
# Character-level text
# ------------------------------------------------------------------------------------------------------------
@dataclass
class TextConfig:
    """Character LM on the offline corpus + recurrent-depth model + training settings."""

    context: int = 64
    batch_size: int = 32
    dim: int = 96
    n_heads: int = 4
    mlp_inner: int | None = None
    prelude_layers: int = 1
    core_layers: int = 1
    coda_layers: int = 1
    norm: str = "sandwich"
    mean_recurrence: float = 6.0
    recurrence_sigma: float = 0.5
    backprop_k: int = 3
    schedule: str = "lognormal-poisson"
    eval_batches: int = 4
    eval_steps: tuple[int, ...] = (1, 3, 6, 12)
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


def text_model_config(cfg: TextConfig, vocab_size: int) -> RecurrentDepthConfig:
    """The model configuration of a :class:`TextConfig` for a character vocabulary of ``vocab_size``."""
    return RecurrentDepthConfig(
        vocab_size=vocab_size,
        dim=cfg.dim,
        n_heads=cfg.n_heads,
        mlp_inner=cfg.mlp_inner,
        prelude_layers=cfg.prelude_layers,
        core_layers=cfg.core_layers,
        coda_layers=cfg.coda_layers,
        norm=cfg.norm,
        max_positions=max(256, cfg.context),
        mean_recurrence=cfg.mean_recurrence,
        recurrence_sigma=cfg.recurrence_sigma,
        backprop_k=cfg.backprop_k,
        schedule=cfg.schedule,
        tie_embeddings=True,
    )


def _text_profile(profile: str, schedule: str) -> TextConfig:
    return TextConfig(
        context=by_profile(32, 64, 256, profile=profile),
        batch_size=by_profile(8, 16, 64, profile=profile),
        dim=by_profile(32, 64, 256, profile=profile),
        n_heads=by_profile(4, 4, 8, profile=profile),
        mlp_inner=by_profile(64, 128, 768, profile=profile),
        core_layers=by_profile(1, 1, 2, profile=profile),
        mean_recurrence=by_profile(3.0, 4.0, 8.0, profile=profile),
        backprop_k=by_profile(2, 2, 4, profile=profile),
        schedule=schedule,
        eval_batches=by_profile(1, 4, 16, profile=profile),
        eval_steps=by_profile((1, 3), (1, 2, 4, 8, 16), (1, 4, 8, 16, 32), profile=profile),
        train=TrainConfig(
            steps=by_profile(20, 300, 6000, profile=profile),
            lr=by_profile(3e-3, 3e-3, 1e-3, profile=profile),
            optimizer="adamw",
            weight_decay=0.01,
            betas=(0.9, 0.95),
            warmup_steps=by_profile(2, 30, 300, profile=profile),
            schedule="cosine",
            grad_clip=1.0,
            log_every=by_profile(5, 25, 100, profile=profile),
            eval_every=0,
        ),
    )


@register_recipe("recurrent-depth-text", "Huginn-style recurrent-depth character LM on the offline corpus (lesson 09)")
def recurrent_depth_text(profile: str) -> TextConfig:
    return _text_profile(profile, "lognormal-poisson")


@register_recipe("recurrent-depth-text-fixed", "the fixed-depth twin of the recurrent-depth character LM (lesson 09)")
def recurrent_depth_text_fixed(profile: str) -> TextConfig:
    return _text_profile(profile, "fixed")


def build_text(cfg: TextConfig) -> Job:
    """Model, loss, data and evaluation of a character-LM run."""
    from recursionlab.data.text import CharVocab, encode_corpus, lm_batch, load_corpus

    text = load_corpus()
    vocab = CharVocab.from_text(text)
    train_ids, val_ids = encode_corpus(vocab, text, val_fraction=0.1)
    torch.manual_seed(cfg.seed)
    model = RecurrentDepthModel(text_model_config(cfg, vocab.size))
    val_batches = [
        lm_batch(val_ids, cfg.batch_size, cfg.context, torch.Generator().manual_seed(cfg.seed + 10**6 + i))
        for i in range(cfg.eval_batches)
    ]

    def batch_fn(step: int):
        x, y = lm_batch(train_ids, cfg.batch_size, cfg.context, torch.Generator().manual_seed(cfg.seed * 10**7 + step))
        return x, y, recurrences_tensor(model, step, cfg.batch_size)

    def eval_fn(m: nn.Module) -> dict:
        device = next(m.parameters()).device
        totals = {r: 0.0 for r in cfg.eval_steps}
        for x, y in val_batches:
            logits = m.step_logits(x.to(device), max(cfg.eval_steps), noise_seed=0)
            for r in cfg.eval_steps:
                totals[r] += float(F.cross_entropy(logits[r - 1].float().flatten(0, 1).cpu(), y.flatten()))
        return {f"val_loss@{r}": v / len(val_batches) for r, v in totals.items()}

    return Job(model, recurrent_depth_loss, batch_fn, cfg.train, eval_fn=eval_fn)


recurrent_depth_text.builder(build_text)
recurrent_depth_text_fixed.builder(build_text)
