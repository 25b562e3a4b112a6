"""TRM (recursionlab.models.trm): paper parameter counts, which calls hold a graph, the gradient of the last
recursion, simplified halting, EMA + resume through the engine, and a learning test on held-out 4x4 Sudoku."""

from __future__ import annotations

import pytest
import torch

from recursionlab.models.hrm import act_loss
from recursionlab.models.puzzle_eval import evaluate_puzzles
from recursionlab.models.trm import TRM, TRMConfig
from recursionlab.train import StepOutput, TrainConfig, Trainer
from recursionlab.train.losses import stablemax_cross_entropy

V, L = 6, 16


def tiny_config(**kw) -> TRMConfig:
    base = dict(
        vocab_size=V,
        seq_len=L,
        hidden=32,
        n_heads=2,
        L_layers=2,
        H_cycles=3,
        L_cycles=2,
        halt_max_steps=4,
        puzzle_emb_len=2,
    )
    base.update(kw)
    return TRMConfig(**base)


def batch(seed: int, B: int = 4):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(1, V, (B, L), generator=g),
        torch.randint(2, V, (B, L), generator=g),
        torch.zeros(B, dtype=torch.long),
    )


@pytest.mark.parametrize(
    "kw,expected",
    [
        (dict(vocab_size=11, seq_len=81), 6_828_034),  # TRM-Att, Sudoku ("7M")
        (
            dict(vocab_size=11, seq_len=81, mixer="mlp", pos_encoding="none"),
            5_028_866,
        ),  # TRM-MLP, L=97 ("5M")
        (dict(vocab_size=6, seq_len=900), 6_822_914),  # Maze
        (dict(vocab_size=12, seq_len=900), 6_829_058),  # ARC
        (
            dict(vocab_size=6, seq_len=900, mixer="mlp", pos_encoding="none"),
            18_795_522,
        ),  # TRM-MLP Maze ("19M")
    ],
)
def test_paper_parameter_counts(kw, expected):
    with torch.device("meta"):
        model = TRM(TRMConfig(**kw))
    assert model.num_parameters() == expected
    assert model.prefix_len == 16


def _record(model: TRM):
    calls = []

    def fn(module, args, out):
        rec = {"graph": out.requires_grad, "got_grad": False, "x_in_input": None}
        if out.requires_grad:
            out.register_hook(lambda g, rec=rec: rec.__setitem__("got_grad", True))
        calls.append(rec)

    model.net.register_forward_hook(fn)
    return calls


@pytest.mark.parametrize(
    "gradient,graph_calls",
    [("last_recursion", 3), ("one_step", 2), ("bptt", 9)],  # T=3 recursions of n+1=3 calls each
)
def test_which_calls_hold_a_graph(gradient, graph_calls):
    torch.manual_seed(0)
    model = TRM(tiny_config(gradient=gradient)).train()
    calls = _record(model)
    x, y, ids = batch(0)
    out = model(x, y, ids)
    act_loss(out).loss.backward()
    assert len(calls) == 9  # T (n + 1) network calls, and no second (Q-target) forward
    expected = [False] * (9 - graph_calls) + [True] * graph_calls
    assert [c["graph"] for c in calls] == expected
    assert [c["got_grad"] for c in calls] == expected
    assert out.target_q_continue is None


def test_last_recursion_gradient_equals_hand_written_float64():
    torch.manual_seed(0)
    cfg = tiny_config(H_cycles=2, L_cycles=3, halt_exploration_prob=0.0)
    model = TRM(cfg).double().train()
    x, y, ids = batch(2)
    with torch.no_grad():
        model.puzzle_emb.normal_()
    carry, _ = model.segment(model.initial_carry(x, y, ids), x, y, ids)

    def objective(logits, q_halt):
        return stablemax_cross_entropy(logits, y) + q_halt.sum()

    model.zero_grad()
    _, out = model.segment(carry, x, y, ids)
    objective(out.logits, out.q_halt_logits).backward()
    lib = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    xe, rope = model.embed(x, ids), model.rotary()
    ys, zs = carry.z_H, carry.z_L
    with torch.no_grad():  # T-1 recursions without a graph
        for _ in range(cfg.H_cycles - 1):
            for _ in range(cfg.L_cycles):
                zs = model.net(zs, ys + xe, rope)
            ys = model.net(ys, zs, rope)
    for _ in range(cfg.L_cycles):  # the last recursion, backpropagated in full
        zs = model.net(zs, ys + xe, rope)
    ys = model.net(ys, zs, rope)
    logits = model.lm_head(ys[:, cfg.puzzle_emb_len :])
    q_halt = model.q_head(ys[:, 0])[:, 0]
    assert torch.allclose(logits, out.logits, atol=1e-10)
    objective(logits, q_halt).backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, lib[n], atol=1e-9, rtol=1e-7), n


def test_halting_is_a_single_bce_on_q_halt_logit():
    torch.manual_seed(0)
    x, y, ids = batch(3)
    model = TRM(tiny_config(halt_exploration_prob=0.0)).train()
    with torch.no_grad():  # Q_halt logit > 0 -> halt (Q_continue is ignored by the rule)
        model.q_head.bias.copy_(torch.tensor([0.5, 9.0]))
    assert model(x, y, ids).halted.all()
    with torch.no_grad():
        model.q_head.bias.copy_(torch.tensor([-0.5, -9.0]))
    model.reset_carry()
    assert not model(x, y, ids).halted.any()
    out = model(x, y, ids)
    res = act_loss(out)
    assert "q_continue_loss" not in res.metrics
    assert float(res.loss.detach()) == pytest.approx(
        res.metrics["lm_loss"] + 0.5 * res.metrics["q_halt_loss"], rel=1e-6
    )
    # the answer y (= z_H) changes between segments while the puzzles stay in their slots
    assert out.steps.tolist() == [2, 2, 2, 2]


def _train(model, steps, path=None, resume=None):
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
        ema_decay=0.9,
    )
    trainer = Trainer(model, loss_fn, lambda s: batch(200 + s), cfg, param_groups=lambda m: m.param_groups())
    if resume:
        trainer.load(resume)
    trainer.fit()
    return trainer


def test_ema_and_resume_reproduce_the_uninterrupted_run(tmp_path):
    cfg = tiny_config(halt_max_steps=3, halt_exploration_prob=0.5, H_cycles=2)
    torch.manual_seed(0)
    straight = _train(TRM(cfg), 6)
    torch.manual_seed(0)
    _train(TRM(cfg), 3, path=str(tmp_path / "ck.pt"))
    torch.manual_seed(5)
    resumed = _train(TRM(cfg), 6, resume=str(tmp_path / "ck.pt"))
    assert resumed.history.series("loss")[1] == pytest.approx(straight.history.series("loss")[1], rel=1e-6)
    for name, shadow in straight.ema.shadow.items():
        assert torch.allclose(resumed.ema.shadow[name], shadow, atol=1e-6), name
    # the EMA really averages: shadow differs from the live weights, and eval_model() holds the shadow
    live = dict(straight.model.named_parameters())
    ema_model = straight.eval_model()
    w = "net.blocks.0.mlp.down.weight"
    assert not torch.allclose(straight.ema.shadow[w], live[w].float())
    assert torch.allclose(dict(ema_model.named_parameters())[w].float(), straight.ema.shadow[w])


def test_trm_learns_held_out_4x4_sudoku():
    """A tiny TRM (MLP-mixer, T=2, n=2) trained for 200 segments must solve most held-out 4x4 puzzles."""
    from recursionlab.train.recipes import get_config
    from recursionlab.train.recipes.reasoning import build_job

    cfg = get_config(
        "trm-mlp-sudoku",
        "laptop",
        {
            "sudoku_size": 4,
            "difficulty": "medium",
            "n_train": 1000,
            "n_test": 200,
            "train.steps": 200,
            "train.eval_every": 0,
            "train.ema_decay": None,
            "train.progress": False,
            "halt_max_steps": 4,
            "H_cycles": 2,
            "L_cycles": 2,
            "batch_size": 64,
            "puzzle_emb_len": 1,
        },
    )
    job = build_job(cfg)
    Trainer(
        job.model,
        job.loss_fn,
        job.batch_fn,
        job.train,
        param_groups=job.param_groups,
        extra_optimizers=job.extra_optimizers,
    ).fit()
    from recursionlab.train.recipes.reasoning import load_puzzles

    test = load_puzzles(cfg).test
    res = evaluate_puzzles(job.model, test)
    assert len(test) >= 150
    assert res.exact > 0.5, f"held-out exact accuracy {res.exact:.3f} after 200 steps"
    assert res.exact_by_step[-1] >= res.exact_by_step[0]  # refinement over supervision steps does not hurt


def test_recipes_configs_and_paper_step_counts():
    from recursionlab.train.recipes import get_config

    names = [
        "hrm-sudoku",
        "trm-sudoku",
        "trm-mlp-sudoku",
        "hrm-maze",
        "trm-maze",
        "hrm-arc",
        "trm-arc",
        "onepass-sudoku",
    ]
    for name in names:
        for profile in ("smoke", "laptop", "gpu", "paper"):
            cfg = get_config(name, profile)
            assert cfg.train.optimizer == "adam_atan2" and cfg.train.grad_clip is None
    paper = {n: get_config(n, "paper") for n in ("hrm-sudoku", "trm-mlp-sudoku", "trm-arc")}
    assert (
        paper["hrm-sudoku"].train.steps == 26_041
    )  # 20k epochs x 1000 puzzles / 768 (HRM#12's progress bar)
    assert paper["trm-mlp-sudoku"].train.steps == 65_104  # 50k epochs
    assert paper["trm-arc"].train.steps == 519_270
    t = paper["trm-mlp-sudoku"]
    assert (t.hidden, t.L_layers, t.H_cycles, t.L_cycles, t.puzzle_emb_len, t.batch_size) == (
        512,
        2,
        3,
        6,
        16,
        768,
    )
    assert t.train.ema_decay == 0.999 and t.train.lr == 1e-4 and t.train.weight_decay == 1.0
    assert t.train.warmup_steps == 2000 and t.train.betas == (0.9, 0.95)
    assert get_config("trm-arc", "paper").puzzle_emb_lr == 1e-2
    from recursionlab.train.recipes.reasoning import build_model

    with pytest.raises(ValueError, match="unknown model"):
        build_model(get_config("trm-sudoku", "smoke", {"model": "rnn"}), None)


def test_export_and_load_asset_round_trip(tmp_path):
    from recursionlab.train.recipes import build_trainer, get_config
    from recursionlab.train.recipes.reasoning import export_asset, load_asset

    cfg = get_config(
        "trm-mlp-sudoku",
        "smoke",
        {"train.steps": 3, "train.progress": False, "train.checkpoint_path": str(tmp_path / "last.pt")},
    )
    trainer = build_trainer("trm-mlp-sudoku", cfg)
    trainer.fit()
    path = export_asset(tmp_path / "last.pt", tmp_path / "asset.pt", extra={"train_seconds": 1.5})
    asset = load_asset(path)
    assert asset.info["train_seconds"] == 1.5 and asset.info["step"] == 3  # lesson 08 reads these
    assert asset.model._carry is None and not asset.model.training
    ema_model = trainer.eval_model()  # the asset holds the EMA weights
    for (n, p), (_, q) in zip(asset.model.named_parameters(), ema_model.named_parameters()):
        assert torch.allclose(p, q.float()), n
    assert asset.config.mixer == "mlp" and "test_exact" in asset.metrics


class _EchoSolver(torch.nn.Module):
    """A stand-in 'model' whose answer is its input, optionally rotated by 90 degrees (for evaluate_arc)."""

    def __init__(self, rotate: bool) -> None:
        super().__init__()
        self.rotate = rotate
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def solve(self, inputs, puzzle_ids, n_steps=None):
        from recursionlab.data import arc as arc_data
        from recursionlab.models.hrm import SolveTrace

        preds = inputs.clone()
        if self.rotate:
            canvas = int(round(inputs.shape[1] ** 0.5))
            preds = torch.stack(
                [
                    torch.as_tensor(
                        arc_data.encode_grid(
                            arc_data.dihedral(arc_data.decode_grid(row.numpy(), canvas), 1), canvas
                        )
                    )
                    for row in inputs
                ]
            )
        q = torch.zeros(1, len(inputs))
        return SolveTrace(preds[None], q, q)


def test_arc_evaluation_undoes_augmentations_and_votes():
    import numpy as np

    from recursionlab.data import arc as arc_data
    from recursionlab.data.puzzles import PuzzleDataset
    from recursionlab.models.puzzle_eval import evaluate_arc

    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 10, size=(h, w)) for h, w in ((2, 3), (3, 3), (4, 2))]
    x = np.stack([arc_data.encode_grid(g, 5) for g in grids])
    y = np.where(x == arc_data.PAD, -100, x)  # the identity task: output = input
    test = PuzzleDataset(
        "arc-identity",
        torch.as_tensor(x),
        torch.as_tensor(y),
        torch.tensor([1, 1, 2]),
        vocab_size=12,
        num_puzzle_ids=3,
        meta={"task_names": [None, "a", "b"]},
    )
    right = evaluate_arc(_EchoSolver(rotate=False), test, n_augmentations=6)
    assert right.pass_at_1 == 1.0 and right.n_tasks == 2 and right.n_test_inputs == 3
    assert all(c[0].count == 6 for task in right.candidates.values() for c in task)  # all copies agree
    wrong = evaluate_arc(_EchoSolver(rotate=True), test, n_augmentations=6)
    assert wrong.pass_at_2 < 1.0
