"""Bytes communicated per training step for HRM's puzzle-embedding table under DDP: sparse vs dense.

ARC-AGI-1 with augmentation has 960,961 puzzle ids x 512 channels. A dense table gradient would make DDP all-reduce
the whole table every step; the library keeps the table out of DDP and its sparse sign-SGD all-gathers only the
batch's (id, gradient row) pairs. This script trains an HRM with such a table for a few steps under ``torchrun``
(gloo on CPU) and counts the bytes each rank hands to the collectives:

* ``ddp_allreduce_bytes``: the gradient buckets DDP all-reduces (a comm hook sums their sizes);
* ``gather_bytes``: what the sparse optimizer sends to its all-gathers (ids + rows);
* ``dense_table_bytes``: the size of a dense table gradient.

With ``--dense`` the table is instead a parameter with a dense gradient (the behaviour before the fix), and the
comm hook then measures DDP all-reducing it.

    torchrun --nproc_per_node=2 benchmarks/puzzle_table_comm.py OUT [--rows 960961 --hidden 512] [--dense]
    python benchmarks/puzzle_table_comm.py OUT          # one process: the single-process reference

It writes ``OUT.RANK.json`` (parameters, table, losses, byte counts); tests/test_puzzle_table.py runs it at a
tiny size and checks that two ranks take the same steps as one process.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.models.hrm import HRM, HRMConfig, act_loss
from recursionlab.train.config import TrainConfig
from recursionlab.train.engine import StepOutput, Trainer
from recursionlab.train.optim import SignSGD, SparseSignSGD

ARC1_PUZZLE_IDS = 960_961  # 960 augmentations x 1001 tasks + the blank id


class DenseTableHRM(HRM):
    """For comparison only: the behaviour before the table became sparse -- a parameter with a dense (N, D)
    gradient that DDP all-reduces, trained by the dense sign-SGD."""

    def __init__(self, cfg: HRMConfig) -> None:
        super().__init__(cfg)
        table = self._buffers.pop("puzzle_emb")
        self.puzzle_emb = nn.Parameter(table)

    def ddp_ignored_names(self) -> list[str]:
        return []

    def puzzle_rows(self, puzzle_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(puzzle_ids, self.puzzle_emb)

    def param_groups(self) -> list[dict]:
        return [{"params": [p for n, p in self.named_parameters() if n != "puzzle_emb"]}]


def _loss(model: nn.Module, batch: dict) -> StepOutput:
    res = act_loss(model(batch["inputs"], batch["labels"], batch["puzzle_ids"]))
    return StepOutput(res.loss, res.metrics)


def run(out: str, rows: int, hidden: int, steps: int, batch: int, seq_len: int = 8, vocab: int = 6,
        dense: bool = False) -> dict:
    """Train a small HRM with a ``rows`` x ``hidden`` puzzle table for ``steps`` steps; write and return what
    this rank measured (see the module docstring). ``dense``: the dense-gradient table, for comparison."""
    torch.manual_seed(0)
    cfg = HRMConfig(vocab_size=vocab, seq_len=seq_len, num_puzzle_ids=rows, hidden=hidden, n_heads=2,
                    H_layers=1, L_layers=1, H_cycles=1, L_cycles=2, halt_max_steps=3, halt_exploration_prob=0.0,
                    ffn_multiple_of=8)
    model = (DenseTableHRM if dense else HRM)(cfg)

    def batch_fn(step: int) -> dict:
        g = torch.Generator().manual_seed(1000 + step)
        inputs = torch.randint(1, vocab, (batch, seq_len), generator=g)
        # repeated ids within the batch and across ranks: their rows must be summed before the sign
        ids = torch.randint(0, min(rows, batch), (batch,), generator=g)
        return {"inputs": inputs, "labels": (inputs + ids[:, None]) % vocab, "puzzle_ids": ids}

    train = TrainConfig(steps=steps, lr=3e-3, optimizer="adam_atan2", weight_decay=0.1, betas=(0.9, 0.95),
                        grad_clip=None, precision="fp32", device="cpu", log_every=1, progress=False)
    def table_optimizer(m: HRM) -> list[torch.optim.Optimizer]:
        if dense:
            return [SignSGD([m.puzzle_emb], lr=1e-2, weight_decay=0.1)]
        return [SparseSignSGD(m.puzzle_emb, m.take_puzzle_grad, lr=1e-2, weight_decay=0.1)]

    trainer = Trainer(model, _loss, batch_fn, train, param_groups=lambda m: m.param_groups(),
                      extra_optimizers=table_optimizer)
    allreduced = [0]
    if trainer.dist.enabled:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        def counting_hook(state, bucket):
            allreduced[0] += bucket.buffer().numel() * bucket.buffer().element_size()
            return default_hooks.allreduce_hook(None, bucket)

        trainer._forward_model.register_comm_hook(None, counting_hook)
    trainer.fit()
    table = trainer.model.puzzle_emb
    sparse_opt = trainer.optimizers[-1]
    result = {
        "rank": trainer.dist.rank,
        "world": trainer.dist.world_size,
        "rows": rows,
        "hidden": hidden,
        "local_batch": batch // trainer.dist.world_size,
        "steps": steps,
        "params": torch.cat([p.detach().flatten() for p in trainer.model.parameters()]).tolist(),
        "dense": dense,
        "param_bytes": sum(p.numel() * p.element_size() for n, p in trainer.model.named_parameters()
                           if n != "puzzle_emb"),
        "table_used_rows": table[: min(rows, batch)].flatten().tolist(),
        "table_rest_abs_sum": float(table[min(rows, batch):].abs().sum()),
        "loss": trainer.history.series("loss")[1],
        "ddp_allreduce_bytes_per_step": allreduced[0] / steps,
        "gather_bytes_per_step": getattr(sparse_opt, "bytes_communicated", 0) / steps,
        "dense_table_bytes_per_step": table.numel() * table.element_size(),
    }
    with open(f"{out}.{result['rank']}.json", "w") as fh:
        json.dump(result, fh)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--rows", type=int, default=ARC1_PUZZLE_IDS)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8, help="global batch")
    parser.add_argument("--dense", action="store_true", help="the dense-gradient table, for comparison")
    args = parser.parse_args()
    r = run(args.out, args.rows, args.hidden, args.steps, args.batch, dense=args.dense)
    if r["rank"] == 0:
        print(json.dumps({k: v for k, v in r.items() if k not in ("params", "table_used_rows", "loss")}, indent=2))


if __name__ == "__main__":
    main()
