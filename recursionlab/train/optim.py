"""Optimisers: the standard ones from torch, plus AdamATan2 and sign-SGD written from their update rules.

AdamATan2 (Everett et al. 2024, arXiv 2407.05872; the update used by HRM and TRM through the ``adam-atan2``
package) replaces Adam's ``m / (sqrt(v) + eps)`` with ``atan2(m, sqrt(v))``: no epsilon, a bounded step per
coordinate, and invariance to rescaling the gradient. With bias corrections ``c1 = 1 - b1^t``, ``c2 = 1 - b2^t``:

    theta <- theta * (1 - lr * wd)                      (decoupled weight decay)
    m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
    theta <- theta - (lr / c1) * atan2(m, sqrt(v / c2))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from recursionlab.train.config import TrainConfig


class AdamATan2(torch.optim.Optimizer):
    """Adam with ``atan2`` in place of the epsilon-guarded division (see the module docstring)."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.1,
    ) -> None:
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                c1, c2 = 1 - b1**t, 1 - b2**t
                update = torch.atan2(m, (v / c2).sqrt())
                p.mul_(1 - lr * wd)
                p.add_(update.to(p.dtype), alpha=-lr / c1)
        return loss


class SignSGD(torch.optim.Optimizer):
    """Sign-SGD with decoupled weight decay: ``p <- p (1 - lr wd) - lr sign(g)``.

    For a dense gradient: rows whose gradient is exactly zero are left untouched (a dense gradient cannot tell
    a row absent from the batch from one whose gradient summed to zero). HRM/TRM's puzzle table uses
    :class:`SparseSignSGD`, which knows the batch's ids ("Adam is close to sign-SGD when gradients are very
    sparse").
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, weight_decay: float = 0.1) -> None:
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"lr and weight_decay must be >= 0, got lr={lr}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable | None = None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                # Touch only rows (first axis) that received gradient: untouched puzzles keep their embedding.
                touched = (g != 0).reshape(g.shape[0], -1).any(dim=1) if g.dim() > 1 else g != 0
                shape = (-1,) + (1,) * (p.dim() - 1)
                factor = torch.where(touched.reshape(shape), 1 - lr * wd, 1.0).to(p.dtype)
                p.mul_(factor).add_(torch.sign(g).to(p.dtype), alpha=-lr)
        return loss


class SparseSignSGD(torch.optim.Optimizer):
    """Sign-SGD on the rows of a large embedding table that a batch used, as the official HRM/TRM
    ``CastedSparseEmbeddingSignSGD_Distributed`` does.

    The table (N, D) is a buffer without a gradient; ``take_grad()`` returns the last forward's (ids (B,),
    per-slot gradients (B, D)) or None. Under ``torch.distributed`` the ids and gradients of every rank are
    all-gathered (W * B rows, never the N-row table), summed per unique id, and every rank applies

        row <- row * (1 - lr * wd) - lr * sign(summed gradient)

    to each id present in the gathered batch, even one whose summed gradient is exactly zero (it still decays,
    as in the official code). The gradient scale does not matter (only its sign), so rank-local means suffice.
    ``bytes_communicated`` counts what this rank sent to the all-gathers (for measuring).
    """

    def __init__(self, table: torch.Tensor, take_grad: Callable[[], tuple[torch.Tensor, torch.Tensor] | None],
                 lr: float = 1e-2, weight_decay: float = 0.1) -> None:
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"lr and weight_decay must be >= 0, got lr={lr}, weight_decay={weight_decay}")
        if table.dim() != 2:
            raise ValueError(f"SparseSignSGD needs a 2-D table (N, D), got shape {tuple(table.shape)}")
        super().__init__([table], dict(lr=lr, weight_decay=weight_decay))
        self.take_grad = take_grad
        self.bytes_communicated = 0

    @torch.no_grad()
    def step(self, closure: Callable | None = None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        taken = self.take_grad()
        if taken is None:
            return loss
        ids, grad = taken
        ids, grad = self._gather(ids.to(torch.long).reshape(-1), grad.reshape(ids.numel(), -1))
        group = self.param_groups[0]
        lr, wd, table = group["lr"], group["weight_decay"], group["params"][0]
        unique_ids, slot_to_row = ids.unique(return_inverse=True)
        summed = torch.zeros(unique_ids.numel(), grad.shape[1], dtype=grad.dtype, device=grad.device)
        summed.index_add_(0, slot_to_row, grad)  # per-id sum over the slots of all ranks
        rows = table[unique_ids]
        rows.mul_(1 - lr * wd).add_(torch.sign(summed).to(rows.dtype), alpha=-lr)
        table[unique_ids] = rows
        return loss

    def _gather(self, ids: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All-gather the batch rows over ranks (rank order, so the order matches one process's batch)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return ids, grad
        world = dist.get_world_size()
        all_ids = [torch.empty_like(ids) for _ in range(world)]
        all_grads = [torch.empty_like(grad) for _ in range(world)]
        dist.all_gather(all_ids, ids.contiguous())
        dist.all_gather(all_grads, grad.contiguous())
        self.bytes_communicated += ids.numel() * ids.element_size() + grad.numel() * grad.element_size()
        return torch.cat(all_ids), torch.cat(all_grads)


def build_optimizer(params: Iterable, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.optimizer`` over ``params`` (tensors or param-group dicts)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam_atan2":
        return AdamATan2(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")  # TrainConfig.validate names the choices
