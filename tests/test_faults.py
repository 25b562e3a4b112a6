"""Fault injection: the faults a user meets (a changed setting on resume, divergence, a re-run over a finished
run, preemption, bad input, a foreign file, a read-only or full disk, a killed write) and what the trainer must
do about each (issue 15). Tiny recipes at smoke, in process; the two-process cases are in test_faults_ddp.py."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat

import pytest
import torch

from recursionlab.train import checkpoint as ckpt_module
from recursionlab.train.checkpoint import CheckpointMismatch, load_checkpoint
from recursionlab.train.cli import main
from recursionlab.train.engine import Trainer, TrainingDiverged, TrainingInterrupted
from recursionlab.train.recipes import build_trainer, get_config, list_recipes, shown_config


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _tiny(out, steps: int, *extra: str) -> list[str]:
    return ["train", "tiny-classifier", "--profile", "smoke", "--out", str(out), "--set", f"train.steps={steps}",
            "--set", "train.eval_every=0", *extra]


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _trainer(name: str, tmp_path=None, **overrides) -> Trainer:
    sets = {"train.eval_every": 0, "train.progress": False, **overrides}
    if tmp_path is not None:
        sets["train.checkpoint_path"] = str(tmp_path / "last.pt")
    return build_trainer(name, get_config(name, "smoke", sets))


# ------------------------------------------------------------------ 1. resume semantics
def test_resume_applies_new_hyperparameters_and_says_what_changed(tmp_path, capsys):
    first = _trainer("tiny-classifier", tmp_path, **{"train.steps": 3})
    first.fit()
    before = _flat(first.model)
    sets = {"train.steps": 5, "train.lr": 0.0, "train.weight_decay": 0.5, "train.betas": "0.8,0.9"}
    resumed = _trainer("tiny-classifier", tmp_path, **sets)
    changes = resumed.load(tmp_path / "last.pt")
    out = capsys.readouterr().out
    assert "resumed from step 3 of 5" in out and "changed on resume:" in out and "lr 0.01 -> 0.0" in out
    assert set(changes) >= {"steps", "lr", "weight_decay", "betas"}
    group = resumed.optimizers[0].param_groups[0]
    assert group["base_lr"] == 0.0 and group["weight_decay"] == 0.5 and tuple(group["betas"]) == (0.8, 0.9)
    assert resumed.optimizers[0].state  # the Adam moments did come from the checkpoint
    resumed.fit()
    assert resumed.step == 5
    torch.testing.assert_close(_flat(resumed.model), before, rtol=0, atol=0)  # lr 0: the weights stay put
    assert load_checkpoint(tmp_path / "last.pt")["train_config"]["lr"] == 0.0  # and the record is the truth


def test_cli_resume_continues_the_run_as_configured_unless_told(tmp_path, capsys):
    assert _cli(capsys, *_tiny(tmp_path, 2, "--set", "train.lr=0.005"))[0] == 0
    path = str(tmp_path / "last.pt")
    base = ["train", "tiny-classifier", "--profile", "smoke", "--resume", path]  # --out: the folder of --resume
    rc, out, _ = _cli(capsys, *base, "--set", "train.steps=3")
    assert rc == 0 and "resumed from step 2 of 3" in out and "changed on resume: steps 2 -> 3" in out
    assert "lr" not in out.split("changed on resume:")[1].splitlines()[0]  # the run's lr 0.005 continues
    assert load_checkpoint(path)["train_config"]["lr"] == 0.005 and load_checkpoint(path)["step"] == 3
    rc, out, _ = _cli(capsys, *base)
    assert rc == 0 and "nothing to do" in out and "changed on resume" not in out


def test_resume_refuses_another_optimizer_seed_or_model(tmp_path):
    _trainer("tiny-classifier", tmp_path, **{"train.steps": 1}).fit()
    path = tmp_path / "last.pt"
    with pytest.raises(CheckpointMismatch, match="train.optimizer='adamw'.*cannot change it to 'sgd'"):
        _trainer("tiny-classifier", **{"train.optimizer": "sgd"}).load(path)
    with pytest.raises(CheckpointMismatch, match="train.seed"):
        _trainer("tiny-classifier", **{"train.seed": 1}).load(path)
    with pytest.raises(CheckpointMismatch, match="hidden"):
        _trainer("tiny-classifier", hidden=8).load(path)
    with pytest.raises(CheckpointMismatch, match="cannot turn EMA on"):
        _trainer("tiny-classifier", **{"train.ema_decay": 0.9}).load(path)


# ------------------------------------------------------------------ 2. divergence never writes a checkpoint
def test_non_finite_weights_are_never_saved(tmp_path):
    # The loss (w * x) and its gradient (x) are finite at every step, but the second update overflows w to -inf.
    from recursionlab.train import TrainConfig

    cfg = TrainConfig(steps=2, lr=1e10, optimizer="sgd", momentum=0.0, grad_clip=None, progress=False,
                      checkpoint_path=str(tmp_path / "last.pt"), checkpoint_every=1)
    trainer = Trainer(torch.nn.Linear(1, 1, bias=False), lambda m, x: m(x).sum(),
                      lambda step: torch.full((1, 1), 1e-12 if step == 0 else 1e30), cfg)
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit()
    msg = str(err.value)
    assert "diverged at step 2" in msg and "no longer finite (weight" in msg and "no checkpoint was written" in msg
    assert f"last good checkpoint is {tmp_path / 'last.pt'} (step 1)" in msg
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["step"] == 1 and torch.isfinite(kept["model"]["weight"]).all()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_divergence_in_the_cli_is_one_line_naming_the_last_good_checkpoint(tmp_path, capsys):
    assert _cli(capsys, *_tiny(tmp_path, 2))[0] == 0
    path = tmp_path / "last.pt"
    rc, _, err = _cli(capsys, *_tiny(tmp_path, 8, "--set", "train.lr=1e37", "--resume", str(path)))
    line = _one_line(err)
    assert rc == 3 and line.startswith("error: training diverged at step") and "last good checkpoint is" in line
    kept = load_checkpoint(path)
    assert all(torch.isfinite(v).all() for v in kept["model"].values())


# ------------------------------------------------------------------ 3. no silent overwrite, no empty runs
def test_existing_run_is_not_overwritten_without_being_asked(tmp_path, capsys):
    rc, out, _ = _cli(capsys, *_tiny(tmp_path, 4))
    assert rc == 0 and "every 1 steps" in out  # the cadence train uses (steps // 10, at least 1)
    path = tmp_path / "last.pt"
    rc, _, err = _cli(capsys, *_tiny(tmp_path, 2))
    assert rc == 2 and "already holds a run at step 4" in _one_line(err) and "--overwrite" in err
    rc, _, err = _cli(capsys, *_tiny(tmp_path, 0))
    assert rc == 2 and "steps must be >= 1, got 0" in _one_line(err)
    assert load_checkpoint(path)["step"] == 4
    assert _cli(capsys, *_tiny(tmp_path, 2, "--overwrite"))[0] == 0
    assert load_checkpoint(path)["step"] == 2
    # show prints the checkpoint path and cadence train uses
    rc, out, _ = _cli(capsys, "show", "tiny-classifier", "--profile", "smoke", "--out", str(tmp_path))
    shown = json.loads(out)["train"]
    assert shown["checkpoint_path"] == str(path) and shown["checkpoint_every"] == 60 // 10


# ------------------------------------------------------------------ 5. preemption
def _signal_at(trainer: Trainer, step: int, signum: int) -> None:
    batch_fn = trainer.batch_fn

    def signalling_batch_fn(s):
        if s == step:
            os.kill(os.getpid(), signum)  # arrives mid-step, like a scheduler's SIGTERM
        return batch_fn(s)

    trainer.batch_fn = signalling_batch_fn


def test_sigterm_checkpoints_at_the_step_boundary_and_resumes_bit_exactly(tmp_path):
    # trm-sudoku: carry, EMA and a second optimizer all have to come back exactly
    straight = _trainer("trm-sudoku", **{"train.steps": 5})
    straight.fit()
    stopped = _trainer("trm-sudoku", tmp_path, **{"train.steps": 5})
    _signal_at(stopped, 1, signal.SIGTERM)
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as err:
        stopped.fit()
    assert err.value.step == 2 and err.value.signum == signal.SIGTERM
    assert "stopped by SIGTERM at step 2 of 5" in str(err.value)
    assert signal.getsignal(signal.SIGTERM) is handler_before  # the caller's handler is back
    resumed = _trainer("trm-sudoku", tmp_path, **{"train.steps": 5})
    resumed.load(tmp_path / "last.pt", verbose=False)
    assert resumed.step == 2
    resumed.fit()
    torch.testing.assert_close(_flat(resumed.model), _flat(straight.model), rtol=0, atol=0)
    for k, v in straight.model.get_extra_state().items():
        torch.testing.assert_close(resumed.model.get_extra_state()[k], v, rtol=0, atol=0)
    assert resumed.history.series("loss") == straight.history.series("loss")


def test_ctrl_c_in_the_cli_prints_how_to_resume(tmp_path, capsys, monkeypatch):
    real_step = Trainer._train_step

    def step_then_interrupt(self):
        real_step(self)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_train_step", step_then_interrupt)
    rc, _, err = _cli(capsys, *_tiny(tmp_path, 6))
    line = _one_line(err)
    assert rc == 128 + signal.SIGINT and "stopped by SIGINT at step 2 of 6" in line
    assert line.endswith(f"--resume {tmp_path / 'last.pt'}") and "python -m recursionlab train tiny-classifier" in line
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    rc, out, _ = _cli(capsys, *_tiny(tmp_path, 6, "--resume", str(tmp_path / "last.pt")))
    assert rc == 0 and "resumed from step 2 of 6" in out
    # 7. a finished run resumed: nothing to do, nothing rewritten
    mtime = (tmp_path / "last.pt").stat().st_mtime_ns
    rc, out, _ = _cli(capsys, *_tiny(tmp_path, 6, "--resume", str(tmp_path / "last.pt")))
    assert rc == 0 and "nothing to do" in out and (tmp_path / "last.pt").stat().st_mtime_ns == mtime


# ------------------------------------------------------------------ 6. one clear line for user errors
class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_user_errors_are_one_line_without_traceback(tmp_path, capsys):
    rc, _, err = _cli(capsys, *_tiny(tmp_path / "a", 2, "--resume", str(tmp_path / "missing.pt")))
    assert rc == 2 and "no checkpoint at" in _one_line(err)
    rc, _, err = _cli(capsys, *_tiny(tmp_path / "a", 2, "--resume", str(tmp_path)))
    assert rc == 2 and "is a folder, not a checkpoint file" in _one_line(err)
    for key, value, expected in [("batch_size", "0", "batch_size must be >= 1, got 0"),
                                 ("hidden", "-4", "hidden must be >= 1, got -4"),
                                 ("train.lr", "abc", "cannot read 'abc' for train.lr")]:
        rc, _, err = _cli(capsys, *_tiny(tmp_path / "a", 2, "--set", f"{key}={value}"))
        assert rc == 2 and expected in _one_line(err)
    # random bytes and a malicious pickle: refused as foreign, never executed, no advice to load unsafely
    (tmp_path / "random.pt").write_bytes(os.urandom(2048))
    marker = tmp_path / "pwned"
    torch.save({"format": "recursionlab-checkpoint-v1", "x": _Evil(str(marker))}, tmp_path / "evil.pt")
    for name in ("random.pt", "evil.pt"):
        rc, _, err = _cli(capsys, *_tiny(tmp_path / "a", 2, "--resume", str(tmp_path / name)))
        line = _one_line(err)
        assert rc == 2 and "is not a recursionlab checkpoint" in line and "weights_only" not in line
    assert not marker.exists()
    assert not (tmp_path / "a").exists()  # nothing was trained or written


def test_read_only_or_full_folder_is_found_before_training(tmp_path, capsys, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(ckpt_module.tempfile, "mkstemp", refuse)
    rc, out, err = _cli(capsys, *_tiny(tmp_path, 2))
    assert rc == 4 and "cannot write checkpoints to" in _one_line(err) and "Read-only file system" in err
    assert '"step"' not in out  # no training happened
    monkeypatch.undo()

    class Usage:
        free = 1000

    monkeypatch.setattr(ckpt_module.shutil, "disk_usage", lambda p: Usage)
    rc, _, err = _cli(capsys, *_tiny(tmp_path, 2))
    assert rc == 4 and "not enough free space" in _one_line(err)
    monkeypatch.undo()

    def disk_full(*a, **k):  # the disk fills up during training: still one line, the old checkpoint intact
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    assert _cli(capsys, *_tiny(tmp_path, 2))[0] == 0
    monkeypatch.setattr(ckpt_module.torch, "save", disk_full)
    rc, _, err = _cli(capsys, *_tiny(tmp_path, 3, "--resume", str(tmp_path / "last.pt")))
    assert rc == 4 and "No space left on device" in _one_line(err)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_genuine_bugs_keep_their_traceback(tmp_path, monkeypatch):
    def broken(self):
        raise ValueError("a bug inside a training step")

    monkeypatch.setattr(Trainer, "_train_step", broken)
    with pytest.raises(ValueError, match="a bug inside"):
        main(_tiny(tmp_path, 2))


# ------------------------------------------------------------------ 7. killed writes, folder fsync
def test_leftover_temporaries_are_removed_and_the_folder_is_synced(tmp_path, capsys, monkeypatch):
    (tmp_path / ".last.pt.k1ll3d.tmp").write_bytes(b"PK half a checkpoint")
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(ckpt_module.os, "fsync", recording_fsync)
    trainer = _trainer("tiny-classifier", tmp_path, **{"train.steps": 1})
    trainer.fit()
    assert "removed 1 unfinished checkpoint file" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert synced[-2:] == [False, True]  # the file, then (after the rename) its folder


# ------------------------------------------------------------------ 8. show, profiles, validation
def test_show_hides_fields_the_model_ignores_and_profiles_ignore_case(capsys, monkeypatch):
    trm = shown_config(get_config("trm-sudoku", "smoke"))
    hrm = shown_config(get_config("hrm-sudoku", "smoke"))
    assert "H_layers" not in trm and "H_layers" in hrm and "maze_size" not in trm
    rc, _, err = _cli(capsys, "show", "trm-sudoku", "--set", "H_layers=3")
    assert rc == 2 and "'H_layers' has no effect" in _one_line(err)
    rc, _, err = _cli(capsys, "show", "trm-sudoku", "--profile", "Huge")
    assert rc == 2 and "smoke, laptop, gpu, paper" in _one_line(err)
    rc, out, _ = _cli(capsys, "show", "trm-sudoku", "--profile", "PAPER")
    assert rc == 0 and json.loads(out)["batch_size"] == 768
    monkeypatch.setenv("RECURSIONLAB_PROFILE", "Paper")
    rc, out, _ = _cli(capsys, "show", "hrm-sudoku")
    assert rc == 0 and json.loads(out)["batch_size"] == 768
    for name, recipe in list_recipes().items():  # every recipe accepts any case and passes its own validation
        for profile in recipe.profiles:
            assert get_config(name, profile.upper()) == get_config(name, profile)


def test_empty_batch_is_a_configuration_error_not_divergence():
    trainer = Trainer(torch.nn.Linear(2, 1), lambda m, b: m(b).mean(), lambda s: torch.zeros(0, 2),
                      _trainer("tiny-classifier").cfg)
    with pytest.raises(ValueError, match="empty batch"):
        trainer.fit()
    assert not issubclass(ValueError, TrainingDiverged)
