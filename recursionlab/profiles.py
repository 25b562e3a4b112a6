"""The active profile: one switch that sets the scale of every experiment.

``RECURSIONLAB_PROFILE`` chooses between three scales (see ``docs/design.md``, section 2):

* ``smoke``  -- the test suite: every cell runs in seconds on 2 CPU cores;
* ``laptop`` -- a learner without a GPU: each lesson shows its effect in under 5 minutes on 2 CPU cores;
* ``gpu``    -- one modern GPU: the effect at a scale close to the paper's.

Without the variable the profile is ``gpu`` when CUDA is present and ``laptop`` otherwise.
Lessons and recipes read their sizes through :func:`by_profile` so that no learner edits code to fit a machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

PROFILES: tuple[str, ...] = ("smoke", "laptop", "gpu")
ENV_VAR = "RECURSIONLAB_PROFILE"

T = TypeVar("T")


class UnknownProfileError(ValueError):
    """Raised for a profile name that is not one of :data:`PROFILES`."""


def check_profile(name: str) -> str:
    """Return ``name`` normalised to lower case, or raise :class:`UnknownProfileError` naming the choices."""
    norm = str(name).strip().lower()
    if norm not in PROFILES:
        raise UnknownProfileError(
            f"unknown profile {name!r}; allowed profiles are {', '.join(PROFILES)} "
            f"(set {ENV_VAR} to one of them, or leave it unset to choose from the hardware)"
        )
    return norm


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def default_profile() -> str:
    """The profile the hardware suggests: ``gpu`` with CUDA, else ``laptop``."""
    return "gpu" if _cuda_available() else "laptop"


def active_profile() -> str:
    """The profile in force: ``RECURSIONLAB_PROFILE`` if set (validated), else :func:`default_profile`."""
    value = os.environ.get(ENV_VAR, "").strip()
    return check_profile(value) if value else default_profile()


def by_profile(smoke: T, laptop: T, gpu: T, profile: str | None = None) -> T:
    """Pick the value that belongs to ``profile`` (default: the active one).

    >>> by_profile(smoke=100, laptop=2_000, gpu=50_000, profile="laptop")
    2000
    """
    name = check_profile(profile) if profile is not None else active_profile()
    return {"smoke": smoke, "laptop": laptop, "gpu": gpu}[name]


@contextmanager
def use_profile(name: str) -> Iterator[str]:
    """Temporarily set the active profile (restores the previous environment afterwards)."""
    name = check_profile(name)
    old = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = name
    try:
        yield name
    finally:
        if old is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = old


def describe() -> str:
    """One line for the top of every lesson: which profile runs and why."""
    name = active_profile()
    source = f"from {ENV_VAR}" if os.environ.get(ENV_VAR) else "chosen from the hardware"
    budget = {"smoke": "seconds (test suite)", "laptop": "a few minutes on a CPU", "gpu": "up to ~20 min on one GPU"}
    return f"recursionlab profile: {name} ({source}); budget per lesson: {budget[name]}"
