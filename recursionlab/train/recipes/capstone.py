"""The capstone (lesson 11): every model family of the course on ONE task at matched training compute.

The shared task is chain roots (:mod:`recursionlab.data.latent_tasks`): a sequence of parent pointers, predict
the root of every node's chain. A node ``d`` hops from its root needs ``d`` pointer hops (or ``log2 d`` rounds of
pointer doubling), so depth of computation -- recurrence -- is what the task rewards, and longer chains at test
time ask for more of it. The task is causal (parents sit to the left), so causal language models can do it
as well as bidirectional reasoning models.

Each family is wrapped by one common adapter, :class:`Contender`: a model, its own training loss, a batch
function over the SAME stream of training chains, a ``predict(model, tokens, knob)`` for evaluation and, where
the family has one, a test-time-compute knob (core recurrences, ACT cap, solver iterations, supervision
steps). Training compute is matched by *measured* FLOPs (:func:`recursionlab.train.flops.training_step_flops`):
every contender gets the same FLOP budget and trains for as many steps as fit in it (:func:`plan_training`), so
a cheap model sees more data, as in the MoR paper's equal-FLOPs comparisons.

Accounting rules (the honest part, spelled out in the lesson):

* constant-cost models: FLOPs of one real training step, times the steps;
* the recurrent-depth model draws r per step: every distinct (no-grad, grad) recurrence split is measured
  and the steps are counted until the running sum reaches the budget;
* models that can stop early (ACT halting, a DEQ solver that converges) are *charged at their cap*: their
  step is measured with early stopping switched off, an upper bound on what they really spent;
* attention is counted: torch's FLOP counter has no formula for the fused CPU attention kernel, so counting runs
  attention on the math kernel (plain matmuls); it runs on a CPU copy and a slice of the batch, scaled to the full
  batch (every model here treats examples independently, so FLOPs are linear in the batch size).

Adapters: MoR gets a learned absolute-position table (:class:`PositionalTokenEmbedding`; its rotary positions are
relative, and here tokens name absolute positions); the DEQ trains with the 1-step (Jacobian-free) gradient, the
approximation HRM uses, because torch's FLOP counter cannot follow the implicit-gradient backward (it calls
``autograd.grad`` inside a backward).

Recipes ``capstone-<family>`` train one contender from the command line, e.g.
``python -m recursionlab train capstone-hybrid --profile gpu``.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from recursionlab.data.latent_tasks import ChainBatch, follow_pointers, make_chain_batch, make_spread_chain_batch
from recursionlab.models.act import UniversalTransformer
from recursionlab.models.baselines import OnePassConfig, OnePassTransformer
from recursionlab.models.deq import DEQSequenceModel
from recursionlab.models.hrm import HRM, HRMConfig
from recursionlab.models.hybrid import HybridConfig, RoutedRecurrentDepth
from recursionlab.models.mor import MixtureOfRecursionsLM, MoRConfig
from recursionlab.models.recurrent_depth import RecurrentDepthConfig, RecurrentDepthModel
from recursionlab.models.rnn import RNNClassifier
from recursionlab.models.trm import TRM, TRMConfig
from recursionlab.profiles import by_profile
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import StepOutput, Trainer
from recursionlab.train.flops import count_flops, steps_for_budget, training_step_flops
from recursionlab.train.history import History
from recursionlab.train.recipes import Job, register_recipe
from recursionlab.train.recipes.mor import lm_loss
from recursionlab.train.recipes.reasoning import reasoning_loss_fn
from recursionlab.train.recipes.recurrent_depth import recurrences_tensor, recurrent_depth_loss

__all__ = [
    "FAMILIES",
    "CapstoneConfig",
    "Contender",
    "ComputePlan",
    "CapstoneResult",
    "PositionalTokenEmbedding",
    "capstone_config",
    "build_contender",
    "capstone_contenders",
    "plan_training",
    "train_contender",
    "evaluate_contender",
    "accuracy_vs_knob",
    "chain_accuracy",
    "held_out_sets",
    "train_config_for",
    "FAMILY_NAMES",
    "measure_step_flops",
    "slice_batch",
    "batch_size_of",
    "predict_roots",
    "inference_flops_per_sequence",
    "deep_depth",
    "results_table",
    "BASELINES",
    "baseline_predictions",
    "baseline_scores",
    "majority_answer_accuracy",
    "training_depth",
    "partial_correlation",
    "within_group_correlation",
    "router_depth_analysis",
    "run_record",
    "summarize_records",
    "load_seed_table",
    "seed_table_markdown",
    "SEED_TABLE",
]

FAMILIES: tuple[str, ...] = (
    "one_pass", "gru", "ut_act", "deq", "hrm", "trm", "recurrent_depth", "mor", "hybrid",
)
FAMILY_NAMES = {
    "one_pass": "one-pass transformer",
    "gru": "GRU (recurrence in time)",
    "ut_act": "Universal Transformer + ACT",
    "deq": "DEQ (causal equilibrium)",
    "hrm": "HRM",
    "trm": "TRM",
    "recurrent_depth": "recurrent depth (Huginn)",
    "mor": "Mixture-of-Recursions",
    "hybrid": "hybrid: MoR router x recurrent core",
}


# ------------------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------------------
@dataclass
class CapstoneConfig:
    """The shared task, the shared model width, the compute budget and the optimiser of the capstone.

    num_nodes: N (sequence length; tokens and answers are positions 0..N-1).
    train_max_chain / test_max_chain: longest chain (in nodes) in training and in the "long" test set.
    budget_flops: training FLOPs every contender gets (measured, forward + backward).
    dim, n_heads: width of every transformer-based family; gru_hidden: the GRU's state size.
    recurrences: the training depth of the recurrent families (mean r for Huginn, cap for the hybrid and ACT).
    eval_size: held-out chains per test set; knob_values: test-time settings for the curves.
    seed: model initialisation and training stream; eval_seed: the held-out sets (fixed across training seeds).
    family: the one family a ``capstone-<family>`` recipe trains (ignored by :func:`capstone_contenders`).
    train: optimiser settings shared by all (``steps`` is replaced by the budget's step count).
    """

    num_nodes: int = 16
    train_max_chain: int = 8
    test_max_chain: int = 16
    batch_size: int = 16
    dim: int = 32
    n_heads: int = 4
    gru_hidden: int = 64
    recurrences: int = 4
    budget_flops: float = 6e10
    eval_size: int = 256
    knob_values: tuple[int, ...] = (1, 2, 4, 8, 16)
    seed: int = 0
    eval_seed: int = 0
    family: str = "hybrid"
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            steps=1, lr=2e-3, optimizer="adamw", weight_decay=0.01, betas=(0.9, 0.95), schedule="cosine",
            grad_clip=1.0, log_every=25, eval_every=0, progress=False,
        )
    )

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        for name in ("num_nodes", "train_max_chain", "test_max_chain", "batch_size", "dim", "n_heads",
                     "gru_hidden", "recurrences", "eval_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not 2 <= self.train_max_chain < self.test_max_chain <= self.num_nodes:
            raise ValueError(
                f"need 2 <= train_max_chain < test_max_chain <= num_nodes={self.num_nodes} (the long test set has "
                f"only chains longer than training's), got {self.train_max_chain}, {self.test_max_chain}"
            )
        if not self.budget_flops > 0:
            raise ValueError(f"budget_flops must be > 0, got {self.budget_flops!r}")
        if not self.knob_values or any(int(k) != k or k < 1 for k in self.knob_values):
            raise ValueError(f"knob_values must be integers >= 1, got {self.knob_values!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; allowed: {', '.join(FAMILIES)}")


def capstone_config(profile: str | None = None, **overrides: Any) -> CapstoneConfig:
    """The capstone's sizes at a profile (smoke / laptop / gpu); ``overrides`` replace fields."""
    cfg = CapstoneConfig(
        num_nodes=by_profile(8, 16, 32, profile=profile),
        train_max_chain=by_profile(4, 8, 12, profile=profile),
        test_max_chain=by_profile(7, 12, 24, profile=profile),
        batch_size=by_profile(8, 16, 128, profile=profile),
        dim=by_profile(16, 32, 128, profile=profile),
        n_heads=4,
        gru_hidden=by_profile(16, 64, 256, profile=profile),
        recurrences=by_profile(2, 4, 8, profile=profile),
        budget_flops=by_profile(1e8, 6e10, 2e14, profile=profile),
        eval_size=by_profile(16, 256, 1024, profile=profile),
        knob_values=by_profile((1, 2), (1, 2, 4, 8, 16), (1, 2, 4, 8, 16, 32), profile=profile),
    )
    cfg = replace(cfg, **overrides) if overrides else cfg
    cfg.validate()
    return cfg


# ------------------------------------------------------------------------------------------------------------
# The common adapter
# ------------------------------------------------------------------------------------------------------------
@dataclass
class Contender:
    """One family, adapted to the shared task.

    - name / family: display name and key (one of :data:`FAMILIES`).
    - model, loss_fn, batch_fn: what the engine trains (``batch_fn(step)`` draws the same chains for everyone).
    - predict: ``predict(model, tokens (B, N) long, knob int | None) -> predicted roots (B, N) long`` (eval mode,
      no grad; ``None`` = the family's default setting).
    - knob / knob_default: the test-time-compute knob's name and training value (None if the family has none);
      knob_values: the settings its test-time curve visits.
    - cost_key: ``step -> hashable`` when the FLOPs of a training step depend on the step (random depth), else None.
    - at_cap: ``model -> model`` returning a copy whose training step runs at its cap (no early stopping), used to
      charge early-stopping models; None if the step cost does not depend on learned halting.
    - charge: one line saying how the contender is charged.
    - lr: its learning rate; train_overrides: TrainConfig fields of the family's own recipe (e.g. TRM's optimiser
      and EMA); recipe: one line describing them.
    """

    name: str
    family: str
    model: nn.Module
    loss_fn: Callable[[nn.Module, Any], StepOutput]
    batch_fn: Callable[[int], Any]
    predict: Callable[[nn.Module, torch.Tensor, int | None], torch.Tensor]
    knob: str | None = None
    knob_default: int | None = None
    knob_values: tuple[int, ...] = ()
    cost_key: Callable[[int], Hashable] | None = None
    at_cap: Callable[[nn.Module], nn.Module] | None = None
    charge: str = "FLOPs of one measured training step x steps"
    lr: float = 2e-3
    train_overrides: dict[str, Any] = field(default_factory=dict)
    recipe: str = "AdamW (0.9, 0.95), wd 0.01, cosine, warm-up 10% (<= 50 steps), clip 1"

    def num_parameters(self) -> int:
        """Trainable parameters (shared/tied tensors counted once)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


class PositionalTokenEmbedding(nn.Module):
    """Token embedding plus a learned absolute-position embedding, usable where a model calls ``self.embed(ids)``.

    Thin adapter for :class:`~recursionlab.models.mor.MixtureOfRecursionsLM`, whose only positions are rotary
    (relative): on the chain task a token *names an absolute position*, which relative positions cannot
    resolve. ``weight`` is the token table, so the model's tied read-out keeps working. Full-sequence use only
    (positions start at 0; the MoR cache path is not used by the capstone).

    forward(ids (B, T) long) -> (B, T, D).
    """

    def __init__(self, token_embedding: nn.Embedding, max_positions: int) -> None:
        super().__init__()
        self.token = token_embedding
        self.position = nn.Embedding(max_positions, token_embedding.embedding_dim)
        nn.init.normal_(self.position.weight, std=float(token_embedding.weight.detach().std()))

    @property
    def weight(self) -> torch.Tensor:
        return self.token.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.token(ids) + self.position(positions)[None]


def _chains(cfg: CapstoneConfig, step: int) -> ChainBatch:
    """Training batch of step ``step``: the same chains for every family."""
    return make_chain_batch(cfg.batch_size, cfg.num_nodes, cfg.train_max_chain, generator=cfg.seed * 10**7 + step)


def _ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
    return loss, (logits.argmax(-1) == targets).float().mean()


def _plain_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
    """Per-position cross-entropy for models whose forward returns logits (B, N, N)."""
    tokens, targets = batch
    loss, acc = _ce_loss(model(tokens), targets)
    return StepOutput(loss, {"acc": acc})


def _plain_predict(model: nn.Module, tokens: torch.Tensor, knob: int | None) -> torch.Tensor:
    return model(tokens).argmax(-1)


# --- one builder per family ----------------------------------------------------------------------------------
def _knob_values(cfg: CapstoneConfig, top: int | None = None) -> tuple[int, ...]:
    """The profile's test-time settings, capped at ``top`` (costly knobs get fewer)."""
    return tuple(v for v in cfg.knob_values if top is None or v <= top)


def _one_pass(cfg: CapstoneConfig, norm: str = "post") -> Contender:
    model = OnePassTransformer(OnePassConfig(
        vocab_size=cfg.num_nodes, seq_len=cfg.num_nodes, dim=cfg.dim, n_layers=4, n_heads=cfg.n_heads,
        positions="learned", norm=norm,
    ))
    name = FAMILY_NAMES["one_pass"] + ("" if norm == "post" else f" ({norm}-norm)")
    return Contender(name, "one_pass", model, _plain_loss,
                     lambda s: (lambda b: (b.tokens, b.targets))(_chains(cfg, s)), _plain_predict)


def _gru(cfg: CapstoneConfig) -> Contender:
    model = RNNClassifier(cfg.num_nodes, cfg.gru_hidden, cfg.num_nodes, cell="gru", per_step=True)
    return Contender(FAMILY_NAMES["gru"], "gru", model, _plain_loss,
                     lambda s: (lambda b: (b.tokens, b.targets))(_chains(cfg, s)), _plain_predict, lr=3e-3)


def _ut_act(cfg: CapstoneConfig) -> Contender:
    # halting bias -2: sigmoid = 0.12, so every position starts by pondering ~8 steps (the cap) and learns to stop
    model = UniversalTransformer(cfg.num_nodes, cfg.num_nodes, dim=cfg.dim, n_heads=cfg.n_heads,
                                 max_steps=cfg.recurrences, halt_bias_init=-2.0)
    tau = 0.01  # ponder-cost weight

    def loss_fn(m: nn.Module, batch) -> StepOutput:
        tokens, targets = batch
        logits, res = m(tokens)
        ce, acc = _ce_loss(logits, targets)
        ponder = res.ponder_cost.float().mean()
        return StepOutput(ce + tau * ponder, {"acc": acc, "ponder": ponder.detach()})

    def predict(m: nn.Module, tokens: torch.Tensor, knob: int | None) -> torch.Tensor:
        saved = m.max_steps
        m.max_steps = saved if knob is None else int(knob)
        try:
            return m(tokens)[0].argmax(-1)
        finally:
            m.max_steps = saved

    def at_cap(m: nn.Module) -> nn.Module:
        capped = copy.deepcopy(m)
        with torch.no_grad():  # h^n ~ 0: no position reaches 1 - eps before the cap, same ops as training
            capped.to_halt.bias.fill_(-30.0)
        return capped

    return Contender(FAMILY_NAMES["ut_act"], "ut_act", model, loss_fn,
                     lambda s: (lambda b: (b.tokens, b.targets))(_chains(cfg, s)), predict,
                     knob="ACT cap (max ponder steps)", knob_default=cfg.recurrences,
                     knob_values=_knob_values(cfg), at_cap=at_cap,
                     charge="charged at its ACT cap (every position pondering max_steps)")


def _deq(cfg: CapstoneConfig) -> Contender:
    # window = N: position t's update reads the states of all earlier positions, so pointers can be followed;
    # the Jacobian is strictly lower triangular, so plain iteration converges in at most N + 1 evaluations.
    model = DEQSequenceModel(vocab_size=cfg.num_nodes, n_classes=cfg.num_nodes, dim=cfg.dim, hidden=2 * cfg.dim,
                             window=cfg.num_nodes, solver="fixed_point_iter", grad="jfb", tol=1e-4)

    def predict(m: nn.Module, tokens: torch.Tensor, knob: int | None) -> torch.Tensor:
        kwargs = {} if knob is None else {"max_iter": int(knob)}
        return m(tokens, **kwargs).argmax(-1)

    def at_cap(m: nn.Module) -> nn.Module:
        capped = copy.deepcopy(m)
        capped.deq.tol = capped.deq.b_tol = 0.0  # never stop early: forward and adjoint run their full budget
        return capped

    return Contender(FAMILY_NAMES["deq"], "deq", model, _plain_loss,
                     lambda s: (lambda b: (b.tokens, b.targets))(_chains(cfg, s)), predict,
                     knob="solver iterations", knob_default=cfg.num_nodes + 2,
                     knob_values=tuple(sorted({*_knob_values(cfg, cfg.num_nodes), cfg.num_nodes + 2})), at_cap=at_cap,
                     charge="charged at its solver budget (N + 2 iterations; 1-step gradient)")


def _reasoning_common(cfg: CapstoneConfig, outer_steps: int) -> dict:
    return dict(vocab_size=cfg.num_nodes, seq_len=cfg.num_nodes, num_puzzle_ids=1, hidden=cfg.dim,
                n_heads=cfg.n_heads, puzzle_emb_len=0, pos_encoding="learned", halt_max_steps=outer_steps)


def _reasoning_batch(cfg: CapstoneConfig):
    def batch_fn(step: int) -> dict:
        b = _chains(cfg, step)
        return {"inputs": b.tokens, "labels": b.targets, "puzzle_ids": torch.zeros(len(b.tokens), dtype=torch.long)}

    return batch_fn


def _solve_predict(m: nn.Module, tokens: torch.Tensor, knob: int | None) -> torch.Tensor:
    return m.solve(tokens, n_steps=knob).predictions[-1]


def _hrm(cfg: CapstoneConfig, outer_steps: int = 4) -> Contender:
    # one segment = H_cycles * L_cycles = 4 calls of f_L and 2 of f_H: 6 block applications
    model = HRM(HRMConfig(H_layers=1, L_layers=1, H_cycles=2, L_cycles=2, **_reasoning_common(cfg, outer_steps)))
    return Contender(FAMILY_NAMES["hrm"], "hrm", model, reasoning_loss_fn(0.5), _reasoning_batch(cfg),
                     _solve_predict, knob="supervision steps", knob_default=outer_steps,
                     knob_values=_knob_values(cfg, 8),
                     charge="one supervision segment per step (+ its no-grad Q-target segment), measured",
                     train_overrides={"optimizer": "adam_atan2"},
                     recipe="the paper's AdamATan2 (0.9, 0.95), wd 0.01, cosine, warm-up 10% (<= 50 steps), clip 1")


def _trm(cfg: CapstoneConfig, outer_steps: int = 4) -> Contender:
    # sized like the HRM above: T = 2 recursions of (n = 2 latent updates + 1 answer update) = 6 applications of
    # a 1-block net per segment (the paper's Sudoku TRM: 2 blocks, n = 6, T = 3, i.e. 42)
    model = TRM(TRMConfig(L_layers=1, H_cycles=2, L_cycles=2, **_reasoning_common(cfg, outer_steps)))
    name = FAMILY_NAMES["trm"] + ("" if outer_steps > 1 else " without the outer loop")
    return Contender(name, "trm", model, reasoning_loss_fn(0.5), _reasoning_batch(cfg),
                     _solve_predict, knob="supervision steps", knob_default=outer_steps,
                     knob_values=_knob_values(cfg, 8), charge="one supervision segment per step, measured",
                     # the paper's AdamATan2 and weight EMA; its decay 0.999 averages over ~1000 steps, more than
                     # this run has, so the decay is scaled down to 0.99
                     train_overrides={"optimizer": "adam_atan2", "ema_decay": 0.99},
                     recipe="the paper's AdamATan2 + EMA (decay 0.99, scaled to a few hundred steps), wd 0.01, cosine")


def _recurrent_depth(cfg: CapstoneConfig) -> Contender:
    model = RecurrentDepthModel(RecurrentDepthConfig(
        vocab_size=cfg.num_nodes, dim=cfg.dim, n_heads=cfg.n_heads, max_positions=cfg.num_nodes,
        absolute_positions=True, mean_recurrence=float(cfg.recurrences), backprop_k=4,
    ))

    def batch_fn(step: int):
        b = _chains(cfg, step)
        return b.tokens, b.targets, recurrences_tensor(model, step, len(b.tokens))

    def predict(m: nn.Module, tokens: torch.Tensor, knob: int | None) -> torch.Tensor:
        return m(tokens, knob, noise_seed=0).argmax(-1)

    return Contender(FAMILY_NAMES["recurrent_depth"], "recurrent_depth", model, recurrent_depth_loss, batch_fn,
                     predict, knob="core recurrences r", knob_default=model.default_steps(),
                     knob_values=_knob_values(cfg),
                     cost_key=model.training_recurrences,
                     charge="random r per step: each (no-grad, grad) split measured, summed step by step")


def _mor(cfg: CapstoneConfig) -> Contender:
    n_rec = max(2, cfg.recurrences // 2)
    model = MixtureOfRecursionsLM(MoRConfig(
        vocab_size=cfg.num_nodes, dim=cfg.dim, n_heads=cfg.n_heads, n_layers=2 + n_rec, n_recursions=n_rec,
        sharing="middle_cycle", routing="expert", max_seq_len=cfg.num_nodes, aux_loss_coef=0.01,
    ))
    model.embed = PositionalTokenEmbedding(model.embed, cfg.num_nodes)

    def predict(m: nn.Module, tokens: torch.Tensor, knob: int | None) -> torch.Tensor:
        return m(tokens, rule="threshold").logits.argmax(-1)  # the causal inference rule, not top-k

    return Contender(FAMILY_NAMES["mor"], "mor", model, lm_loss,
                     lambda s: (lambda b: (b.tokens, b.targets))(_chains(cfg, s)), predict,
                     charge="expert-choice top-k in training: fixed capacities, measured")


def _hybrid(cfg: CapstoneConfig) -> Contender:
    model = RoutedRecurrentDepth(HybridConfig(
        vocab_size=cfg.num_nodes, dim=cfg.dim, n_heads=cfg.n_heads, max_positions=cfg.num_nodes,
        absolute_positions=True, max_recurrences=cfg.recurrences,
    ))

    def loss_fn(m: nn.Module, batch) -> StepOutput:
        tokens, targets = batch
        out = m(tokens)
        ce, acc = _ce_loss(out.logits, targets)
        return StepOutput(ce + out.aux_loss, {"acc": acc, **out.metrics})

    def predict(m: nn.Module, tokens: torch.Tensor, knob: int | None) -> torch.Tensor:
        return m(tokens, rule="threshold", max_recurrences=knob, noise_seed=0).logits.argmax(-1)

    return Contender(FAMILY_NAMES["hybrid"], "hybrid", model, loss_fn,
                     lambda s: (lambda b: (b.tokens, b.targets))(_chains(cfg, s)), predict,
                     knob="recurrence cap", knob_default=cfg.recurrences, knob_values=_knob_values(cfg),
                     charge="expert-choice top-k in training: fixed capacities, measured")


_BUILDERS: dict[str, Callable[[CapstoneConfig], Contender]] = {
    "one_pass": _one_pass, "gru": _gru, "ut_act": _ut_act, "deq": _deq, "hrm": _hrm, "trm": _trm,
    "recurrent_depth": _recurrent_depth, "mor": _mor, "hybrid": _hybrid,
}


def build_contender(family: str, cfg: CapstoneConfig, **options: Any) -> Contender:
    """One family adapted to the shared task (model initialised from ``cfg.seed``).

    ``options`` go to the family's builder; HRM and TRM take ``outer_steps`` (supervision segments per example,
    1 = no outer loop, for the ablation); the one-pass transformer takes ``norm`` ("post" or "pre").
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    allowed = {"hrm": {"outer_steps"}, "trm": {"outer_steps"}, "one_pass": {"norm"}}.get(family, set())
    if set(options) - allowed:
        raise ValueError(f"unknown options {sorted(set(options) - allowed)} for family {family!r}; "
                         f"allowed: {', '.join(sorted(allowed)) or 'none'}")
    if family == "one_pass" and options.get("norm", "post") not in ("pre", "post"):
        raise ValueError(f"norm must be 'pre' or 'post', got {options['norm']!r}")
    cfg.validate()
    torch.manual_seed(cfg.seed)
    return _BUILDERS[family](cfg, **options)


def capstone_contenders(
    profile: str | CapstoneConfig | None = None, families: tuple[str, ...] | list[str] | None = None
) -> list[Contender]:
    """Every family (or the chosen ``families``) on the shared task at a profile or a :class:`CapstoneConfig`."""
    cfg = profile if isinstance(profile, CapstoneConfig) else capstone_config(profile)
    chosen = FAMILIES if families is None else tuple(families)
    return [build_contender(f, cfg) for f in chosen]


# ------------------------------------------------------------------------------------------------------------
# Matching training compute
# ------------------------------------------------------------------------------------------------------------
def slice_batch(batch: Any, n: int) -> Any:
    """The first ``n`` examples of a batch (tensor / tuple / list / dict of tensors, batch dimension first)."""
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, dict):
        return {k: slice_batch(v, n) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(slice_batch(v, n) for v in batch)
    raise TypeError(f"cannot slice a batch of type {type(batch).__name__}")


def batch_size_of(batch: Any) -> int:
    """Number of examples in a batch (the first tensor's leading dimension)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return batch_size_of(next(iter(batch.values())))
    if isinstance(batch, (tuple, list)):
        return batch_size_of(batch[0])
    raise TypeError(f"cannot size a batch of type {type(batch).__name__}")


def measure_step_flops(contender: Contender, step: int, probe_batch: int | None = 4,
                       probe: nn.Module | None = None) -> float:
    """Measured FLOPs of training step ``step`` (forward + backward), charged at the cap where that applies.

    The step runs on a CPU copy of the model (so the count does not depend on the device's kernels). With
    ``probe_batch`` it runs on the first ``probe_batch`` examples and is scaled by B / probe_batch: every model
    here treats the examples of a batch independently, so FLOPs are exactly linear in B (a test checks it), and
    the count costs a fraction of a full step. ``probe_batch=None`` measures the whole batch. Attention runs on
    the math kernel while counting, so its matmuls are included.
    """
    if probe is None:
        probe = copy.deepcopy(contender.model).cpu()
        if contender.at_cap is not None:
            probe = contender.at_cap(probe)
    if probe_batch is not None and (isinstance(probe_batch, bool) or not isinstance(probe_batch, int)
                                    or probe_batch < 1):
        raise ValueError(f"probe_batch must be None or an integer >= 1, got {probe_batch!r}")
    batch = contender.batch_fn(step)
    full = batch_size_of(batch)
    n = full if probe_batch is None else min(probe_batch, full)
    # torch's FLOP counter has no formula for the fused CPU attention kernel; the math kernel computes the same
    # attention with plain matmuls, which it does count
    with sdpa_kernel(SDPBackend.MATH):
        flops = training_step_flops(probe, contender.loss_fn, slice_batch(batch, n))
    return float(flops) * full / n


@dataclass
class ComputePlan:
    """How long a contender trains under a FLOP budget.

    steps: training steps; total_flops: charged FLOPs of those steps (<= budget unless one step exceeds it);
    flops_per_step: mean charged FLOPs per step; budget: the budget; distinct_costs: step costs measured;
    cumulative: (steps + 1) running totals, ``cumulative[s]`` = FLOPs spent by the end of step s.
    """

    steps: int
    total_flops: float
    flops_per_step: float
    budget: float
    distinct_costs: int = 1
    cumulative: list[float] = field(default_factory=list, repr=False)

    def flops_at(self, step: int) -> float:
        """Training FLOPs spent after ``step`` steps."""
        if not 0 <= step <= self.steps:
            raise ValueError(f"step must lie in 0..{self.steps}, got {step}")
        return self.cumulative[step]


def plan_training(contender: Contender, budget_flops: float, probe_batch: int | None = 4,
                  max_steps: int = 10**6) -> ComputePlan:
    """Measure the contender's training-step FLOPs and fit as many steps as the budget allows.

    Constant-cost steps: ``steps_for_budget(budget, flops_per_step)``. Step-dependent costs (``cost_key``):
    each distinct cost is measured once and steps are added while the running sum stays within the budget.
    """
    if not budget_flops > 0:
        raise ValueError(f"budget_flops must be > 0, got {budget_flops!r}")
    probe = copy.deepcopy(contender.model).cpu()
    if contender.at_cap is not None:
        probe = contender.at_cap(probe)
    if contender.cost_key is None:
        fps = measure_step_flops(contender, 0, probe_batch, probe)
        steps = steps_for_budget(budget_flops, int(round(fps)))
        return ComputePlan(steps, steps * fps, fps, float(budget_flops), 1, [s * fps for s in range(steps + 1)])
    costs: dict[Hashable, float] = {}
    cumulative = [0.0]
    step = 0
    while step < max_steps:
        key = contender.cost_key(step)
        if key not in costs:
            costs[key] = measure_step_flops(contender, step, probe_batch, probe)
        if cumulative[-1] + costs[key] > budget_flops and step > 0:
            break
        cumulative.append(cumulative[-1] + costs[key])
        step += 1
    return ComputePlan(step, cumulative[-1], cumulative[-1] / step, float(budget_flops), len(costs), cumulative)


# ------------------------------------------------------------------------------------------------------------
# Training and evaluation
# ------------------------------------------------------------------------------------------------------------
def training_depth(cfg: CapstoneConfig) -> int:
    """Deepest node of a training chain (hops from its root): ``train_max_chain - 1``."""
    return cfg.train_max_chain - 1


def held_out_sets(cfg: CapstoneConfig) -> dict[str, ChainBatch]:
    """Held-out chains, drawn from ``cfg.eval_seed`` (the same sets for every training seed; seeds disjoint from
    training's).

    "val": training lengths, for choosing learning rates (never the test sets); "in": training lengths, the test
    set; "long": one chain per example longer than any seen in training (train_max_chain + 1 .. test_max_chain
    nodes) with its root position spread out (:func:`~recursionlab.data.latent_tasks.make_spread_chain_batch`),
    the rest filled with short chains; its nodes deeper than :func:`training_depth` measure extrapolation.
    """
    base = cfg.eval_seed * 10**5 + 10**6
    return {
        "val": make_chain_batch(cfg.eval_size, cfg.num_nodes, cfg.train_max_chain, generator=base + 3),
        "in": make_chain_batch(cfg.eval_size, cfg.num_nodes, cfg.train_max_chain, generator=base + 1),
        "long": make_spread_chain_batch(cfg.eval_size, cfg.num_nodes, cfg.test_max_chain, cfg.train_max_chain + 1,
                                        max(1, cfg.train_max_chain // 2), generator=base + 2),
    }


BASELINES: dict[str, str] = {
    "answer_0": "answer 0 everywhere",
    "copy_parent": "copy the parent (1 hop)",
    "k_hop": "follow k pointers, k = training recurrences",
    "k_hop_all": "follow k pointers, k = deepest training node",
    "majority": "the set's most common root, everywhere",
}


def baseline_predictions(name: str, tokens: torch.Tensor, hops: int = 1, constant: int = 0) -> torch.Tensor:
    """A trivial baseline's answers (B, N) long for parent tokens (B, N) long.

    "answer_0": 0 everywhere; "copy_parent": the token itself; "k_hop" / "k_hop_all": ``hops`` pointer hops
    (:func:`~recursionlab.data.latent_tasks.follow_pointers`); "majority": ``constant`` everywhere.
    """
    if name == "answer_0":
        return torch.zeros_like(tokens)
    if name == "copy_parent":
        return tokens.clone()
    if name in ("k_hop", "k_hop_all"):
        return follow_pointers(tokens, hops)
    if name == "majority":
        return torch.full_like(tokens, int(constant))
    raise ValueError(f"unknown baseline {name!r}; allowed: {', '.join(BASELINES)}")


def majority_answer_accuracy(batch: ChainBatch) -> tuple[int, float]:
    """The most common root of a set and the accuracy of answering it everywhere (the best constant answer)."""
    counts = torch.bincount(batch.targets.flatten())
    top = int(counts.argmax())
    return top, float(counts[top]) / batch.targets.numel()


def _set_scores(pred: torch.Tensor, batch: ChainBatch, cfg: CapstoneConfig, name: str) -> dict[str, float]:
    """Accuracy on every node, and on the set's hard nodes: deep ones (>= deep_depth) for training lengths,
    deeper than the training depth (extrapolation) for the long set."""
    hit = pred == batch.targets
    hard = batch.depth > training_depth(cfg) if name == "long" else batch.depth >= deep_depth(cfg)
    return {"all": float(hit.float().mean()), "hard": float(hit[hard].float().mean())}


def baseline_scores(cfg: CapstoneConfig) -> dict[str, dict[str, dict[str, float]]]:
    """``{set: {baseline: {"all": acc, "hard": acc}}}`` for the held-out sets and :data:`BASELINES`
    ("hard": deep nodes of the training-length sets, nodes deeper than the training depth of "long"). "k_hop"
    follows ``cfg.recurrences`` pointers (one hop per recurrence of the recurrent families' training depth),
    "k_hop_all" follows :func:`training_depth` pointers (enough for every training chain)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    hops = {"k_hop": cfg.recurrences, "k_hop_all": training_depth(cfg)}
    for name, batch in held_out_sets(cfg).items():
        constant, _ = majority_answer_accuracy(batch)
        out[name] = {b: _set_scores(baseline_predictions(b, batch.tokens, hops.get(b, 1), constant), batch,
                                    cfg, name) for b in BASELINES}
    return out


@torch.no_grad()
def predict_roots(contender: Contender, model: nn.Module, tokens: torch.Tensor, knob: int | None = None,
                  chunk: int = 256) -> torch.Tensor:
    """Predicted roots (B, N) long on the CPU, in eval mode, ``chunk`` sequences at a time."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        out = [contender.predict(model, tokens[i : i + chunk].to(device), knob).cpu()
               for i in range(0, len(tokens), chunk)]
        return torch.cat(out)
    finally:
        model.train(was)


def chain_accuracy(contender: Contender, model: nn.Module, batch: ChainBatch, knob: int | None = None,
                   min_depth: int = 0) -> float:
    """Fraction of nodes (at least ``min_depth`` hops from their root) whose root the model predicts."""
    pred = predict_roots(contender, model, batch.tokens, knob)
    keep = batch.depth >= min_depth
    if not bool(keep.any()):
        raise ValueError(f"no node of the batch is at depth >= {min_depth} (deepest: {int(batch.depth.max())})")
    return float((pred == batch.targets)[keep].float().mean())


def deep_depth(cfg: CapstoneConfig) -> int:
    """Hop count from which a held-out node counts as "deep": half the deepest training chain (at least 2)."""
    return max(2, cfg.train_max_chain // 2)


def evaluate_contender(contender: Contender, model: nn.Module, cfg: CapstoneConfig) -> dict[str, float]:
    """Held-out node accuracy at the family's default test-time setting.

    acc_in: every node of training-length chains; acc_deep: those at least :func:`deep_depth` hops from their
    root; acc_long: every node of the spread-root long set; acc_extrap: its nodes deeper than any in training
    (:func:`training_depth`); acc_val: the validation set (training lengths, for choosing learning rates).
    """
    scores = {}
    for name, batch in held_out_sets(cfg).items():
        scores[name] = _set_scores(predict_roots(contender, model, batch.tokens), batch, cfg, name)
    return {"acc_in": scores["in"]["all"], "acc_deep": scores["in"]["hard"], "acc_long": scores["long"]["all"],
            "acc_extrap": scores["long"]["hard"], "acc_val": scores["val"]["all"]}


def accuracy_vs_knob(contender: Contender, model: nn.Module, batch: ChainBatch,
                    values: tuple[int, ...] | list[int] | None = None, min_depth: int = 0) -> dict[int, float]:
    """Accuracy vs the test-time-compute knob at ``values`` (default: the contender's knob_values); empty for
    families without a knob."""
    if contender.knob is None:
        return {}
    values = contender.knob_values if values is None else values
    return {int(v): chain_accuracy(contender, model, batch, int(v), min_depth) for v in values}


def inference_flops_per_sequence(contender: Contender, model: nn.Module, tokens: torch.Tensor,
                                 knob: int | None = None) -> float:
    """FLOPs of predicting one sequence at a test-time setting (measured on a CPU copy, averaged over ``tokens``)."""
    probe = copy.deepcopy(model).cpu().eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):  # count attention's matmuls (see measure_step_flops)
        flops = count_flops(lambda: contender.predict(probe, tokens.cpu(), knob))
    return flops / len(tokens)


def train_config_for(contender: Contender, cfg: CapstoneConfig, steps: int, n_evals: int = 0) -> TrainConfig:
    """The shared optimiser settings with the contender's learning rate and its budgeted step count."""
    return replace(cfg.train, steps=int(steps), lr=contender.lr, warmup_steps=min(50, max(1, steps // 10)),
                   eval_every=max(1, steps // n_evals) if n_evals else 0, **contender.train_overrides)


@dataclass
class CapstoneResult:
    """One trained contender: the table row plus what the plots need.

    accuracy / accuracy_deep / accuracy_long / accuracy_extrap / accuracy_val: held-out node accuracy on
    training-length chains, on their nodes at least ``deep_depth`` hops from the root, on the long set, on its
    nodes deeper than the training depth, and on the validation set (see :func:`evaluate_contender`);
    wall_s: training time without the evaluations; inference_flops: FLOPs per sequence at the default test-time setting;
    curve: (training FLOPs, held-out accuracy) pairs recorded during training.
    """

    name: str
    family: str
    params: int
    steps: int
    train_flops: float
    wall_s: float
    accuracy: float
    accuracy_deep: float
    accuracy_long: float
    inference_flops: float
    knob: str | None
    curve: list[tuple[float, float]]
    history: History
    model: nn.Module
    contender: Contender
    plan: ComputePlan
    accuracy_extrap: float = float("nan")
    accuracy_val: float = float("nan")

    def row(self) -> dict[str, Any]:
        """The table row."""
        return {"model": self.name, "held-out acc": round(self.accuracy, 3),
                "deep-node acc": round(self.accuracy_deep, 3), "long acc": round(self.accuracy_long, 3),
                "extrapolation acc": round(self.accuracy_extrap, 3), "params": self.params,
                "train FLOPs": f"{self.train_flops:.2e}", "steps": self.steps, "wall s": round(self.wall_s, 1),
                "infer FLOPs/seq": f"{self.inference_flops:.1e}"}


def train_contender(contender: Contender, cfg: CapstoneConfig, budget_flops: float | None = None,
                    n_evals: int = 6, plan: ComputePlan | None = None) -> CapstoneResult:
    """Plan the steps for the budget (or use ``plan``, made by :func:`plan_training` for this contender), train
    through the engine (evaluating ``n_evals`` times on a slice of the held-out chains, for the quality-vs-compute
    curve), then evaluate fully on the held-out chains."""
    budget = cfg.budget_flops if budget_flops is None else float(budget_flops)
    if plan is None:
        plan = plan_training(contender, budget)
    elif plan.budget != budget:
        raise ValueError(f"the plan was made for a budget of {plan.budget:.3g} FLOPs, not {budget:.3g}")
    probe_set = held_out_sets(cfg)["val"]  # the curve is for looking, the test sets stay unseen
    probe_set = ChainBatch(probe_set.tokens[:128], probe_set.targets[:128], probe_set.depth[:128])
    eval_time = [0.0]

    def eval_fn(m: nn.Module) -> dict[str, float]:
        t = time.perf_counter()
        acc = chain_accuracy(contender, m, probe_set)
        eval_time[0] += time.perf_counter() - t
        return {"val_acc": acc}

    trainer = Trainer(contender.model, contender.loss_fn, contender.batch_fn,
                      train_config_for(contender, cfg, plan.steps, n_evals), eval_fn=eval_fn if n_evals else None)
    start = time.perf_counter()
    history = trainer.fit()
    wall = time.perf_counter() - start - eval_time[0]
    model = trainer.eval_model()
    acc = evaluate_contender(contender, model, cfg)
    curve = []
    if n_evals:
        steps, values = history.series("val_acc")
        curve = [(plan.flops_at(s), v) for s, v in zip(steps, values)]
    inf = inference_flops_per_sequence(contender, model, probe_set.tokens[:4])
    return CapstoneResult(contender.name, contender.family, contender.num_parameters(), plan.steps,
                          plan.total_flops, wall, acc["acc_in"], acc["acc_deep"], acc["acc_long"], inf,
                          contender.knob, curve, history, model, contender, plan, acc["acc_extrap"], acc["acc_val"])


def results_table(results: list[CapstoneResult]) -> str:
    """The results as a Markdown table (one row per contender, columns of :meth:`CapstoneResult.row`)."""
    if not results:
        raise ValueError("results_table needs at least one CapstoneResult")
    rows = [r.row() for r in results]
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(f"{row[k]:,}" if isinstance(row[k], int) else str(row[k]) for k in head) + " |"
              for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# Statistics: the router analysis, and many seeds
# ------------------------------------------------------------------------------------------------------------
def _check_same_shape(**tensors: torch.Tensor) -> list[torch.Tensor]:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"inputs must share a shape, got {shapes}")
    return [v.detach().double().flatten() for v in tensors.values()]


def _corr(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    denom = float(x.norm() * y.norm())
    return float("nan") if denom == 0 else float((x * y).sum()) / denom


def partial_correlation(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> float:
    """Pearson correlation of x and y once a linear effect of z is removed from both.

    x, y, z: tensors of one shape (flattened; e.g. (B, N) recurrences, node depths, positions). Equals
    ``(r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))``; NaN when a residual is constant.
    """
    x, y, z = _check_same_shape(x=x, y=y, z=z)
    design = torch.stack([torch.ones_like(z), z], 1)
    rx = x - design @ torch.linalg.lstsq(design, x[:, None]).solution[:, 0]
    ry = y - design @ torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    return _corr(rx, ry)


def within_group_correlation(x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor) -> float:
    """Correlation of x and y after subtracting each group's mean from both (e.g. groups = positions: compares
    nodes at the SAME position only, removing any effect of position, linear or not). Same-shape tensors."""
    x, y, g = _check_same_shape(x=x, y=y, groups=groups)
    g = g.long()
    if int(g.min()) < 0:
        raise ValueError(f"groups must be non-negative integers, got min {int(g.min())}")
    count = torch.bincount(g).double().clamp(min=1)
    mean_x = torch.bincount(g, weights=x) / count
    mean_y = torch.bincount(g, weights=y) / count
    return _corr(x - mean_x[g], y - mean_y[g])


@torch.no_grad()
def router_depth_analysis(model: nn.Module, batch: ChainBatch, rule: str = "threshold") -> dict[str, float]:
    """Does the hybrid's router give deeper nodes more recurrences, beyond what their position predicts?

    model: a :class:`~recursionlab.models.hybrid.RoutedRecurrentDepth`. Returns the correlation of the
    recurrences a node gets with its depth ("raw"), the same given position ("partial", linear) and within
    positions ("within"), and the correlation of depth with position ("depth_vs_position", the confound).
    """
    was = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        given = model(batch.tokens.to(device), rule=rule, noise_seed=0).depth.cpu().double()
    finally:
        model.train(was)
    position = torch.arange(batch.tokens.shape[1]).expand_as(batch.tokens)
    depth = batch.depth.double()
    x, y = given.flatten(), depth.flatten()
    return {"raw": _corr(x, y), "partial": partial_correlation(given, depth, position),
            "within": within_group_correlation(given, depth, position),
            "depth_vs_position": _corr(y, position.double().flatten()),
            "mean_recurrences": float(given.mean())}


def run_record(family: str, cfg: CapstoneConfig, lr_scale: float = 1.0, n_evals: int = 6,
               **options: Any) -> dict[str, Any]:
    """Train one contender (seed and budget from ``cfg``, learning rate times ``lr_scale``) and return a
    JSON-ready record: the table's numbers, the quality-vs-compute curve, test-time curves on the long set
    (all nodes and extrapolation nodes), and for the hybrid the router analysis."""
    if not lr_scale > 0:
        raise ValueError(f"lr_scale must be > 0, got {lr_scale!r}")
    contender = build_contender(family, cfg, **options)
    contender.lr *= lr_scale
    result = train_contender(contender, cfg, n_evals=n_evals)
    sets = held_out_sets(cfg)
    record: dict[str, Any] = {
        "family": family, "name": contender.name, "seed": cfg.seed, "budget": cfg.budget_flops,
        "lr": contender.lr, "lr_scale": lr_scale, "options": options, "recipe": contender.recipe,
        "params": result.params, "steps": result.steps, "train_flops": result.train_flops,
        "infer_flops": result.inference_flops, "wall_s": result.wall_s,
        "acc_in": result.accuracy, "acc_deep": result.accuracy_deep, "acc_long": result.accuracy_long,
        "acc_extrap": result.accuracy_extrap, "acc_val": result.accuracy_val,
        "curve": [[float(f), float(a)] for f, a in result.curve], "knob": contender.knob,
        "knob_default": contender.knob_default, "knob_curve": {},
    }
    for value in contender.knob_values if contender.knob else ():
        pred = predict_roots(contender, result.model, sets["long"].tokens, int(value))
        record["knob_curve"][str(int(value))] = _set_scores(pred, sets["long"], cfg, "long")
    if family == "hybrid":
        record["router"] = {name: router_depth_analysis(result.model, sets[name]) for name in ("in", "long")}
    return record


def summarize_records(records: list[dict[str, Any]], key: str) -> dict[tuple[str, float], tuple[float, float, int]]:
    """Mean, sample sd (0 for one run) and count of ``record[key]`` per (family, budget) over seeds."""
    groups: dict[tuple[str, float], list[float]] = {}
    for r in records:
        groups.setdefault((r["family"], float(r["budget"])), []).append(float(r[key]))
    out = {}
    for k, v in groups.items():
        t = torch.tensor(v, dtype=torch.float64)
        out[k] = (float(t.mean()), float(t.std()) if len(v) > 1 else 0.0, len(v))
    return out


SEED_TABLE = Path(__file__).resolve().parents[2] / "assets" / "capstone_seeds.json"


def load_seed_table(path: str | Path | None = None) -> dict[str, Any]:
    """The precomputed multi-seed sweep (``recursionlab/assets/capstone_seeds.json`` by default; made by
    ``python -m recursionlab.train.capstone_table``, provenance in ``recursionlab/assets/README.md``):
    ``{"meta": {profile, config, baselines, ...}, "records": [run_record(...), ...]}``."""
    path = SEED_TABLE if path is None else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no seed table at {path}; make one with python -m recursionlab.train.capstone_table")
    return json.loads(path.read_text())


def _pm(mean: float, sd: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def seed_table_markdown(records: list[dict[str, Any]], baselines: dict[str, dict[str, dict[str, float]]],
                        queries: int = 10_000) -> str:
    """A Markdown table: per family mean ± sd over seeds of every accuracy, the steps, training FLOPs, inference
    FLOPs per sequence and total FLOPs (training + ``queries`` answered sequences), then the trivial baselines.

    records: :func:`run_record` dicts of ONE budget and learning rate; baselines: :func:`baseline_scores`.
    """
    if not records:
        raise ValueError("seed_table_markdown needs at least one record")
    cols = ("acc_in", "acc_deep", "acc_val", "acc_long", "acc_extrap")
    head = ["model", "seeds", "held-out acc", "deep-node acc", "val acc", "long acc", "extrap. acc", "steps",
            "train FLOPs", "infer FLOPs/seq", f"train + {queries:,} answers"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    families = list(dict.fromkeys(r["family"] for r in records))
    for fam in families:
        rs = [r for r in records if r["family"] == fam]
        row = [rs[0]["name"], str(len(rs))]
        for c in cols:
            t = torch.tensor([r[c] for r in rs], dtype=torch.float64)
            row.append(_pm(float(t.mean()), float(t.std()) if len(rs) > 1 else 0.0))
        steps = sorted({r["steps"] for r in rs})
        train = sum(r["train_flops"] for r in rs) / len(rs)
        infer = sum(r["infer_flops"] for r in rs) / len(rs)
        row += ["/".join(map(str, steps)), f"{train:.2e}", f"{infer:.1e}", f"{train + queries * infer:.2e}"]
        lines.append("| " + " | ".join(row) + " |")
    for name, label in BASELINES.items():
        row = [f"*baseline: {label}*", "–", _pm(baselines["in"][name]["all"], 0)[:5],
               _pm(baselines["in"][name]["hard"], 0)[:5], _pm(baselines["val"][name]["all"], 0)[:5],
               _pm(baselines["long"][name]["all"], 0)[:5], _pm(baselines["long"][name]["hard"], 0)[:5],
               "0", "0", "–", "–"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# Recipes: one per family, for the command line
# ------------------------------------------------------------------------------------------------------------
def _family_recipe(family: str) -> None:
    @register_recipe(f"capstone-{family.replace('_', '-')}",
                     f"capstone (lesson 11): {FAMILY_NAMES[family]} on chain roots at the matched FLOP budget")
    def config_fn(profile: str) -> CapstoneConfig:
        return capstone_config(profile, family=family)

    @config_fn.builder
    def build(cfg: CapstoneConfig) -> Job:
        contender = build_contender(cfg.family, cfg)
        plan = plan_training(contender, cfg.budget_flops)

        def eval_fn(m: nn.Module) -> dict[str, float]:
            return evaluate_contender(contender, m, cfg)

        return Job(contender.model, contender.loss_fn, contender.batch_fn,
                   train_config_for(contender, cfg, plan.steps), eval_fn=eval_fn)


for _family in FAMILIES:
    _family_recipe(_family)
