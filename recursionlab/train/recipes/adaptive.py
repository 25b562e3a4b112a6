"""Adaptive-computation recipes (lesson 03: weight-tied depth and adaptive computation).

* ``act-parity`` -- :class:`~recursionlab.models.act.ACTParityNet` (Graves 2016) on static-vector parity;
  loss = cross-entropy + ``tau`` * mean ponder cost (N + R). Sweep ``tau`` to trade accuracy for steps.
* ``pondernet-parity`` -- :class:`~recursionlab.models.act.PonderNetParityNet` (Banino et al. 2021) on the same
  data; loss = sum_n p_n L_n + beta KL(p || truncated geometric(lambda_p)); evaluated with a *sampled* halting step.
* ``deep-thinking-prefix-sums`` -- :class:`~recursionlab.models.deep_thinking.DeepThinking1d` (Bansal et al. 2022)
  trained on short prefix sums with the progressive loss, evaluated on longer strings with more iterations.
  ``--set recall=false --set alpha=0`` gives the classic no-recall, full-unroll network that "overthinks".

Halting decisions are made in fp32 inside the models, so bf16 autocast on a GPU is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.data.algorithmic import parity_batch, prefix_sums_batch, prefix_sums_dataset
from recursionlab.models.act import (
    ACTParityNet,
    PonderNetParityNet,
    expected_steps,
    pondernet_loss,
    pondernet_step_losses,
)
from recursionlab.models.deep_thinking import DeepThinking1d, progressive_loss, sample_progressive_iters
from recursionlab.profiles import by_profile
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import StepOutput
from recursionlab.train.recipes import Job, register_recipe

_VAL_SEED = 10**6  # held-out sets use seeds that no training step (seeded by step) reaches


# ----------------------------------------------------------------------------------------------------------------
# ACT on parity
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ACTParityConfig:
    n_elems: int = 8
    min_nonzero: int = 1
    max_nonzero: int | None = None  # None: n_elems
    hidden: int = 64
    max_steps: int = 10
    epsilon: float = 0.01
    halt_bias_init: float = 1.0
    tau: float = 1e-3  # ponder-cost weight
    batch_size: int = 128
    n_val: int = 2000
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


def _parity_train_config(profile: str, laptop_steps: int) -> TrainConfig:
    return TrainConfig(
        steps=by_profile(30, laptop_steps, 10000, profile=profile),
        lr=3e-3,
        optimizer="adam",
        grad_clip=1.0,
        log_every=by_profile(10, 50, 100, profile=profile),
        eval_every=by_profile(0, 500, 2000, profile=profile),
    )


@register_recipe("act-parity", "ACT (Graves 2016): a GRU pondering static-vector parity, ponder cost tau (lesson 03)")
def act_parity(profile: str) -> ACTParityConfig:
    # Laptop: 6-element parity with about 4 ponder steps at initialisation (halting bias -1) learned in 800 steps
    # (99.5% held-out in a calibration run); with the Universal Transformer's +1 bias (2 steps at init) the same run
    # left the chance plateau later (80% at 800 steps).
    return ACTParityConfig(
        n_elems=by_profile(6, 6, 12, profile=profile),
        hidden=by_profile(32, 64, 128, profile=profile),
        max_steps=by_profile(6, 10, 16, profile=profile),
        halt_bias_init=-1.0,
        batch_size=by_profile(64, 128, 256, profile=profile),
        n_val=by_profile(256, 2000, 4000, profile=profile),
        train=_parity_train_config(profile, laptop_steps=800),
    )


def _parity_data(cfg: ACTParityConfig | PonderNetParityConfig):
    """Training batches seeded by step, and a fixed validation set (x, y, n_nonzero)."""
    val = parity_batch(cfg.n_val, cfg.n_elems, cfg.min_nonzero, cfg.max_nonzero, generator=_VAL_SEED + cfg.seed)

    def batch_fn(step: int):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x, y, _ = parity_batch(cfg.batch_size, cfg.n_elems, cfg.min_nonzero, cfg.max_nonzero, generator=gen)
        return x, y

    return batch_fn, val


@act_parity.builder
def build_act_parity(cfg: ACTParityConfig) -> Job:
    torch.manual_seed(cfg.seed)
    model = ACTParityNet(cfg.n_elems, cfg.hidden, cfg.max_steps, cfg.epsilon, cfg.halt_bias_init)
    batch_fn, (x_val, y_val, _) = _parity_data(cfg)

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        x, y = batch
        result = model(x)
        task = F.cross_entropy(result.output.float(), y)
        ponder = result.ponder_cost.mean()
        return StepOutput(
            task + cfg.tau * ponder,  # L^ = L + tau * sum rho
            {"task_loss": task.detach(), "ponder": ponder.detach(), "steps": result.n_steps.float().mean(),
             "acc": (result.output.argmax(-1) == y).float().mean()},
        )

    def eval_fn(model: nn.Module) -> dict:
        device = next(model.parameters()).device
        result = model(x_val.to(device))
        return {
            "val_acc": float((result.output.argmax(-1).cpu() == y_val).float().mean()),
            "val_steps": float(result.n_steps.float().mean()),
            "val_ponder": float(result.ponder_cost.mean()),
        }

    return Job(model, loss_fn, batch_fn, cfg.train, eval_fn=eval_fn)


# ----------------------------------------------------------------------------------------------------------------
# PonderNet on parity
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PonderNetParityConfig:
    n_elems: int = 8
    min_nonzero: int = 1
    max_nonzero: int | None = None
    hidden: int = 64
    max_steps: int = 10
    lambda_p: float = 0.2  # geometric prior: about 1/lambda_p expected steps
    beta: float = 0.01  # KL weight
    halt_bias_init: float = -1.0
    batch_size: int = 128
    n_val: int = 2000
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


@register_recipe(
    "pondernet-parity", "PonderNet (Banino et al. 2021): probabilistic halting on static-vector parity (lesson 03)"
)
def pondernet_parity(profile: str) -> PonderNetParityConfig:
    return PonderNetParityConfig(
        n_elems=by_profile(6, 6, 12, profile=profile),
        hidden=by_profile(32, 64, 128, profile=profile),
        max_steps=by_profile(6, 8, 20, profile=profile),
        batch_size=by_profile(64, 128, 256, profile=profile),
        n_val=by_profile(256, 2000, 4000, profile=profile),
        train=_parity_train_config(profile, laptop_steps=1400),
    )


@pondernet_parity.builder
def build_pondernet_parity(cfg: PonderNetParityConfig) -> Job:
    torch.manual_seed(cfg.seed)
    model = PonderNetParityNet(cfg.n_elems, cfg.hidden, cfg.max_steps, cfg.halt_bias_init)
    batch_fn, (x_val, y_val, _) = _parity_data(cfg)

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        x, y = batch
        result = model(x)
        parts = pondernet_loss(pondernet_step_losses(result, y), result.halting_dist.float(), cfg.lambda_p, cfg.beta)
        return StepOutput(
            parts.total,
            {"reconstruction": parts.reconstruction.detach(), "kl": parts.kl.detach(),
             "expected_steps": expected_steps(result.halting_dist.detach()).mean()},
        )

    def eval_fn(model: nn.Module) -> dict:
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        logits, steps = model.predict(x_val.to(device), generator=gen)
        return {
            "val_acc": float((logits.argmax(-1).cpu() == y_val).float().mean()),
            "val_steps": float(steps.float().mean()),
        }

    return Job(model, loss_fn, batch_fn, cfg.train, eval_fn=eval_fn)


# ----------------------------------------------------------------------------------------------------------------
# Deep Thinking on prefix sums
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class DeepThinkingConfig:
    width: int = 48
    n_blocks: int = 2
    recall: bool = True
    in_channels: int = 2  # 2: one-hot bits (trains more reliably at small budgets), 1: raw 0/1 (reference code)
    alpha: float = 1.0  # progressive-loss weight (1: progressive only, 0: full unroll only)
    max_iters: int = 16  # M, iterations in training
    train_length: int = 16
    test_length: int = 64
    test_iters: int = 80  # iterations at test time (more than in training: "think longer")
    batch_size: int = 64
    n_val: int = 200
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


@register_recipe(
    "deep-thinking-prefix-sums",
    "Deep Thinking (recall + progressive loss): train on short prefix sums, solve long ones by iterating more (03)",
)
def deep_thinking_prefix_sums(profile: str) -> DeepThinkingConfig:
    return DeepThinkingConfig(
        width=by_profile(16, 48, 128, profile=profile),
        max_iters=by_profile(6, 16, 30, profile=profile),
        train_length=by_profile(8, 16, 32, profile=profile),
        test_length=by_profile(16, 64, 256, profile=profile),
        test_iters=by_profile(12, 80, 300, profile=profile),
        batch_size=by_profile(32, 64, 128, profile=profile),
        n_val=by_profile(64, 200, 1000, profile=profile),
        train=TrainConfig(
            steps=by_profile(20, 400, 5000, profile=profile),
            lr=2e-3,
            optimizer="adam",
            grad_clip=1.0,  # unnormalised deep unrolls need clipping (Bansal et al. clip at 1)
            warmup_steps=by_profile(0, 10, 100, profile=profile),
            precision="fp32",  # long iterations amplify bf16 rounding; the model is small
            log_every=by_profile(10, 20, 50, profile=profile),
            eval_every=0,  # the long-string evaluation is expensive: once, at the end
        ),
    )


@deep_thinking_prefix_sums.builder
def build_deep_thinking(cfg: DeepThinkingConfig) -> Job:
    if not 0.0 <= cfg.alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {cfg.alpha}")
    # Normalisation-free iterations produce denormal floats that slow a CPU 6-25x; flush them to zero.
    torch.set_flush_denormal(True)
    torch.manual_seed(cfg.seed)
    model = DeepThinking1d(cfg.width, cfg.n_blocks, recall=cfg.recall, in_channels=cfg.in_channels)
    short_bits, short_targets = prefix_sums_dataset(cfg.n_val, cfg.train_length, seed=_VAL_SEED + cfg.seed)
    long_bits, long_targets = prefix_sums_dataset(cfg.n_val, cfg.test_length, seed=2 * _VAL_SEED + cfg.seed)

    def batch_fn(step: int):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        bits, targets = prefix_sums_batch(cfg.batch_size, cfg.train_length, generator=gen)
        n, k = sample_progressive_iters(cfg.max_iters, gen)
        # (n, k) ride along per example so that sharding the batch keeps them identical on every worker.
        return bits, targets, torch.tensor([n, k]).expand(cfg.batch_size, 2).clone()

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        bits, targets, iters = batch
        n, k = int(iters[0, 0]), int(iters[0, 1])
        loss, logits = progressive_loss(model, bits, targets, cfg.max_iters, cfg.alpha, n, k)
        return StepOutput(loss, {"acc": (logits.argmax(-1) == targets).float().mean()})

    def seq_acc(model: nn.Module, bits: torch.Tensor, targets: torch.Tensor, iters: int) -> float:
        device = next(model.parameters()).device
        logits = model(bits.to(device), iters).logits
        return float((logits.argmax(-1).cpu() == targets).all(-1).float().mean())

    def eval_fn(model: nn.Module) -> dict:
        return {
            "val_acc_train_len": seq_acc(model, short_bits, short_targets, cfg.max_iters),
            "val_acc_long_train_iters": seq_acc(model, long_bits, long_targets, cfg.max_iters),
            "val_acc_long_test_iters": seq_acc(model, long_bits, long_targets, cfg.test_iters),
        }

    return Job(model, loss_fn, batch_fn, cfg.train, eval_fn=eval_fn)


# ----------------------------------------------------------------------------------------------------------------
# The 2x2 ablation of deep thinking (recall x progressive loss), precomputed for lesson 03
# ----------------------------------------------------------------------------------------------------------------

ABLATION_ARMS: dict[str, dict] = {
    "recall + progressive": {"recall": True, "alpha": 1.0},
    "recall, full unroll": {"recall": True, "alpha": 0.0},
    "no recall, progressive": {"recall": False, "alpha": 1.0},
    "no recall, full unroll": {"recall": False, "alpha": 0.0},
}


def deep_thinking_ablation(
    seeds: tuple[int, ...] = (0, 1, 2),
    profile: str = "laptop",
    lengths: tuple[int, ...] = (16, 32, 64),
    n_test: int = 100,
    test_iters: int = 64,
) -> dict:
    """Train the four arms of recall x progressive loss for each seed and measure accuracy after every iteration.

    All arms train at the recipe's ``max_iters`` (16 at laptop) on its training length; the test strings are the
    lesson's (``prefix_sums_dataset(n_test, L, seed=4242 + L)``). Returns a JSON-ready dict:
    ``results[arm][str(seed)] = {"curves": {str(L): [acc after 1..test_iters iterations]}, "final_loss", "seconds"}``.
    """
    import time

    from recursionlab.models.deep_thinking import accuracy_per_iteration
    from recursionlab.train.recipes import run_recipe

    test_sets = {L: prefix_sums_dataset(n_test, L, seed=4242 + L) for L in lengths}
    results: dict = {}
    for arm, overrides in ABLATION_ARMS.items():
        results[arm] = {}
        for seed in seeds:
            t0 = time.perf_counter()
            run = run_recipe("deep-thinking-prefix-sums", profile=profile, overrides={**overrides, "seed": seed})
            model = run.model.eval().cpu()
            curves = {str(L): [round(float(a), 4) for a in accuracy_per_iteration(model, b, t, test_iters)[0]]
                      for L, (b, t) in test_sets.items()}
            results[arm][str(seed)] = {"curves": curves, "final_loss": float(run.history.last("loss")),
                                       "seconds": round(time.perf_counter() - t0, 1)}
            print(f"{arm:24s} seed {seed}: 64-bit best {max(curves[str(lengths[-1])]):.2f}, "
                  f"at {test_iters} iterations {curves[str(lengths[-1])][-1]:.2f}", flush=True)
    cfg = run.config
    return {"recipe": "deep-thinking-prefix-sums", "profile": profile, "max_iters": cfg.max_iters,
            "train_length": cfg.train_length, "train_steps": cfg.train.steps, "seeds": list(seeds),
            "lengths": list(lengths), "n_test": n_test, "test_iters": test_iters,
            "test_sets": "prefix_sums_dataset(n_test, L, seed=4242 + L)", "arms": ABLATION_ARMS, "results": results}

