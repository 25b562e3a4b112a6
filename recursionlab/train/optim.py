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

    HRM/TRM train their sparse puzzle-embedding table this way ("Adam is close to sign-SGD when gradients are
    very sparse"). Rows whose gradient is exactly zero are left untouched, so only the embeddings of puzzles in
    the batch move (and decay).
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
