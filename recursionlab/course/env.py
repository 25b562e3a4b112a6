"""``setup_notebook()``: the first code cell of every lesson."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from typing import TypeVar

import torch

from recursionlab.profiles import active_profile, by_profile, describe

T = TypeVar("T")


@dataclass
class NotebookEnv:
    """What a lesson needs to know about where it runs."""

    profile: str
    device: torch.device
    seed: int

    def by_profile(self, smoke: T, laptop: T, gpu: T) -> T:
        """The value for the active profile (see :func:`recursionlab.profiles.by_profile`)."""
        return by_profile(smoke, laptop, gpu, profile=self.profile)


def machine_summary() -> dict[str, str]:
    """A few facts about this machine: Python, torch, CPU cores, GPU (if any)."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB) x{torch.cuda.device_count()}"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        info["gpu"] = "Apple MPS"
    else:
        info["gpu"] = "none (CPU only)"
    return info


THREADS_ENV_VAR = "RECURSIONLAB_THREADS"
_THREAD_CHOICE: tuple[int, str] | None = None  # measured once per process: the measurement moves no learning


def _steps_per_second(threads: int, seconds: float) -> float:
    """Forward+backward steps/s of a tiny recurrent MLP (batch 32, width 64) on ``threads`` CPU threads."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    w = (0.1 * torch.randn(64, 64, generator=gen)).requires_grad_()
    x = torch.randn(32, 64, generator=gen)

    def step() -> None:
        h = x
        for _ in range(8):  # a short unroll, the shape of most lessons' models
            h = torch.tanh(h @ w)
        h.square().mean().backward()
        w.grad = None

    step()  # warm-up: allocator and thread pool
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step()
        count += 1
    return count / elapsed


def choose_threads(seconds: float = 0.1) -> tuple[int, str]:
    """Set torch's CPU thread count for tiny models and return ``(threads, why)``.

    Small networks are often fastest on one thread: handing a 64x64 product between threads costs more than
    computing it, and worse when another program is busy on the other cores. ``RECURSIONLAB_THREADS=N`` forces N
    threads; otherwise one thread and torch's default are each timed for ``seconds`` on a tiny recurrent MLP and
    the faster one is kept. The decision is made once per process.
    """
    global _THREAD_CHOICE
    value = os.environ.get(THREADS_ENV_VAR, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{THREADS_ENV_VAR}={value!r} is not allowed; set a whole number of threads >= 1 "
                             f"or unset it to measure")
        torch.set_num_threads(int(value))
        return int(value), f"set by {THREADS_ENV_VAR}"
    if _THREAD_CHOICE is None:
        default = torch.get_num_threads()
        if default <= 1:
            _THREAD_CHOICE = (1, "torch's default here")
        else:
            one, many = _steps_per_second(1, seconds), _steps_per_second(default, seconds)
            best = 1 if one >= many else default
            ratio = max(one, many) / max(min(one, many), 1e-9)
            shown = f"{ratio:.1f}" if ratio < 10 else f"{ratio:.0f}"
            _THREAD_CHOICE = (best, f"measured {shown}x faster than {default if best == 1 else 1}")
    torch.set_num_threads(_THREAD_CHOICE[0])
    return _THREAD_CHOICE


def setup_notebook(seed: int = 0, quiet: bool = False) -> NotebookEnv:
    """Seed everything, pick the device and the CPU thread count, set plotting defaults, print what is in force.

    The thread count comes from :func:`choose_threads` (a 0.2 s measurement, once per process;
    ``RECURSIONLAB_THREADS=N`` overrides it).

    Returns a :class:`NotebookEnv` with ``.profile``, ``.device`` and ``.by_profile(smoke, laptop, gpu)``.
    """
    import matplotlib

    from recursionlab.train.device import resolve_device, seed_everything

    profile = active_profile()
    seed_everything(seed)
    if hasattr(torch, "set_flush_denormal"):
        torch.set_flush_denormal(True)  # tiny recurrent nets produce denormals that slow CPUs 5-20x
    device = resolve_device("auto")
    threads, why = choose_threads()
    matplotlib.rcParams.update(
        {"figure.figsize": (6.4, 3.8), "figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False}
    )
    if not quiet:
        m = machine_summary()
        print(describe())
        print(f"device: {device} | gpu: {m['gpu']} | torch {m['torch']} | {m['cpu cores']} CPU cores, "
              f"{threads} torch thread{'s' if threads > 1 else ''} ({why}) | seed {seed}")
    return NotebookEnv(profile=profile, device=device, seed=seed)
