"""Hierarchical Reasoning Model (HRM): Wang et al. 2025, arXiv 2506.21734 -- a from-scratch re-implementation.

Read top to bottom: configuration -> input network f_I -> reasoning modules f_L, f_H -> one *segment* of
recursion with the 1-step gradient -> the carry across deep-supervision segments -> ACT halting by Q-learning
-> the loss -> test-time solving. Where the paper and the official code (sapientinc/HRM) disagree we follow
the code; ``tests/test_conformance.py`` checks this module against fixtures recorded with the official code.

Notation (paper section 2). Input x (a puzzle as L tokens), input embedding x~ = f_I(x). Two recurrent states
z_H (slow, "high level") and z_L (fast, "low level"), both (B, P + L, D) with P prefix positions. One segment
runs N = ``H_cycles`` high-level cycles of T = ``L_cycles`` low-level steps:

    z_L <- f_L(z_L + z_H + x~)                       (every low-level step)
    z_H <- f_H(z_H + z_L)                            (at the end of every cycle)
    y^  =  f_O(z_H),   Q^ = sigma(theta_Q . z_H[:, 0])  (answer logits and halt/continue values)

Only the *last* f_L and f_H call carry a graph (the "1-step gradient", section 2: the implicit-function-
theorem gradient of a fixed point, (I - J_F)^-1 = I + J_F + J_F^2 + ..., truncated to I). Between segments
the states are detached ("deep supervision": one optimizer step per segment), and a Q-learning head decides
when to halt.

:class:`RecursiveReasoningModel` holds everything HRM and TRM share (embeddings, heads, carry, halting, loss
bookkeeping); :class:`HRM` adds the two modules and the H/L schedule; ``recursionlab.models.trm`` builds on
it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.nn.blocks import TransformerBlock
from recursionlab.nn.init import lecun_trunc_normal_, trunc_normal_corrected_
from recursionlab.nn.losses import IGNORE_INDEX, stablemax_cross_entropy
from recursionlab.nn.rotary import RotaryEmbedding

# ----------------------------------------------------------------------------------------------------------
# Configuration. Defaults are the paper's Sudoku-Extreme model (hrm_v1.yaml): 27,275,266 parameters.
# ----------------------------------------------------------------------------------------------------------

POS_ENCODINGS = ("rope", "learned", "none")


@dataclass
class HRMConfig:
    """Shape and schedule of an HRM (defaults: the paper's 27M Sudoku model).

    vocab_size / seq_len / num_puzzle_ids come from the dataset; ``puzzle_emb_len`` prefix positions are
    prepended (the first carries the learned puzzle embedding; 0 = no prefix and no puzzle embedding).
    """

    vocab_size: int = 11
    seq_len: int = 81
    num_puzzle_ids: int = 1
    hidden: int = 512
    n_heads: int = 8
    expansion: float = 4.0
    H_layers: int = 4
    L_layers: int = 4
    H_cycles: int = 2  # N in the paper
    L_cycles: int = 2  # T in the paper
    halt_max_steps: int = 16  # M_max
    halt_exploration_prob: float = 0.1  # epsilon
    puzzle_emb_len: int = 1
    pos_encoding: str = "rope"
    rope_base: float = 10000.0
    mixer: str = (
        "attention"  # "attention", or "mlp": TRM's MLP-mixer block (the TRM repo's hrm.py has it too)
    )
    gradient: str = "one_step"  # "one_step" (paper) or "bptt" (backprop through every call of the segment)
    q_continue_loss: bool = True  # HRM's bootstrapped continue target (TRM drops it)
    rms_eps: float = 1e-5
    ffn_multiple_of: int = (
        256  # SwiGLU widths round up to this (256 in the papers; smaller is cheaper on a CPU)
    )

    GRADIENTS: ClassVar[tuple[str, ...]] = ("one_step", "bptt")
    POSITIVE_FIELDS: ClassVar[tuple[str, ...]] = (
        "vocab_size",
        "seq_len",
        "num_puzzle_ids",
        "hidden",
        "n_heads",
        "H_layers",
        "L_layers",
        "H_cycles",
        "L_cycles",
        "halt_max_steps",
        "ffn_multiple_of",
    )

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        for name in self.POSITIVE_FIELDS:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden % self.n_heads or (self.hidden // self.n_heads) % 2:
            raise ValueError(
                f"hidden ({self.hidden}) must split into n_heads ({self.n_heads}) even-width heads"
            )
        if self.puzzle_emb_len < 0:
            raise ValueError(f"puzzle_emb_len must be >= 0, got {self.puzzle_emb_len}")
        if self.pos_encoding not in POS_ENCODINGS:
            raise ValueError(
                f"unknown pos_encoding {self.pos_encoding!r}; allowed: {', '.join(POS_ENCODINGS)}"
            )
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            raise ValueError(f"halt_exploration_prob must lie in [0, 1], got {self.halt_exploration_prob}")
        if self.mixer not in ("attention", "mlp"):
            raise ValueError(f"unknown mixer {self.mixer!r}; allowed: attention, mlp")
        if self.gradient not in self.GRADIENTS:
            raise ValueError(f"unknown gradient {self.gradient!r}; allowed: {', '.join(self.GRADIENTS)}")

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------
# The carry: what survives from one supervision segment to the next (detached).
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ACTCarry:
    """State carried across segments for a batch of B slots.

    z_H, z_L: (B, P + L, D) detached states; steps: (B,) long segments done on the slot's current puzzle;
    halted: (B,) bool -- the slot takes a fresh puzzle at the next segment; inputs, labels: (B, L) long;
    puzzle_ids: (B,) long.
    """

    z_H: torch.Tensor
    z_L: torch.Tensor
    steps: torch.Tensor
    halted: torch.Tensor
    inputs: torch.Tensor
    labels: torch.Tensor
    puzzle_ids: torch.Tensor

    def to(self, device: torch.device) -> ACTCarry:
        return ACTCarry(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class SegmentOutput:
    """One segment's outputs. logits: (B, L, V); q_halt_logits, q_continue_logits: (B,) float32;
    target_q_continue: (B,) in [0, 1] or None (HRM training only); labels: (B, L) of the puzzles now in the
    slots; halted: (B,) bool after this segment; steps: (B,) long after this segment."""

    logits: torch.Tensor
    q_halt_logits: torch.Tensor
    q_continue_logits: torch.Tensor
    target_q_continue: torch.Tensor | None
    labels: torch.Tensor
    halted: torch.Tensor
    steps: torch.Tensor


@dataclass
class SolveTrace:
    """Test-time run of ``n_steps`` segments without early halting (as both papers evaluate).

    predictions: (S, B, L) long argmax answers after each segment; q_halt_logits, q_continue_logits: (S, B).
    """

    predictions: torch.Tensor
    q_halt_logits: torch.Tensor
    q_continue_logits: torch.Tensor


# ----------------------------------------------------------------------------------------------------------
# A reasoning module: h <- blocks(h + injection)   (element-wise addition is the only merge, paper section 2)
# ----------------------------------------------------------------------------------------------------------


class ReasoningModule(nn.Module):
    """A stack of post-norm transformer blocks applied to ``h + injection``.

    forward(h (B, S, D), injection (B, S, D), rope=(cos, sin) or None) -> (B, S, D).
    """

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, h: torch.Tensor, injection: torch.Tensor, rope=None) -> torch.Tensor:
        h = h + injection
        for block in self.blocks:
            h = block(h, rope=rope)
        return h


def make_blocks(cfg: HRMConfig, n_layers: int) -> list[TransformerBlock]:
    """``n_layers`` post-norm blocks: parameter-free RMSNorm, SwiGLU, non-causal attention (or the mixer)."""
    total_len = cfg.seq_len + cfg.puzzle_emb_len
    return [
        TransformerBlock(
            cfg.hidden,
            cfg.n_heads,
            norm="post",
            causal=False,
            expansion=cfg.expansion,
            mixer=cfg.mixer,
            seq_len=total_len,
            learnable_norm=False,
            eps=cfg.rms_eps,
            ffn_multiple_of=cfg.ffn_multiple_of,
        )
        for _ in range(n_layers)
    ]


# ----------------------------------------------------------------------------------------------------------
# What HRM and TRM share
# ----------------------------------------------------------------------------------------------------------


class RecursiveReasoningModel(nn.Module):
    """Embeddings, heads, initial states, the carry and ACT halting shared by HRM and TRM.

    Subclasses implement :meth:`recursion` (one segment's schedule of module calls).

    Training protocol (the engine's ``loss_fn`` calls ``model(inputs, labels, puzzle_ids)``): every call runs
    ONE segment on the slots of a persistent carry; slots that halted at the previous call take the new
    batch's example (states reset to the fixed initial vectors), the others keep their puzzle and state and
    the new example in that slot is dropped (HRM code, ``pretrain.py``). The carry is part of the module's
    state (``get_extra_state``) so checkpoints resume it exactly.
    """

    def __init__(self, cfg: HRMConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        D, P = cfg.hidden, cfg.puzzle_emb_len
        self.prefix_len = P
        # --- input network f_I: token embedding (std 1/sqrt(D)) scaled by sqrt(D) -> unit-RMS inputs
        self.embed_scale = math.sqrt(D)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, D)
        trunc_normal_corrected_(self.embed_tokens.weight, std=1.0 / math.sqrt(D))
        # --- puzzle embedding: one D-vector per puzzle id, zero-init. As in the official code the table is a
        # persistent *buffer*, not a parameter: ARC-AGI-1 with augmentation has ~961k rows, so it must never
        # get a dense gradient, a dense all-reduce or an EMA copy. A training forward reads the batch's rows
        # into a small leaf tensor (B, D) that receives the gradient (see ``puzzle_rows``); the sparse sign-SGD
        # optimizer (``recursionlab.train.optim.SparseSignSGD``) updates just those rows from it.
        self.register_buffer("puzzle_emb", torch.zeros(cfg.num_puzzle_ids, D) if P > 0 else None)
        # --- positions
        total_len = cfg.seq_len + P
        self.rotary = None
        self.embed_pos = None
        if cfg.pos_encoding == "rope":
            self.rotary = RotaryEmbedding(D // cfg.n_heads, total_len, base=cfg.rope_base)
        elif cfg.pos_encoding == "learned":
            self.embed_pos = nn.Parameter(
                trunc_normal_corrected_(torch.empty(total_len, D), 1.0 / math.sqrt(D))
            )
        # --- output network f_O and the Q head (W = 0, b = -5: sigma(-5) ~ 0.007, "almost zero" Q at start)
        self.lm_head = nn.Linear(D, cfg.vocab_size, bias=False)
        lecun_trunc_normal_(self.lm_head.weight)
        self.q_head = nn.Linear(D, 2, bias=True)
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        # --- fixed initial states z_H^0, z_L^0: trunc-normal std 1, NOT trained (paper: "kept fixed")
        self.register_buffer("H_init", trunc_normal_corrected_(torch.empty(D), std=1.0))
        self.register_buffer("L_init", trunc_normal_corrected_(torch.empty(D), std=1.0))
        self._carry: ACTCarry | None = None

    # ------------------------------------------------------------------ bookkeeping
    def num_parameters(self, include_puzzle_emb: bool = False) -> int:
        """Trainable parameter count; the puzzle-embedding table is excluded by default (as in the papers)."""
        table = self.puzzle_emb.numel() if include_puzzle_emb and self.puzzle_emb is not None else 0
        return sum(p.numel() for p in self.parameters()) + table

    def param_groups(self) -> list[dict]:
        """Optimizer groups for the main optimizer: every parameter (the puzzle table is a buffer)."""
        return [{"params": list(self.parameters())}]

    def ddp_ignored_names(self) -> list[str]:
        """Tensors DDP must neither broadcast nor all-reduce: the puzzle table (ranks keep it identical by
        applying the same sparse update from the gathered rows) and its per-batch row buffers."""
        names = [] if self.puzzle_emb is None else ["puzzle_emb"]
        return names + [n for n in ("puzzle_rows_local", "puzzle_ids_local") if getattr(self, n, None) is not None]

    def puzzle_rows(self, puzzle_ids: torch.Tensor) -> torch.Tensor:
        """The puzzle-table rows of ``puzzle_ids`` (B,) -> (B, D).

        In a training forward with grad enabled the rows are copied into a per-batch leaf buffer
        ``puzzle_rows_local`` (B, D) that receives the gradient, one row per slot, with the ids in
        ``puzzle_ids_local`` (the official ``CastedSparseEmbedding``; the in-place copy keeps it usable under
        ``torch.compile(fullgraph=True)`` once the buffer exists -- :meth:`initial_carry` allocates it).
        :meth:`take_puzzle_grad` hands the rows' gradient to the optimizer. Otherwise (evaluation, no_grad)
        the table is read directly.
        """
        if not (self.training and torch.is_grad_enabled()):
            return self.puzzle_emb[puzzle_ids]
        self._ensure_puzzle_buffers(puzzle_ids.shape[0])
        with torch.no_grad():
            self.puzzle_rows_local.copy_(self.puzzle_emb[puzzle_ids])
            self.puzzle_ids_local.copy_(puzzle_ids)
        return self.puzzle_rows_local

    def _ensure_puzzle_buffers(self, batch: int) -> None:
        rows = getattr(self, "puzzle_rows_local", None)
        table = self.puzzle_emb
        if (
            table is None
            or (rows is not None and rows.is_leaf and rows.shape[0] == batch and rows.device == table.device
                and rows.dtype == table.dtype)
        ):
            return
        # (re)allocated when missing, when the batch size changed, or after .to() made it a non-leaf copy
        leaf = torch.zeros(batch, table.shape[1], dtype=table.dtype, device=table.device, requires_grad=True)
        self.register_buffer("puzzle_rows_local", leaf, persistent=False)
        self.register_buffer("puzzle_ids_local", torch.zeros(batch, dtype=torch.long, device=table.device),
                             persistent=False)

    def take_puzzle_grad(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ids (B,), gradient (B, D)) of the puzzle rows of the last training forward(s), then clear the
        gradient; None if there is none. Called by the sparse optimizer's step."""
        rows = getattr(self, "puzzle_rows_local", None)
        if rows is None or rows.grad is None:
            return None
        grad, rows.grad = rows.grad, None
        return self.puzzle_ids_local.clone(), grad

    def get_extra_state(self) -> dict:
        return {} if self._carry is None else {k: v.detach().cpu() for k, v in self._carry.as_dict().items()}

    def set_extra_state(self, state: dict) -> None:
        self._carry = ACTCarry(**state) if state else None

    def reset_carry(self) -> None:
        """Forget the training carry (the next training call starts every slot on a fresh puzzle)."""
        self._carry = None

    # ------------------------------------------------------------------ input network f_I
    def _rope(self):
        return None if self.rotary is None else self.rotary()

    def embed(self, inputs: torch.Tensor, puzzle_ids: torch.Tensor) -> torch.Tensor:
        """x~ = sqrt(D) * [puzzle_emb(id), 0, ..., 0, E[x_1], ..., E[x_L]] (+ learned positions).

        inputs: (B, L) long; puzzle_ids: (B,) long -> (B, P + L, D).
        """
        cfg = self.config
        if inputs.dim() != 2 or inputs.shape[1] != cfg.seq_len:
            raise ValueError(f"inputs must have shape (B, {cfg.seq_len}), got {tuple(inputs.shape)}")
        x = self.embed_tokens(inputs)
        if self.prefix_len > 0:
            B, P = inputs.shape[0], self.prefix_len
            prefix = torch.zeros(B, P, cfg.hidden, dtype=x.dtype, device=x.device)
            # only the first prefix position carries the puzzle embedding (TRM: the other 15 stay zero)
            prefix = torch.cat((self.puzzle_rows(puzzle_ids).to(x.dtype).unsqueeze(1), prefix[:, 1:]), 1)
            x = torch.cat((prefix, x), dim=1)
        if self.embed_pos is not None:
            # keep unit scale after the sum; the official code multiplies by this rounded 1/sqrt(2)
            x = 0.707106781 * (x + self.embed_pos.to(x.dtype))
        return self.embed_scale * x

    # ------------------------------------------------------------------ one segment (subclasses)
    def recursion(
        self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one segment's module calls. z_H, z_L, x: (B, P + L, D) -> new (z_H, z_L)."""
        raise NotImplementedError

    def heads(self, z_H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """y^ = f_O(z_H) without prefix: (B, L, V); Q logits from position 0: (B,), (B,) float32."""
        logits = self.lm_head(z_H[:, self.prefix_len :])
        q = self.q_head(z_H[:, 0]).float()
        return logits, q[:, 0], q[:, 1]

    # ------------------------------------------------------------------ the carry across segments
    def initial_carry(
        self, inputs: torch.Tensor, labels: torch.Tensor | None, puzzle_ids: torch.Tensor
    ) -> ACTCarry:
        """A carry whose slots are all marked halted, so the next segment loads fresh puzzles into them."""
        B, S, D = inputs.shape[0], self.config.seq_len + self.prefix_len, self.config.hidden
        dev = inputs.device
        self._ensure_puzzle_buffers(B)  # allocated here, outside a compiled segment
        return ACTCarry(
            z_H=self.H_init.expand(B, S, D).clone(),
            z_L=self.L_init.expand(B, S, D).clone(),
            steps=torch.zeros(B, dtype=torch.long, device=dev),
            halted=torch.ones(B, dtype=torch.bool, device=dev),
            inputs=torch.zeros_like(inputs),
            labels=torch.full_like(inputs, IGNORE_INDEX) if labels is None else torch.zeros_like(labels),
            puzzle_ids=torch.zeros_like(puzzle_ids),
        )

    def halt_decision(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        """Greedy halting action, (B,), (B,) -> (B,) bool. With the continue loss (HRM) halt if
        Q^halt > Q^continue; without it (TRM) halt if sigma(Q^halt) > 0.5, i.e. the logit is positive."""
        return q_halt > q_continue if self.config.q_continue_loss else q_halt > 0

    def segment(
        self,
        carry: ACTCarry,
        inputs: torch.Tensor,
        labels: torch.Tensor | None,
        puzzle_ids: torch.Tensor | None,
        training: bool | None = None,
    ) -> tuple[ACTCarry, SegmentOutput]:
        """Run one supervision segment on ``carry`` with a fresh batch (inputs (B, L), labels (B, L),
        puzzle_ids (B,)) used only where the carry's slot halted. Returns the new (detached) carry and the
        outputs.
        ``training`` (default ``self.training``) switches on Q-driven halting, exploration and the Q target.
        """
        cfg = self.config
        training = self.training if training is None else training
        if puzzle_ids is None:
            puzzle_ids = torch.zeros(inputs.shape[0], dtype=torch.long, device=inputs.device)
        if labels is None:
            labels = torch.full_like(inputs, IGNORE_INDEX)
        if carry.z_H.device != inputs.device:
            carry = carry.to(inputs.device)
        if carry.inputs.shape != inputs.shape:
            raise ValueError(
                f"the carry holds a batch of shape {tuple(carry.inputs.shape)} but the new batch is "
                f"{tuple(inputs.shape)}; keep the batch size fixed or call reset_carry()"
            )
        # --- 1. halted slots take the new example and restart from the fixed initial states
        h = carry.halted
        z_H = torch.where(h[:, None, None], self.H_init.to(carry.z_H.dtype), carry.z_H)
        z_L = torch.where(h[:, None, None], self.L_init.to(carry.z_L.dtype), carry.z_L)
        steps = torch.where(h, torch.zeros_like(carry.steps), carry.steps)
        cur_inputs = torch.where(h[:, None], inputs, carry.inputs)
        cur_labels = torch.where(h[:, None], labels, carry.labels)
        cur_ids = torch.where(h, puzzle_ids, carry.puzzle_ids)
        # --- 2. the recursion (graph only where the subclass says), then the heads
        x = self.embed(cur_inputs, cur_ids)
        z_H, z_L = self.recursion(z_H, z_L, x)
        logits, q_halt, q_cont = self.heads(z_H)
        # --- 3. ACT: halt at M_max, or (training) when the Q head says so, but not before M_min
        target_q_cont = None
        with torch.no_grad():
            steps = steps + 1
            is_last = steps >= cfg.halt_max_steps
            halted = is_last
            if training and cfg.halt_max_steps > 1:
                halted = halted | self.halt_decision(q_halt, q_cont)
                # exploration: with probability eps, M_min ~ U{2, ..., M_max}; else M_min = 0 (no constraint)
                explore = torch.rand_like(q_halt) < cfg.halt_exploration_prob
                min_steps = explore * torch.randint_like(steps, low=2, high=cfg.halt_max_steps + 1)
                halted = halted & (steps >= min_steps)
                if cfg.q_continue_loss:
                    # bootstrapped target (no replay buffer, no target network): Q^{m+1} from a second full
                    # no-grad segment on the same puzzles from the just-updated states
                    nz_H, _ = self.recursion(z_H.detach(), z_L.detach(), x.detach())
                    _, next_halt, next_cont = self.heads(nz_H)
                    target_q_cont = q_continue_target(next_halt, next_cont, is_last)
        new_carry = ACTCarry(z_H.detach(), z_L.detach(), steps, halted, cur_inputs, cur_labels, cur_ids)
        return new_carry, SegmentOutput(logits, q_halt, q_cont, target_q_cont, cur_labels, halted, steps)

    def forward(
        self, inputs: torch.Tensor, labels: torch.Tensor | None = None, puzzle_ids: torch.Tensor | None = None
    ) -> SegmentOutput:
        """One training segment on the model's own persistent carry (see the class docstring).

        inputs, labels: (B, L) long; puzzle_ids: (B,) long -> :class:`SegmentOutput`.
        """
        if puzzle_ids is None:
            puzzle_ids = torch.zeros(inputs.shape[0], dtype=torch.long, device=inputs.device)
        carry = self._carry
        if carry is None or carry.inputs.shape != inputs.shape:
            carry = self.initial_carry(inputs, labels, puzzle_ids)
        carry, out = self.segment(carry, inputs, labels, puzzle_ids)
        self._carry = carry
        return out

    # ------------------------------------------------------------------ test time
    @torch.no_grad()
    def solve(
        self, inputs: torch.Tensor, puzzle_ids: torch.Tensor | None = None, n_steps: int | None = None
    ) -> SolveTrace:
        """Run ``n_steps`` (default ``halt_max_steps``) segments from fresh states, never halting early.

        inputs: (B, L) long; puzzle_ids: (B,) long -> :class:`SolveTrace` with (S, B, ...) tensors.
        Uses its own carry (the training carry is untouched) and the evaluation rules (no exploration).
        """
        n_steps = self.config.halt_max_steps if n_steps is None else int(n_steps)
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        if puzzle_ids is None:
            puzzle_ids = torch.zeros(inputs.shape[0], dtype=torch.long, device=inputs.device)
        carry = self.initial_carry(inputs, None, puzzle_ids)
        preds, qh, qc = [], [], []
        for _ in range(n_steps):
            carry, out = self.segment(carry, inputs, None, puzzle_ids, training=False)
            carry.halted = torch.zeros_like(carry.halted)  # never reload: keep refining the same puzzles
            preds.append(out.logits.argmax(-1))
            qh.append(out.q_halt_logits)
            qc.append(out.q_continue_logits)
        return SolveTrace(torch.stack(preds), torch.stack(qh), torch.stack(qc))


# ----------------------------------------------------------------------------------------------------------
# HRM: two modules, two time scales, the 1-step gradient
# ----------------------------------------------------------------------------------------------------------


class HRM(RecursiveReasoningModel):
    """The Hierarchical Reasoning Model: low-level module f_L (fast), high-level module f_H (slow).

    forward/segment/solve: see :class:`RecursiveReasoningModel`. Paper config = ``HRM(HRMConfig())``.
    """

    def __init__(self, cfg: HRMConfig | None = None) -> None:
        cfg = HRMConfig() if cfg is None else cfg
        super().__init__(cfg)
        self.L_level = ReasoningModule(make_blocks(cfg, cfg.L_layers))
        self.H_level = ReasoningModule(make_blocks(cfg, cfg.H_layers))

    def recursion(
        self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """N*T low-level steps and N high-level steps; with ``gradient="one_step"`` only the last f_L and the
        last f_H call hold a graph (gradient path: head -> z_H -> z_L -> x~). z_H, z_L, x: (B, S, D)."""
        cfg, rope = self.config, self._rope()
        n_calls = cfg.H_cycles * cfg.L_cycles
        with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.gradient == "bptt"):
            for i in range(n_calls - 1):
                z_L = self.L_level(z_L, z_H + x, rope)  # z_L^i = f_L(z_L^{i-1}, z_H, x~)
                if (i + 1) % cfg.L_cycles == 0:
                    z_H = self.H_level(z_H, z_L, rope)  # z_H^k = f_H(z_H^{k-1}, z_L^*)
        # 1-step gradient: d z_H*/d theta ~ d f_H/d theta (the I term of the Neumann series)
        z_L = self.L_level(z_L, z_H + x, rope)
        z_H = self.H_level(z_H, z_L, rope)
        return z_H, z_L


# ----------------------------------------------------------------------------------------------------------
# The loss: stablemax CE on the answer + 0.5 (BCE halt + BCE continue)   (HRM code, models/losses.py)
# ----------------------------------------------------------------------------------------------------------


def q_continue_target(
    next_q_halt: torch.Tensor, next_q_continue: torch.Tensor, is_last: torch.Tensor
) -> torch.Tensor:
    """HRM's bootstrapped Q-learning target for "continue" (paper section 2, ACT):

        G_cont = sigma(Q_halt^{m+1})                          if segment m was the last allowed (m >= M_max)
               = sigma(max(Q_halt^{m+1}, Q_cont^{m+1}))       otherwise

    m counts the segment just run (1 for a puzzle's first), as the carry's step counter does; Q^{m+1} are the
    logits of one more gradient-free segment. As in the official code, ``is_last = steps >= halt_max_steps``.
    next_q_halt, next_q_continue: (B,) logits from the next segment; is_last: (B,) bool -> (B,) in (0, 1).
    """
    return torch.sigmoid(torch.where(is_last, next_q_halt, torch.maximum(next_q_halt, next_q_continue)))


def halting_bce(logits: torch.Tensor, labels: torch.Tensor, q_halt_logits: torch.Tensor) -> torch.Tensor:
    """The halting loss: BCE(Q_halt logit, 1{every supervised cell of the answer is right}), summed over the
    batch. The target uses the argmax answer and carries no gradient (TRM keeps only this term).

    logits: (B, L, V); labels: (B, L) with -100 ignored; q_halt_logits: (B,) -> scalar.
    """
    with torch.no_grad():
        mask = labels != IGNORE_INDEX
        exact = ((logits.argmax(-1) == labels) | ~mask).all(-1)
    return F.binary_cross_entropy_with_logits(q_halt_logits.float(), exact.float(), reduction="sum")


@dataclass
class ACTLoss:
    """Loss terms of one segment. loss: scalar (batch mean); metrics: floats for logging."""

    loss: torch.Tensor
    metrics: dict[str, float]


def act_loss(out: SegmentOutput, q_loss_weight: float = 0.5) -> ACTLoss:
    """L = mean over the batch of [ CE_stablemax(y^, y) (token mean per puzzle)
                                   + w * (BCE(Q_halt, 1{y^ = y}) + BCE(Q_cont, G_cont)) ].

    The continue term is present only when ``out.target_q_continue`` is (HRM training).
    Metrics are over all slots of the batch at this segment.
    """
    labels = out.labels
    mask = labels != IGNORE_INDEX
    counts = mask.sum(-1)
    divisor = counts.clamp_min(1)
    token_loss = stablemax_cross_entropy(out.logits, labels, reduction="none")  # (B, L) float64
    lm_loss = (token_loss.sum(-1) / divisor).sum()
    with torch.no_grad():
        correct = mask & (out.logits.argmax(-1) == labels)
        seq_correct = correct.sum(-1) == counts
    q_halt_loss = halting_bce(out.logits, labels, out.q_halt_logits)
    total = lm_loss + q_loss_weight * q_halt_loss
    B = labels.shape[0]
    metrics = {
        "lm_loss": float(lm_loss.detach()) / B,
        "q_halt_loss": float(q_halt_loss.detach()) / B,
        "cell_acc": float((correct.sum(-1) / divisor).float().mean()),
        "exact_acc": float(seq_correct.float().mean()),
        "q_halt_acc": float(((out.q_halt_logits >= 0) == seq_correct).float().mean()),
        "halt_rate": float(out.halted.float().mean()),
        "mean_steps": float(out.steps.float().mean()),
    }
    if out.target_q_continue is not None:
        q_cont_loss = F.binary_cross_entropy_with_logits(
            out.q_continue_logits, out.target_q_continue, reduction="sum"
        )
        total = total + q_loss_weight * q_cont_loss
        metrics["q_continue_loss"] = float(q_cont_loss.detach()) / B
    return ACTLoss(total / B, metrics)
