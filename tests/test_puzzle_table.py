"""The puzzle-embedding table: sparse gradient and update, official sign-SGD semantics, out of the EMA and of
DDP's all-reduce; two gloo ranks take the same steps as one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from recursionlab.models.hrm import HRM, HRMConfig, act_loss
from recursionlab.train.config import TrainConfig
from recursionlab.train.ema import EMA
from recursionlab.train.engine import StepOutput, Trainer
from recursionlab.train.optim import SparseSignSGD

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "puzzle_table_comm.py"


def _tiny(rows: int = 10) -> HRM:
    torch.manual_seed(0)
    return HRM(HRMConfig(vocab_size=5, seq_len=6, num_puzzle_ids=rows, hidden=8, n_heads=2, H_layers=1,
                         L_layers=1, H_cycles=1, L_cycles=1, halt_max_steps=2, ffn_multiple_of=8))


def _batch(step: int, rows: int = 10) -> dict:
    g = torch.Generator().manual_seed(step)
    inputs = torch.randint(1, 5, (4, 6), generator=g)
    return {"inputs": inputs, "labels": (inputs + 1) % 5, "puzzle_ids": torch.tensor([1, 3, 3, rows - 1])}


def _loss(model, batch):
    res = act_loss(model(batch["inputs"], batch["labels"], batch["puzzle_ids"]))
    return StepOutput(res.loss, res.metrics)


def test_table_gets_row_gradients_only_and_matches_autograd():
    model = _tiny().train()
    with torch.no_grad():
        model.puzzle_emb.normal_()
    assert "puzzle_emb" not in dict(model.named_parameters()) and "puzzle_emb" in model.state_dict()
    b = _batch(0)
    _loss(model, b).loss.backward()
    assert model.puzzle_emb.grad is None  # never a dense (N, D) gradient
    ids, rows = model.take_puzzle_grad()
    assert rows.shape == (4, 8) and torch.equal(ids, b["puzzle_ids"])
    assert model.take_puzzle_grad() is None  # handed over once
    # reference: the same forward with the table as a dense leaf, differentiated by autograd
    ref = _tiny().train()
    ref.load_state_dict(model.state_dict())
    table = model.puzzle_emb.clone().requires_grad_(True)
    ref.reset_carry()
    ref.puzzle_rows = lambda ids: table[ids]
    _loss(ref, b).loss.backward()
    torch.testing.assert_close(torch.zeros_like(table).index_add_(0, ids, rows), table.grad)


def test_sparse_sign_sgd_decays_batch_rows_even_with_zero_summed_gradient():
    table = torch.ones(5, 3)
    grads = torch.tensor([[2.0, -3.0, 0.0], [1.5, 0.0, -2.0], [-1.5, 0.0, 2.0]])  # id 3's two slots cancel
    ids = torch.tensor([1, 3, 3])
    pending = [(ids, grads)]  # one forward's rows; a source hands them over once (like take_puzzle_grad)
    opt = SparseSignSGD(table, lambda: pending.pop() if pending else None, lr=0.1, weight_decay=0.5)
    opt.step()
    expected = torch.ones(5, 3)
    expected[1] = 1 - 0.1 * 0.5 - 0.1 * torch.tensor([1.0, -1.0, 0.0])
    expected[3] = 1 - 0.1 * 0.5  # summed gradient exactly zero: decays, does not move otherwise
    torch.testing.assert_close(table, expected)
    opt.step()  # a step without a new forward changes nothing
    torch.testing.assert_close(table, expected)


def test_ema_leaves_the_puzzle_table_out():
    model = _tiny()
    cfg = TrainConfig(steps=3, lr=1e-2, optimizer="adam_atan2", ema_decay=0.5, device="cpu", precision="fp32",
                      log_every=1, progress=False)
    trainer = Trainer(model, _loss, _batch, cfg, param_groups=lambda m: m.param_groups(),
                      extra_optimizers=lambda m: [SparseSignSGD(m.puzzle_emb, m.take_puzzle_grad, lr=0.1)])
    assert "puzzle_emb" not in trainer.ema.shadow and set(trainer.ema.shadow) == set(dict(model.named_parameters()))
    trainer.fit()
    live = model.puzzle_emb.clone()
    assert live[[1, 3, 9]].abs().min() > 0 and live[[0, 2]].abs().max() == 0  # only batch rows moved
    evaluated = trainer.eval_model()  # the EMA copy: averaged weights, the live table
    torch.testing.assert_close(evaluated.puzzle_emb, live)
    assert not torch.equal(evaluated.lm_head.weight, model.lm_head.weight)
    # an EMA state saved before the fix (it averaged the table) still loads; the table entry is ignored
    old = trainer.ema.state_dict()
    old["shadow"]["puzzle_emb"] = torch.zeros_like(live)
    fresh = EMA(model, 0.5)
    fresh.load_state_dict(old)
    with fresh.swapped(model):
        torch.testing.assert_close(model.puzzle_emb, live)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process_and_communicate_only_batch_rows(tmp_path):
    from benchmarks.puzzle_table_comm import run

    env = dict(os.environ, OMP_NUM_THREADS="1", RECURSIONLAB_PROGRESS="0", WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    args = ["--rows", "40", "--hidden", "16", "--steps", "4", "--batch", "8"]
    # two gloo ranks started directly (what torchrun would set up), the single-process reference in this process
    ranks = [subprocess.Popen([sys.executable, str(BENCH), str(tmp_path / "ddp"), *args],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    single = run(str(tmp_path / "one"), rows=40, hidden=16, steps=4, batch=8)
    for proc in ranks:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    r0, r1 = (json.loads((tmp_path / f"ddp.{r}.json").read_text()) for r in (0, 1))
    assert (r0["world"], single["world"]) == (2, 1)
    # the ranks stay identical, table included (each applies the same update from the gathered rows)...
    assert r0["params"] == r1["params"] and r0["table_used_rows"] == r1["table_used_rows"]
    # ...and take the same steps as one process over the whole batch
    np.testing.assert_allclose(r0["loss"], single["loss"], rtol=1e-5)
    np.testing.assert_allclose(r0["params"], single["params"], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(r0["table_used_rows"], single["table_used_rows"])
    assert np.count_nonzero(single["table_used_rows"]) > 0 and single["table_rest_abs_sum"] == 0
    # communication: DDP all-reduces the dense parameters only; the table costs B_local (ids + rows) per step
    assert r0["ddp_allreduce_bytes_per_step"] == r0["param_bytes"]
    assert r0["gather_bytes_per_step"] == r0["local_batch"] * (8 + 16 * 4)
    assert r0["dense_table_bytes_per_step"] == 40 * 16 * 4
