"""Counting compute: the FLOPs of one training or inference step, measured rather than estimated.

``torch.utils.flop_counter.FlopCounterMode`` intercepts every matmul/convolution/attention kernel, so the count
includes recursion, halting loops and routers exactly as they ran. Used to match training compute across models
(the capstone) and to report model-FLOPs utilisation (the benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from recursionlab.train.engine import _as_step_output


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of everything ``fn()`` runs (forward and, if ``fn`` calls it, backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def op_flops(func: Any, args: tuple, kwargs: dict, out: Any) -> int:
    """FLOPs of one aten op ``func(*args, **kwargs) -> out`` exactly as :class:`FlopCounterMode` counts them
    (matmul, convolution and attention kernels; 0 for every other op). For dispatch modes that count FLOPs
    themselves, e.g. the cost planner's fake-tensor step (:mod:`recursionlab.train.plan`)."""
    formula = flop_registry.get(getattr(func, "_overloadpacket", func))
    return 0 if formula is None else int(formula(*args, **kwargs, out_val=out))


def training_step_flops(model: nn.Module, loss_fn: Callable, batch: Any) -> int:
    """FLOPs of one training step (forward + backward) of ``loss_fn(model, batch)``; gradients are discarded."""

    def step() -> None:
        out = _as_step_output(loss_fn(model, batch))
        out.loss.backward()

    was_training = model.training
    model.train()
    try:
        flops = count_flops(step)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return flops


def steps_for_budget(total_flops: float, flops_per_step: int, min_steps: int = 1) -> int:
    """How many training steps fit in ``total_flops`` (at least ``min_steps``)."""
    if flops_per_step <= 0:
        raise ValueError(f"flops_per_step must be positive, got {flops_per_step}")
    return max(min_steps, int(total_flops // flops_per_step))


@torch.no_grad()
def inference_flops(model: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """FLOPs of one forward call ``model(*inputs, **kwargs)`` in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return count_flops(lambda: model(*inputs, **kwargs))
    finally:
        model.train(was_training)
