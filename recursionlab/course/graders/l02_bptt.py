"""Graders for exercise 02 (backpropagation through time): BPTT by hand, truncated BPTT by hand, truncated BPTT
with windows aligned to the loss (autograd), an LSTM's BPTT by hand, and the experiment "at which delay does
truncation with k = 4 stop learning the copy task?".

Each ``check_*`` takes the learner's function, builds its own inputs (fixed seeds, float64), compares with the
library (which ``tests/test_rnn.py`` checks against autograd) and returns a
:class:`~recursionlab.course.checks.Verdict` (raising in grading mode).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from recursionlab.course.checks import (
    Verdict,
    call_learner,
    check,
    check_choice,
    compare_outputs,
    saved_tensor_count,
    verdict,
)
from recursionlab.nn.rnn import ElmanCache, ElmanRNN, elman_backward, elman_forward, lstm_forward, run_truncated

__all__ = [
    "EXPERIMENT_TRUNCATION",
    "PASS_ACCURACY",
    "bptt_problem",
    "check_aligned_truncation",
    "check_bptt_backward",
    "check_first_failing_delay",
    "check_lstm_backward",
    "check_truncated_bptt_backward",
    "lstm_problem",
    "recall_accuracy",
    "truncated_problem",
    "window_problem",
]

F64 = torch.float64
GRADIENTS = ("W_xh", "W_hh", "b", "x", "h0")


def _compare_gradients(names: tuple[str, ...], time_dims: dict[str, int]):
    """A ``compare`` for :func:`check`: dicts of gradients, named ``dL/dW_hh``; sequences report the first step."""

    def compare(got, want) -> tuple[bool, str]:
        if not isinstance(got, dict):
            return False, f"expected a dict with the keys {list(names)}, got {type(got).__name__}"
        missing = [n for n in names if n not in got]
        if missing:
            return False, f"your dict has no {', '.join(repr(n) for n in missing)} (keys needed: {list(names)})"
        for n in names:
            ok, msg = compare_outputs(got[n], want[n], atol=1e-10, rtol=1e-8, where=f"dL/d{n}",
                                      time_dim=time_dims.get(n))
            if not ok:
                return ok, msg
        return True, ""

    return compare


def bptt_problem(seed: int) -> tuple[torch.Tensor, ...]:
    """A random tanh RNN, its forward states and upstream gradients: ``(grad_hs (B, T, H), x (B, T, D), h0 (B, H),
    hs (B, T, H), W_xh (H, D), W_hh (H, H))``. T = 1 for seed 0 (where forgetting the gradient from later steps
    does not show), longer after."""
    g = torch.Generator().manual_seed(seed)
    B, T, D, H = 1 + seed % 3, [1, 2, 5, 9, 14][seed % 5], 2 + seed % 3, 3 + seed
    W_xh, W_hh, b = (0.6 * torch.randn(*s, generator=g, dtype=F64) for s in ((H, D), (H, H), (H,)))
    x, h0 = torch.randn(B, T, D, generator=g, dtype=F64), torch.randn(B, H, generator=g, dtype=F64)
    hs, _ = elman_forward(x, h0, W_xh, W_hh, b)
    return torch.randn(B, T, H, generator=g, dtype=F64), x, h0, hs, W_xh, W_hh


def _library_bptt(grad_hs, x, h0, hs, W_xh, W_hh, truncation=None):
    grads = elman_backward(grad_hs, ElmanCache(x, h0, hs, W_xh, W_hh, "tanh"), truncation=truncation)
    return {n: grads[n] for n in GRADIENTS}


def check_bptt_backward(bptt_backward: Callable) -> Verdict:
    """Grade ``bptt_backward(grad_hs, x, h0, hs, W_xh, W_hh) -> {"W_xh", "W_hh", "b", "x", "h0"}``."""
    return check("bptt_backward", bptt_backward, _library_bptt, inputs=bptt_problem, trials=5,
                 compare=_compare_gradients(GRADIENTS, {"x": 1}))


def truncated_problem(seed: int) -> tuple:
    """:func:`bptt_problem` plus a window ``k``: ``(grad_hs, x, h0, hs, W_xh, W_hh, k)`` with k = 1, 2, 3, T and
    T + 4 (so k >= T, which must be full BPTT, is tested too)."""
    problem = bptt_problem(seed + 3)
    T = problem[1].shape[1]
    return (*problem, [2, 3, 1, T, T + 4, 4][seed % 6])


def check_truncated_bptt_backward(truncated_bptt_backward: Callable) -> Verdict:
    """Grade ``truncated_bptt_backward(grad_hs, x, h0, hs, W_xh, W_hh, k)`` (edges at t = k, 2k, ...)."""
    return check("truncated_bptt_backward", truncated_bptt_backward,
                 lambda *args: _library_bptt(*args[:-1], truncation=args[-1]), inputs=truncated_problem, trials=6,
                 compare=_compare_gradients(GRADIENTS, {"x": 1}))


# ---------------------------------------------------------------------------------------------------------------
# Transfer: truncated BPTT with windows aligned to the loss, with autograd


def window_problem(seed: int) -> tuple:
    """``(layer, x (B, T, D), h0 (B, H), k)``: a float64 :class:`ElmanRNN` (seeded), inputs, and a window ``k``
    chosen so that T is not a multiple of k (the case where aligning to the start or to the end differs)."""
    g = torch.Generator().manual_seed(200 + seed)
    B, D, H = 2, 3, 4 + seed % 3
    T, k = [(7, 3), (10, 4), (5, 2), (9, 9), (11, 3)][seed % 5]
    torch.manual_seed(200 + seed)
    layer = ElmanRNN(D, H).double()
    return layer, torch.randn(B, T, D, generator=g, dtype=F64), torch.randn(B, H, generator=g, dtype=F64), k


def _window_outcome(fn: Callable, layer, x, h0, k):
    """Run ``fn`` and turn its outputs into what the check compares: the states, and the weight gradients of a loss
    on the LAST step only (the copy task's loss) and of a loss on every step."""
    hs, h_last = fn(layer, x, h0, k)
    out = {"hs": hs.detach(), "h_T": h_last.detach()}
    weights = ("W_xh", "W_hh", "b")
    for which, loss in (("last", hs[:, -1].sum() * 1.7), ("every", (hs * torch.linspace(-1, 1, hs.shape[-1],
                                                                                          dtype=hs.dtype)).sum())):
        grads = torch.autograd.grad(loss, [getattr(layer, w) for w in weights], retain_graph=True, allow_unused=True)
        for w, gr in zip(weights, grads):
            out[f"dL_{which}/d{w}"] = torch.zeros_like(getattr(layer, w)) if gr is None else gr
    return out


def check_aligned_truncation(run_windows_aligned_to_loss: Callable) -> Verdict:
    """Grade ``run_windows_aligned_to_loss(layer, x, h0, k) -> (hs (B, T, H), h_T (B, H))``: truncated BPTT whose
    windows are counted back from the last step, against ``run_truncated(..., align="end")``."""
    name = "run_windows_aligned_to_loss"
    for seed in range(5):
        layer, x, h0, k = window_problem(seed)
        want = _window_outcome(lambda *a: run_truncated(*a, align="end"), layer, x, h0, k)
        case = (f"test case {seed + 1} of 5 (T={x.shape[1]}, k={k}; to rerun it: `args = window_problem({seed})`, "
                "then call your function with `*args`)")
        ok, got = call_learner(name, _window_outcome, run_windows_aligned_to_loss, layer, x, h0, k, case=case)
        if not ok:
            return got
        for key in want:
            same, msg = compare_outputs(got[key], want[key], atol=1e-10, rtol=1e-8, where=key,
                                        time_dim=1 if key == "hs" else None)
            if not same:
                if key.startswith("dL"):
                    msg += " (the forward states match, so the detach is in the wrong place or the windows are not " \
                           "counted back from the last step)"
                return verdict(name, False, f"{msg}. Failing input: {case}.")
    return verdict(name, True, "states and gradients (loss at the last step and at every step) match on 5 cases")


# ---------------------------------------------------------------------------------------------------------------
# Transfer: an LSTM's BPTT by hand

LSTM_GRADIENTS = ("W_ih", "W_hh", "b", "x", "h0", "c0")


def lstm_problem(seed: int) -> tuple[torch.Tensor, ...]:
    """``(grad_hs (B, T, H), x (B, T, D), h0 (B, H), c0 (B, H), W_ih (4H, D), W_hh (4H, H), b (4H,))`` in float64;
    T = 1 for seed 0 (where forgetting the cell-state path does not show), longer after."""
    g = torch.Generator().manual_seed(300 + seed)
    B, T, D, H = 1 + seed % 2, [1, 3, 6, 10][seed % 4], 2 + seed % 2, 3 + seed
    return (torch.randn(B, T, H, generator=g, dtype=F64), torch.randn(B, T, D, generator=g, dtype=F64),
            torch.randn(B, H, generator=g, dtype=F64), torch.randn(B, H, generator=g, dtype=F64),
            0.5 * torch.randn(4 * H, D, generator=g, dtype=F64), 0.5 * torch.randn(4 * H, H, generator=g, dtype=F64),
            0.5 * torch.randn(4 * H, generator=g, dtype=F64))


def _autograd_lstm(grad_hs, x, h0, c0, W_ih, W_hh, b) -> dict[str, torch.Tensor]:
    leaves = {n: t.clone().requires_grad_() for n, t in zip(LSTM_GRADIENTS[:3] + ("x", "h0", "c0"),
                                                            (W_ih, W_hh, b, x, h0, c0))}
    hs, _, _ = lstm_forward(leaves["x"], leaves["h0"], leaves["c0"], leaves["W_ih"], leaves["W_hh"], leaves["b"])
    grads = torch.autograd.grad((hs * grad_hs).sum(), list(leaves.values()))
    return dict(zip(leaves, grads))


def check_lstm_backward(lstm_backward: Callable) -> Verdict:
    """Grade ``lstm_backward(grad_hs, x, h0, c0, W_ih, W_hh, b) -> {"W_ih", "W_hh", "b", "x", "h0", "c0"}``
    against autograd on :func:`recursionlab.nn.rnn.lstm_forward`, and check it was computed by hand (no tensors
    saved for autograd)."""
    name = "lstm_backward"
    result = check(name, lstm_backward, _autograd_lstm, inputs=lstm_problem, trials=4,
                   compare=_compare_gradients(LSTM_GRADIENTS, {"x": 1}), quiet=True)
    if not result:
        if result.todo:
            return verdict(name, False, todo=True)
        return verdict(name, False, result.message.removeprefix(f"\u274c {name}: "))
    args = lstm_problem(1)
    _, saved = saved_tensor_count(lambda: lstm_backward(*args))
    if saved:
        return verdict(name, False, f"the gradients are right, but your function let autograd save {saved} tensors: it "
                       "built a graph (requires_grad / backward / autograd.grad). Write the backward pass by hand.")
    return verdict(name, True, "all 4 test cases match autograd, computed by hand")


# ---------------------------------------------------------------------------------------------------------------
# Experiment: at which delay does k = 4 truncation stop learning the copy task?

EXPERIMENT_TRUNCATION = 4
PASS_ACCURACY = 0.9
EXPERIMENT_MAX_DELAY = 10
EXPERIMENT_OVERRIDES = {"cell": "rnn", "length": 1, "hidden_size": 32, "batch_size": 64, "n_val": 200,
                        "truncation_align": "end", "train.steps": 150, "train.eval_every": 0, "train.log_every": 50,
                        "train.device": "cpu", "train.progress": False}


@functools.lru_cache(maxsize=64)
def recall_accuracy(delay: int, truncation: int | None = EXPERIMENT_TRUNCATION) -> float:
    """Train a plain RNN (``torch.nn.RNN``, 32 units, 150 steps) on the copy task with one symbol and ``delay``
    blank steps, with truncated BPTT in windows of ``truncation`` steps aligned to the recall loss (``None``: full
    BPTT), and return its held-out recall accuracy (chance: 1/8). Deterministic; cached, so asking twice is free.
    About a second per call on a CPU."""
    from recursionlab.train.recipes import run_recipe  # the train layer, imported when an experiment runs

    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= 64:
        raise ValueError(f"delay must be an int in 0..64, got {delay!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same numbers on every machine size, and faster for a 32-unit net
    try:
        run = run_recipe("rnn-copy", overrides={**EXPERIMENT_OVERRIDES, "delay": delay, "truncation": truncation})
    finally:
        torch.set_num_threads(threads)
    return float(run.metrics["val_acc"])


def _first_failing_delay(limit: int) -> int | None:
    for delay in range(1, limit + 1):
        if recall_accuracy(delay) < PASS_ACCURACY:
            return delay
    return None


def check_first_failing_delay(first_failing_delay: Callable, compared_with_reach: Callable) -> Verdict:
    """Grade the experiment. ``first_failing_delay() -> int``: the smallest delay >= 1 at which
    ``recall_accuracy(delay)`` (k = 4) is below :data:`PASS_ACCURACY`. ``compared_with_reach() -> str``: is that
    delay ``"earlier"``, ``"the same"`` or ``"later"`` than the first delay at which the recall loss's gradient can
    no longer reach the step where the symbol was read? The grader re-measures every delay up to the answer."""
    name = "first_failing_delay"
    ok, got = call_learner(name, first_failing_delay)
    if not ok:
        return got
    if isinstance(got, bool) or not isinstance(got, int) or not 1 <= got <= EXPERIMENT_MAX_DELAY:
        return verdict(name, False, f"expected an int delay in 1..{EXPERIMENT_MAX_DELAY}, got {got!r}.")
    measured = _first_failing_delay(got)  # re-measures the delays 1..got only: what the claim rests on
    if measured != got:
        if measured is None:
            msg = (f"at delay {got} the grader measures recall accuracy {recall_accuracy(got):.3f} >= {PASS_ACCURACY} "
                   "-- it still learns there.")
        else:
            msg = (f"the grader measures recall accuracy {recall_accuracy(measured):.3f} < {PASS_ACCURACY} already at "
                   f"delay {measured}.")
        return verdict(name, False, f"you answered {got}, but {msg} Rerun: `recall_accuracy(delay)` for delays 1, 2, "
                       "...")
    verdict(name, True, f"delay {got} (accuracy {recall_accuracy(got):.3f}; delay {got - 1}: "
            f"{recall_accuracy(got - 1) if got > 1 else float('nan'):.3f}) agrees with the grader's measurement")
    # The recall loss sits at step delay+1; windows of k aligned to it reach back to step delay+2-k, and the symbol
    # is read at step 0: the gradient reaches it iff delay <= k-2, so the reach ends at delay k-1.
    reach_ends = EXPERIMENT_TRUNCATION - 1
    correct = "earlier" if got < reach_ends else ("the same" if got == reach_ends else "later")
    ok, answer = call_learner("compared_with_reach", compared_with_reach)
    if not ok:
        return answer
    return check_choice("compared_with_reach", answer, correct, ("earlier", "the same", "later"),
                        explain="Work out the first delay at which the read step (step 0) falls outside the last "
                                "window (the recall is at step delay+1), and compare it with your measurement.")
