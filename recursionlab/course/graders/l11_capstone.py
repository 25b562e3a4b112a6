"""Graders for lesson 11's exercise (the capstone): partial correlation, the k-hop pointer-following baseline,
training steps at a matched *total* (training + inference) budget, and the experiment "does the hybrid's router
depth correlate with node depth once position is held fixed?" (see ``solutions/11_capstone.ipynb``).

Each ``check_*`` builds its own inputs (fixed seeds, float64 where exactness matters), compares with the library
(:mod:`recursionlab.train.recipes.capstone`, :func:`recursionlab.data.latent_tasks.follow_pointers`) and returns a
:class:`~recursionlab.course.checks.Verdict` (raising in grading mode).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from recursionlab.course.checks import Verdict, call_learner, check, check_choice, compare_outputs, verdict
from recursionlab.data.latent_tasks import ChainBatch, follow_pointers, make_chain_batch
from recursionlab.train.recipes.capstone import partial_correlation, router_depth_analysis

__all__ = [
    "ROUTER_ANSWERS",
    "check_k_hop_baseline",
    "check_matched_total_steps",
    "check_partial_correlation",
    "check_router_experiment",
    "correlation_problem",
    "matched_total_steps_reference",
    "pointer_problem",
    "router_answer_for",
]

F64 = torch.float64


# ---------------------------------------------------------------------------------------------------------------
# (a) Core: partial correlation
def correlation_problem(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, y, z)``: same-shape float64 tensors. Seed 0: x and y related only through z (answer ~0); seed 1:
    integer positions z of shape (B, N) like the lesson's; later seeds: random mixtures with an offset, so that a
    regression without an intercept is wrong."""
    g = torch.Generator().manual_seed(100 + seed)
    if seed == 1:
        z = torch.arange(12, dtype=F64).expand(40, 12).clone()
    else:
        z = torch.randn(60 + 20 * seed, generator=g, dtype=F64) * (1 + seed)
    noise = lambda: torch.randn(z.shape, generator=g, dtype=F64)  # noqa: E731
    a, b = 0.5 + seed, -1.0 + 0.3 * seed
    x = 3.0 + a * z + noise()
    y = -2.0 + b * z + noise() + (0.0 if seed == 0 else 0.6 * x)
    return x, y, z


def check_partial_correlation(fn: Callable) -> Verdict:
    """``fn(x, y, z) -> float``: the correlation of x and y once a linear effect of z (with an intercept) is
    removed from both, against :func:`~recursionlab.train.recipes.capstone.partial_correlation`."""

    def compare(got, want) -> tuple[bool, str]:
        try:
            value = float(got)
        except (TypeError, ValueError):
            return False, f"your function returned {type(got).__name__} {got!r}; expected one number"
        return compare_outputs(torch.tensor(value, dtype=F64), torch.tensor(want, dtype=F64), atol=1e-8, rtol=1e-6,
                               where="the partial correlation")

    return check("partial_correlation", fn, partial_correlation, correlation_problem, trials=5, compare=compare)


# ---------------------------------------------------------------------------------------------------------------
# (b) Transfer: the k-hop pointer-following baseline
def pointer_problem(seed: int) -> tuple[torch.Tensor, int]:
    """``(parents (B, N) long, k)``: random chain forests and a hop count; k = 0, 1, 2, 3, 5, 6 and one k larger
    than any depth (every node then reaches its root)."""
    g = torch.Generator().manual_seed(200 + seed)
    n = (6, 8, 12, 16, 16, 10, 9)[seed % 7]
    parents = make_chain_batch(3 + seed, n, max(2, n - 2 * (seed % 3)), generator=g).tokens
    return parents, (0, 1, 2, 3, 5, 6, 40)[seed % 7]


def check_k_hop_baseline(fn: Callable) -> Verdict:
    """``fn(parents (B, N) long, k) -> (B, N) long``: where k pointer hops lead from every node (roots stay)."""

    def compare(got, want) -> tuple[bool, str]:
        if not isinstance(got, torch.Tensor):
            return False, f"expected a tensor of shape {tuple(want.shape)}, got {type(got).__name__}"
        if got.shape != want.shape:
            return False, f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}"
        wrong = (got.long() != want).nonzero()
        if len(wrong):
            b, i = wrong[0].tolist()
            return False, (f"example {b}, node {i}: your answer is {int(got[b, i])}, {int(want[b, i])} is where the "
                           f"hops lead ({len(wrong)} nodes differ)")
        return True, ""

    return check("k_hop_baseline", fn, follow_pointers, pointer_problem, trials=7, compare=compare)


# ---------------------------------------------------------------------------------------------------------------
# (c) Transfer: steps at a matched TOTAL budget
def matched_total_steps_reference(total_flops: float, step_flops: float, infer_flops_per_seq: float,
                                  queries: int) -> int:
    """Training steps that fit when the budget must also pay for answering ``queries`` sequences (0 if answering
    alone uses it up)."""
    left = total_flops - queries * infer_flops_per_seq
    return max(0, math.floor(left / step_flops + 1e-9))


_TOTAL_CASES = [
    dict(total_flops=1e11, step_flops=2e8, infer_flops_per_seq=4e6, queries=10_000),
    dict(total_flops=6e10, step_flops=1.83e8, infer_flops_per_seq=2.3e7, queries=1_000),
    dict(total_flops=6e10, step_flops=1.83e8, infer_flops_per_seq=2.3e7, queries=10_000),  # answering costs it all
    dict(total_flops=1e9, step_flops=3e8, infer_flops_per_seq=1e6, queries=0),
    dict(total_flops=1.8e9, step_flops=3e8, infer_flops_per_seq=1e6, queries=100),  # 5.67 steps: whole steps only
    dict(total_flops=1.2e9, step_flops=3e8, infer_flops_per_seq=1e5, queries=2_000),  # exactly 3 steps
]


def check_matched_total_steps(fn: Callable) -> Verdict:
    """``fn(total_flops, step_flops, infer_flops_per_seq, queries) -> int`` on cases with and without inference,
    one where answering alone exceeds the budget, one that lands exactly on a step boundary."""
    name = "matched_total_steps"
    for case in _TOTAL_CASES:
        call = f"matched_total_steps({', '.join(f'{k}={v!r}' for k, v in case.items())})"
        ok, got = call_learner(name, fn, **case, case=f"`{call}`")
        if not ok:
            return got
        want = matched_total_steps_reference(**case)
        if isinstance(got, bool) or not isinstance(got, int):
            return verdict(name, False, f"`{call}` returned {type(got).__name__} {got!r}; a step count is an int.")
        if got != want:
            return verdict(name, False, f"`{call}` returned {got}, expected {want}. Paste the call into a cell "
                           "to see it yourself.")
    return verdict(name, True, f"all {len(_TOTAL_CASES)} cases match, including one where answering costs the "
                   "whole budget")


# ---------------------------------------------------------------------------------------------------------------
# (d) Experiment: the router and position
ROUTER_ANSWERS = ("survives", "vanishes", "reverses")


def router_answer_for(partial: float, threshold: float = 0.1) -> str:
    """The structured answer a partial correlation supports: "survives" (> threshold), "reverses" (< -threshold),
    else "vanishes"."""
    if partial > threshold:
        return "survives"
    if partial < -threshold:
        return "reverses"
    return "vanishes"


def check_router_experiment(measure: Callable, answer: Callable, model: nn.Module, batch: ChainBatch) -> Verdict:
    """``measure(model, batch) -> {"raw": float, "partial": float}`` (correlation of the recurrences the trained
    hybrid gives each node, causal rule, with the node's depth; and the same given position) is re-measured with the
    library on the same model and batch; ``answer() -> str`` must be what the partial correlation supports
    (one of :data:`ROUTER_ANSWERS`, threshold 0.1)."""
    name = "router_experiment"
    want = router_depth_analysis(model, batch)
    ok, got = call_learner(name, measure, model, batch, case="the trained hybrid and the `in` batch of the notebook")
    if not ok:
        return got
    if not isinstance(got, dict) or not {"raw", "partial"} <= set(got):
        return verdict(name, False, f"`measure` should return a dict with the keys 'raw' and 'partial', got {got!r}.")
    for key, what in (("raw", "the raw correlation"), ("partial", "the partial correlation given position")):
        try:
            value = float(got[key])
        except (TypeError, ValueError):
            return verdict(name, False, f"{what} ({key!r}) should be a number, got {got[key]!r}.")
        if not math.isfinite(value) or abs(value - want[key]) > 1e-6:
            hint = (" Did you remove position from BOTH the recurrences and the depths?" if key == "partial" else
                    " Use the causal rule: `model(tokens, rule=\"threshold\", noise_seed=0).depth`, in eval mode.")
            return verdict(name, False, f"{what} is {value:.4g}, the grader measures {want[key]:.4g} on the same "
                           f"model and batch.{hint}")
    ok, choice = call_learner(name, answer, case="answer()")
    if not ok:
        return choice
    return check_choice(name, choice, router_answer_for(want["partial"]), ROUTER_ANSWERS,
                        explain=f"Your partial correlation is {want['partial']:.3f} (raw {want['raw']:.3f}); "
                        "decide from the partial one, with the threshold 0.1.")
