"""Worker for tests/test_ddp.py: trains the tiny recipe under torchrun (or alone) and dumps what it saw."""

import json
import sys

import torch

from recursionlab.train.recipes import build_trainer, get_config


def main(out_path: str) -> None:
    cfg = get_config("tiny-classifier", profile="smoke", overrides={"train.steps": 8, "batch_size": 64,
                                                                    "train.log_every": 1, "train.eval_every": 0})
    trainer = build_trainer("tiny-classifier", cfg)
    trainer.fit()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    rank = trainer.dist.rank
    with open(f"{out_path}.{rank}.json", "w") as fh:
        json.dump({"rank": rank, "world": trainer.dist.world_size, "params": flat.tolist(),
                   "loss": trainer.history.series("loss")[1]}, fh)


if __name__ == "__main__":
    main(sys.argv[1])
