"""Graders for lesson 03's exercises (adaptive computation): ACT's halting loop, PonderNet's halting distribution
and KL (values *and* gradients where some p_n = 0), PonderNet's sampled halting step, and an experiment on ACT's
halting threshold epsilon.

Inputs are built here (fixed seeds, float64) and compared with the library (:func:`recursionlab.models.act.act`,
:func:`~recursionlab.models.act.pondernet_halting_distribution`, :func:`~recursionlab.models.act.pondernet_loss`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from recursionlab.course.checks import (
    Verdict,
    call_learner,
    check,
    check_choice,
    check_value,
    compare_outputs,
    verdict,
)
from recursionlab.models.act import act, pondernet_halting_distribution, pondernet_loss

DTYPE = torch.float64


def _relay(name: str, quiet_verdict: Verdict) -> Verdict:
    """Print a quiet sub-check's failure as this check's verdict (a crash or "not implemented" is already printed)."""
    if quiet_verdict.todo or "your code raised" in quiet_verdict.message:
        return quiet_verdict
    return verdict(name, False, quiet_verdict.message.split(f"{name}: ", 1)[-1])

# ---------------------------------------------------------------------------------------------------------------
# Core 1: the ACT halting loop


class StepPastTheCap(RuntimeError):
    """Raised by the check's step function when a loop asks for a ponder step beyond ``max_steps``."""


def act_case(seed: int):
    """``(step_fn, state (B, D), max_steps, epsilon)``: a tanh recurrence whose units read each other's state (so a
    halted unit that kept updating changes the others), with halting biases from "halt at once" to "only at the cap".
    The step function raises :class:`StepPastTheCap` if asked for a step n > max_steps (a loop without a cap)."""
    gen = torch.Generator().manual_seed(seed)
    batch, dim, classes = [9, 1, 6, 4, 9, 3][seed % 6], 5, 3
    W = torch.randn(dim, dim, generator=gen, dtype=DTYPE) / math.sqrt(dim)
    W_y = torch.randn(dim, classes, generator=gen, dtype=DTYPE)
    w_h = torch.randn(dim, generator=gen, dtype=DTYPE)
    bias = [-1.0, 0.0, -3.0, 2.0, -0.5, -6.0][seed % 6]
    max_steps = [6, 10, 4, 8, 12, 3][seed % 6]

    def step_fn(state: torch.Tensor, n: int):
        if n > max_steps:
            raise StepPastTheCap(f"your loop asked for ponder step n = {n}, past the cap max_steps = {max_steps}")
        new_state = torch.tanh(state @ W + 0.1 * n + 0.5 * state.mean(dim=0, keepdim=True))
        return new_state, new_state @ W_y, torch.sigmoid(new_state @ w_h + bias)

    state = torch.randn(batch, dim, generator=gen, dtype=DTYPE)
    return step_fn, state, max_steps, [0.01, 0.01, 0.05, 0.1, 0.0, 0.01][seed % 6]


def library_act(step_fn: Callable, state: torch.Tensor, max_steps: int, epsilon: float = 0.01):
    res = act(step_fn, state, max_steps, epsilon)
    return res.output, res.halting_probs, res.n_steps, res.remainder


def check_act(learner_fn: Callable) -> Verdict:
    """Core: ``my_act(step_fn, state, max_steps, epsilon) -> (output, halting_probs, n_steps, remainder)`` equals
    the library's loop on 6 cases (units halting at once, late, and only at the cap)."""
    return check("ACT halting loop", learner_fn, library_act, inputs=act_case, trials=6, atol=1e-9, rtol=1e-7,
                 output_names=("output", "halting_probs", "n_steps", "remainder"))


# ---------------------------------------------------------------------------------------------------------------
# Core 2: PonderNet's halting distribution and its KL to the truncated geometric prior


def lambdas_case(seed: int):
    """``(lambdas (B, N), lambda_p)``; odd seeds hold saturated halting units (lambda = 1), so later p_n are 0."""
    gen = torch.Generator().manual_seed(100 + seed)
    lambdas = torch.rand(6, [5, 8, 12, 3, 20, 2][seed % 6], generator=gen, dtype=DTYPE)
    if seed % 2:
        lambdas[1, 0] = 1.0  # halts at step 1 for sure: p_2.. are exactly 0
        lambdas[4, lambdas.shape[1] // 2 - 1] = 1.0
    return lambdas, [0.2, 0.5, 0.1, 0.3, 0.05, 0.9][seed % 6]


def library_halting_and_kl(lambdas: torch.Tensor, lambda_p: float):
    p = pondernet_halting_distribution(lambdas)
    return p, pondernet_loss(torch.zeros_like(p), p, lambda_p, beta=1.0).kl


def check_halting_and_kl(learner_fn: Callable) -> Verdict:
    """Core: ``my_halting_and_kl(lambdas, lambda_p) -> (p, kl)``: values equal the library's on 6 cases, and the
    gradient of ``kl`` with respect to ``lambdas`` is finite where some p_n = 0 and equals the library's elsewhere."""
    name = "PonderNet halting distribution and KL"
    values = check(name, learner_fn, library_halting_and_kl, inputs=lambdas_case, trials=6, atol=1e-9, rtol=1e-7,
                   output_names=("p", "kl"), quiet=True)
    if not values:
        return _relay(name, values)
    for seed in range(6):
        lambdas, lambda_p = lambdas_case(seed)
        lam_learner = lambdas.clone().requires_grad_()
        lam_library = lambdas.clone().requires_grad_()
        rerun = f"test case {seed + 1} (to rerun it: `args = lambdas_case({seed})`)"
        ok, out = call_learner(name, learner_fn, lam_learner, lambda_p, case=rerun)
        if not ok:
            return out
        kl = out[1]
        if not (isinstance(kl, torch.Tensor) and kl.requires_grad):
            return verdict(name, False, f"kl carries no gradient on {rerun}: compute it from `lambdas` with torch "
                           "operations (no .item(), .detach() or numpy), so that the KL term can train the model.")
        (grad,) = torch.autograd.grad(kl, lam_learner, allow_unused=True)
        if grad is None:
            return verdict(name, False, f"kl does not depend on lambdas on {rerun}.")
        if not torch.isfinite(grad).all():
            rows = sorted({int(r) for r in (~torch.isfinite(grad)).nonzero()[:, 0]})
            return verdict(name, False, f"the value of kl is right, but its gradient with respect to lambdas holds "
                           f"NaN/inf in rows {rows} of {rerun}, the rows where some p_n = 0. torch.where(p > 0, "
                           "p * log p, 0) computes log(0) = -inf in the branch it discards, and backward multiplies "
                           "that by 0: NaN. Keep the log's argument positive, e.g. log(p.clamp_min(tiny)).")
        _, kl_lib = library_halting_and_kl(lam_library, lambda_p)
        (grad_lib,) = torch.autograd.grad(kl_lib, lam_library)
        clean = (pondernet_halting_distribution(lambdas) > 0).all(dim=1)  # rows without a p_n = 0
        same, msg = compare_outputs(grad[clean], grad_lib[clean], atol=1e-8, rtol=1e-6,
                                    where="d kl / d lambdas (rows without a zero p_n)")
        if not same:
            return verdict(name, False, f"{msg}. Failing input: {rerun}.")
    return verdict(name, True, "p and kl match the library on 6 cases, and kl's gradient is finite where p_n = 0")


# ---------------------------------------------------------------------------------------------------------------
# Transfer: PonderNet's sampled halting step at test time


def coins_case(seed: int):
    """``(lambdas (B, N), coins (B, N))`` with coins ~ U(0, 1): the random numbers the walk n = 1, 2, ... uses."""
    gen = torch.Generator().manual_seed(500 + seed)
    batch, steps = [8, 1, 16, 5][seed % 4], [6, 3, 10, 1][seed % 4]
    lambdas = torch.rand(batch, steps, generator=gen, dtype=DTYPE) * [0.6, 0.3, 0.2, 1.0][seed % 4]
    coins = torch.rand(batch, steps, generator=gen, dtype=DTYPE)
    return lambdas, coins


def reference_halting_step(lambdas: torch.Tensor, coins: torch.Tensor) -> torch.Tensor:
    """(B,) int64 halting step N in 1..N_max: the first n with coins_n < lambda_n, and N_max at the latest."""
    halts = coins < lambdas
    halts[:, -1] = True
    return halts.to(torch.int64).argmax(dim=1) + 1


def check_sample_halting_step(learner_fn: Callable) -> Verdict:
    """Transfer: ``sample_halting_step(lambdas, coins) -> (B,) int64`` in 1..N; equal to the reference on 4 cases,
    and over many draws its steps follow PonderNet's distribution p (a chi-square-style check on 40,000 walks)."""
    name = "sample_halting_step"
    first = check(name, learner_fn, reference_halting_step, inputs=coins_case, trials=4, quiet=True)
    if not first:
        return _relay(name, first)
    gen = torch.Generator().manual_seed(9)
    lambdas = torch.tensor([[0.1, 0.5, 0.3, 0.8, 0.2]], dtype=DTYPE).expand(40_000, 5).clone()
    coins = torch.rand(40_000, 5, generator=gen, dtype=DTYPE)
    ok, steps = call_learner(name, learner_fn, lambdas, coins, case="40,000 walks")
    if not ok:
        return steps
    freq = torch.bincount(torch.as_tensor(steps).long() - 1, minlength=5)[:5].double() / 40_000
    p = pondernet_halting_distribution(lambdas[:1])[0]
    if (freq - p).abs().max() > 0.01:
        return verdict(name, False, f"over 40,000 walks your steps have frequencies {freq.numpy().round(3)}, but "
                       f"PonderNet's p is {p.numpy().round(3)}.")
    return verdict(name, True, "matches the reference on 4 cases and its frequencies follow p over 40,000 walks")


# ---------------------------------------------------------------------------------------------------------------
# Experiment: ACT's halting threshold epsilon on a trained model

EPSILONS = (0.01, 0.1, 0.3, 0.5)


@torch.no_grad()
def measure_epsilon(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float) -> tuple[float, float]:
    """The grader's measurement: (mean ponder steps, accuracy) of an ``ACTParityNet`` run with ``epsilon``."""
    before = model.epsilon
    try:
        model.epsilon = epsilon
        res = model(x)
    finally:
        model.epsilon = before
    return float(res.n_steps.double().mean()), float((res.output.argmax(-1) == y).double().mean())


def largest_safe_epsilon(table: dict[float, tuple[float, float]], drop: float = 0.01) -> float:
    """The largest epsilon whose accuracy is within ``drop`` of the accuracy at the smallest epsilon."""
    base = table[min(table)][1]
    return max(e for e, (_, acc) in table.items() if acc >= base - drop)


def check_epsilon_experiment(learner_fn: Callable, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                             answer_fn: Callable) -> Verdict:
    """Experiment: ``steps_and_accuracy(model, x, y, epsilon) -> (mean steps, accuracy)`` re-measured for each
    epsilon in EPSILONS, then ``answer_fn()``: the largest epsilon that keeps accuracy within 0.01 of epsilon=0.01."""
    name = "epsilon experiment"
    table = {}
    for eps in EPSILONS:
        want = measure_epsilon(model, x, y, eps)
        table[eps] = want
        ok, got = call_learner(name, learner_fn, model, x, y, eps, case=f"epsilon = {eps}")
        if not ok:
            return got
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            return verdict(name, False, f"steps_and_accuracy should return (mean steps, accuracy), got {got!r}.")
        for label, g, w in (("mean ponder steps", got[0], want[0]), ("accuracy", got[1], want[1])):
            v = check_value(name, g, w, rtol=0.0, atol=1e-6, what=f"your {label} at epsilon = {eps}", quiet=True)
            if not v:
                return verdict(name, False, v.message.split(f"{name}: ", 1)[-1])
    ok, answer = call_learner(name, answer_fn)
    if not ok:
        return answer
    correct = largest_safe_epsilon(table)
    return check_choice(name, answer, correct, list(EPSILONS),
                        explain="Compare each epsilon's accuracy with the one at epsilon = 0.01 and keep those that "
                                "lose at most 0.01.")
