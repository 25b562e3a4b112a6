"""Checkpoints: atomic writes, weights_only loading, and a clear refusal of a checkpoint from another model."""

import multiprocessing as mp
import os
import pickle

import pytest
import torch
from torch import nn

from recursionlab.train import CheckpointMismatch, load_checkpoint, save_checkpoint
from recursionlab.train.recipes import build_trainer, get_config


def _killed_writer(path: str) -> None:
    """Start writing a checkpoint, then die (like a kill -9) half way through the write."""
    real_save = torch.save

    def half_save(obj, fh, *a, **kw):
        fh.write(b"PK\x03\x04 half a zip file")
        fh.flush()
        os._exit(9)

    torch.save = half_save
    try:
        save_checkpoint(path, {"step": 2, "model": {"w": torch.ones(1000)}})
    finally:
        torch.save = real_save


def test_killed_write_leaves_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "model": {"w": torch.zeros(3)}})
    proc = mp.get_context("fork").Process(target=_killed_writer, args=(str(path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 9
    payload = load_checkpoint(path)
    assert payload["step"] == 1
    torch.testing.assert_close(payload["model"]["w"], torch.zeros(3))


def test_exception_during_write_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loading_is_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": "recursionlab-checkpoint-v1", "x": _Evil()}, fh)
    with pytest.raises(CheckpointMismatch, match="not a recursionlab checkpoint"):
        load_checkpoint(path)
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointMismatch, match="not a recursionlab checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_from_other_model_is_refused(tmp_path):
    small = build_trainer("tiny-classifier", get_config("tiny-classifier", "smoke", {"train.steps": 1}))
    small.fit()
    small.save(tmp_path / "small.pt")
    wide = build_trainer("tiny-classifier", get_config("tiny-classifier", "smoke", {"hidden": 48, "train.steps": 1}))
    with pytest.raises(CheckpointMismatch) as err:
        wide.load(tmp_path / "small.pt")
    msg = str(err.value)
    assert "shape differences" in msg and "net.0.weight" in msg and "hidden" in msg

    from recursionlab.train import TrainConfig, Trainer

    other = Trainer(nn.Linear(16, 2), lambda m, b: m(b[0]).sum(), lambda s: (torch.zeros(2, 16),),
                    TrainConfig(steps=1, progress=False))
    with pytest.raises(CheckpointMismatch, match="model class"):
        other.load(tmp_path / "small.pt")
    # changing only a training hyperparameter is allowed on resume
    longer = build_trainer("tiny-classifier", get_config("tiny-classifier", "smoke", {"train.steps": 5}))
    longer.load(tmp_path / "small.pt")
    assert longer.step == 1
