"""CUDA-only checks (marker `gpu`; skipped cleanly on machines without a GPU): run with `pytest -m gpu`."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.train import StepOutput, TrainConfig, Trainer, load_checkpoint

pytestmark = pytest.mark.gpu


def _task(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(256, 32, generator=g)
    return x, (x[:, :4].sum(-1) > 0).long()


def _loss(model, batch):
    x, y = batch
    logits = model(x)
    return StepOutput(F.cross_entropy(logits.float(), y), {"acc": (logits.argmax(-1) == y).float().mean()})


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 256), nn.GELU(), nn.Linear(256, 2))


def test_bf16_training_step_learns_on_cuda():
    seen = {}

    def loss(model, batch):
        out = _loss(model, batch)
        seen["dtype"] = model[0](batch[0]).dtype
        return out

    trainer = Trainer(_model(), loss, _task, TrainConfig(steps=150, lr=3e-3, progress=False, log_every=10))
    assert trainer.device.type == "cuda" and trainer.dtype == torch.bfloat16
    trainer.fit()
    assert seen["dtype"] == torch.bfloat16
    assert trainer.history.last("acc") > 0.9


def test_compiled_training_step_on_cuda():
    trainer = Trainer(_model(), _loss, _task, TrainConfig(steps=60, lr=3e-3, compile=True, progress=False))
    trainer.fit()
    assert trainer.history.last("acc") > 0.8


def test_checkpoint_round_trip_on_cuda(tmp_path):
    cfg = TrainConfig(steps=20, lr=3e-3, progress=False, ema_decay=0.99, checkpoint_path=str(tmp_path / "c.pt"))
    a = Trainer(_model(), _loss, _task, cfg)
    a.fit()
    payload = load_checkpoint(tmp_path / "c.pt", map_location="cpu")
    assert payload["step"] == 20
    b = Trainer(_model(), _loss, _task, TrainConfig(steps=20, lr=3e-3, progress=False, ema_decay=0.99))
    b.load(tmp_path / "c.pt")
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert p.device.type == "cuda" and torch.equal(p, q)
