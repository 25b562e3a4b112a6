"""A cost planner: parameters, FLOPs, peak memory and run time of a recipe *before* training it.

    python -m recursionlab plan trm-sudoku --profile paper --gpu h100
    python -m recursionlab plan hrm-arc --profile gpu --gpu 4090 --mfu 0.25

How each figure is obtained:

* **FLOPs per optimizer step** -- one training step (forward + loss + backward at the recipe's batch) is run
  and every op's FLOPs counted with the library's counter (:func:`recursionlab.train.flops.op_flops`, the
  formulas of ``torch.utils.flop_counter``), so recursion depth, halting loops and the second no-grad pass
  of HRM's Q target are counted as they run. Only matmul/convolution/attention kernels count (element-wise
  work is excluded, as usual for MFU).
* **Peak memory** -- that step runs on *fake* tensors (``FakeTensorMode``): every tensor has a shape, dtype
  and device but no storage, so a 27M-parameter model at batch 768 is planned on a laptop without allocating
  its activations. A dispatch-level tracker adds up the bytes of every tensor the step creates and frees
  them when Python drops the last reference (autograd's saved tensors keep theirs alive, as on a GPU), giving
  the activation + gradient high-water mark. To it we add the parameters, the optimizer state (Adam-type:
  two fp32 moments per parameter; SGD with momentum: one; sign-SGD: none) and the EMA copy (one fp32 copy).
  Not included: the CUDA context (~0.5 GiB), the allocator's caching/fragmentation, kernels' private
  workspaces and the optimizer's own temporaries. On the CPU the step's figure matched the resident memory a
  fresh process gained over the same step to within 1 % (``tests/test_plan.py``, with glibc told to unmap
  freed blocks; its default heap retention reads ~1.3x), so treat the total as a floor to add those to.
* **Time** -- FLOPs / (peak FLOP/s of the GPU x MFU). Peaks are the vendors' dense (no sparsity) tensor-core
  bf16 figures and plain fp32 (non-tensor-core: PyTorch does not use TF32 for matmuls unless asked), from the
  data sheets listed in :data:`GPU_SPECS`. MFU (model-FLOPs utilisation) is an assumption you state with
  ``--mfu``: the default 0.3 is typical of small-sequence transformer training in bf16; measure yours with
  ``make gpu-check``. ``--gpu cpu`` times a matmul on this machine instead of reading a table (default MFU
  0.2, what a small TRM step reached on a CPU).

Sudoku and maze sets are built from two real puzzles repeated to the recipe's size (:func:`shape_only_puzzles`):
a plan needs a batch's shapes, not minutes of puzzle generation.

The batch is the recipe's *global* batch on one GPU. Under ``torchrun`` with N GPUs each holds batch / N rows:
the step's activations and the time per step shrink about N-fold, parameters and optimizer state do not.

Values that the step would read back to Python (metrics, ``if tensor:``) do not exist on fake tensors; they
read as 0 / False, which in a halting loop means "not halted yet" and so plans the worst case (every step
runs to its cap). Data that only steers shapes (e.g. the recurrence count carried in a batch) stays real.
Steps whose *shapes* depend on values (token routing with ``nonzero``) are planned by running the step for
real at two tiny slices of the batch (1 and 2 rows) and extrapolating linearly in the batch size; the plan
says so (``method``). Recipes with a random depth per step (recurrent depth) are planned at step 0's depth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_leaves, tree_map

from recursionlab.train.device import autocast
from recursionlab.train.engine import _as_step_output
from recursionlab.train.flops import op_flops

__all__ = ["GPU_SPECS", "GPUSpec", "Plan", "StepCost", "device_peak_flops", "measure_step", "plan_recipe",
           "format_bytes"]


@dataclass(frozen=True)
class GPUSpec:
    """Peak dense FLOP/s (bf16 tensor cores, plain fp32) and memory of one accelerator, with the source."""

    name: str
    bf16_flops: float
    fp32_flops: float
    memory_bytes: float
    source: str


# Dense peaks (the data sheets also print 2x "with sparsity" figures, which dense training never reaches).
GPU_SPECS: dict[str, GPUSpec] = {
    "h100": GPUSpec("NVIDIA H100 SXM5 80GB", 989.4e12, 66.9e12, 80e9,
                    "NVIDIA H100 Tensor Core GPU datasheet (SXM5: BF16 1,979 TFLOPS with sparsity; FP32 67 TFLOPS)"),
    "h200": GPUSpec("NVIDIA H200 SXM 141GB", 989.4e12, 66.9e12, 141e9,
                    "NVIDIA H200 Tensor Core GPU datasheet (SXM: BF16 1,979 TFLOPS with sparsity; FP32 67 TFLOPS)"),
    "a100": GPUSpec("NVIDIA A100 SXM4 80GB", 312e12, 19.5e12, 80e9,
                    "NVIDIA A100 Tensor Core GPU datasheet (BF16 312 TFLOPS dense; FP32 19.5 TFLOPS)"),
    "l40s": GPUSpec("NVIDIA L40S 48GB", 362.05e12, 91.6e12, 48e9,
                    "NVIDIA L40S datasheet (BF16 733 TFLOPS with sparsity; FP32 91.6 TFLOPS)"),
    "4090": GPUSpec("NVIDIA GeForce RTX 4090 24GB", 165.2e12, 82.6e12, 24e9,
                    "NVIDIA Ada Lovelace architecture whitepaper, RTX 4090: FP16/BF16 tensor with FP32 "
                    "accumulate 165.2 TFLOPS dense; FP32 82.6 TFLOPS"),
}
KINDS = (*GPU_SPECS, "cpu")


def device_peak_flops(device: torch.device, dtype: torch.dtype = torch.bfloat16) -> tuple[float | None, str]:
    """Dense peak FLOP/s of ``device`` at ``dtype`` (bf16 tensor cores, else plain fp32) from :data:`GPU_SPECS`,
    and the table row's name; ``(None, why)`` for a CPU or a GPU the table does not list."""
    if device.type != "cuda":
        return None, "no table peak for a CPU"
    name = torch.cuda.get_device_name(device).upper()
    for key, spec in GPU_SPECS.items():
        if key.upper() in name.replace("RTX ", ""):
            return (spec.bf16_flops if dtype == torch.bfloat16 else spec.fp32_flops), spec.name
    return None, f"{name} is not in the planner's GPU table"
# the CPU figure is measured: a TRM training step at hidden 64 reached 18-21 % of this machine's matmul peak
DEFAULT_MFU = {"gpu": 0.3, "cpu": 0.2}

# Optimizer moments per parameter, stored in fp32 (AdamATan2 keeps fp32 moments whatever the parameter dtype).
_STATE_COPIES = {"adamw": 2, "adam": 2, "adam_atan2": 2}


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def _seconds(s: float) -> str:
    if s < 1:
        return f"{1e3 * s:.2f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


# ----------------------------------------------------------------------------------------------------------
# One training step on fake tensors: FLOPs and the activation/gradient high-water mark
# ----------------------------------------------------------------------------------------------------------


class _StepTracker(TorchDispatchMode):
    """Counts the FLOPs of every op (:func:`recursionlab.train.flops.op_flops`) and adds up the bytes of every
    tensor storage an op creates, subtracting them when the storage's last tensor dies; ``peak`` is the
    high-water mark.

    With ``fake=True``, ops whose tensor inputs are all real (data preparation on the batch: indexing, range
    checks, ``tolist``) run for real, so values that steer shapes survive; every other op goes on to the fake
    mode, and reading a fake value back to Python yields 0 / False (see the module docstring).
    """

    def __init__(self, fake: bool) -> None:
        super().__init__()
        self.fake = fake
        self.flops = 0
        self.live = 0
        self.peak = 0
        self._storages: dict[int, list] = {}  # storage key -> [bytes, live tensors using it]

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [storage.nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch._subclasses.fake_tensor import FakeTensor

        kwargs = kwargs or {}
        if self.fake:
            leaves = [x for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
            if leaves and not any(isinstance(x, FakeTensor) for x in leaves):
                with _disable_current_modes():
                    return func(*args, **kwargs)
            if func is torch.ops.aten._local_scalar_dense.default:
                dtype = args[0].dtype
                return False if dtype == torch.bool else (0.0 if dtype.is_floating_point else 0)
        out = func(*args, **kwargs)
        self.flops += op_flops(func, args, kwargs, out)
        seen: set[int] = set()
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                self._track(t)
        return out


@dataclass
class StepCost:
    """FLOPs of one training step and the bytes it holds at its peak beyond the parameters.

    activation_bytes: high-water mark of everything the step allocates (activations, saved tensors,
    gradients, temporaries); method: "fake" (full batch on fake tensors) or "extrapolated" (real steps at
    batch 1 and 2, linear in the batch size); batch_size: rows of the batch.
    """

    flops: int
    activation_bytes: int
    method: str
    batch_size: int


def _fake_model(model: nn.Module, fake_mode) -> None:
    """Swap every parameter and buffer of ``model`` (in place) for a fake tensor of the same shape/dtype."""
    memo: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is None:
                continue
            if id(p) not in memo:
                memo[id(p)] = nn.Parameter(fake_mode.from_tensor(p.detach()), requires_grad=p.requires_grad)
            module._parameters[name] = memo[id(p)]
        for name, b in list(module._buffers.items()):
            if b is None:
                continue
            if id(b) not in memo:
                memo[id(b)] = fake_mode.from_tensor(b)
            module._buffers[name] = memo[id(b)]


def _batch_rows(batch: Any) -> int:
    sizes = [x.shape[0] for x in tree_leaves(batch) if isinstance(x, torch.Tensor) and x.dim() > 0]
    if not sizes:
        raise ValueError("cannot plan a batch without tensors (the batch must be batch-first tensors)")
    return int(sizes[0])


def _slice_rows(batch: Any, n: int) -> Any:
    return tree_map(lambda x: x[:n] if isinstance(x, torch.Tensor) and x.dim() > 0 else x, batch)


def _run_step(model: nn.Module, loss_fn: Callable, batch: Any, dtype: torch.dtype) -> None:
    with autocast(torch.device("cpu"), dtype):
        out = _as_step_output(loss_fn(model, batch))
    out.loss.backward()


def _fake_step(model: nn.Module, loss_fn: Callable, batch: Any, dtype: torch.dtype) -> StepCost:
    from torch._subclasses.fake_tensor import FakeTensorMode

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    _fake_model(model, fake_mode)
    model.train()
    tracker = _StepTracker(fake=True)
    with fake_mode, tracker:
        _run_step(model, loss_fn, batch, dtype)
    return StepCost(tracker.flops, tracker.peak, "fake", _batch_rows(batch))


def _real_cost(model: nn.Module, loss_fn: Callable, batch: Any, dtype: torch.dtype) -> tuple[int, int]:
    tracker = _StepTracker(fake=False)
    model.train()
    model.zero_grad(set_to_none=True)
    with tracker:
        _run_step(model, loss_fn, batch, dtype)
    model.zero_grad(set_to_none=True)
    return tracker.flops, tracker.peak


def measure_step(
    model: nn.Module, loss_fn: Callable, batch: Any, dtype: torch.dtype = torch.float32, fake: bool = True
) -> StepCost:
    """FLOPs and activation bytes of one training step ``loss_fn(model, batch).loss.backward()``.

    ``fake=True`` runs it on fake tensors (no memory allocated; the model's parameters are swapped for fake
    ones in place, so pass a model you no longer need); if the step's shapes depend on values it falls back
    to real steps at 1 and 2 rows of ``batch`` extrapolated linearly. ``fake=False`` runs the full batch for
    real (what the planner's tests compare against). ``dtype`` float32 or bfloat16 (CPU autocast).
    """
    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
        UnsupportedOperatorException,
    )

    rows = _batch_rows(batch)
    if not fake:
        flops, peak = _real_cost(model, loss_fn, batch, dtype)
        return StepCost(flops, peak, "real", rows)
    import copy

    try:
        # on a copy: faking swaps the parameters in place, and the fallback below needs the real ones
        return _fake_step(copy.deepcopy(model), loss_fn, batch, dtype)
    except (DynamicOutputShapeException, DataDependentOutputException, UnsupportedOperatorException):
        pass  # an op whose output shape depends on values, or one without a fake kernel
    # value-dependent shapes: run 1 and 2 rows for real and extrapolate linearly in the batch size
    f1, m1 = _real_cost(model, loss_fn, _slice_rows(batch, 1), dtype)
    _reset_carry(model)
    f2, m2 = _real_cost(model, loss_fn, _slice_rows(batch, 2), dtype)
    flops = f1 + (f2 - f1) * (rows - 1)
    peak = m1 + max(m2 - m1, 0) * (rows - 1)
    return StepCost(int(flops), int(peak), "extrapolated", rows)


def _reset_carry(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "reset_carry"):
            m.reset_carry()



# ----------------------------------------------------------------------------------------------------------
# The plan of a recipe
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Everything ``python -m recursionlab plan`` prints (bytes, FLOPs, seconds)."""

    recipe: str
    profile: str
    gpu: str
    device_name: str
    precision: str
    batch_size: int
    steps: int
    parameters: int
    trainable_parameters: int
    parameter_bytes: int
    optimizer_bytes: int
    ema_bytes: int
    activation_bytes: int
    flops_per_step: int
    peak_flops: float
    mfu: float
    method: str
    memory_capacity: float | None
    notes: list[str] = field(default_factory=list)
    peak_source: str = ""

    @property
    def peak_bytes(self) -> int:
        """Parameters + optimizer state + EMA + the step's activation/gradient high-water mark."""
        return self.parameter_bytes + self.optimizer_bytes + self.ema_bytes + self.activation_bytes

    @property
    def seconds_per_step(self) -> float:
        return self.flops_per_step / (self.peak_flops * self.mfu)

    @property
    def total_seconds(self) -> float:
        return self.seconds_per_step * self.steps

    @property
    def fits(self) -> bool | None:
        return None if self.memory_capacity is None else self.peak_bytes <= self.memory_capacity

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(peak_bytes=self.peak_bytes, seconds_per_step=self.seconds_per_step,
                 total_seconds=self.total_seconds, fits=self.fits)
        return d

    def render(self) -> str:
        """A human-readable table."""
        fit = {None: "", True: " -> fits", False: " -> does NOT fit"}[self.fits]
        cap = f" of {format_bytes(self.memory_capacity)}" if self.memory_capacity else ""
        lines = [
            f"plan: {self.recipe} at profile {self.profile} on {self.device_name} ({self.precision})",
            f"  parameters         {self.parameters:,} ({self.trainable_parameters:,} trainable)",
            f"  batch              {self.batch_size} rows; {self.steps:,} optimizer steps",
            f"  FLOPs / step       {self.flops_per_step:.4g} (forward + backward, matmul-class ops; {self.method})",
            f"  FLOPs / run        {self.flops_per_step * self.steps:.4g}",
            "  peak memory        "
            f"{format_bytes(self.peak_bytes)}{cap}{fit}",
            f"    parameters       {format_bytes(self.parameter_bytes)}",
            f"    optimizer state  {format_bytes(self.optimizer_bytes)}",
            f"    EMA copy         {format_bytes(self.ema_bytes)}",
            f"    step (activations + gradients)  {format_bytes(self.activation_bytes)}",
            f"  time / step        {_seconds(self.seconds_per_step)} at MFU {self.mfu:.0%} of "
            f"{self.peak_flops / 1e12:.1f} TFLOP/s",
            f"  time / run         {_seconds(self.total_seconds)}",
        ]
        if self.peak_source:
            lines.append(f"  peak source        {self.peak_source}")
        lines.append("  note: one GPU holds the whole global batch; with N GPUs (torchrun) activations and time / step "
                     "shrink ~N-fold")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def cpu_peak_flops(seconds: float = 0.2, n: int = 512) -> float:
    """Measured fp32 matmul FLOP/s of this machine (with the current torch thread count)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    count, start = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * n**3 * count / elapsed


@contextlib.contextmanager
def shape_only_puzzles(rows: int = 2) -> Iterator[None]:
    """Within the block, Sudoku and maze generators make ``rows`` real puzzles and repeat them to the
    requested count: planning needs the shapes of a batch, not hours of puzzle generation."""
    from recursionlab.data import maze as maze_data
    from recursionlab.data import sudoku as sudoku_data

    def tiled(real: Callable) -> Callable:
        def make(n, *args, **kwargs):
            kwargs.pop("workers", None)
            if "cache" in kwargs:
                kwargs["cache"] = False
            small = real(min(int(n), rows), *args, **kwargs)
            if int(n) <= rows:
                return small
            changes = {}
            for f in dataclasses.fields(small):
                v = getattr(small, f.name)
                if isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == len(small):
                    changes[f.name] = np.concatenate([v] * -(-int(n) // len(v)))[: int(n)]
            return dataclasses.replace(small, **changes)

        return make

    saved = (sudoku_data.generate_puzzles, maze_data.generate_mazes)
    sudoku_data.generate_puzzles = tiled(saved[0])
    maze_data.generate_mazes = tiled(saved[1])
    try:
        yield
    finally:
        sudoku_data.generate_puzzles, maze_data.generate_mazes = saved


def plan_recipe(
    name: str,
    profile: str | None = None,
    gpu: str = "h100",
    mfu: float | None = None,
    overrides: dict[str, Any] | None = None,
    precision: str | None = None,
    full_data: bool = False,
) -> Plan:
    """Plan recipe ``name`` at ``profile`` on one ``gpu`` (one of :data:`KINDS`) at ``mfu`` (default 0.3 on a
    GPU, 0.2 on the CPU). ``precision`` bf16/fp32 (default: the recipe's; ``auto`` is bf16 on a GPU, fp32 on
    the CPU). ``full_data=False`` plans on repeated puzzles (see :func:`shape_only_puzzles`).
    """
    from recursionlab.profiles import active_profile
    from recursionlab.train.recipes import get_config, get_recipe

    if gpu not in KINDS:
        raise ValueError(f"unknown GPU kind {gpu!r}; allowed: {', '.join(KINDS)}")
    recipe = get_recipe(name)
    profile = active_profile() if profile is None else profile
    config = get_config(name, profile, overrides)
    if mfu is None:
        mfu = DEFAULT_MFU["cpu" if gpu == "cpu" else "gpu"]
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must lie in (0, 1], got {mfu}")
    train = config.train
    precision = precision or train.precision
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"unknown precision {precision!r}; allowed: auto, bf16, fp32")
    if precision == "auto":
        precision = "fp32" if gpu == "cpu" else "bf16"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with contextlib.nullcontext() if full_data else shape_only_puzzles():
        job = recipe.build_fn(config)
        batch = job.batch_fn(0)
    model = job.model
    named = list(model.named_parameters())
    params = {id(p): p for _, p in named}
    trainable = sum(p.numel() for p in params.values() if p.requires_grad)
    param_bytes = sum(p.numel() * p.element_size() for p in params.values())
    # optimizer state: the main optimizer's groups (recipe's param_groups or all trainable parameters)
    groups = job.param_groups(model) if job.param_groups else [p for p in params.values() if p.requires_grad]
    main = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    copies = _STATE_COPIES.get(train.optimizer, 1 if train.optimizer == "sgd" and train.momentum else 0)
    optimizer_bytes = copies * 4 * sum(p.numel() for p in main)
    ema_bytes = 4 * trainable if train.ema_decay else 0
    cost = measure_step(model, job.loss_fn, batch, dtype)
    if gpu == "cpu":
        peak = cpu_peak_flops()
        spec_name, capacity, source = "this CPU", None, "measured fp32 matmul throughput of this machine"
    else:
        spec = GPU_SPECS[gpu]
        peak = spec.bf16_flops if dtype == torch.bfloat16 else spec.fp32_flops
        spec_name, capacity, source = spec.name, spec.memory_bytes, spec.source
    notes = []
    if job.extra_optimizers is not None:
        notes.append("extra optimizers (e.g. sign-SGD on puzzle embeddings) keep no state")
    if cost.method == "extrapolated":
        notes.append("the step's shapes depend on values: FLOPs and activations extrapolated from batches 1 and 2")
    return Plan(
        recipe=name, profile=profile, gpu=gpu, device_name=spec_name, precision=precision,
        batch_size=cost.batch_size, steps=int(train.steps), parameters=sum(p.numel() for p in params.values()),
        trainable_parameters=trainable, parameter_bytes=param_bytes, optimizer_bytes=optimizer_bytes,
        ema_bytes=ema_bytes, activation_bytes=cost.activation_bytes, flops_per_step=cost.flops, peak_flops=peak,
        mfu=mfu, method=cost.method, memory_capacity=capacity, notes=notes, peak_source=source,
    )
