"""``setup_notebook()``: the first code cell of every lesson."""

from __future__ import annotations

import os
import platform
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


def setup_notebook(seed: int = 0, quiet: bool = False) -> NotebookEnv:
    """Seed everything, pick the device, set plotting defaults and print the profile in force.

    Returns a :class:`NotebookEnv` with ``.profile``, ``.device`` and ``.by_profile(smoke, laptop, gpu)``.
    """
    import matplotlib

    from recursionlab.train.device import resolve_device, seed_everything

    profile = active_profile()
    seed_everything(seed)
    if hasattr(torch, "set_flush_denormal"):
        torch.set_flush_denormal(True)  # tiny recurrent nets produce denormals that slow CPUs 5-20x
    device = resolve_device("auto")
    matplotlib.rcParams.update(
        {"figure.figsize": (6.4, 3.8), "figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False}
    )
    if not quiet:
        m = machine_summary()
        print(describe())
        print(f"device: {device} | gpu: {m['gpu']} | torch {m['torch']} | {m['cpu cores']} CPU cores | seed {seed}")
    return NotebookEnv(profile=profile, device=device, seed=seed)
