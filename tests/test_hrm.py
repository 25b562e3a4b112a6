"""HRM (recursionlab.models.hrm): paper parameter counts, inits, the 1-step gradient, the carry, Q-learning ACT,
and exact resume through the engine."""

from __future__ import annotations

import pytest
import torch

from recursionlab.models.hrm import HRM, ACTCarry, HRMConfig, act_loss
from recursionlab.train import StepOutput, TrainConfig, Trainer
from recursionlab.train.losses import stablemax_cross_entropy

V, L = 6, 16


def tiny_config(**kw) -> HRMConfig:
    base = dict(
        vocab_size=V,
        seq_len=L,
        hidden=32,
        n_heads=2,
        H_layers=1,
        L_layers=1,
        H_cycles=2,
        L_cycles=2,
        halt_max_steps=4,
        puzzle_emb_len=1,
    )
    base.update(kw)
    return HRMConfig(**base)


def batch(seed: int, B: int = 4):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(1, V, (B, L), generator=g),
        torch.randint(2, V, (B, L), generator=g),
        torch.zeros(B, dtype=torch.long),
    )


@pytest.mark.parametrize(
    "vocab,seq_len,expected",
    [
        (11, 81, 27_275_266),
        (6, 900, 27_270_146),
        (12, 900, 27_276_290),
    ],  # Sudoku, Maze, ARC (sheet section 1)
)
def test_paper_parameter_counts(vocab, seq_len, expected):
    with torch.device("meta"):
        model = HRM(HRMConfig(vocab_size=vocab, seq_len=seq_len, num_puzzle_ids=7))
    assert model.num_parameters() == expected
    # the puzzle-embedding table is trained (by sign-SGD) but not counted, as in the paper
    assert model.num_parameters(include_puzzle_emb=True) == expected + 7 * 512
    names = {n for n, _ in model.named_parameters()}
    assert "H_init" not in names and "L_init" not in names  # fixed initial states are buffers


def test_initialisation():
    torch.manual_seed(0)
    model = HRM(HRMConfig(H_layers=1, L_layers=1))
    assert torch.all(model.q_head.weight == 0) and torch.all(model.q_head.bias == -5)
    assert torch.all(model.puzzle_emb == 0)
    assert not model.H_init.requires_grad and model.H_init.shape == (512,)
    assert model.H_init.std().item() == pytest.approx(1.0, abs=0.12)
    w = model.L_level.blocks[0].mlp.gate_up.weight  # LeCun: std 1/sqrt(fan_in) after the truncation fix
    assert w.std().item() == pytest.approx(512**-0.5, rel=0.03)
    emb = model.embed(torch.randint(1, 11, (2, 81)), torch.zeros(2, dtype=torch.long))
    assert emb[:, 1:].pow(2).mean().sqrt().item() == pytest.approx(
        1.0, rel=0.1
    )  # unit RMS after sqrt(D) scale
    assert torch.all(emb[:, 0] == 0)  # zero-init puzzle embedding token


def _record_calls(model: HRM):
    """Forward hooks on f_L and f_H recording, per call, whether the output holds a graph and (after backward)
    whether a gradient reached it."""
    calls = []

    def hook(name):
        def fn(module, args, out):
            rec = {"module": name, "graph": out.requires_grad, "got_grad": False}
            if out.requires_grad:
                out.register_hook(lambda g, rec=rec: rec.__setitem__("got_grad", True))
            calls.append(rec)

        return fn

    model.L_level.register_forward_hook(hook("L"))
    model.H_level.register_forward_hook(hook("H"))
    return calls


def test_one_step_gradient_only_last_L_and_H_calls_hold_a_graph():
    torch.manual_seed(0)
    model = HRM(tiny_config()).train()
    calls = _record_calls(model)
    x, y, ids = batch(0)
    out = model(x, y, ids)
    act_loss(out).loss.backward()
    first = calls[:6]  # the training segment: L L H L L H ; then 6 more calls of the no-grad Q-target pass
    assert [c["module"] for c in first] == ["L", "L", "H", "L", "L", "H"]
    assert [c["graph"] for c in first] == [False, False, False, False, True, True]
    assert [c["got_grad"] for c in first] == [False, False, False, False, True, True]
    assert len(calls) == 12 and not any(c["graph"] for c in calls[6:])  # the second forward holds no graph
    assert out.target_q_continue is not None and not out.target_q_continue.requires_grad
    assert not model._carry.z_H.requires_grad and not model._carry.z_L.requires_grad  # carry is detached
    # every parameter still receives a gradient through the last calls (head -> z_H -> z_L -> embedding)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bptt_option_keeps_every_call_in_the_graph():
    torch.manual_seed(0)
    model = HRM(tiny_config(gradient="bptt", q_continue_loss=False)).train()
    calls = _record_calls(model)
    x, y, ids = batch(0)
    act_loss(model(x, y, ids)).loss.backward()
    assert [c["graph"] for c in calls] == [True] * 6
    assert all(c["got_grad"] for c in calls)


def test_one_step_gradient_equals_a_hand_written_segment_float64():
    torch.manual_seed(0)
    cfg = tiny_config(H_cycles=3, L_cycles=2, halt_exploration_prob=0.0)
    model = HRM(cfg).double().train()
    x, y, ids = batch(1)
    with torch.no_grad():
        model.puzzle_emb.normal_()  # make the puzzle-embedding path non-trivial
    carry = model.initial_carry(x, y, ids)
    carry, _ = model.segment(carry, x, y, ids)  # a carried (non-initial) state

    def objective(logits, q_halt):
        return stablemax_cross_entropy(logits, y) + q_halt.sum()

    model.zero_grad()
    _, out = model.segment(carry, x, y, ids)
    objective(out.logits, out.q_halt_logits).backward()
    lib = {n: p.grad.clone() for n, p in model.named_parameters()}

    # the same segment written out by hand from the paper's equations
    model.zero_grad()
    xe = model.embed(x, ids)
    rope = model.rotary()
    z_H, z_L = carry.z_H, carry.z_L
    with torch.no_grad():
        for i in range(cfg.H_cycles * cfg.L_cycles - 1):
            z_L = model.L_level(z_L, z_H + xe, rope)
            if (i + 1) % cfg.L_cycles == 0:
                z_H = model.H_level(z_H, z_L, rope)
    z_L = model.L_level(z_L, z_H + xe, rope)
    z_H = model.H_level(z_H, z_L, rope)
    logits = model.lm_head(z_H[:, 1:])
    q_halt = model.q_head(z_H[:, 0])[:, 0]
    assert torch.allclose(logits, out.logits, atol=1e-10)
    objective(logits, q_halt).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, lib[n], atol=1e-9, rtol=1e-7), n


def test_carry_replaces_only_halted_slots():
    torch.manual_seed(0)
    model = HRM(tiny_config(halt_exploration_prob=0.0)).train()
    xa, ya, ids = batch(10)
    xb, yb, _ = batch(11)
    out1 = model(xa, ya, ids)
    assert torch.equal(out1.labels, ya) and torch.all(out1.steps == 1)  # all slots start halted -> all load A
    carry1 = ACTCarry(**{k: v.clone() for k, v in model._carry.as_dict().items()})
    # pretend slots 0 and 2 halted at segment 1
    model._carry.halted = torch.tensor([True, False, True, False])
    carry1.halted = model._carry.halted.clone()
    out2 = model(xb, yb, ids)
    c = model._carry
    assert torch.equal(c.inputs[[0, 2]], xb[[0, 2]]) and torch.equal(c.inputs[[1, 3]], xa[[1, 3]])
    assert torch.equal(out2.labels[[0, 2]], yb[[0, 2]]) and torch.equal(out2.labels[[1, 3]], ya[[1, 3]])
    assert c.steps.tolist() == [1, 2, 1, 2]
    # halted slots restarted from the fixed initial states: same result as a fresh carry on B ...
    _, fresh = model.segment(model.initial_carry(xb, yb, ids), xb, yb, ids)
    assert torch.allclose(out2.logits[[0, 2]], fresh.logits[[0, 2]], atol=1e-5)
    # ... the others continued from their carried states (different from a restart on A)
    _, restart = model.segment(model.initial_carry(xa, ya, ids), xa, ya, ids)
    assert not torch.allclose(out2.logits[[1, 3]], restart.logits[[1, 3]], atol=1e-3)
    # and a segment on carry1 reproduces them exactly
    _, cont = model.segment(carry1, xb, yb, ids)
    assert torch.allclose(out2.logits, cont.logits, atol=1e-6)


def test_halting_rules_exploration_and_q_target():
    torch.manual_seed(0)
    x, y, ids = batch(3)
    model = HRM(tiny_config(halt_exploration_prob=0.0)).train()
    # Q head at init: Q_halt = Q_cont -> never halts before M_max = 4, then always
    halts = [model(x, y, ids).halted.tolist() for _ in range(5)]
    assert halts[:3] == [[False] * 4] * 3 and halts[3] == [True] * 4 and halts[4] == [False] * 4
    # make the Q head prefer halting: halts after one segment without exploration ...
    with torch.no_grad():
        model.q_head.bias.copy_(torch.tensor([5.0, -5.0]))
    model.reset_carry()
    assert model(x, y, ids).halted.all()
    # ... but with exploration probability 1, M_min >= 2 forbids halting at the first segment
    model.config.halt_exploration_prob = 1.0
    model.reset_carry()
    assert not model(x, y, ids).halted.any()
    # evaluation mode: halt only at M_max
    model.eval().reset_carry()
    assert not model(x, y, ids).halted.any()
    # the bootstrapped target is sigma(max(Q^{m+1})) from a second no-grad segment on the new carry
    model.train().config.halt_exploration_prob = 0.0
    with torch.no_grad():
        model.q_head.weight.normal_(0, 0.1)
    carry = model.initial_carry(x, y, ids)
    new_carry, out = model.segment(carry, x, y, ids)
    with torch.no_grad():
        z_H, _ = model.recursion(new_carry.z_H, new_carry.z_L, model.embed(x, ids))
        _, nh, nc = model.heads(z_H)
    assert torch.allclose(out.target_q_continue, torch.sigmoid(torch.maximum(nh, nc)), atol=1e-6)


def test_solve_runs_fixed_steps_and_act_loss_terms():
    torch.manual_seed(0)
    model = HRM(tiny_config()).eval()
    x, y, ids = batch(4)
    trace = model.solve(x, ids, n_steps=3)
    assert trace.predictions.shape == (3, 4, L) and trace.q_halt_logits.shape == (3, 4)
    assert model._carry is None  # the training carry is untouched
    model.train()
    out = model(x, y, ids)
    res = act_loss(out)
    assert set(res.metrics) >= {"lm_loss", "q_halt_loss", "q_continue_loss", "exact_acc", "cell_acc"}
    expected = res.metrics["lm_loss"] + 0.5 * (res.metrics["q_halt_loss"] + res.metrics["q_continue_loss"])
    assert float(res.loss.detach()) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="inputs must have shape"):
        model(torch.zeros(4, L + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="pos_encoding"):
        HRM(tiny_config(pos_encoding="alibi"))
    with pytest.raises(ValueError, match="gradient"):
        HRM(tiny_config(gradient="full"))


def _train(model, steps, path=None, resume=None, ema=None):
    def loss_fn(m, b):
        r = act_loss(m(*b))
        return StepOutput(r.loss, r.metrics)

    cfg = TrainConfig(
        steps=steps,
        lr=1e-3,
        optimizer="adam_atan2",
        betas=(0.9, 0.95),
        weight_decay=0.1,
        grad_clip=None,
        log_every=1,
        progress=False,
        checkpoint_path=path,
        ema_decay=ema,
    )
    trainer = Trainer(model, loss_fn, lambda s: batch(100 + s), cfg, param_groups=lambda m: m.param_groups())
    if resume:
        trainer.load(resume)
    trainer.fit()
    return trainer


def test_resume_restores_the_carry_and_reproduces_losses(tmp_path):
    cfg = tiny_config(halt_max_steps=3, halt_exploration_prob=0.5)
    torch.manual_seed(0)
    straight = _train(HRM(cfg), 7).history.series("loss")[1]
    torch.manual_seed(0)
    _train(HRM(cfg), 4, path=str(tmp_path / "ck.pt"))
    torch.manual_seed(1)  # a differently initialised model: everything must come from the checkpoint
    model = HRM(cfg)
    resumed = _train(model, 7, resume=str(tmp_path / "ck.pt")).history.series("loss")[1]
    assert resumed == pytest.approx(straight, rel=1e-6, abs=1e-7)
    assert model._carry is not None and model._carry.steps.shape == (4,)
