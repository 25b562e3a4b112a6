"""Character language models on the offline corpus for the Mixture-of-Recursions lesson (10).

Four recipes, one configuration type, one engine: ``lm-vanilla``, ``lm-recursive``, ``lm-mor-expert`` and
``lm-mor-token``. With the default ``n_unique_layers`` they have the same transformer parameters (see
``recursionlab.models.mor.matched_models``): the vanilla model stacks the unique blocks once, the recursive
and MoR models use Middle-Cycle sharing and unroll the shared blocks ``n_recursions`` times. Set
``vanilla_layers`` for the paper's equal-FLOPs view instead (a deeper vanilla model).

    python -m recursionlab train lm-mor-expert --profile laptop --set n_recursions=2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.data.text import CharVocab, encode_corpus, lm_batch, load_corpus
from recursionlab.models.mor import (
    MixtureOfRecursionsLM,
    MoRConfig,
    forward_flops_per_token,
    router_agreement,
)
from recursionlab.models.transformer_lm import TransformerLM, count_parameters
from recursionlab.profiles import by_profile
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import StepOutput
from recursionlab.train.recipes import Job, register_recipe

MODEL_KINDS = ("vanilla", "recursive", "mor_expert", "mor_token")


@dataclass
class CharLMConfig:
    """A character LM on ``pydoc_data.topics`` (see ``recursionlab.data.text``).

    kind: one of MODEL_KINDS. n_unique_layers: unique blocks (Middle-Cycle: first + shared + last).
    vanilla_layers: depth of the vanilla model (None = n_unique_layers, i.e. equal parameters).
    context: characters per training window. eval_windows: validation windows (fixed) for val_loss.
    """

    kind: str = "mor_expert"
    dim: int = 64
    n_heads: int = 4
    n_unique_layers: int = 3
    n_recursions: int = 3
    vanilla_layers: int | None = None
    expansion: float = 4.0
    capacities: tuple[float, ...] | None = None
    router_alpha: float | None = None
    sampling: str = "aux_loss"
    aux_loss_coef: float = 0.001
    balance_coef: float = 0.1
    kv_sharing: bool = False
    context: int = 64
    batch_size: int = 32
    eval_windows: int = 64
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


@lru_cache(maxsize=1)
def corpus_ids() -> tuple[CharVocab, torch.Tensor, torch.Tensor]:
    """The corpus vocabulary and its (train_ids, val_ids), encoded once per process."""
    text = load_corpus()
    vocab = CharVocab.from_text(text)
    train_ids, val_ids = encode_corpus(vocab, text, val_fraction=0.1)
    return vocab, train_ids, val_ids


def build_char_lm(cfg: CharLMConfig, vocab_size: int) -> nn.Module:
    """The model a config describes (all kinds share dim, heads and unique blocks)."""
    if cfg.kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {cfg.kind!r}; allowed: {', '.join(MODEL_KINDS)}")
    if cfg.n_unique_layers < 3:
        raise ValueError(f"n_unique_layers must be >= 3 (Middle-Cycle: first, shared, last), got {cfg.n_unique_layers}")
    torch.manual_seed(cfg.seed)
    max_len = cfg.context + 256  # room to generate past the training context
    if cfg.kind == "vanilla":
        depth = cfg.vanilla_layers if cfg.vanilla_layers is not None else cfg.n_unique_layers
        return TransformerLM(vocab_size, cfg.dim, cfg.n_heads, depth, max_len, cfg.expansion)
    routing = {"recursive": "none", "mor_expert": "expert", "mor_token": "token"}[cfg.kind]
    mor_cfg = MoRConfig(
        vocab_size=vocab_size, dim=cfg.dim, n_heads=cfg.n_heads,
        n_layers=2 + (cfg.n_unique_layers - 2) * cfg.n_recursions, n_recursions=cfg.n_recursions,
        sharing="middle_cycle", routing=routing, capacities=cfg.capacities if routing == "expert" else None,
        router_alpha=cfg.router_alpha, sampling=cfg.sampling, aux_loss_coef=cfg.aux_loss_coef,
        balance_coef=cfg.balance_coef, kv_sharing=cfg.kv_sharing and routing != "none",
        max_seq_len=max_len, expansion=cfg.expansion,
    )
    return MixtureOfRecursionsLM(mor_cfg)


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
    """Next-character cross-entropy plus the model's auxiliary (router) loss. batch: x, y (B, T) long."""
    x, y = batch
    out = model(x)
    ce = F.cross_entropy(out.logits.float().flatten(0, 1), y.flatten())
    metrics = {"ce": ce.detach(), **{k: v for k, v in out.metrics.items() if k.startswith(("router_acc", "frac"))}}
    return StepOutput(ce + out.aux_loss, metrics)


def _config(kind: str, profile: str) -> CharLMConfig:
    steps = by_profile(12, 200, 2500, profile=profile)
    return CharLMConfig(
        kind=kind,
        dim=by_profile(32, 64, 256, profile=profile),
        n_heads=by_profile(2, 4, 8, profile=profile),
        n_unique_layers=by_profile(3, 3, 4, profile=profile),
        context=by_profile(32, 64, 256, profile=profile),
        batch_size=by_profile(8, 16, 64, profile=profile),
        eval_windows=by_profile(8, 64, 256, profile=profile),
        train=TrainConfig(
            steps=steps, lr=3e-3, optimizer="adamw", betas=(0.9, 0.95), weight_decay=0.1,
            warmup_steps=by_profile(2, 30, 200, profile=profile), schedule="cosine",
            grad_clip=1.0, log_every=by_profile(3, 10, 50, profile=profile),
            eval_every=by_profile(6, 50, 250, profile=profile), progress=False,
        ),
    )


@register_recipe("lm-vanilla", "vanilla causal char transformer on the pydoc corpus (lesson 10 baseline)")
def lm_vanilla(profile: str) -> CharLMConfig:
    return _config("vanilla", profile)


@register_recipe("lm-recursive", "weight-shared (Middle-Cycle) recursive char transformer, no router (lesson 10)")
def lm_recursive(profile: str) -> CharLMConfig:
    return _config("recursive", profile)


@register_recipe("lm-mor-expert", "Mixture-of-Recursions, expert-choice routing + aux BCE loss (lesson 10)")
def lm_mor_expert(profile: str) -> CharLMConfig:
    return _config("mor_expert", profile)


@register_recipe("lm-mor-token", "Mixture-of-Recursions, token-choice routing + balancing loss (lesson 10)")
def lm_mor_token(profile: str) -> CharLMConfig:
    return _config("mor_token", profile)


def build_char_lm_job(cfg: CharLMConfig) -> Job:
    """Model, data and evaluation of any of the four recipes."""
    vocab, train_ids, val_ids = corpus_ids()
    model = build_char_lm(cfg, vocab.size)
    val_x, val_y = lm_batch(val_ids, cfg.eval_windows, cfg.context, torch.Generator().manual_seed(10_000 + cfg.seed))
    flops = forward_flops_per_token(model, cfg.context)["total"]  # forward, per token (top-k capacities)

    def batch_fn(step: int):
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        return lm_batch(train_ids, cfg.batch_size, cfg.context, generator)

    def eval_fn(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        x, y = val_x.to(device), val_y.to(device)
        out = model(x)  # eval mode: MoR uses its causal inference rule (threshold / token-choice)
        result = {"val_loss": float(F.cross_entropy(out.logits.float().flatten(0, 1), y.flatten())),
                  "params": float(count_parameters(model)), "flops_per_token": flops}
        if out.depth is not None:
            result["val_mean_depth"] = float(out.depth.float().mean())
        if isinstance(model, MixtureOfRecursionsLM) and model.cfg.routing == "expert":
            top = model(x, rule="topk")
            result["val_loss_topk"] = float(F.cross_entropy(top.logits.float().flatten(0, 1), y.flatten()))
            agree = router_agreement(model, x)
            for r, (step_acc, member) in enumerate(zip(agree["step"], agree["membership"])):
                result[f"val_router_acc_r{r + 1}"] = step_acc
                result[f"val_membership_agree_r{r + 1}"] = member
        return result

    return Job(model, lm_loss, batch_fn, cfg.train, eval_fn=eval_fn)


for _recipe in (lm_vanilla, lm_recursive, lm_mor_expert, lm_mor_token):
    _recipe.builder(build_char_lm_job)
