"""Losses shared by models and the training loop: softmax cross-entropy and the *stablemax* cross-entropy
used by HRM and TRM.

Stablemax (Prieto et al., "Grokking at the edge of numerical stability", arXiv 2501.04697) replaces ``exp`` by
``s(x) = x + 1`` for ``x >= 0`` and ``1 / (1 - x)`` for ``x < 0``; HRM/TRM compute it in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _check_shapes(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree: "
            "expected logits (..., V) and targets (...) with the same leading shape"
        )


def softmax_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of ``logits (..., V)`` against integer ``targets (...)``; positions equal to
    ``ignore_index`` are skipped. ``reduction``: ``"mean"`` over kept positions, ``"sum"``, or ``"none"``
    (shape ``(...)``, 0 where ignored). Computed in float32 even under bf16 autocast."""
    _check_shapes(logits, targets)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"unknown reduction {reduction!r}; allowed: mean, sum, none")
    flat = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=ignore_index,
        reduction=reduction,
    )
    return flat.reshape(targets.shape) if reduction == "none" else flat


def stablemax(x: torch.Tensor) -> torch.Tensor:
    """The stablemax transform ``s(x)``: ``x + 1`` for ``x >= 0``, ``1 / (1 - x)`` for ``x < 0`` (elementwise)."""
    return torch.where(x >= 0, x + 1.0, 1.0 / (1.0 - torch.clamp(x, max=0.0) + 1e-30))


def stablemax_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX, reduction: str = "mean"
) -> torch.Tensor:
    """Stablemax cross-entropy, computed in float64 like HRM/TRM.

    Args:
        logits: ``(..., V)`` scores.
        targets: ``(...)`` integer labels; ``ignore_index`` marks positions without a label.
        reduction: ``"mean"`` over kept positions, ``"sum"``, or ``"none"`` (per position, 0 where ignored).
    """
    _check_shapes(logits, targets)
    s = stablemax(logits.double())
    log_probs = torch.log(s / s.sum(dim=-1, keepdim=True))
    mask = targets != ignore_index
    safe_targets = torch.where(mask, targets, torch.zeros_like(targets))
    nll = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    nll = torch.where(mask, nll, torch.zeros_like(nll))
    if reduction == "none":
        return nll
    if reduction == "sum":
        return nll.sum()
    if reduction == "mean":
        return nll.sum() / mask.sum().clamp(min=1)
    raise ValueError(f"unknown reduction {reduction!r}; allowed: mean, sum, none")
