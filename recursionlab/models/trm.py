"""Tiny Recursive Model (TRM): Jolicoeur-Martineau 2025, "Less is More: Recursive Reasoning with Tiny
Networks", arXiv 2510.04871 -- a from-scratch re-implementation on the HRM machinery of
``recursionlab.models.hrm``.

What TRM keeps from HRM: the input network, post-norm blocks, prefix tokens, the output and Q heads, fixed
initial states, deep supervision with a detached carry, stablemax loss, AdamATan2 + sign-SGD puzzle
embeddings.
What it changes (paper section 4):

* ONE tiny network ``net`` (2 blocks) does both updates; which update it performs is signalled by whether the
  input x~ is part of its input (section 4.3). The states are reinterpreted: y := z_H is the embedded current
  answer (decoded by the output head), z := z_L a latent reasoning feature (section 4.2).
* One supervision step = T recursions; each recursion = n latent updates then one answer update:

      z <- net(z + y + x~)     (n times)
      y <- net(y + z)          (once)

  The first T-1 recursions run without a graph; the last one is backpropagated in full through its n+1 calls
  (no fixed-point assumption, no 1-step gradient: TRM Table 1, 56.5% -> 87.4% on Sudoku-Extreme).
* Halting: a single BCE, Q_halt -> 1{answer exactly right}; halt when Q_halt > 0 (logit). No continue loss and
  so no second forward pass (``no_ACT_continue``).
* Optional attention-free "MLP-mixer" block (``mixer="mlp"``, section 4.5) for small fixed contexts (Sudoku);
  the code pairs it with no position encoding.
* An EMA (0.999) of the weights is what is evaluated and saved (engine ``TrainConfig(ema_decay=0.999)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from recursionlab.models.hrm import HRMConfig, ReasoningModule, RecursiveReasoningModel, make_blocks

TRM_GRADIENTS = ("last_recursion", "one_step", "bptt")


@dataclass
class TRMConfig(HRMConfig):
    """TRM shape and schedule (defaults: the paper's TRM-Att on Sudoku, 6,828,034 parameters).

    ``L_layers`` blocks in the single network; ``H_cycles`` = T recursions; ``L_cycles`` = n latent updates.
    ``mixer``: "attention" or "mlp" (then use ``pos_encoding="none"``; TRM-MLP on Sudoku has 5,028,866).
    ``gradient``: "last_recursion" (paper), "one_step" (HRM-style: only the last z and y update hold a graph,
    the Table 1 ablation) or "bptt" (every call of the step).
    """

    L_layers: int = 2
    H_layers: int = 0  # unused: TRM has a single network
    H_cycles: int = 3  # T
    L_cycles: int = 6  # n
    puzzle_emb_len: int = 16
    gradient: str = "last_recursion"
    q_continue_loss: bool = False

    GRADIENTS: ClassVar[tuple[str, ...]] = TRM_GRADIENTS
    POSITIVE_FIELDS: ClassVar[tuple[str, ...]] = tuple(
        f for f in HRMConfig.POSITIVE_FIELDS if f != "H_layers"
    )


class TRM(RecursiveReasoningModel):
    """The Tiny Recursive Model: a single ``net`` for both the latent (z) and the answer (y) update.

    forward/segment/solve: see :class:`recursionlab.models.hrm.RecursiveReasoningModel`.
    """

    def __init__(self, cfg: TRMConfig | None = None) -> None:
        cfg = TRMConfig() if cfg is None else cfg
        super().__init__(cfg)
        self.net = ReasoningModule(make_blocks(cfg, cfg.L_layers))

    def latent_recursion(self, y: torch.Tensor, z: torch.Tensor, x: torch.Tensor, rope, n_graph: int):
        """One recursion: n updates of z, then one of y. The last ``n_graph`` of the n+1 calls keep a graph
        (if grad is enabled at all). y, z, x: (B, S, D) -> (y, z)."""
        n = self.config.L_cycles
        grad = torch.is_grad_enabled()
        for i in range(n):
            with torch.set_grad_enabled(grad and i >= n + 1 - n_graph):
                z = self.net(z, y + x, rope)  # z <- net(x, y, z): refine the latent reasoning
        with torch.set_grad_enabled(grad and n_graph >= 1):
            y = self.net(y, z, rope)  # y <- net(y, z): update the answer from the latent (no x)
        return y, z

    def recursion(
        self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """T recursions: T-1 without a graph, the last with backprop through its n+1 calls (by default).
        z_H = y (answer), z_L = z (latent), x: (B, S, D) -> (y, z)."""
        cfg, rope = self.config, self._rope()
        y, z = z_H, z_L
        n_calls = cfg.L_cycles + 1
        if cfg.gradient == "bptt":
            for _ in range(cfg.H_cycles):
                y, z = self.latent_recursion(y, z, x, rope, n_graph=n_calls)
            return y, z
        with torch.no_grad():
            for _ in range(cfg.H_cycles - 1):
                y, z = self.latent_recursion(y, z, x, rope, n_graph=0)
        n_graph = n_calls if cfg.gradient == "last_recursion" else 2  # one_step: last z and y updates only
        return self.latent_recursion(y, z, x, rope, n_graph=n_graph)
