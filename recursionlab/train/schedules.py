"""Learning-rate schedules as multipliers of the base rate: linear warmup, then constant, cosine or linear decay."""

from __future__ import annotations

import math


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier for the base learning rate at 0-based ``step``.

    Warmup rises linearly from ``1/warmup`` to 1 over ``warmup_steps``; afterwards ``constant`` stays at 1,
    ``cosine`` and ``linear`` decay to ``min_ratio`` at ``total_steps``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - (1 - min_ratio) * progress
    raise ValueError(f"unknown schedule {schedule!r}; allowed: constant, cosine, linear")
