"""Lesson 00's wrong-solution catalogue: the master's answers pass every check; every known-wrong variant is
rejected (a falsy verdict for the learner, CheckFailed in grading mode)."""

import math
from functools import cache

import pytest

from recursionlab.course.checks import CheckFailed, grading
from recursionlab.course.graders import l00_welcome as g


def _cosine(progress: float, min_ratio: float) -> float:
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# --- Task 1: warm-up + cosine -----------------------------------------------------------------------------------


def schedule_right(step, total_steps, warmup_steps, min_ratio):
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return _cosine(progress, min_ratio)


def schedule_no_clamp(step, total_steps, warmup_steps, min_ratio):
    # the case: no clamp, so past the end the cosine climbs back up (right on every step < total_steps)
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return _cosine((step - warmup_steps) / max(1, total_steps - warmup_steps), min_ratio)


def schedule_warmup_off_by_one(step, total_steps, warmup_steps, min_ratio):
    # warm-up from 0 (step / w): the first step gets learning rate 0
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return _cosine(progress, min_ratio)


def schedule_progress_from_zero(step, total_steps, warmup_steps, min_ratio):
    # the cosine measured from step 0 instead of from the end of warm-up: it starts below 1 after warm-up
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return _cosine(min(1.0, step / max(1, total_steps)), min_ratio)


def schedule_to_zero(step, total_steps, warmup_steps, min_ratio):
    # ignores min_ratio: decays to 0 (right only when min_ratio == 0)
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return _cosine(min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)), 0.0)


def schedule_divides_by_zero(step, total_steps, warmup_steps, min_ratio):
    # no max(1, S - w): a warm-up as long as the run divides by zero after it
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return _cosine(min(1.0, (step - warmup_steps) / (total_steps - warmup_steps)), min_ratio)


# --- Task 2: cosine with warm restarts ----------------------------------------------------------------------------


def sgdr_right(step, first_cycle, cycle_mult, min_ratio):
    length, t = first_cycle, step
    while t >= length:
        t -= length
        length *= cycle_mult
    return _cosine(t / length, min_ratio)


def sgdr_no_growth(step, first_cycle, cycle_mult, min_ratio):
    # every cycle as long as the first (right only for cycle_mult == 1)
    return _cosine((step % first_cycle) / first_cycle, min_ratio)


def sgdr_no_restart(step, first_cycle, cycle_mult, min_ratio):
    # one cosine, clamped: never restarts (right only inside the first cycle)
    return _cosine(min(1.0, step / first_cycle), min_ratio)


def sgdr_reaches_min_inside(step, first_cycle, cycle_mult, min_ratio):
    # t / (T_i - 1): reaches min_ratio at the cycle's last step instead of approaching it
    length, t = first_cycle, step
    while t >= length:
        t -= length
        length *= cycle_mult
    return _cosine(t / max(1, length - 1), min_ratio)


def sgdr_wrong_cycle_search(step, first_cycle, cycle_mult, min_ratio):
    # finds the cycle with a log formula that is off at the boundaries (and breaks for cycle_mult == 1)
    if cycle_mult == 1:
        return _cosine((step % first_cycle) / first_cycle, min_ratio)
    i = int(math.log(1 + step * (cycle_mult - 1) / first_cycle, cycle_mult) + 0.5)  # rounds instead of floor
    start = first_cycle * (cycle_mult**i - 1) // (cycle_mult - 1)
    length = first_cycle * cycle_mult**i
    return _cosine(min(1.0, max(0.0, (step - start) / length)), min_ratio)


# --- Task 3: the loss spike -----------------------------------------------------------------------------------


@cache  # the wrong variants below re-use the right measurements: keeps the test fast
def peak_right(lr, warmup_steps):
    from recursionlab.train.recipes import run_recipe

    return max(run_recipe("tiny-classifier", overrides=g.spike_overrides(lr, warmup_steps)).history.series("loss")[1])


def peak_with_clipping(lr, warmup_steps):
    # forgot to switch the engine's gradient clipping off: the spike is hidden
    from recursionlab.train.recipes import run_recipe

    overrides = {**g.spike_overrides(lr, warmup_steps), "train.grad_clip": 1.0}
    return max(run_recipe("tiny-classifier", overrides=overrides).history.series("loss")[1])


def peak_last_loss(lr, warmup_steps):
    # returns the final loss, not the largest
    from recursionlab.train.recipes import run_recipe

    return run_recipe("tiny-classifier", overrides=g.spike_overrides(lr, warmup_steps)).history.last("loss")


def first_right(warmup_steps):
    return next((lr for lr in g.SPIKE_LRS if peak_right(lr, warmup_steps) > g.SPIKE_THRESHOLD), None)


def first_ignores_warmup(warmup_steps):
    # measures without warm-up whatever it is asked: same answer twice
    return first_right(0)


def first_last_safe(warmup_steps):
    # the largest learning rate that did NOT explode, instead of the first that did
    safe = [lr for lr in g.SPIKE_LRS if peak_right(lr, warmup_steps) <= g.SPIKE_THRESHOLD]
    return safe[-1]


def first_guess(warmup_steps):
    # a guess without measuring: "warm-up changes nothing"
    return 0.3


CASES = [
    (g.check_warmup_cosine, schedule_right, [schedule_no_clamp, schedule_warmup_off_by_one, schedule_progress_from_zero,
                                              schedule_to_zero, schedule_divides_by_zero]),
    (g.check_sgdr, sgdr_right, [sgdr_no_growth, sgdr_no_restart, sgdr_reaches_min_inside, sgdr_wrong_cycle_search]),
    (g.check_peak_loss, peak_right, [peak_with_clipping, peak_last_loss]),
    (g.check_first_spiking_lr, first_right, [first_ignores_warmup, first_last_safe, first_guess]),
]


@pytest.mark.parametrize("grader, right, wrongs", CASES, ids=[c[0].__name__ for c in CASES])
def test_master_passes_and_every_wrong_variant_is_rejected(grader, right, wrongs, capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("RECURSIONLAB_GRADING", raising=False)
    assert grader(right), capsys.readouterr().out
    with grading():
        grader(right)  # does not raise
    for wrong in wrongs:
        assert not grader(wrong), f"{grader.__name__} accepted {wrong.__name__}"
        out = capsys.readouterr().out
        assert "\u274c" in out, f"{wrong.__name__}: no failure line printed: {out}"
        with grading(), pytest.raises(CheckFailed):
            grader(wrong)


def test_no_clamp_message_names_a_pasteable_call_past_the_end(capsys):
    assert not g.check_warmup_cosine(schedule_no_clamp)
    out = capsys.readouterr().out
    assert "past the last step" in out and "schedule_no_clamp(step=101, total_steps=100" in out


def test_unsolved_gives_not_implemented(capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    for grader, _, _ in CASES:
        assert not grader(stub)
        assert "not implemented yet" in capsys.readouterr().out


def test_experiment_answer_is_far_from_the_threshold():
    # the measured answer must not hinge on noise: the exploding run is far above the threshold, the one before it
    # far below (so thread counts or library versions cannot flip it)
    for warmup in (0, g.SPIKE_WARMUP):
        first = g.measured_first_spiking_lr(warmup)
        assert first is not None
        i = g.SPIKE_LRS.index(first)
        assert g.measured_peak_loss(first, warmup) > 2 * g.SPIKE_THRESHOLD
        assert i > 0 and g.measured_peak_loss(g.SPIKE_LRS[i - 1], warmup) < g.SPIKE_THRESHOLD / 2
    assert g.measured_first_spiking_lr(g.SPIKE_WARMUP) > g.measured_first_spiking_lr(0)
