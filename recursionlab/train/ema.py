"""An exponential moving average of a model's weights (TRM evaluates and saves the EMA copy)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from recursionlab.train.distributed import sparse_tensor_names


class EMA:
    """Shadow copy ``s <- decay * s + (1 - decay) * p`` of every trainable parameter, updated after each step.

    ``with ema.swapped(model): ...`` temporarily loads the averaged weights into ``model`` (for evaluation).
    Buffers are never averaged, and neither is any name in ``exclude`` or in the model's
    ``ddp_ignored_names()`` (HRM/TRM's sparse puzzle-embedding table: the official EMA does not average it, and
    an averaged table lags behind the rows the sparse optimizer just wrote).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, exclude: Iterable[str] = ()) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.excluded = set(exclude) | sparse_tensor_names(model)
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone().float()
            for name, p in model.named_parameters()
            if p.requires_grad and name not in self.excluded
        }
        # names an older checkpoint's EMA may hold although they are not averaged now (load_state_dict skips them)
        self._not_averaged = self.excluded | {name for name, _ in model.named_buffers()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach().float(), 1 - self.decay)

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Load the EMA weights into ``model`` for the duration of the block, then restore the live weights."""
        params = dict(model.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, s in self.shadow.items():
                params[name].copy_(s.to(params[name].dtype))
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, b in backup.items():
                    params[name].copy_(b)

    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters with the averaged ones (e.g. before saving a final model)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, s in self.shadow.items():
                params[name].copy_(s.to(params[name].dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        shadow = {k: v for k, v in state["shadow"].items() if k not in self._not_averaged}
        missing = set(self.shadow) ^ set(shadow)
        if missing:
            raise ValueError(f"EMA state does not match the model: differing parameters {sorted(missing)[:5]}")
        self.decay = float(state["decay"])
        for k, v in shadow.items():
            self.shadow[k].copy_(v)

