"""Exercise checks: grade a learner's answer and give a verdict a learner can act on.

Two audiences, one code path:

* **The learner** (the default): every check prints one friendly line (``✅``, ``❌`` or ``⏳``) and returns a
  :class:`Verdict`. It never raises, so an unsolved or wrong exercise does not stop "Run all".
* **The grader** (nbgrader's ``autograde``, which sets ``NBGRADER_EXECUTION``, or ``RECURSIONLAB_GRADING=1``):
  the same line is printed, and a failed check raises :class:`CheckFailed` (an ``AssertionError``) with the same
  message, so the autograder deducts the cell's points.

Building blocks for the per-lesson graders in :mod:`recursionlab.course.graders`:

* :func:`check` grades a function against a reference on several generated inputs;
* :func:`check_value` grades a measured number (an experiment's answer) against the grader's own measurement;
* :func:`check_choice` grades a structured answer (one of a few options);
* :func:`call_learner` runs the learner's code and turns "not implemented" or a crash into a verdict;
* :func:`saved_tensor_count` and :func:`graph_calls` tell *how* an answer was computed (which calls held an
  autograd graph), so a check can reject the right numbers computed the wrong way.
"""

from __future__ import annotations

import copy
import math
import os
import traceback
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

PASS, FAIL, TODO = "\u2705", "\u274c", "\u23f3"
GRADING_ENV = ("NBGRADER_EXECUTION", "RECURSIONLAB_GRADING")


class CheckFailed(AssertionError):
    """A failed exercise check in grading mode (an ``AssertionError``, so nbgrader deducts the points)."""


class Verdict:
    """The outcome of one check: truthy when it passed. Displays as nothing in a notebook (the check already
    printed its line), so a check cell shows no stray ``True``/``False``."""

    def __init__(self, name: str, passed: bool, message: str = "", todo: bool = False) -> None:
        self.name, self.passed, self.message, self.todo = name, bool(passed), message, todo

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        state = "passed" if self.passed else ("not implemented" if self.todo else "failed")
        return f"Verdict({self.name!r}: {state})"

    def _ipython_display_(self) -> None:  # the verdict line is already printed
        pass


def grading_mode() -> bool:
    """True under nbgrader's autograder (``NBGRADER_EXECUTION`` set) or when ``RECURSIONLAB_GRADING`` is 1/true."""
    if os.environ.get("NBGRADER_EXECUTION"):
        return True
    return os.environ.get("RECURSIONLAB_GRADING", "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def grading(enabled: bool = True):
    """Temporarily switch grading mode on (or off): ``with grading(): check_x(fn)`` raises on a wrong answer."""
    before = os.environ.get("RECURSIONLAB_GRADING")
    saved_nbgrader = os.environ.pop("NBGRADER_EXECUTION", None) if not enabled else None
    os.environ["RECURSIONLAB_GRADING"] = "1" if enabled else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RECURSIONLAB_GRADING", None)
        else:
            os.environ["RECURSIONLAB_GRADING"] = before
        if saved_nbgrader is not None:
            os.environ["NBGRADER_EXECUTION"] = saved_nbgrader


def verdict(name: str, passed: bool, message: str = "", todo: bool = False, quiet: bool = False) -> Verdict:
    """Print the learner's line for ``name`` and return a :class:`Verdict`; raise :class:`CheckFailed` if it failed
    and grading mode is on. ``message`` is the explanation (for a pass: what was checked)."""
    if todo:
        line = (f"{TODO} {name}: not implemented yet. Replace the `raise NotImplementedError` line with your code, "
                "run that cell, then run this check again.")
    elif passed:
        line = f"{PASS} {name}: {message or 'correct'}. Well done!"
    else:
        line = f"{FAIL} {name}: {message}"
    if not quiet:
        print(line)
    result = Verdict(name, passed, line, todo=todo)
    if not passed and grading_mode():
        raise CheckFailed(line)
    return result


def _describe_error(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    frame = frames[-1] if frames else None
    if frame is None:
        return f"{type(err).__name__}: {err}"
    code = (frame.line or "").strip()
    where = f" (line {frame.lineno}: `{code}`)" if code else f" (line {frame.lineno})"
    return f"{type(err).__name__}: {err}{where}"


def call_learner(name: str, fn: Callable, *args: Any, case: str = "", **kwargs: Any) -> tuple[bool, Any]:
    """Run the learner's ``fn(*args, **kwargs)``.

    Returns ``(True, result)``, or ``(False, verdict)`` when it is not implemented yet or raised (the verdict is
    already printed, and raised in grading mode). ``case`` names the input for the message, e.g.
    ``"test case 3 (rerun: args = segment_inputs(2))"``.
    """
    try:
        return True, fn(*args, **kwargs)
    except NotImplementedError:
        return False, verdict(name, False, todo=True)
    except Exception as err:  # the learner's bug: reported, not raised (unless grading)
        on = f" on {case}" if case else ""
        return False, verdict(name, False, f"your code raised {_describe_error(err)}{on}.")


# ---------------------------------------------------------------------------------------------------------------
# Comparing values


def _rounding_note(diff: float, scale: float, dtype: torch.dtype) -> str:
    rel = diff / max(scale, 1e-30)
    if rel < 1e-4:
        eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
        return (f" -- relative size {rel:.1e}: that is rounding-level (float eps {eps:.1e}); your maths is probably "
                "right but computed in another order or precision: use the dtype of the inputs and the formula as "
                "written")
    return f" -- relative size {rel:.1e}: far above rounding, a real difference"


def _first_step_that_differs(g: torch.Tensor, w: torch.Tensor, time_dim: int, atol: float, rtol: float) -> int | None:
    bad = ~torch.isclose(g, w, atol=atol, rtol=rtol, equal_nan=True)
    if bad.ndim == 0:
        return None
    dim = time_dim % bad.ndim
    per_step = bad.movedim(dim, 0).reshape(bad.shape[dim], -1).any(dim=1)
    idx = torch.nonzero(per_step)
    return int(idx[0]) if len(idx) else None


def compare_outputs(
    got: Any,
    want: Any,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    where: str = "output",
    time_dim: int | None = None,
) -> tuple[bool, str]:
    """Recursively compare tensors / arrays / numbers / sequences / dicts; returns ``(ok, message)``.

    ``where`` names the value in the message (``"z_H"``, ``"grads['W']"``). With ``time_dim``, a tensor mismatch
    also names the first index along that dimension (the first time step) that differs.
    """
    if isinstance(want, (torch.Tensor, np.ndarray)):
        if not isinstance(got, (torch.Tensor, np.ndarray)):
            return False, f"{where}: expected a {type(want).__name__}, got {type(got).__name__}"
        g = torch.as_tensor(np.asarray(got) if isinstance(got, np.ndarray) else got).detach().cpu()
        w = torch.as_tensor(np.asarray(want) if isinstance(want, np.ndarray) else want).detach().cpu()
        if tuple(g.shape) != tuple(w.shape):
            return False, f"{where}: shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        if w.dtype == torch.bool or not (w.is_floating_point() or w.is_complex()):
            same = torch.equal(g.to(w.dtype), w)
            n_diff = int((g.to(w.dtype) != w).sum())
            return same, "" if same else f"{where}: {n_diff} entries differ (an exact match is expected)"
        dtype = g.dtype if g.is_floating_point() else w.dtype
        g, w = g.double(), w.double()
        if torch.isnan(g).any() and not torch.isnan(w).any():
            return False, f"{where}: contains NaN ({int(torch.isnan(g).sum())} entries)"
        if torch.isinf(g).any() and not torch.isinf(w).any():
            return False, f"{where}: contains inf ({int(torch.isinf(g).sum())} entries)"
        if not torch.allclose(g, w, atol=atol, rtol=rtol, equal_nan=True):
            diff = (g - w).nan_to_num().abs().max().item()
            scale = w.nan_to_num().abs().max().item()
            msg = f"{where}: max abs difference {diff:.3g} (allowed: atol={atol:g}, rtol={rtol:g})"
            if time_dim is not None:
                step = _first_step_that_differs(g, w, time_dim, atol, rtol)
                if step is not None:
                    msg += f"; the first time step that differs is t={step}"
            return False, msg + _rounding_note(diff, scale, dtype)
        return True, ""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return False, f"{where}: expected a dict, got {type(got).__name__}"
        if set(got) != set(want):
            return False, f"{where}: keys {sorted(map(str, got))}, expected {sorted(map(str, want))}"
        for k in want:
            ok, msg = compare_outputs(got[k], want[k], atol, rtol, f"{where}[{k!r}]", time_dim)
            if not ok:
                return ok, msg
        return True, ""
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            n = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
            return False, f"{where}: expected a sequence of {len(want)} items, got {n}"
        for i, (a, b) in enumerate(zip(got, want)):
            ok, msg = compare_outputs(a, b, atol, rtol, f"{where}[{i}]", time_dim)
            if not ok:
                return ok, msg
        return True, ""
    if isinstance(want, float):
        try:
            value = float(got)
        except (TypeError, ValueError):
            return False, f"{where}: expected a number, got {type(got).__name__}"
        if math.isnan(value) and not math.isnan(want):
            return False, f"{where}: is NaN"
        ok = bool(np.isclose(value, want, atol=atol, rtol=rtol))
        return ok, "" if ok else f"{where}: {value:.6g}, expected {want:.6g}"
    ok = got == want
    return bool(ok), "" if ok else f"{where}: {got!r}, expected {want!r}"


def compare_named(
    got: Any,
    want: Sequence[Any],
    names: Sequence[str],
    atol: float = 1e-6,
    rtol: float = 1e-5,
    time_dim: int | None = None,
) -> tuple[bool, str]:
    """Compare a tuple of outputs whose items have names (``("z_H", "z_L")``); messages use the names."""
    if not isinstance(got, (tuple, list)) or len(got) != len(want):
        n = len(got) if isinstance(got, (tuple, list)) else type(got).__name__
        return False, f"expected {len(want)} outputs ({', '.join(names)}), got {n}"
    for name, g, w in zip(names, got, want):
        ok, msg = compare_outputs(g, w, atol, rtol, name, time_dim)
        if not ok:
            return ok, msg
    return True, ""


def check(
    name: str,
    learner_fn: Callable,
    reference_fn: Callable,
    inputs: Callable[[int], Any],
    trials: int = 5,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    compare: Callable[[Any, Any], tuple[bool, str]] | None = None,
    output_names: Sequence[str] | None = None,
    time_dim: int | None = None,
    quiet: bool = False,
) -> Verdict:
    """Grade ``learner_fn`` against ``reference_fn`` on ``inputs(seed)`` for ``seed in range(trials)``.

    Args:
        name: the exercise's name, printed in the verdict.
        learner_fn, reference_fn: called as ``fn(*inputs(seed))`` (each on its own deep copy of the inputs).
        inputs: ``seed -> tuple of arguments``; a failing case is named so the learner can rerun it
            (``args = inputs_name(seed)``).
        compare: optional ``(learner_out, reference_out) -> (ok, message)``; default compares values with
            :func:`compare_outputs` (or :func:`compare_named` when ``output_names`` names the outputs).
        time_dim: for sequences, the time dimension, so a mismatch names the first time step that differs.
    Returns:
        A :class:`Verdict` (truthy when every trial matches). Raises only in grading mode.
    """
    source = getattr(inputs, "__name__", "inputs")
    for seed in range(trials):
        args = inputs(seed)
        if not isinstance(args, tuple):
            args = (args,)
        want = reference_fn(*copy.deepcopy(args))
        rerun = f"test case {seed + 1} of {trials} (to rerun it: `args = {source}({seed})`, then call your function " \
                "with `*args`)"
        ok, got = call_learner(name, learner_fn, *copy.deepcopy(args), case=rerun)
        if not ok:
            return got
        if compare is not None:
            same, message = compare(got, want)
        elif output_names is not None:
            same, message = compare_named(got, want, output_names, atol, rtol, time_dim)
        else:
            same, message = compare_outputs(got, want, atol, rtol, time_dim=time_dim)
        if not same:
            return verdict(name, False, f"{message}. Failing input: {rerun}.", quiet=quiet)
    return verdict(name, True, f"all {trials} test cases match the library", quiet=quiet)


def check_value(
    name: str,
    got: Any,
    want: float,
    *,
    rtol: float = 0.1,
    atol: float = 0.0,
    what: str = "your answer",
    hint: str = "",
    quiet: bool = False,
) -> Verdict:
    """Grade a measured number (an experiment's answer) against the grader's own measurement ``want``.

    The tolerance is ``atol + rtol * |want|``: experiments have run-to-run noise, so graders measure ``want`` the
    same way and allow for it. ``hint`` is added to a failure message.
    """
    if got is ... or got is None:
        return verdict(name, False, todo=True, quiet=quiet)
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            return verdict(name, False, f"{what} should be one number, got a tensor of shape {tuple(got.shape)}.",
                           quiet=quiet)
        got = got.item()
    try:
        value = float(got)
    except (TypeError, ValueError):
        return verdict(name, False, f"{what} should be a number, got {type(got).__name__} {got!r}.", quiet=quiet)
    if not math.isfinite(value):
        return verdict(name, False, f"{what} is {value}: not a finite number.", quiet=quiet)
    allowed = atol + rtol * abs(want)
    if abs(value - want) <= allowed:
        return verdict(name, True, f"{what} {value:.4g} agrees with the grader's measurement {want:.4g}", quiet=quiet)
    extra = f" {hint}" if hint else ""
    return verdict(name, False, f"{what} is {value:.4g}, but the grader measures {want:.4g} (allowed difference "
                   f"{allowed:.3g}).{extra}", quiet=quiet)


def check_choice(
    name: str,
    answer: Any,
    correct: Any,
    options: Sequence[Any],
    *,
    explain: str = "",
    quiet: bool = False,
) -> Verdict:
    """Grade a structured answer: ``answer`` must be one of ``options`` and equal ``correct``.

    ``explain`` is shown with a wrong (but valid) answer, to point the learner back at their measurement.
    """
    if answer is ... or answer is None:
        return verdict(name, False, todo=True, quiet=quiet)
    if answer not in options:
        return verdict(name, False, f"{answer!r} is not one of the allowed answers {list(options)}.", quiet=quiet)
    if answer == correct:
        return verdict(name, True, f"{answer!r} is right", quiet=quiet)
    extra = f" {explain}" if explain else ""
    return verdict(name, False, f"{answer!r} is not what the measurement shows.{extra}", quiet=quiet)


def assert_rejected(checker: Callable[..., Verdict], wrong: Any, *args: Any) -> str:
    """For wrong-solution catalogues (tests/test_catalogue_lNN.py): ``checker(wrong, *args)`` must give the learner
    a failing verdict (printed with a cross) and must raise :class:`CheckFailed` in grading mode.

    Returns the learner-mode message, for tests that also check what it says. Raises ``AssertionError`` otherwise.
    """
    import contextlib
    import io

    out = io.StringIO()
    with grading(False), contextlib.redirect_stdout(out):
        result = checker(wrong, *args)
    assert not result, f"{getattr(wrong, '__name__', wrong)!s} passed {getattr(checker, '__name__', checker)!s}"
    assert FAIL in out.getvalue(), f"no failure line printed: {out.getvalue()!r}"
    with grading(), contextlib.redirect_stdout(io.StringIO()):
        try:
            checker(wrong, *args)
        except CheckFailed:
            return out.getvalue()
    raise AssertionError(f"{getattr(checker, '__name__', checker)!s} did not raise CheckFailed in grading mode")


# ---------------------------------------------------------------------------------------------------------------
# How was it computed? (right numbers, wrong way)


def saved_tensor_count(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``fn()`` and count the tensors autograd saved for the backward pass meanwhile.

    Returns ``(fn's result, count)``. A computation run under ``torch.no_grad()`` saves none; one that builds a
    graph and then ``.detach()``-es its result still saved them (and held their memory) -- which is how a check
    tells the 1-step gradient from full backprop followed by a detach.
    """
    count = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    return result, count


def graph_calls(module: torch.nn.Module, fn: Callable[[], Any]) -> tuple[Any, list[bool]]:
    """Run ``fn()`` and record, for every call of ``module`` in order, whether that call built an autograd graph.

    Returns ``(fn's result, flags)``; ``flags[i]`` is True when call ``i`` ran with gradients enabled and produced
    an output that requires grad.
    """
    flags: list[bool] = []

    def hook(_mod: torch.nn.Module, _inp: Any, out: Any) -> None:
        first = out[0] if isinstance(out, (tuple, list)) else out
        flags.append(bool(torch.is_grad_enabled() and isinstance(first, torch.Tensor) and first.requires_grad))

    handle = module.register_forward_hook(hook)
    try:
        result = fn()
    finally:
        handle.remove()
    return result, flags


def has_nan_grad(params: Sequence[torch.Tensor] | torch.Tensor) -> bool:
    """True when any ``.grad`` (or the given gradient tensors) holds a NaN or inf."""
    items = [params] if isinstance(params, torch.Tensor) else list(params)
    for p in items:
        g = p.grad if (isinstance(p, torch.Tensor) and p.grad is not None) else p
        if isinstance(g, torch.Tensor) and not torch.isfinite(g).all():
            return True
    return False
