"""The one training loop of the course.

Every lesson, recipe and test trains through :class:`Trainer` (or its shortcut :func:`fit`). The loop knows a
model only through two small functions:

* ``loss_fn(model, batch) -> StepOutput(loss, metrics)`` -- runs the forward (call ``model(...)`` so DDP works);
* ``batch_fn(step) -> batch`` -- a *deterministic* function of the global step (tensor / tuple / list / dict of
  tensors, batch first). Because the batch is a function of the step, an interrupted run resumes exactly and
  ``torchrun`` ranks simply take their slice of the same global batch.

What the loop adds: device placement (CUDA / MPS / CPU), bf16 autocast on CUDA, optional ``torch.compile``,
DDP, warmup + constant/cosine schedules for every optimiser, gradient clipping, an EMA copy of the weights,
a metrics :class:`History`, ``tqdm`` progress, evaluation callbacks, atomic checkpoints and exact resume, and a
diagnosis instead of silent garbage when the loss or gradients stop being finite.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recursionlab.train.checkpoint import check_compatible, load_checkpoint, model_signature, save_checkpoint
from recursionlab.train.config import TrainConfig
from recursionlab.train.device import (
    autocast,
    get_rng_state,
    resolve_device,
    resolve_precision,
    seed_everything,
    set_rng_state,
)
from recursionlab.train.distributed import DistInfo, all_reduce_mean, init_distributed, shard_batch
from recursionlab.train.ema import EMA
from recursionlab.train.history import History
from recursionlab.train.optim import build_optimizer
from recursionlab.train.schedules import lr_multiplier


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN/inf; the message says when and what to try."""


@dataclass
class StepOutput:
    """What a loss function returns: the scalar ``loss`` to minimise and scalar ``metrics`` to log."""

    loss: torch.Tensor
    metrics: dict[str, Any] = field(default_factory=dict)


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _as_step_output(out) -> StepOutput:
    if isinstance(out, StepOutput):
        return out
    if isinstance(out, torch.Tensor):
        return StepOutput(out, {})
    if isinstance(out, tuple) and len(out) == 2:
        return StepOutput(out[0], dict(out[1]))
    raise TypeError(
        f"loss_fn must return StepOutput, a scalar tensor or (loss, metrics); got {type(out).__name__}"
    )


def _progress_enabled(cfg: TrainConfig) -> bool:
    # nbgrader's autograder gives 0 points to a graded cell with any stderr output, where tqdm draws its bars
    return cfg.progress and os.environ.get("RECURSIONLAB_PROGRESS", "1") != "0" and not os.environ.get(
        "NBGRADER_EXECUTION")


class Trainer:
    """Train ``model`` with ``loss_fn`` on ``batch_fn`` batches under ``config`` (see the module docstring).

    Args:
        model: any ``nn.Module``; moved to the chosen device.
        loss_fn: ``(model, batch) -> StepOutput | loss | (loss, metrics)``.
        batch_fn: ``step -> batch`` (deterministic in ``step``; produced on CPU).
        config: :class:`TrainConfig`.
        eval_fn: ``model -> dict[str, float]``, run under ``no_grad`` in eval mode (with EMA weights if enabled)
            every ``eval_every`` steps and at the end.
        param_groups: ``model -> list[dict]`` of optimiser parameter groups (default: all trainable parameters).
        extra_optimizers: ``model -> list[Optimizer]`` trained in step with the main one, same LR schedule.
        callbacks: functions called with the trainer at every logging step.
        meta: extra plain data stored in checkpoints (e.g. the recipe name and its config).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        batch_fn: Callable[[int], Any],
        config: TrainConfig,
        eval_fn: Callable[[nn.Module], dict] | None = None,
        param_groups: Callable[[nn.Module], list[dict]] | None = None,
        extra_optimizers: Callable[[nn.Module], list[torch.optim.Optimizer]] | None = None,
        callbacks: Iterable[Callable[[Trainer], None]] = (),
        meta: dict | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        config.validate()
        self.cfg = config
        self.loss_fn = loss_fn
        self.batch_fn = batch_fn
        self.eval_fn = eval_fn
        self.callbacks = list(callbacks)
        self.meta = dict(meta or {})
        self.dist = DistInfo.from_env()
        self.device = resolve_device(config.device, self.dist.local_rank)
        self.dtype = resolve_precision(config.precision, self.device)
        init_distributed(self.dist, self.device)
        seed_everything(config.seed)

        self.model = model.to(self.device)
        self._forward_model: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._forward_model = DDP(self.model, device_ids=ids)
        if config.compile:
            self._forward_model = torch.compile(self._forward_model)

        groups = param_groups(self.model) if param_groups else [p for p in self.model.parameters() if p.requires_grad]
        self.optimizers: list[torch.optim.Optimizer] = [build_optimizer(groups, config)]
        if extra_optimizers is not None:
            self.optimizers += list(extra_optimizers(self.model))
        for opt in self.optimizers:
            for g in opt.param_groups:
                g.setdefault("base_lr", g["lr"])
        self._params = [p for opt in self.optimizers for g in opt.param_groups for p in g["params"]]
        self.ema = EMA(self.model, config.ema_decay) if config.ema_decay else None
        self.step = 0
        self.history = History()
        self._window: dict[str, float] = {}
        self._window_count = 0
        self.last_eval: dict[str, float] = {}

    # ------------------------------------------------------------------ the loop
    def fit(self) -> History:
        """Train until ``config.steps``; returns the :class:`History` (also ``self.history``)."""
        cfg = self.cfg
        bar = None
        if _progress_enabled(cfg) and self.dist.is_main and self.step < cfg.steps:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="training", leave=False)
        t0, step0 = time.perf_counter(), self.step
        last_eval_step = -1
        try:
            while self.step < cfg.steps:
                self._train_step()
                if bar is not None:
                    bar.update(1)
                done = self.step == cfg.steps
                if cfg.log_every and (self.step % cfg.log_every == 0 or done):
                    self._flush_window()
                    if bar is not None:
                        bar.set_postfix(loss=f"{self.history.last('loss'):.4f}")
                    for cb in self.callbacks:
                        cb(self)
                if self.eval_fn is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                    self.evaluate()
                    last_eval_step = self.step
                if cfg.checkpoint_path and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save(cfg.checkpoint_path)
        finally:
            if bar is not None:
                bar.close()
        if self._window_count:
            self._flush_window()
        if self.eval_fn is not None and last_eval_step != self.step:
            self.evaluate()
        if cfg.checkpoint_path:
            self.save(cfg.checkpoint_path)
        elapsed = time.perf_counter() - t0
        if self.step > step0:
            self.history.log(self.step, steps_per_s=(self.step - step0) / max(elapsed, 1e-9))
        return self.history

    def _set_lr(self) -> float:
        mult = lr_multiplier(self.step, self.cfg.steps, self.cfg.warmup_steps, self.cfg.schedule, self.cfg.min_lr_ratio)
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * mult
        return self.optimizers[0].param_groups[0]["lr"]

    def _train_step(self) -> None:
        lr = self._set_lr()
        batch = _to_device(shard_batch(self.batch_fn(self.step), self.dist), self.device)
        self.model.train()
        with autocast(self.device, self.dtype):
            out = _as_step_output(self.loss_fn(self._forward_model, batch))
        loss = out.loss
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}")
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise TrainingDiverged(self._diagnosis(f"the loss is {loss_value}", lr))
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self._params if p.grad is not None]
        if self.cfg.grad_clip is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.detach().float().norm() for p in params])))\
                if params else 0.0
        if not math.isfinite(grad_norm):
            raise TrainingDiverged(self._diagnosis(f"the gradient norm is {grad_norm} (loss {loss_value:.4g})", lr))
        for opt in self.optimizers:
            opt.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self._accumulate({"loss": loss_value, "lr": lr, "grad_norm": grad_norm, **out.metrics})

    def _diagnosis(self, what: str, lr: float) -> str:
        recent = self.history.series("loss")[1][-3:] if "loss" in self.history else []
        return (
            f"training diverged at step {self.step}: {what}. Learning rate {lr:.3g}; recent logged losses "
            f"{[round(v, 4) for v in recent]}. Try a lower learning rate, gradient clipping (grad_clip), "
            "a longer warmup, or fp32 precision; check the inputs for NaN."
        )

    def _accumulate(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self._window[k] = self._window.get(k, 0.0) + float(v)
        self._window_count += 1

    def _flush_window(self) -> None:
        means = {k: v / self._window_count for k, v in self._window.items()}
        means = all_reduce_mean(means, self.dist)
        self.history.log(self.step, **means)
        self._window, self._window_count = {}, 0

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Run ``eval_fn`` (EMA weights if enabled) and log its metrics."""
        if self.eval_fn is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        try:
            if self.ema is not None:
                with self.ema.swapped(self.model):
                    result = self.eval_fn(self.model)
            else:
                result = self.eval_fn(self.model)
        finally:
            self.model.train(was_training)
        result = {k: float(v) for k, v in (result or {}).items()}
        self.history.log(self.step, **result)
        self.last_eval = result
        return result

    def eval_model(self) -> nn.Module:
        """The model to use after training: with EMA, a copy of the model holding the averaged weights."""
        if self.ema is None:
            return self.model
        import copy

        clone = copy.deepcopy(self.model)
        self.ema.copy_to(clone)
        return clone

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "meta": {**model_signature(self.model), "config": self.meta.get("config", {}), **self.meta},
            "step": self.step,
            "train_config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": get_rng_state(),
            "history": self.history.to_dict(),
            "window": {"sums": dict(self._window), "count": self._window_count},
        }

    def save(self, path: str | os.PathLike) -> Path | None:
        """Write a checkpoint (main process only; atomic)."""
        if not self.dist.is_main:
            return None
        return save_checkpoint(path, self.state_dict())

    def load(self, path: str | os.PathLike) -> None:
        """Restore model, optimisers, schedule position, EMA, RNG states, history and step from ``path``.

        Refuses (``CheckpointMismatch``) a checkpoint from another model or model configuration.
        """
        payload = load_checkpoint(path, map_location=self.device)
        check_compatible(payload, self.model, self.meta.get("config"), path=str(path))
        self.model.load_state_dict(payload["model"])
        if len(payload["optimizers"]) != len(self.optimizers):
            raise ValueError(
                f"{path} holds {len(payload['optimizers'])} optimiser states, this trainer has {len(self.optimizers)}"
            )
        for opt, state in zip(self.optimizers, payload["optimizers"]):
            opt.load_state_dict(state)
            for g in opt.param_groups:
                g.setdefault("base_lr", g["lr"])
        if self.ema is not None:
            if payload.get("ema") is None:
                raise ValueError(f"{path} has no EMA state but this run uses ema_decay={self.cfg.ema_decay}")
            self.ema.load_state_dict(payload["ema"])
        set_rng_state(payload["rng"])
        self.history = History(payload["history"])
        self._window = dict(payload["window"]["sums"])
        self._window_count = int(payload["window"]["count"])
        self.step = int(payload["step"])


def fit(
    model: nn.Module,
    loss_fn: Callable,
    batch_fn: Callable[[int], Any],
    config: TrainConfig,
    eval_fn: Callable[[nn.Module], dict] | None = None,
    resume: str | os.PathLike | None = None,
    **trainer_kwargs,
) -> History:
    """Train ``model`` in place and return its :class:`History` (see :class:`Trainer` for the arguments)."""
    trainer = Trainer(model, loss_fn, batch_fn, config, eval_fn=eval_fn, **trainer_kwargs)
    if resume is not None:
        trainer.load(resume)
    return trainer.fit()
