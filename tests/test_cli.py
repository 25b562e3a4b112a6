"""The command line: list, show, train, resume, and clear errors for unknown recipes, keys and profiles."""

import json
import os
import subprocess
import sys

from recursionlab.train.cli import main


def test_list_and_show(capsys):
    assert main(["list"]) == 0
    assert "tiny-classifier" in capsys.readouterr().out
    assert main(["show", "tiny-classifier", "--profile", "gpu"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["hidden"] == 256 and shown["train"]["steps"] == 3000


def test_unknown_recipe_key_and_profile_are_explained(capsys):
    assert main(["train", "tiny-clasifier"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'tiny-clasifier'" in err and "tiny-classifier" in err
    assert main(["train", "tiny-classifier", "--set", "hiden=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'hiden'" in err and "hidden" in err
    assert main(["train", "tiny-classifier", "--set", "train.lrr=3"]) == 2
    assert "valid keys" in capsys.readouterr().err
    assert main(["train", "tiny-classifier", "--profile", "huge"]) == 2
    assert "allowed profiles are smoke, laptop, gpu" in capsys.readouterr().err
    assert main(["train", "tiny-classifier", "--set", "hidden"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["train", "tiny-classifier", "--set", "train.optimizer=lion"]) == 2
    assert "unknown optimizer 'lion'" in capsys.readouterr().err


def test_train_then_resume_from_a_subprocess(tmp_path):
    env = dict(os.environ, RECURSIONLAB_PROGRESS="0")
    base = [sys.executable, "-m", "recursionlab", "train", "tiny-classifier", "--profile", "smoke",
            "--out", str(tmp_path), "--set", "train.steps=20"]
    first = subprocess.run(base, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "last.pt").is_file()
    more = subprocess.run(base[:-1] + ["train.steps=30", "--resume", str(tmp_path / "last.pt")], env=env,
                          capture_output=True, text=True, timeout=180)
    assert more.returncode == 0, more.stderr
    summary = json.loads(more.stdout[more.stdout.index("{"): more.stdout.rindex("}") + 1])
    assert summary["step"] == 30
