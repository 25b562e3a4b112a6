"""Checkpoints: atomic writes, safe loads (``weights_only=True``) and a clear refusal of a mismatched model.

A checkpoint is a plain dict::

    {"format": FORMAT, "meta": {"model_class", "parameters": {name: shape}, "config": {...}, ...},
     "step": int, "model": state_dict, ... anything else the trainer saves (optimizers, EMA, RNG, history)}

Writing goes to a temporary file in the same folder, is flushed to disk, then renamed over the target, so a
crash or a kill half way never leaves a corrupt checkpoint behind: the previous one stays intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

FORMAT = "recursionlab-checkpoint-v1"


class CheckpointMismatch(ValueError):
    """The checkpoint belongs to another model or configuration; the message says what differs."""


def model_signature(model: nn.Module) -> dict:
    """What identifies a model for checkpoint compatibility: its class and every tensor's shape."""
    cls = type(model)
    return {
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        "parameters": {k: list(v.shape) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)},
    }


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Atomically write ``payload`` (a dict of tensors/plain data) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": FORMAT, **payload}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary code runs); checks it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated/corrupt file or a foreign pickle
        raise CheckpointMismatch(f"{str(path)!r} is not a readable recursionlab checkpoint: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointMismatch(
            f"{str(path)!r} is not a recursionlab checkpoint (format {found!r}, expected {FORMAT!r})"
        )
    return payload


def check_compatible(payload: dict, model: nn.Module, config: dict | None = None, path: str = "checkpoint") -> None:
    """Raise :class:`CheckpointMismatch` listing how ``payload`` differs from ``model`` (and ``config``)."""
    meta = payload.get("meta", {})
    mine = model_signature(model)
    problems: list[str] = []
    if meta.get("model_class") != mine["model_class"]:
        problems.append(f"model class: checkpoint has {meta.get('model_class')}, this model is {mine['model_class']}")
    theirs = meta.get("parameters", {})
    missing = sorted(set(mine["parameters"]) - set(theirs))
    extra = sorted(set(theirs) - set(mine["parameters"]))
    if missing:
        problems.append(f"tensors missing from the checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"tensors the model does not have: {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    shapes = [
        f"{k}: checkpoint {theirs[k]} vs model {mine['parameters'][k]}"
        for k in sorted(set(theirs) & set(mine["parameters"]))
        if list(theirs[k]) != list(mine["parameters"][k])
    ]
    if shapes:
        problems.append("shape differences: " + "; ".join(shapes[:5]) + (" ..." if len(shapes) > 5 else ""))
    if config is not None and "config" in meta:
        diffs = [
            f"{k}: checkpoint {meta['config'].get(k)!r} vs now {v!r}"
            for k, v in _flatten(config).items()
            if k in _flatten(meta["config"]) and _flatten(meta["config"])[k] != v and k in _MODEL_KEYS(config)
        ]
        if diffs:
            problems.append("configuration differences: " + "; ".join(diffs[:8]))
    if problems:
        raise CheckpointMismatch(f"{path} does not fit this model:\n  - " + "\n  - ".join(problems))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def _MODEL_KEYS(config: dict) -> set[str]:  # noqa: N802 - reads like a constant set
    """Keys whose change makes a checkpoint unusable: everything outside the ``train.`` section
    (training hyperparameters such as steps or lr may change on resume; the model's shape may not)."""
    return {k for k in _flatten(config) if not k.startswith("train.")}
