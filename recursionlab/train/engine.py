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

Checkpoints, resume and faults (what the trainer promises):

* **Resume** (``Trainer.load`` / ``--resume``) restores the weights, optimiser state, EMA, history, the step,
  and every process's own state (random streams, logging window, the HRM/TRM training carry) so that an
  interrupted run continues bit-exactly. The configuration of the *new* trainer applies from the resumed step
  on (the CLI builds it from the checkpoint's own training settings plus this command's ``--set train.X``, so
  ``--resume`` alone continues the run as it was configured). A resume **may change** the learning rate,
  weight decay, betas/momentum (written into the optimisers' parameter groups), the schedule (``steps``,
  ``warmup_steps``, ``schedule``, ``min_lr_ratio``: the multiplier is recomputed for the new length at the
  current step), ``grad_clip``, ``ema_decay`` (the average continues with the new decay; turning EMA off drops
  it), the cadences (``log_every``, ``eval_every``, ``checkpoint_every``), ``checkpoint_path``, ``precision``,
  ``device``, ``compile`` and ``progress``. It prints ``resumed from step N`` and every setting that changed.
  A resume **refuses** (:class:`CheckpointMismatch`): another model class, other tensor shapes, any changed
  recipe field outside ``train.`` (model, data and evaluation settings define the run), another optimiser type
  (its state cannot carry over), another ``seed`` (the random streams continue from the checkpoint, a new seed
  would be silently ignored) and turning EMA on for a run that had none. Resuming with a different number of
  processes works but is not bit-exact (each process continues from process 0's carry and random streams; a
  note says so).
* **Never a bad checkpoint**: :meth:`Trainer.save` refuses to write weights, EMA or optimiser state that are
  not finite (:class:`TrainingDiverged`; the last good checkpoint stays); writes are atomic; leftover
  temporaries of killed writes are removed at the next start; the folder is checked for writability and free
  space before the first step.
* **Preemption**: SIGTERM or SIGINT (Ctrl-C) during :meth:`Trainer.fit` stops at the next step boundary (all
  processes agree on which), writes a checkpoint if ``checkpoint_path`` is set and raises
  :class:`TrainingInterrupted` (a ``KeyboardInterrupt``). A second Ctrl-C aborts at once without saving.
* **Under DDP**, a model (or any submodule) with ``may_leave_parameters_unused = True`` -- e.g. a progressive
  loss whose gradient pass skips the input projection -- is wrapped with ``find_unused_parameters=True``.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recursionlab.train.checkpoint import (
    CheckpointMismatch,
    CheckpointWriteError,
    check_compatible,
    check_writable,
    load_checkpoint,
    model_signature,
    remove_stale_temporaries,
    save_checkpoint,
)
from recursionlab.train.config import TrainConfig
from recursionlab.train.device import (
    autocast,
    get_rng_state,
    resolve_device,
    resolve_precision,
    seed_everything,
    set_rng_state,
)
from recursionlab.train.distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_mean,
    broadcast_from_main,
    gather_to_main,
    init_distributed,
    shard_batch,
)
from recursionlab.train.ema import EMA
from recursionlab.train.history import History
from recursionlab.train.optim import build_optimizer
from recursionlab.train.schedules import lr_multiplier


class TrainingDiverged(RuntimeError):
    """The loss, the gradient norm or the weights became NaN/inf; the message says when and what to try."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM/SIGINT stopped :meth:`Trainer.fit` at a step boundary (after writing a checkpoint, if configured).

    Attributes: ``signum`` (the signal), ``step`` (where training stopped), ``checkpoint`` (the path written, or
    ``None``).
    """

    def __init__(self, message: str, signum: int, step: int, checkpoint: str | None) -> None:
        super().__init__(message)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    def __str__(self) -> str:
        return str(self.args[0])


# Settings a resume may not change (see the module docstring); everything else in TrainConfig may.
FIXED_ON_RESUME = {
    "optimizer": "its state does not carry over to another optimiser",
    "seed": "the random streams continue from the checkpoint, so a new seed would be ignored",
}
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def _first_tensor(batch) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for v in values:
        t = _first_tensor(v)
        if t is not None:
            return t
    return None


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

            from recursionlab.train.distributed import ignore_sparse_tensors_in_ddp

            ids = [self.device.index] if self.device.type == "cuda" else None
            ignore_sparse_tensors_in_ddp(self.model)  # sparse tables: their optimizer gathers the batch rows
            # A model whose step may skip some parameters (e.g. Deep Thinking's progressive loss) says so; DDP
            # then looks for unused parameters every step (a small cost paid only where needed).
            unused = any(getattr(m, "may_leave_parameters_unused", False) for m in self.model.modules())
            self._forward_model = DDP(self.model, device_ids=ids, find_unused_parameters=unused)
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
        self.last_checkpoint: tuple[str, int] | None = None  # (path, step) of the last good checkpoint
        self._stop_signal = 0

    # ------------------------------------------------------------------ the loop
    def fit(self) -> History:
        """Train until ``config.steps``; returns the :class:`History` (also ``self.history``)."""
        cfg = self.cfg
        if cfg.checkpoint_path and self.step < cfg.steps:
            self._prepare_checkpoint_folder(cfg.checkpoint_path)
        bar = None
        if _progress_enabled(cfg) and self.dist.is_main and self.step < cfg.steps:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="training", leave=False)
        t0, step0 = time.perf_counter(), self.step
        last_eval_step = -1
        previous_handlers = self._install_signal_handlers()
        try:
            while self.step < cfg.steps:
                self._train_step()
                if self._should_stop():
                    if bar is not None:
                        bar.close()
                        bar = None
                    self._stop()
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
            self._restore_signal_handlers(previous_handlers)
            if bar is not None:
                bar.close()
        if self._window_count:
            self._flush_window()
        if self.eval_fn is not None and last_eval_step != self.step:
            self.evaluate()
        if cfg.checkpoint_path and self.step > step0:
            self.save(cfg.checkpoint_path)
        elapsed = time.perf_counter() - t0
        if self.step > step0:
            self.history.log(self.step, steps_per_s=(self.step - step0) / max(elapsed, 1e-9))
        return self.history

    # ------------------------------------------------------------------ faults: preemption, output folder
    def _install_signal_handlers(self) -> dict:
        """Turn SIGTERM/SIGINT into 'stop at the next step boundary' (main thread only: signals go there)."""
        self._stop_signal = 0
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self._stop_signal and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: abort now, without saving
            self._stop_signal = signum

        previous = {}
        for sig in _STOP_SIGNALS:
            try:
                previous[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):  # pragma: no cover - e.g. an embedded interpreter
                pass
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def _should_stop(self) -> bool:
        # Every process must stop at the same step (checkpoints are collective): agree on the largest signal.
        if self.dist.enabled:
            self._stop_signal = all_reduce_max(self._stop_signal, self.dist)
        return bool(self._stop_signal)

    def _stop(self) -> None:
        signum, path = self._stop_signal, self.cfg.checkpoint_path
        self._stop_signal = 0
        if self._window_count:
            self._flush_window()
        if path:
            self.save(path)
        name = signal.Signals(signum).name
        where = f"checkpoint written to {path}" if path else "no checkpoint_path set, nothing saved"
        raise TrainingInterrupted(
            f"stopped by {name} at step {self.step} of {self.cfg.steps}; {where}", signum, self.step, path
        )

    def checkpoint_nbytes(self) -> int:
        """About how many bytes a checkpoint of this trainer takes (weights, optimiser state, EMA)."""
        total = sum(t.numel() * t.element_size() for t in self.model.state_dict().values() if torch.is_tensor(t))
        for opt in self.optimizers:
            moments = 2 if any(k in opt.defaults for k in ("betas",)) else 1  # Adam-like: two moments
            total += moments * sum(p.numel() * 4 for g in opt.param_groups for p in g["params"])
        if self.ema is not None:
            total += sum(t.numel() * 4 for t in self.ema.shadow.values())
        return total

    def _prepare_checkpoint_folder(self, path: str | os.PathLike) -> None:
        """Before the first step: remove temporaries of killed writes, and fail now (not at the first save) when
        the folder is read-only or too full. Decided on the main process, raised on every process."""
        message = ""
        if self.dist.is_main:
            stale = remove_stale_temporaries(path)
            if stale:
                print(f"removed {len(stale)} unfinished checkpoint file(s) left by an interrupted write "
                      f"({', '.join(p.name for p in stale[:3])})", flush=True)
            try:
                # room for one new checkpoint (the old one stays until the new one is complete)
                check_writable(path, int(1.1 * self.checkpoint_nbytes()) + (1 << 20))
            except CheckpointWriteError as err:
                message = str(err)
        message = broadcast_from_main(message, self.dist)
        if message:
            raise CheckpointWriteError(None, message)

    def _set_lr(self) -> float:
        mult = lr_multiplier(self.step, self.cfg.steps, self.cfg.warmup_steps, self.cfg.schedule, self.cfg.min_lr_ratio)
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * mult
        return self.optimizers[0].param_groups[0]["lr"]

    def _train_step(self) -> None:
        lr = self._set_lr()
        batch = _to_device(shard_batch(self.batch_fn(self.step), self.dist), self.device)
        first = _first_tensor(batch)
        if first is not None and first.dim() > 0 and first.shape[0] == 0:
            raise ValueError(f"batch_fn returned an empty batch at step {self.step}; use batch_size >= 1")
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
        if self.last_checkpoint is not None:
            kept = f" The last good checkpoint is {self.last_checkpoint[0]} (step {self.last_checkpoint[1]})."
        elif self.cfg.checkpoint_path:
            kept = " No checkpoint was written."
        else:
            kept = ""
        return (
            f"training diverged at step {self.step}: {what}. Learning rate {lr:.3g}; recent logged losses "
            f"{[round(v, 4) for v in recent]}. Try a lower learning rate, gradient clipping (grad_clip), "
            f"a longer warmup, or fp32 precision; check the inputs for NaN.{kept}"
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
    def _rank_state(self) -> dict:
        """What differs between processes: random streams, the logging window and the modules' extra state
        (the HRM/TRM training carry). Process 0's extra state also lives in ``"model"``."""
        return {
            "rng": get_rng_state(),
            "window": {"sums": dict(self._window), "count": self._window_count},
            "extra": {k: v for k, v in self.model.state_dict().items() if k.endswith("_extra_state")},
        }

    def state_dict(self) -> dict:
        rank_state = self._rank_state()
        return {
            "meta": {**model_signature(self.model), "config": self.meta.get("config", {}), **self.meta},
            "step": self.step,
            "train_config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rank_state["rng"],
            "history": self.history.to_dict(),
            "window": rank_state["window"],
            "world_size": self.dist.world_size,
            "ranks": [{**rank_state, "extra": {}}],
        }

    def _nonfinite(self) -> list[str]:
        """Names of weights, EMA averages and optimiser-state tensors holding NaN/inf (checked in one sync)."""
        named = [(k, v) for k, v in self.model.state_dict().items() if torch.is_tensor(v) and v.is_floating_point()]
        if self.ema is not None:
            named += [(f"ema:{k}", v) for k, v in self.ema.shadow.items()]
        for i, opt in enumerate(self.optimizers):
            for j, state in enumerate(opt.state.values()):
                named += [(f"optimizer {i} state {j}:{k}", v) for k, v in state.items()
                          if torch.is_tensor(v) and v.is_floating_point()]
        if not named:
            return []
        # One flag per tensor, gathered on one device: the tensors live on several (Adam's step counters stay on the
        # CPU while the weights are on the GPU), and torch.stack needs one.
        flags = [torch.isfinite(v).all() for _, v in named]
        finite = torch.stack([f.to(flags[0].device) for f in flags]).cpu()
        return [name for (name, _), ok in zip(named, finite.tolist()) if not ok]

    def save(self, path: str | os.PathLike) -> Path | None:
        """Write a checkpoint (atomic; collective under DDP: every process calls it, the main one writes).

        Raises :class:`TrainingDiverged` instead of writing non-finite weights (the previous checkpoint stays).
        """
        bad = self._nonfinite()
        if bad:
            lr = self.optimizers[0].param_groups[0]["lr"]
            raise TrainingDiverged(self._diagnosis(
                f"{len(bad)} tensors are no longer finite ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}), "
                f"so no checkpoint was written to {path}", lr))
        ranks = gather_to_main(self._rank_state(), self.dist)
        if not self.dist.is_main:
            return None
        payload = self.state_dict()
        if ranks is not None:
            ranks[0] = {**ranks[0], "extra": {}}  # process 0's extra state is the one in "model"
            payload["ranks"] = ranks
        written = save_checkpoint(path, payload)
        self.last_checkpoint = (str(written), self.step)
        return written

    def load(self, path: str | os.PathLike, verbose: bool = True) -> dict[str, tuple]:
        """Resume from ``path``: model, optimisers, EMA, history, step and this process's own state (random
        streams, logging window, training carry), under the *current* configuration (see the module docstring
        for what a resume may change and what it refuses).

        Returns the training settings that changed, ``{name: (checkpoint value, new value)}``; with ``verbose``
        the main process prints ``resumed from step N`` and these changes.
        Raises :class:`CheckpointMismatch` for another model, configuration, optimiser type or seed.
        """
        payload = load_checkpoint(path, map_location=self.device)
        check_compatible(payload, self.model, self.meta.get("config"), path=str(path))
        saved_cfg = dict(payload.get("train_config") or {})
        now_cfg = self.cfg.to_dict()
        for key, why in FIXED_ON_RESUME.items():
            if key in saved_cfg and saved_cfg[key] != now_cfg[key]:
                raise CheckpointMismatch(
                    f"{path} was trained with train.{key}={saved_cfg[key]!r}; a resume cannot change it to "
                    f"{now_cfg[key]!r} ({why}); start a new run instead (--overwrite or another --out)"
                )
        if len(payload["optimizers"]) != len(self.optimizers):
            raise CheckpointMismatch(
                f"{path} holds {len(payload['optimizers'])} optimiser states, this trainer has {len(self.optimizers)}"
            )
        if self.ema is not None and payload.get("ema") is None:
            raise CheckpointMismatch(
                f"{path} has no EMA state but this run uses ema_decay={self.cfg.ema_decay}; a resume cannot turn "
                "EMA on (start a new run, or set train.ema_decay=None)"
            )
        ranks = payload.get("ranks") or []
        saved_world = int(payload.get("world_size", 1))
        mine = ranks[self.dist.rank] if saved_world == self.dist.world_size and len(ranks) > self.dist.rank else None
        model_state = dict(payload["model"])
        if mine is not None:
            model_state.update(mine.get("extra", {}))
        self.model.load_state_dict(model_state)
        for opt, state in zip(self.optimizers, payload["optimizers"]):
            # The freshly built groups hold the new run's hyperparameters; the checkpoint supplies the state.
            fresh = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            try:
                opt.load_state_dict(state)
            except (ValueError, KeyError) as err:
                raise CheckpointMismatch(f"{path}: the optimiser state does not fit this run ({err})") from None
            for group, hyper in zip(opt.param_groups, fresh):
                group.update(hyper)
        if self.ema is not None:
            self.ema.load_state_dict(payload["ema"])
            self.ema.decay = float(self.cfg.ema_decay)
        set_rng_state(mine["rng"] if mine is not None else payload["rng"])
        window = mine["window"] if mine is not None and "window" in mine else payload["window"]
        self.history = History(payload["history"])
        self._window = dict(window["sums"])
        self._window_count = int(window["count"])
        self.step = int(payload["step"])
        self.last_checkpoint = (str(path), self.step)
        changes = {k: (saved_cfg[k], v) for k, v in now_cfg.items() if k in saved_cfg and saved_cfg[k] != v}
        if verbose and self.dist.is_main:
            total = f" of {self.cfg.steps}" if self.step < self.cfg.steps else ""
            print(f"resumed from step {self.step}{total} ({path})", flush=True)
            if changes:
                print("changed on resume: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()),
                      flush=True)
            if saved_world != self.dist.world_size:
                print(f"note: {path} was written by {saved_world} process(es) and this run has "
                      f"{self.dist.world_size}: every process continues from process 0's carry and random streams "
                      "(the resume is not bit-exact)", flush=True)
        return changes


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
