"""The training engine: it learns, resumes exactly, clips, averages, schedules, and stops on divergence."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.train import StepOutput, TrainConfig, Trainer, TrainingDiverged, fit
from recursionlab.train.ema import EMA
from recursionlab.train.losses import softmax_cross_entropy, stablemax, stablemax_cross_entropy
from recursionlab.train.optim import AdamATan2, SignSGD
from recursionlab.train.recipes import build_trainer, get_config, run_recipe
from recursionlab.train.schedules import lr_multiplier


def _linear_task(step: int):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(32, 6, generator=g)
    return x, (x[:, 0] - x[:, 1] > 0).long()


def _loss(model, batch):
    x, y = batch
    logits = model(x)
    return StepOutput(F.cross_entropy(logits, y), {"acc": (logits.argmax(-1) == y).float().mean()})


def _cfg(**kw):
    base = dict(steps=40, lr=0.05, progress=False, log_every=1, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_recipe_learns_held_out():
    result = run_recipe("tiny-classifier", profile="smoke", overrides={"train.steps": 400, "train.eval_every": 0})
    assert result.metrics["val_acc"] > 0.9, result.metrics


def test_exact_resume_reproduces_losses(tmp_path):
    class Crash(Exception):
        pass

    def crashing_batches(step: int):
        if step == 17:
            raise Crash  # the machine dies during step 17, after the checkpoint written at step 16
        return _linear_task(step)

    def make(batch_fn, ema=None, opt="adamw"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2), nn.Tanh(), nn.Linear(16, 2))
        cfg = _cfg(ema_decay=ema, optimizer=opt, schedule="cosine", warmup_steps=5, log_every=3,
                   checkpoint_path=str(tmp_path / "ckpt.pt"), checkpoint_every=8)
        return Trainer(model, _loss, batch_fn, cfg)

    for ema, opt in [(None, "adamw"), (0.9, "adam_atan2")]:
        full = make(_linear_task, ema, opt)
        full.cfg.checkpoint_path = None
        full.fit()
        interrupted = make(crashing_batches, ema, opt)
        with pytest.raises(Crash):
            interrupted.fit()
        resumed = make(_linear_task, ema, opt)
        resumed.load(tmp_path / "ckpt.pt")
        assert resumed.step == 16  # the last checkpoint; steps 15-16 sit in the logging window
        resumed.fit()
        assert resumed.history.series("loss")[0] == full.history.series("loss")[0]
        torch.testing.assert_close(
            torch.tensor(resumed.history.series("loss")[1]), torch.tensor(full.history.series("loss")[1]),
            rtol=1e-6, atol=1e-7,
        )
        for a, b in zip(resumed.model.parameters(), full.model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        if ema:
            for k in full.ema.shadow:
                torch.testing.assert_close(resumed.ema.shadow[k], full.ema.shadow[k])


def test_nan_loss_stops_with_diagnosis():
    def bad_loss(model, batch):
        out = _loss(model, batch)
        return StepOutput(out.loss * float("nan") if batch[0][0, 0] > -10 else out.loss)

    with pytest.raises(TrainingDiverged, match=r"step 0: the loss is nan.*learning rate"):
        fit(nn.Linear(6, 2), bad_loss, _linear_task, _cfg())


def test_exploding_gradient_detected():
    def inf_grad_loss(model, batch):
        x, y = batch
        return StepOutput((model(x) * 1e30).pow(2).sum() * 1e30)

    with pytest.raises(TrainingDiverged):
        fit(nn.Linear(6, 2), inf_grad_loss, _linear_task, _cfg(grad_clip=None))


def test_gradient_clipping_bounds_update():
    model = nn.Linear(6, 2, bias=False)
    before = model.weight.detach().clone()

    def big_loss(m, batch):
        return StepOutput(m(batch[0]).sum() * 1000.0)

    cfg = _cfg(steps=1, optimizer="sgd", lr=1.0, momentum=0.0, grad_clip=0.5)
    trainer = Trainer(model, big_loss, _linear_task, cfg)
    trainer.fit()
    assert torch.linalg.vector_norm(model.weight.detach() - before).item() == pytest.approx(0.5, rel=1e-4)
    assert trainer.history.last("grad_norm") > 100  # the pre-clip norm is logged


def test_schedules():
    assert lr_multiplier(0, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_multiplier(9, 100, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_multiplier(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_multiplier(55, 100, 10, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_multiplier(70, 100, 0, "constant", 0.1) == 1.0
    assert lr_multiplier(50, 100, 0, "linear", 0.0) == pytest.approx(0.5)
    trainer = Trainer(nn.Linear(6, 2), _loss, _linear_task, _cfg(steps=20, warmup_steps=4, lr=0.1))
    trainer.fit()
    lrs = trainer.history.series("lr")[1]
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])


def test_adam_atan2_matches_update_rule():
    torch.manual_seed(0)
    p = torch.randn(5, requires_grad=True)
    ref = p.detach().clone()
    opt = AdamATan2([p], lr=0.01, betas=(0.9, 0.95), weight_decay=0.5)
    m = torch.zeros(5)
    v = torch.zeros(5)
    for t in range(1, 6):
        g = torch.randn(5)
        p.grad = g.clone()
        opt.step()
        ref = ref * (1 - 0.01 * 0.5)
        m = 0.9 * m + 0.1 * g
        v = 0.95 * v + 0.05 * g * g
        ref = ref - 0.01 / (1 - 0.9**t) * torch.atan2(m, torch.sqrt(v / (1 - 0.95**t)))
        torch.testing.assert_close(p.detach(), ref)
    # scale invariance: multiplying every gradient by 1000 gives the same trajectory (no epsilon)
    q = torch.zeros(3, requires_grad=True)
    r = torch.zeros(3, requires_grad=True)
    oq, orr = AdamATan2([q], lr=0.1, weight_decay=0.0), AdamATan2([r], lr=0.1, weight_decay=0.0)
    for g in torch.randn(4, 3):
        q.grad, r.grad = g.clone(), 1000 * g.clone()
        oq.step()
        orr.step()
    torch.testing.assert_close(q, r)


def test_sign_sgd_touches_only_rows_with_gradient():
    table = torch.ones(4, 3, requires_grad=True)
    opt = SignSGD([table], lr=0.1, weight_decay=0.5)
    grad = torch.zeros(4, 3)
    grad[1] = torch.tensor([2.0, -3.0, 0.0])
    table.grad = grad
    opt.step()
    expected = torch.ones(4, 3)
    expected[1] = 1 * (1 - 0.05) - 0.1 * torch.tensor([1.0, -1.0, 0.0])
    torch.testing.assert_close(table.detach(), expected)


def test_stablemax_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, -3.0]], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 2])
    s = torch.tensor([[3.0, 0.5, 1.5], [1.0, 1.0, 0.25]], dtype=torch.float64)
    expected = -(torch.log(s[0, 0] / s[0].sum()) + torch.log(s[1, 2] / s[1].sum())) / 2
    torch.testing.assert_close(stablemax_cross_entropy(logits, targets), expected)
    torch.testing.assert_close(stablemax(torch.tensor([-1.0, 0.0, 2.0])), torch.tensor([0.5, 1.0, 3.0]))
    # ignored positions contribute nothing
    masked = stablemax_cross_entropy(logits, torch.tensor([0, -100]))
    torch.testing.assert_close(masked, -torch.log(s[0, 0] / s[0].sum()))
    assert torch.autograd.gradcheck(lambda z: stablemax_cross_entropy(z, targets), (logits,))
    with pytest.raises(ValueError, match="disagree"):
        softmax_cross_entropy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))


def test_ema_average_and_swap():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model)  # 0.5*0 + 0.5*4
    assert ema.shadow["weight"][0, 0].item() == 2.0
    with ema.swapped(model):
        assert model.weight[0, 0].item() == 2.0
    assert model.weight[0, 0].item() == 4.0


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'.*adamw"):
        TrainConfig(optimizer="adamm")
    with pytest.raises(ValueError, match="unknown schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer(nn.Linear(1, 1), _loss, _linear_task, {"steps": 3})


def test_extra_optimizer_follows_schedule():
    model = nn.Linear(6, 2)
    table = nn.Parameter(torch.zeros(3))
    model.register_parameter("table", table)

    def loss(m, batch):
        return StepOutput(_loss(m, batch).loss + m.table.sum())

    trainer = Trainer(model, loss, _linear_task, _cfg(steps=4, warmup_steps=4, lr=0.1),
                      param_groups=lambda m: [p for n, p in m.named_parameters() if n != "table"],
                      extra_optimizers=lambda m: [SignSGD([m.table], lr=1.0, weight_decay=0.0)])
    trainer.fit()
    # sign-SGD steps of lr * (warmup multipliers 0.25, 0.5, 0.75, 1.0) -> table = -2.5
    torch.testing.assert_close(table.detach(), torch.full((3,), -2.5))


def test_recipe_resume_through_cli_layer(tmp_path):
    cfg = get_config("tiny-classifier", profile="smoke", overrides={"train.steps": 12, "train.log_every": 2})
    a = build_trainer("tiny-classifier", cfg)
    a.fit()
    cfg_half = get_config("tiny-classifier", profile="smoke", overrides={"train.steps": 6, "train.log_every": 2})
    b = build_trainer("tiny-classifier", cfg_half)
    b.fit()
    b.save(tmp_path / "half.pt")
    c = build_trainer("tiny-classifier", cfg)
    c.load(tmp_path / "half.pt")
    c.fit()
    assert c.history.series("loss")[1] == pytest.approx(a.history.series("loss")[1], rel=1e-6)
    assert math.isfinite(c.history.last("val_acc"))
