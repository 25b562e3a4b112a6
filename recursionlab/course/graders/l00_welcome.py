"""Graders for lesson 00's exercise: the warm-up + cosine schedule, cosine with warm restarts, and the loss spike
that warm-up prevents (see ``solutions/00_welcome.ipynb``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

from recursionlab.course.checks import Verdict, call_learner, check_choice, check_value, verdict
from recursionlab.train.schedules import lr_multiplier

# The experiment's fixed settings (given to the learner in the notebook): the tiny classifier with its gradient
# clipping switched off, a constant learning rate and a fixed size, so that every profile measures the same runs.
SPIKE_STEPS = 30
SPIKE_WARMUP = 10
SPIKE_THRESHOLD = 5.0  # "the loss exploded": about 7x the loss of a guess (ln 2 = 0.69)
SPIKE_LRS = (0.03, 0.1, 0.3, 1.0, 3.0)


def spike_overrides(lr: float, warmup_steps: int) -> dict:
    """The ``run_recipe("tiny-classifier", overrides=...)`` settings of one experiment run."""
    return {"hidden": 64, "batch_size": 128, "seed": 0, "train.lr": float(lr), "train.warmup_steps": int(warmup_steps),
            "train.steps": SPIKE_STEPS, "train.schedule": "constant", "train.grad_clip": None, "train.log_every": 1,
            "train.eval_every": 0, "train.progress": False}


def _close(got: float, want: float) -> bool:
    return abs(got - want) <= 1e-9 + 1e-9 * abs(want)


def _as_number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _grade_cases(name: str, fn: Callable, reference: Callable, cases: list[tuple[dict, str]]) -> Verdict:
    """Call ``fn(**kwargs)`` on every case; the first mismatch names the call (pasteable) and the phase it is in."""
    for kwargs, phase in cases:
        call = f"{getattr(fn, '__name__', name)}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
        ok, got = call_learner(name, fn, **kwargs, case=f"`{call}`")
        if not ok:
            return got
        want = reference(**kwargs)
        value = _as_number(got)
        if value is None:
            return verdict(name, False, f"`{call}` returned {type(got).__name__} {got!r}; expected a number.")
        if not _close(value, want):
            diff = abs(value - want)
            size = "rounding-level, but use the formula as written" if diff < 1e-6 else "far above rounding"
            return verdict(name, False, f"`{call}` returned {value:.6g}, expected {want:.6g} ({phase}; difference "
                           f"{diff:.2g}, {size}). Paste the call into a cell to see it yourself.")
    return verdict(name, True, f"all {len(cases)} cases match, including the warm-up boundaries and steps past the end"
                   if "warmup" in name else f"all {len(cases)} cases match, including every restart boundary")


# ---------------------------------------------------------------------------------------------------------------
# Core: warm-up + cosine


def warmup_cosine_cases() -> list[tuple[dict, str]]:
    """The checked inputs: every phase boundary of a few schedules, plus steps long past the end."""
    cases = []
    for total, warmup, ratio in [(100, 10, 0.1), (1000, 100, 0.0), (50, 0, 0.5), (20, 20, 0.1), (37, 5, 0.25),
                                 (10, 1, 0.0)]:
        for step in sorted({0, 1, warmup - 1, warmup, warmup + 1, (warmup + total) // 2, total - 1}):
            if step < 0:
                continue
            phase = ("during warm-up (steps 0 .. warmup_steps-1)" if step < warmup
                     else "at the first step after warm-up" if step == warmup else "in the cosine decay")
            cases.append(({"step": step, "total_steps": total, "warmup_steps": warmup, "min_ratio": ratio}, phase))
        for step in (total, total + 1, 3 * total + 7):
            cases.append(({"step": step, "total_steps": total, "warmup_steps": warmup, "min_ratio": ratio},
                          "past the last step: a run that goes on (or is resumed) longer stays at min_ratio"))
    return cases


def check_warmup_cosine(warmup_cosine: Callable[..., float]) -> Verdict:
    """Grade ``warmup_cosine(step, total_steps, warmup_steps, min_ratio) -> float`` against the library's
    ``lr_multiplier(..., "cosine", ...)`` on every phase boundary and on steps past the end."""
    return _grade_cases("warmup_cosine", warmup_cosine,
                        lambda step, total_steps, warmup_steps, min_ratio:
                        lr_multiplier(step, total_steps, warmup_steps, "cosine", min_ratio),
                        warmup_cosine_cases())


# ---------------------------------------------------------------------------------------------------------------
# Transfer: cosine annealing with warm restarts (Loshchilov & Hutter, SGDR)


def sgdr_reference(step: int, first_cycle: int, cycle_mult: int, min_ratio: float) -> float:
    """Cosine annealing with warm restarts: cycle i lasts ``first_cycle * cycle_mult**i`` steps; inside a cycle the
    multiplier falls from 1 along a cosine, ``r + (1 - r) (1 + cos(pi t / T_i)) / 2`` with t counted from the cycle's
    first step, and jumps back to 1 at the next cycle."""
    length, t = first_cycle, step
    while t >= length:
        t -= length
        length *= cycle_mult
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t / length))


def sgdr_cases() -> list[tuple[dict, str]]:
    cases = []
    for first, mult, ratio in [(10, 2, 0.0), (10, 1, 0.1), (7, 3, 0.2), (1, 2, 0.0)]:
        starts, length, start = [], first, 0
        while start < 400:
            starts.append(start)
            start += length
            length *= mult
        steps = {0, 1, first - 1, 399}
        for s in starts[:6]:
            steps.update({s, s + 1, max(s - 1, 0)})
        for step in sorted(steps):
            at_start = step in starts
            phase = "at the first step of a cycle (a restart: the multiplier is back at 1)" if at_start else \
                "inside a cycle"
            cases.append(({"step": step, "first_cycle": first, "cycle_mult": mult, "min_ratio": ratio}, phase))
    return cases


def check_sgdr(sgdr_multiplier: Callable[..., float]) -> Verdict:
    """Grade ``sgdr_multiplier(step, first_cycle, cycle_mult, min_ratio) -> float`` on every restart boundary of
    schedules with growing (``cycle_mult > 1``) and constant cycles, far into later cycles."""
    return _grade_cases("sgdr_multiplier", sgdr_multiplier, sgdr_reference, sgdr_cases())


# ---------------------------------------------------------------------------------------------------------------
# Experiment: the loss spike that warm-up prevents


@cache
def measured_peak_loss(lr: float, warmup_steps: int) -> float:
    """The grader's own measurement: the largest training loss of the experiment run (cached per process)."""
    from recursionlab.train.recipes import run_recipe

    result = run_recipe("tiny-classifier", overrides=spike_overrides(lr, warmup_steps))
    return max(result.history.series("loss")[1])


def measured_first_spiking_lr(warmup_steps: int) -> float | None:
    """The smallest learning rate of ``SPIKE_LRS`` whose peak loss exceeds ``SPIKE_THRESHOLD`` (None if none)."""
    for lr in SPIKE_LRS:
        if measured_peak_loss(lr, warmup_steps) > SPIKE_THRESHOLD:
            return lr
    return None


def check_peak_loss(peak_loss: Callable[[float, int], float]) -> Verdict:
    """Grade ``peak_loss(lr, warmup_steps) -> float`` by re-measuring two runs (lr 0.3, with and without warm-up)."""
    name = "peak_loss"
    for warmup in (0, SPIKE_WARMUP):
        call = f"peak_loss(0.3, {warmup})"
        ok, got = call_learner(name, peak_loss, 0.3, warmup, case=f"`{call}`")
        if not ok:
            return got
        want = measured_peak_loss(0.3, warmup)
        v = check_value(name, got, want, rtol=0.05, what=f"`{call}`", quiet=True,
                        hint="Use exactly the settings of `spike_overrides(lr, warmup_steps)` (gradient clipping off!) "
                             "and return the LARGEST training loss of the run, not the last one.")
        if not v:
            print(v.message)
            return v
    return verdict(name, True, "both runs agree with the grader's own measurement")


def check_first_spiking_lr(first_spiking_lr: Callable[[int], float]) -> Verdict:
    """Grade ``first_spiking_lr(warmup_steps) -> float`` (one of ``SPIKE_LRS``) without and with warm-up against the
    grader's own measurement."""
    name = "first_spiking_lr"
    for warmup in (0, SPIKE_WARMUP):
        ok, got = call_learner(name, first_spiking_lr, warmup, case=f"`first_spiking_lr({warmup})`")
        if not ok:
            return got
        want = measured_first_spiking_lr(warmup)
        v = check_choice(name, _as_number(got) if _as_number(got) is not None else got, want, SPIKE_LRS, quiet=True,
                         explain=f"For warmup_steps={warmup}, print peak_loss(lr, {warmup}) for every lr in SPIKE_LRS "
                                 f"and take the first one above {SPIKE_THRESHOLD}.")
        if not v:
            print(v.message)
            return v
    return verdict(name, True, f"without warm-up the loss explodes from lr={measured_first_spiking_lr(0)}, with "
                   f"{SPIKE_WARMUP} warm-up steps only from lr={measured_first_spiking_lr(SPIKE_WARMUP)}")
