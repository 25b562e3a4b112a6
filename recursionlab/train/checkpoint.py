"""Checkpoints: atomic writes, safe loads (``weights_only=True``) and a clear refusal of a mismatched model.

A checkpoint is a plain dict::

    {"format": FORMAT, "meta": {"model_class", "parameters": {name: shape}, "config": {...}, ...},
     "step": int, "model": state_dict, ... anything else the trainer saves (optimizers, EMA, RNG, history)}

Writing goes to a temporary file in the same folder, is flushed to disk, then renamed over the target (and the
folder is flushed too, so the rename itself survives a power cut), so a crash or a kill half way never leaves a
corrupt checkpoint behind: the previous one stays intact. A killed write can leave its temporary file
(``.last.pt.XXXX.tmp``); :func:`remove_stale_temporaries` deletes those at the next start.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

FORMAT = "recursionlab-checkpoint-v1"


class CheckpointMismatch(ValueError):
    """The checkpoint belongs to another model or configuration; the message says what differs."""


class CheckpointNotFound(FileNotFoundError):
    """No checkpoint file at the given path (missing, or a folder)."""


class CheckpointWriteError(OSError):
    """The checkpoint folder cannot be written (read-only, no permission, disk full); one line says which."""

    def __str__(self) -> str:
        return str(self.strerror or super().__str__())


def model_signature(model: nn.Module) -> dict:
    """What identifies a model for checkpoint compatibility: its class and every tensor's shape."""
    cls = type(model)
    return {
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        "parameters": {k: list(v.shape) for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)},
    }


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Atomically write ``payload`` (a dict of tensors/plain data) to ``path``; returns the path.

    Raises :class:`CheckpointWriteError` (one line, the previous checkpoint intact) when the folder cannot be
    written or the disk is full.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": FORMAT, **payload}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
        tmp = None
        _fsync_folder(path.parent)
    except OSError as err:
        raise CheckpointWriteError(
            err.errno, f"cannot write the checkpoint {str(path)!r}: {_os_reason(err)}; the previous checkpoint "
            "(if any) is intact"
        ) from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _os_reason(err: OSError) -> str:
    return err.strerror or (os.strerror(err.errno) if err.errno else str(err))


def _fsync_folder(folder: Path) -> None:
    """Flush the folder entry of a just-renamed file to disk (POSIX; Windows cannot open folders)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporary files ``.NAME.*.tmp`` that killed writes of checkpoint ``path`` left behind; returns them.

    Call it only while no other process writes this checkpoint (the trainer does so once, before training).
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp"))
    for tmp in stale:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    return stale


def check_writable(path: str | os.PathLike, need_bytes: int = 0) -> None:
    """Before training: make sure checkpoint ``path`` can be written (its folder exists or can be created, a file
    can be created in it, and about ``need_bytes`` are free). Raises :class:`CheckpointWriteError`."""
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise CheckpointWriteError(
            err.errno, f"cannot write checkpoints to {str(folder)!r}: {_os_reason(err)} (choose another folder "
            "with --out, or set train.checkpoint_path)"
        ) from err
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        raise CheckpointWriteError(
            errno.ENOSPC, f"not enough free space for checkpoints in {str(folder)!r}: {free / 1e6:.1f} MB free, "
            f"a checkpoint needs about {need_bytes / 1e6:.1f} MB (free some space or choose another folder with --out)"
        )


def _peek(path: str | os.PathLike) -> dict | None:
    try:  # memory-mapped: reading a few plain fields of a large checkpoint stays cheap
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return payload if isinstance(payload, dict) and payload.get("format") == FORMAT else None
    except Exception:  # noqa: BLE001 - an unreadable file simply tells nothing; load_checkpoint explains
        return None


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step stored in checkpoint ``path``, or ``None`` if it cannot be read."""
    payload = _peek(path)
    return int(payload["step"]) if payload is not None and "step" in payload else None


def checkpoint_train_config(path: str | os.PathLike) -> dict:
    """The training settings stored in checkpoint ``path`` (``{}`` if it cannot be read)."""
    payload = _peek(path)
    return dict(payload.get("train_config") or {}) if payload is not None else {}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary code runs); checks it is one of ours.

    Raises :class:`CheckpointNotFound` for a missing path or a folder and :class:`CheckpointMismatch` ("not a
    recursionlab checkpoint") for any other file, whatever it holds (random bytes, a foreign or malicious pickle).
    """
    path = require_checkpoint_file(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files: noise here
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated/corrupt file or a foreign pickle: never retry without weights_only
        raise CheckpointMismatch(f"{str(path)!r} is not a recursionlab checkpoint ({_why_unreadable(err)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointMismatch(
            f"{str(path)!r} is not a recursionlab checkpoint (format {found!r}, expected {FORMAT!r})"
        )
    return payload


def require_checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`Path` if it is a file, else :class:`CheckpointNotFound` (missing, or a folder)."""
    path = Path(path)
    if path.is_dir():
        hint = f"; did you mean {str(path / 'last.pt')!r}?" if (path / "last.pt").is_file() else ""
        raise CheckpointNotFound(f"{str(path)!r} is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise CheckpointNotFound(f"no checkpoint at {str(path)!r} (no such file)")
    return path


def _why_unreadable(err: Exception) -> str:
    text = str(err)
    if "Unsupported global" in text:
        return "it refers to Python code, which a checkpoint never does; it was not loaded and nothing in it ran"
    if "zip" in text.lower() or "central directory" in text.lower():
        return "the file is truncated or corrupt"
    return "not a PyTorch checkpoint file, or a damaged one; nothing in it ran"


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
