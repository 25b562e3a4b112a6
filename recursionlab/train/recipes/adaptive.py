"""Adaptive-computation recipes (lesson 03: weight-tied depth and adaptive computation).

* ``act-parity`` -- :class:`~recursionlab.models.act.ACTParityNet` (Graves 2016) on static-vector parity;
  loss = cross-entropy + ``tau`` * mean ponder cost (N + R). Sweep ``tau`` to trade accuracy for steps.
* ``pondernet-parity`` -- :class:`~recursionlab.models.act.PonderNetParityNet` (Banino et al. 2021) on the same
  data; loss = sum_n p_n L_n + beta KL(p || truncated geometric(lambda_p)); evaluated with a *sampled* halting step.
* ``act-pointer-chase`` / ``pondernet-pointer-chase`` -- ACT and PonderNet around
  :class:`~recursionlab.models.act.PointerHopCell` on pointer chasing to a root (``recursionlab.data.pointer_chase``),
  where a query of depth d needs d hops: learned halting should spend d + 1 steps. :func:`pointer_chase_seeds` trains
  both at several seeds and measures steps and accuracy per depth (lesson 03, section 4b).
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
from recursionlab.data.pointer_chase import PointerChaseBatch, follow_parents, pointer_chase_batch
from recursionlab.models.act import (
    ACTParityNet,
    ACTPointerNet,
    PonderNetParityNet,
    PonderNetPointerNet,
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
# ACT and PonderNet on pointer chasing: difficulty = number of hops
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PointerChaseConfig:
    num_nodes: int = 24
    max_depth: int = 8  # training queries have depth 0..max_depth (uniform)
    dim: int = 32
    halt_hidden: int = 32
    max_steps: int = 12  # the cap M: max_depth + 1 steps are needed, a few spare
    epsilon: float = 0.01  # ACT only
    halt_bias_init: float = -1.0
    tau: float = 0.003  # ACT ponder-cost weight
    lambda_p: float = 0.2  # PonderNet prior
    beta: float = 0.01  # PonderNet KL weight
    batch_size: int = 128
    n_val: int = 2000
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)


def _pointer_chase_config(profile: str) -> PointerChaseConfig:
    """Shared by both pointer recipes (ACT ignores lambda_p and beta, PonderNet epsilon and tau)."""
    return PointerChaseConfig(
        num_nodes=by_profile(12, 24, 48, profile=profile),
        max_depth=by_profile(4, 8, 16, profile=profile),
        dim=by_profile(16, 32, 64, profile=profile),
        max_steps=by_profile(7, 12, 20, profile=profile),
        n_val=by_profile(500, 2000, 4000, profile=profile),
        train=TrainConfig(
            steps=by_profile(150, 400, 3000, profile=profile),
            lr=3e-3,
            optimizer="adam",
            grad_clip=1.0,
            log_every=by_profile(10, 50, 100, profile=profile),
            eval_every=by_profile(0, 200, 1000, profile=profile),
        ),
    )


@register_recipe(
    "act-pointer-chase",
    "ACT around a one-hop-per-step attention cell chasing parent pointers to a root: steps grow with depth (03)",
)
def act_pointer_chase(profile: str) -> PointerChaseConfig:
    # Calibration (the shared 2-core machine, 2-4 s a run): at laptop sizes tau = 0.003 gave held-out accuracy 1.000
    # and exactly d + 1 steps at every depth in seeds 0-7; tau = 0.01 did so in seeds 0-12 at laptop but collapsed to
    # one step in 1 of 12 seeds at smoke; tau = 0.03 collapsed in 2 of 3 seeds and tau = 0.1 in 3 of 3 (the ponder
    # cost wins before the hop is learned, as on parity).
    return _pointer_chase_config(profile)


@register_recipe(
    "pondernet-pointer-chase",
    "PonderNet around the same one-hop cell on pointer chasing; sampled halting step per query (lesson 03)",
)
def pondernet_pointer_chase(profile: str) -> PointerChaseConfig:
    return _pointer_chase_config(profile)


def _pointer_data(cfg: PointerChaseConfig):
    """Training batches seeded by step (the tensors of a batch share dim 0, so sharding keeps them aligned)."""
    val = pointer_chase_batch(cfg.n_val, cfg.num_nodes, cfg.max_depth, generator=_VAL_SEED + cfg.seed)

    def batch_fn(step: int):
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        b = pointer_chase_batch(cfg.batch_size, cfg.num_nodes, cfg.max_depth, generator=gen)
        return b.parents, b.query, b.root

    return batch_fn, val


def predict_pointer_chase(
    model: nn.Module, batch: PointerChaseBatch, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Answers and ponder steps of an ACT or PonderNet pointer model on ``batch``, on the CPU.

    ACT: the mean-field output and its N; PonderNet: a sampled halting step per query (``generator`` seeds it).
    Returns ``(predicted root (B,) long, steps (B,) long)``.
    """
    device = next(model.parameters()).device
    parents, query = batch.parents.to(device), batch.query.to(device)
    with torch.no_grad():
        if isinstance(model, ACTPointerNet):
            result = model(parents, query)
            return result.output.argmax(-1).cpu(), result.n_steps.cpu()
        if isinstance(model, PonderNetPointerNet):
            if generator is None:
                generator = torch.Generator(device=device).manual_seed(0)
            logits, steps = model.predict(parents, query, generator=generator)
            return logits.argmax(-1).cpu(), steps.cpu()
    raise TypeError(f"model must be an ACTPointerNet or a PonderNetPointerNet, got {type(model).__name__}")


def by_depth(values: torch.Tensor, depth: torch.Tensor, max_depth: int) -> list[float]:
    """Mean of ``values`` (B,) over the queries of each depth 0..max_depth (NaN where a depth is absent)."""
    values = values.float()
    return [float(values[depth == d].mean()) if bool((depth == d).any()) else float("nan")
            for d in range(max_depth + 1)]


def _pointer_eval(cfg: PointerChaseConfig, val: PointerChaseBatch):
    def eval_fn(model: nn.Module) -> dict:
        answer, steps = predict_pointer_chase(model, val, torch.Generator().manual_seed(cfg.seed)
                                              if isinstance(model, PonderNetPointerNet) else None)
        shallow, deep = val.depth == 0, val.depth == cfg.max_depth
        return {
            "val_acc": float((answer == val.root).float().mean()),
            "val_steps": float(steps.float().mean()),
            "val_steps_depth0": float(steps[shallow].float().mean()),
            f"val_steps_depth{cfg.max_depth}": float(steps[deep].float().mean()),
        }

    return eval_fn


@act_pointer_chase.builder
def build_act_pointer_chase(cfg: PointerChaseConfig) -> Job:
    torch.manual_seed(cfg.seed)
    model = ACTPointerNet(cfg.num_nodes, cfg.dim, cfg.max_steps, cfg.epsilon, cfg.halt_bias_init, cfg.halt_hidden)
    batch_fn, val = _pointer_data(cfg)

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        parents, query, root = batch
        result = model(parents, query)
        task = F.cross_entropy(result.output.float(), root)
        ponder = result.ponder_cost.mean()
        return StepOutput(
            task + cfg.tau * ponder,  # L^ = L + tau * mean rho
            {"task_loss": task.detach(), "ponder": ponder.detach(), "steps": result.n_steps.float().mean(),
             "acc": (result.output.argmax(-1) == root).float().mean()},
        )

    return Job(model, loss_fn, batch_fn, cfg.train, eval_fn=_pointer_eval(cfg, val))


@pondernet_pointer_chase.builder
def build_pondernet_pointer_chase(cfg: PointerChaseConfig) -> Job:
    torch.manual_seed(cfg.seed)
    model = PonderNetPointerNet(cfg.num_nodes, cfg.dim, cfg.max_steps, cfg.halt_bias_init, cfg.halt_hidden)
    batch_fn, val = _pointer_data(cfg)

    def loss_fn(model: nn.Module, batch) -> StepOutput:
        parents, query, root = batch
        result = model(parents, query)
        parts = pondernet_loss(pondernet_step_losses(result, root), result.halting_dist.float(), cfg.lambda_p, cfg.beta)
        return StepOutput(
            parts.total,
            {"reconstruction": parts.reconstruction.detach(), "kl": parts.kl.detach(),
             "expected_steps": expected_steps(result.halting_dist.detach()).mean()},
        )

    return Job(model, loss_fn, batch_fn, cfg.train, eval_fn=_pointer_eval(cfg, val))


def pointer_chase_seeds(
    seeds: tuple[int, ...] = (0, 1, 2),
    profile: str | None = None,
    recipes: tuple[str, ...] = ("act-pointer-chase", "pondernet-pointer-chase"),
    overrides: dict | None = None,
    n_test: int = 4000,
    test_seed: int = 4242,
    deep_max_depth: int | None = None,
) -> dict:
    """Train each recipe at each seed and measure ponder steps and accuracy per query depth on one test set.

    The test set is ``pointer_chase_batch(n_test, num_nodes, max_depth, generator=test_seed)`` (seeds that no
    training or validation batch uses). Returns a JSON-ready dict: ``max_depth``, ``depth_counts``,
    ``baselines[k-hop] = accuracy by depth`` of following k pointers (k = 0: answer the query itself), and
    ``runs[recipe][str(seed)] = {"steps_by_depth", "acc_by_depth", "acc", "steps", "seconds"}``.

    With ``deep_max_depth`` (> max_depth, < num_nodes) each model is also run on queries of depth
    ``0..deep_max_depth`` (``generator=test_seed + 1``), deeper than any in training, with its cap raised to
    ``deep_max_depth + 4`` steps: ``deep_steps_by_depth`` and ``deep_acc_by_depth`` (``deep_max_steps`` and the
    k-hop ``deep_baselines`` in the dict).
    """
    import time

    from recursionlab.train.recipes import get_config, run_recipe

    cfg = get_config(recipes[0], profile, overrides)
    test = pointer_chase_batch(n_test, cfg.num_nodes, cfg.max_depth, generator=test_seed)
    depth_counts = torch.bincount(test.depth, minlength=cfg.max_depth + 1).tolist()
    baselines = {str(k): by_depth(follow_parents(test.parents, test.query, k) == test.root, test.depth, cfg.max_depth)
                 for k in range(cfg.max_depth + 1)}
    deep = None
    if deep_max_depth is not None:
        if not cfg.max_depth < deep_max_depth < cfg.num_nodes:
            raise ValueError(f"deep_max_depth must lie in {cfg.max_depth + 1}..{cfg.num_nodes - 1} (deeper than "
                             f"training, within num_nodes), got {deep_max_depth}")
        deep = pointer_chase_batch(n_test, cfg.num_nodes, deep_max_depth, generator=test_seed + 1)
        deep_baselines = {str(k): by_depth(follow_parents(deep.parents, deep.query, k) == deep.root, deep.depth,
                                           deep_max_depth) for k in range(deep_max_depth + 1)}
    runs: dict = {}
    for name in recipes:
        runs[name] = {}
        for seed in seeds:
            t0 = time.perf_counter()
            run = run_recipe(name, profile=profile, overrides={**(overrides or {}), "seed": seed})
            answer, steps = predict_pointer_chase(run.model.eval(), test, torch.Generator().manual_seed(seed))
            correct = answer == test.root
            runs[name][str(seed)] = {
                "steps_by_depth": by_depth(steps, test.depth, cfg.max_depth),
                "acc_by_depth": by_depth(correct, test.depth, cfg.max_depth),
                "acc": float(correct.float().mean()),
                "steps": float(steps.float().mean()),
                "seconds": round(time.perf_counter() - t0, 2),
            }
            if deep is not None:
                model, cap = run.model.eval(), run.model.max_steps
                model.max_steps = deep_max_depth + 4  # weight tying: the same cell may simply run longer
                answer, steps = predict_pointer_chase(model, deep, torch.Generator().manual_seed(seed))
                model.max_steps = cap
                runs[name][str(seed)]["deep_steps_by_depth"] = by_depth(steps, deep.depth, deep_max_depth)
                runs[name][str(seed)]["deep_acc_by_depth"] = by_depth(answer == deep.root, deep.depth, deep_max_depth)
    return {"recipes": list(recipes), "seeds": list(seeds), "num_nodes": cfg.num_nodes, "max_depth": cfg.max_depth,
            "max_steps": cfg.max_steps, "train_steps": cfg.train.steps, "n_test": n_test,
            "depth_counts": depth_counts, "baselines": baselines, "runs": runs,
            "deep_max_depth": deep_max_depth, "deep_max_steps": None if deep is None else deep_max_depth + 4,
            "deep_baselines": None if deep is None else deep_baselines}


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

