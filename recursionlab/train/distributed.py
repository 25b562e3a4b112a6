"""Multi-process data parallelism through ``torchrun`` (PyTorch DDP): one entry point for 1 or N processes.

``torchrun --nproc_per_node=N -m recursionlab train RECIPE`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; the
trainer then joins a process group (NCCL on GPUs, gloo on CPU), wraps the model in DDP and gives every rank
its contiguous slice of the global batch. Gradients are averaged, so N ranks over slices of a global batch take
the same step as one process over the whole batch.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> DistInfo:
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group once (no-op for a single process)."""
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
        # Leave the group before the interpreter tears down: an undestroyed gloo/NCCL group can abort the process
        # at exit (SIGABRT), which torchrun then reports as a failed run.
        atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_batch(batch, info: DistInfo):
    """This rank's contiguous slice (along dim 0) of every tensor in ``batch`` (tensor/tuple/list/dict)."""
    if not info.enabled:
        return batch
    if isinstance(batch, torch.Tensor):
        n = batch.shape[0]
        if n % info.world_size:
            raise ValueError(
                f"global batch size {n} is not divisible by the world size {info.world_size}; "
                "choose a batch size that is a multiple of the number of processes"
            )
        per = n // info.world_size
        return batch[info.rank * per : (info.rank + 1) * per]
    if isinstance(batch, dict):
        return {k: shard_batch(v, info) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard_batch(v, info) for v in batch)
    return batch


def all_reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average logged scalars over ranks (for printing/history only; gradients are averaged by DDP)."""
    if not info.enabled or not values:
        return values
    names = sorted(values)
    t = torch.tensor([values[n] for n in names], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t = (t / info.world_size).cpu()
    return {n: float(v) for n, v in zip(names, t)}


def sparse_tensor_names(model: torch.nn.Module) -> set[str]:
    """Qualified names of the tensors some submodule declares through ``ddp_ignored_names()``: large tables
    updated sparsely by their own optimizer (HRM/TRM's puzzle embedding), kept out of DDP and of the EMA."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        declared = getattr(module, "ddp_ignored_names", None)
        if callable(declared):
            names |= {f"{prefix}.{n}" if prefix else n for n in declared()}
    return names


def ignore_sparse_tensors_in_ddp(model: torch.nn.Module) -> None:
    """Tell DDP (before wrapping ``model``) to neither broadcast nor all-reduce the sparse tables: a dense
    all-reduce of a 961k-row ARC puzzle table would move ~2 GB per step; their optimizer all-gathers only the
    batch's rows instead."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    names = sorted(sparse_tensor_names(model))
    if names:
        DDP._set_params_and_buffers_to_ignore_for_model(model, names)
def all_reduce_max(value: int, info: DistInfo) -> int:
    """The largest ``value`` over all processes (e.g. 'has any process been asked to stop?')."""
    if not info.enabled:
        return value
    t = torch.tensor([int(value)], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def broadcast_from_main(obj, info: DistInfo):
    """Process 0's ``obj`` (any picklable value) on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj, info: DistInfo) -> list | None:
    """``[obj of process 0, obj of process 1, ...]`` on process 0 and ``None`` elsewhere; ``None`` when running
    alone (nothing to gather)."""
    if not info.enabled:
        return None
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out
