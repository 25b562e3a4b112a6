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
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from recursionlab.data.latent_tasks import ChainBatch, make_chain_batch
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
        test_max_chain=by_profile(8, 16, 32, profile=profile),
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

    name / family: display name and key (one of :data:`FAMILIES`).
    model, loss_fn, batch_fn: what the engine trains (``batch_fn(step)`` draws the same chains for everyone).
    predict: ``predict(model, tokens (B, N) long, knob int | None) -> predicted roots (B, N) long`` (eval mode,
        no grad; ``None`` = the family's default setting).
    knob / knob_default: the test-time-compute knob's name and training value (None if the family has none);
        knob_values: the settings its test-time curve visits.
    cost_key: ``step -> hashable`` when the FLOPs of a training step depend on the step (random depth), else None.
    at_cap: ``model -> model`` returning a copy whose training step runs at its cap (no early stopping), used to
        charge early-stopping models; None if the step cost does not depend on learned halting.
    charge: one line saying how the contender is charged.
    lr: its learning rate.
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


def _one_pass(cfg: CapstoneConfig) -> Contender:
    model = OnePassTransformer(OnePassConfig(
        vocab_size=cfg.num_nodes, seq_len=cfg.num_nodes, dim=cfg.dim, n_layers=4, n_heads=cfg.n_heads,
        positions="learned", norm="post",
    ))
    return Contender(FAMILY_NAMES["one_pass"], "one_pass", model, _plain_loss,
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
                     charge="one supervision segment per step (+ its no-grad Q-target segment), measured")


def _trm(cfg: CapstoneConfig, outer_steps: int = 4) -> Contender:
    # sized like the HRM above: T = 2 recursions of (n = 2 latent updates + 1 answer update) = 6 applications of
    # a 1-block net per segment (the paper's Sudoku TRM: 2 blocks, n = 6, T = 3, i.e. 42)
    model = TRM(TRMConfig(L_layers=1, H_cycles=2, L_cycles=2, **_reasoning_common(cfg, outer_steps)))
    name = FAMILY_NAMES["trm"] + ("" if outer_steps > 1 else " without the outer loop")
    return Contender(name, "trm", model, reasoning_loss_fn(0.5), _reasoning_batch(cfg),
                     _solve_predict, knob="supervision steps", knob_default=outer_steps,
                     knob_values=_knob_values(cfg, 8), charge="one supervision segment per step, measured")


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
    1 = no outer loop, for the ablation).
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    if options and family not in ("hrm", "trm"):
        raise ValueError(f"family {family!r} takes no options, got {sorted(options)}")
    if set(options) - {"outer_steps"}:
        raise ValueError(f"unknown options {sorted(set(options) - {'outer_steps'})}; allowed: outer_steps")
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
def held_out_sets(cfg: CapstoneConfig) -> dict[str, ChainBatch]:
    """Held-out chains (seeds disjoint from training's): "in" = training lengths; "long" = every chain longer
    than any seen in training (train_max_chain + 1 .. test_max_chain nodes; the last chain is cut to fit)."""
    return {
        "in": make_chain_batch(cfg.eval_size, cfg.num_nodes, cfg.train_max_chain, generator=cfg.seed + 10**6),
        "long": make_chain_batch(cfg.eval_size, cfg.num_nodes, cfg.test_max_chain, min_chain=cfg.train_max_chain + 1,
                                 generator=cfg.seed + 2 * 10**6),
    }


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
    root; acc_long: every node of the chains longer than training's.
    """
    sets = held_out_sets(cfg)
    pred = predict_roots(contender, model, sets["in"].tokens)
    hit = pred == sets["in"].targets
    return {"acc_in": float(hit.float().mean()),
            "acc_deep": float(hit[sets["in"].depth >= deep_depth(cfg)].float().mean()),
            "acc_long": chain_accuracy(contender, model, sets["long"])}


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
                   eval_every=max(1, steps // n_evals) if n_evals else 0)


@dataclass
class CapstoneResult:
    """One trained contender: the table row plus what the plots need.

    accuracy / accuracy_deep / accuracy_long: held-out node accuracy on training-length chains, on their nodes
    at least ``deep_depth`` hops from the root, and on longer chains (see :func:`evaluate_contender`);
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

    def row(self) -> dict[str, Any]:
        """The table row."""
        return {"model": self.name, "held-out acc": round(self.accuracy, 3),
                "deep-node acc": round(self.accuracy_deep, 3), "params": self.params,
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
    probe_set = held_out_sets(cfg)["in"]
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
                          contender.knob, curve, history, model, contender, plan)


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
