"""Benchmarks: lesson run times per profile and the training engine's throughput; writes benchmarks/RESULTS.md.

    python -m benchmarks.run                       # engine throughput + every lesson at smoke and laptop
    python -m benchmarks.run --skip-lessons        # engine only (what a GPU session usually wants)
    python -m benchmarks.run --profiles smoke      # lessons at smoke only

Each run *appends* a dated section to RESULTS.md recording the command, the machine and the figures, so results
from different machines (a 2-core laptop, an H100) sit side by side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.train.plan import device_peak_flops

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def device_peak(device: torch.device) -> float | None:
    """The dense bf16 peak of ``device`` from the planner's GPU table (one table for every MFU in the project)."""
    return device_peak_flops(device, torch.bfloat16)[0]


class TokenMLP(nn.Module):
    """A stack of residual MLP blocks over token embeddings: ``ids (B, T) -> logits (B, T, V)``.

    Its matmul FLOPs are known exactly (6 x parameters per token for a training step), so MFU is honest."""

    def __init__(self, vocab: int = 256, dim: int = 512, depth: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
            for _ in range(depth)
        )
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)

    def matmul_params(self) -> int:
        return sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))


def engine_throughput(device_name: str, precision: str, compile_model: bool, steps: int, batch: int, seq: int,
                      dim: int) -> dict:
    from recursionlab.train import StepOutput, TrainConfig, Trainer

    model = TokenMLP(dim=dim)

    def batch_fn(step: int):
        g = torch.Generator().manual_seed(step)
        ids = torch.randint(0, 256, (batch, seq + 1), generator=g)
        return ids[:, :-1], ids[:, 1:]

    def loss_fn(m, b):
        x, y = b
        return StepOutput(F.cross_entropy(m(x).flatten(0, 1).float(), y.flatten()))

    warm = TrainConfig(steps=3, lr=1e-3, precision=precision, compile=compile_model, device=device_name,
                       progress=False, log_every=0)
    trainer = Trainer(model, loss_fn, batch_fn, warm)
    trainer.fit()  # warm-up (and compilation)
    trainer.cfg.steps = 3 + steps
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.fit()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = steps * batch * seq
    flops = 6 * model.matmul_params() * tokens
    peak = device_peak(trainer.device)
    return {
        "device": str(trainer.device), "precision": str(trainer.dtype).replace("torch.", ""),
        "compiled": compile_model, "steps/s": steps / seconds, "tokens/s": tokens / seconds,
        "TFLOP/s": flops / seconds / 1e12, "MFU": (flops / seconds / peak) if peak else None,
        "shape": f"batch {batch} x seq {seq}, dim {dim}, {sum(p.numel() for p in model.parameters()):,} params",
    }


def lesson_times(profile: str) -> list[tuple[str, float | None]]:
    from recursionlab.course.notebooks import execute_notebook

    os.environ["RECURSIONLAB_PROFILE"] = profile
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    for path in sorted(glob.glob(str(ROOT / "notebooks" / "*.ipynb"))):
        try:
            rows.append((Path(path).name, execute_notebook(path, save=False)))
        except Exception as err:  # keep going; the table says it failed
            print(f"{path} failed: {type(err).__name__}", file=sys.stderr)
            rows.append((Path(path).name, None))
        print(f"{profile:>6} {rows[-1][0]}: {rows[-1][1]}", flush=True)
    return rows


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node() or 'unknown host'}: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPU cores, {gpu}, Python {platform.python_version()}, torch {torch.__version__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", nargs="+", default=["smoke", "laptop"])
    parser.add_argument("--skip-lessons", action="store_true")
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--note", default="", help="free text recorded with the results (e.g. machine load)")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [f"## {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", "", f"- command: `{command.strip()}`",
             f"- machine: {machine()}"]
    if args.note:
        lines.append(f"- note: {args.note}")
    lines.append("")
    if not args.skip_engine:
        cuda = torch.cuda.is_available()
        settings = [("fp32", False), ("bf16", False), ("bf16", True)] if cuda else [("fp32", False)]
        shape = dict(steps=50, batch=64, seq=256, dim=1024) if cuda else dict(steps=20, batch=8, seq=64, dim=256)
        lines += ["### Engine throughput (TokenMLP, next-token loss; MFU against the dense bf16 peak)", "",
                  "| device | precision | compiled | steps/s | tokens/s | TFLOP/s | MFU | shape |",
                  "|---|---|---|---|---|---|---|---|"]
        for precision, comp in settings:
            r = engine_throughput("auto", precision, comp, **shape)
            mfu = f"{100 * r['MFU']:.1f}%" if r["MFU"] is not None else "n/a (no known peak)"
            lines.append(f"| {r['device']} | {r['precision']} | {r['compiled']} | {r['steps/s']:.2f} | "
                         f"{r['tokens/s']:,.0f} | {r['TFLOP/s']:.3f} | {mfu} | {r['shape']} |")
            print(lines[-1], flush=True)
        lines.append("")
    if not args.skip_lessons:
        lines += ["### Lesson run times (fresh kernel, one intra-op thread, seconds)", ""]
        results = {p: dict(lesson_times(p)) for p in args.profiles}
        names = sorted({n for r in results.values() for n in r})
        lines += ["| lesson | " + " | ".join(args.profiles) + " |", "|---|" + "---|" * len(args.profiles)]
        for name in names:
            cells = [f"{results[p][name]:.1f}" if results[p].get(name) is not None else "FAILED" for p in args.profiles]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    header = "# Benchmark results\n\nAppended by `python -m benchmarks.run` (see its docstring); newest last.\n\n"
    old = RESULTS.read_text() if RESULTS.exists() else header
    RESULTS.write_text(old.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")
    print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
