"""Graders for exercise 07 (HRM): the 1-step-gradient segment, the continue target, a three-level schedule and
the 1-step gradient's cosine to the true gradient.

Every grader builds its own float64 inputs, runs the learner's function and the reference, and compares values,
gradients and -- because the right numbers can be computed the wrong way -- *which calls held an autograd graph*.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import torch

from recursionlab.course.checks import (
    Verdict,
    call_learner,
    check,
    check_choice,
    compare_outputs,
    graph_calls,
    verdict,
)
from recursionlab.models.hrm import HRM, HRMConfig, q_continue_target

# (N = H_cycles, T = L_cycles): beyond {1, 2}, so a schedule hard-wired for small counts fails
SEGMENT_SCHEDULES: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (3, 2), (4, 3), (3, 4), (1, 4))


def segment_problem(seed: int) -> tuple[HRM, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small float64 HRM (N, T from :data:`SEGMENT_SCHEDULES`), a batch of tokens and carried states.

    Returns ``(model, x_tokens (2, 8), z_H (2, 9, 16), z_L (2, 9, 16))``.
    """
    torch.manual_seed(seed)
    n_cycles, t_cycles = SEGMENT_SCHEDULES[seed % len(SEGMENT_SCHEDULES)]
    cfg = HRMConfig(vocab_size=6, seq_len=8, hidden=16, n_heads=2, H_layers=1, L_layers=1,
                    H_cycles=n_cycles, L_cycles=t_cycles)
    model = HRM(cfg).double()
    x_tokens = torch.randint(1, 6, (2, 8))
    z_H = torch.randn(2, 9, 16, dtype=torch.float64)
    z_L = torch.randn(2, 9, 16, dtype=torch.float64)
    return model, x_tokens, z_H, z_L


def run_segment(segment_fn: Callable, model: HRM, x_tokens: torch.Tensor, z_H: torch.Tensor, z_L: torch.Tensor):
    """Run ``segment_fn(model, z_H, z_L, x~)``, backpropagate a fixed scalar of the outputs and record which calls
    of ``f_L`` / ``f_H`` held a graph. Returns ``{"z_H", "z_L", "gradients", "graph_L", "graph_H"}``."""
    ids = torch.zeros(len(x_tokens), dtype=torch.long)
    model.zero_grad()
    x = model.embed(x_tokens, ids)
    flags_H: list[bool] = []
    hook = model.H_level.register_forward_hook(
        lambda m, a, out: flags_H.append(bool(torch.is_grad_enabled() and out.requires_grad)))
    try:
        (new_H, new_L), flags_L = graph_calls(model.L_level, lambda: segment_fn(model, z_H, z_L, x))
    finally:
        hook.remove()
    (model.lm_head(new_H).square().mean() + new_L.mean()).backward()
    grads = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype)
                       for p in model.parameters()])
    return {"z_H": new_H.detach(), "z_L": new_L.detach(), "gradients": grads,
            "graph_L": flags_L, "graph_H": flags_H}


def _library_segment(model: HRM, z_H, z_L, x):
    return model.recursion(z_H, z_L, x)


def _compare_segment(got: dict, want: dict) -> tuple[bool, str]:
    for key in ("graph_L", "graph_H"):
        if got[key] != want[key]:
            calls = "".join("G" if g else "." for g in got[key])
            expected = "".join("G" if g else "." for g in want[key])
            module = "f_L" if key == "graph_L" else "f_H"
            return False, (f"the calls of {module} that hold an autograd graph are {calls!r} (G = graph, . = none), "
                           f"expected {expected!r}: only the LAST call of each module may build a graph. Running "
                           "earlier calls with a graph and detaching afterwards gives the right numbers but keeps "
                           "every call's activations in memory, which is what the 1-step gradient avoids")
    for key in ("z_H", "z_L", "gradients"):
        ok, msg = compare_outputs(got[key], want[key], atol=1e-10, rtol=1e-8, where=key)
        if not ok:
            return False, msg
    return True, ""


def check_hrm_segment(hrm_segment: Callable, trials: int = len(SEGMENT_SCHEDULES)) -> Verdict:
    """Grade ``hrm_segment(model, z_H, z_L, x) -> (z_H, z_L)`` against ``HRM.recursion`` (1-step gradient):
    states, parameter gradients and which calls hold a graph, for N, T up to 4."""
    return check("hrm_segment",
                 lambda *a: run_segment(hrm_segment, *a),
                 lambda *a: run_segment(_library_segment, *a),
                 inputs=segment_problem, trials=trials, compare=_compare_segment)


def target_problem(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-segment Q logits ``(B,)``, ``(B,)`` and ``is_last (B,) bool`` with both orders of the two logits."""
    g = torch.Generator().manual_seed(seed)
    halt, cont = torch.randn(9, generator=g) * 3, torch.randn(9, generator=g) * 3
    is_last = torch.rand(9, generator=g) < 0.5
    is_last[0], is_last[1] = True, False
    cont[0] = halt[0] + 2.0  # is_last and continue looks better: only Q_halt may count
    return halt, cont, is_last


def check_continue_target(continue_target: Callable) -> Verdict:
    """Grade the bootstrapped continue target against ``recursionlab.models.hrm.q_continue_target``."""
    return check("continue_target", continue_target, q_continue_target, inputs=target_problem, trials=5,
                 atol=1e-12, rtol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# Transfer: HRM's schedule with three levels


class Level(torch.nn.Module):
    """A tiny recurrent level ``h <- tanh(W h + U injection)``, h and injection: (B, D) -> (B, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.W = torch.nn.Linear(dim, dim, dtype=torch.float64)
        self.U = torch.nn.Linear(dim, dim, bias=False, dtype=torch.float64)

    def forward(self, h: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.W(h) + self.U(injection))


def three_level_reference(f1, f2, f3, z1, z2, z3, x, T1: int, T2: int, N: int):
    """The three-level schedule: N slow cycles; each has T2 middle cycles; each middle cycle is T1 fast steps
    ``z1 <- f1(z1, z2 + x)`` then one middle step ``z2 <- f2(z2, z1 + z3)``; after its T2 middle cycles a slow
    cycle ends with ``z3 <- f3(z3, z2)``. 1-step gradient: only the last call of each level holds a graph.
    States: (B, D). Returns ``(z1, z2, z3)``."""
    with torch.no_grad():
        for k in range(N):
            for j in range(T2):
                for i in range(T1):
                    if k == N - 1 and j == T2 - 1 and i == T1 - 1:
                        break
                    z1 = f1(z1, z2 + x)
                if k == N - 1 and j == T2 - 1:
                    break
                z2 = f2(z2, z1 + z3)
            if k == N - 1:
                break
            z3 = f3(z3, z2)
    z1 = f1(z1, z2 + x)
    z2 = f2(z2, z1 + z3)
    z3 = f3(z3, z2)
    return z1, z2, z3


THREE_LEVEL_SCHEDULES: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (2, 2, 1), (3, 2, 2), (2, 3, 2), (1, 2, 3))


def three_level_problem(seed: int):
    """Three float64 levels of width 5, states (3, 5) and an input, and the counts ``(T1, T2, N)``."""
    torch.manual_seed(100 + seed)
    f1, f2, f3 = Level(5), Level(5), Level(5)
    z1, z2, z3, x = (torch.randn(3, 5, dtype=torch.float64) for _ in range(4))
    T1, T2, N = THREE_LEVEL_SCHEDULES[seed % len(THREE_LEVEL_SCHEDULES)]
    return f1, f2, f3, z1, z2, z3, x, T1, T2, N


def _run_three_level(fn: Callable, f1, f2, f3, z1, z2, z3, x, T1, T2, N):
    flags: dict[str, list[bool]] = {"f1": [], "f2": [], "f3": []}
    hooks = [f.register_forward_hook(
        lambda m, a, out, name=name: flags[name].append(bool(torch.is_grad_enabled() and out.requires_grad)))
        for name, f in (("f1", f1), ("f2", f2), ("f3", f3))]
    try:
        out = fn(f1, f2, f3, z1, z2, z3, x, T1, T2, N)
    finally:
        for h in hooks:
            h.remove()
    if not (isinstance(out, (tuple, list)) and len(out) == 3):
        return {"outputs": out}
    for f in (f1, f2, f3):
        f.zero_grad()
    (out[2].sum() + 0.5 * out[1].square().sum() + 0.25 * out[0].sum()).backward()
    grads = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype)
                       for f in (f1, f2, f3) for p in f.parameters()])
    return {"z1": out[0].detach(), "z2": out[1].detach(), "z3": out[2].detach(), "gradients": grads,
            "calls": {k: len(v) for k, v in flags.items()}, "graph": flags}


def _compare_three(got: dict, want: dict) -> tuple[bool, str]:
    if "outputs" in got:
        return False, "return the three new states as a tuple (z1, z2, z3)"
    if got["calls"] != want["calls"]:
        return False, f"number of calls per level {got['calls']}, expected {want['calls']} (T1, T2, N as given)"
    for name in ("f1", "f2", "f3"):
        if got["graph"][name] != want["graph"][name]:
            calls = "".join("G" if g else "." for g in got["graph"][name])
            return False, (f"calls of {name} holding a graph: {calls!r}; with the 1-step gradient only the last call "
                           "of each level may build a graph")
    for key in ("z1", "z2", "z3", "gradients"):
        ok, msg = compare_outputs(got[key], want[key], atol=1e-12, rtol=1e-10, where=key)
        if not ok:
            return False, msg
    return True, ""


def check_three_level_segment(three_level_segment: Callable) -> Verdict:
    """Grade ``three_level_segment(f1, f2, f3, z1, z2, z3, x, T1, T2, N) -> (z1, z2, z3)``: the call counts, the
    states, the gradients and which calls hold a graph, for several (T1, T2, N)."""
    return check("three_level_segment",
                 lambda *a: _run_three_level(three_level_segment, *a),
                 lambda *a: _run_three_level(three_level_reference, *a),
                 inputs=three_level_problem, trials=len(THREE_LEVEL_SCHEDULES), compare=_compare_three)


# ---------------------------------------------------------------------------------------------------------------
# Experiment: how good is the 1-step gradient as the number of cycles grows?


def cosine_problem(seed: int = 0, hidden: int = 16) -> tuple[HRMConfig, torch.Tensor]:
    """A float64 HRM configuration and a batch of tokens (4, 8) for the cosine experiment."""
    g = torch.Generator().manual_seed(seed)
    cfg = HRMConfig(vocab_size=6, seq_len=8, hidden=hidden, n_heads=2, H_layers=1, L_layers=1, H_cycles=1,
                    L_cycles=2)
    return cfg, torch.randint(1, 6, (4, 8), generator=g)


def reference_one_step_cosine(cfg: HRMConfig, x_tokens: torch.Tensor, n_cycles: int, seed: int = 0) -> float:
    """Cosine between the 1-step gradient and the full-backprop gradient of one segment's ``lm_head(z_H)``
    squared-mean loss, for a fresh float64 HRM (``torch.manual_seed(seed)``) with ``H_cycles = n_cycles``."""
    grads = []
    for mode in ("one_step", "bptt"):
        torch.manual_seed(seed)
        model = HRM(HRMConfig(**{**cfg.__dict__, "H_cycles": n_cycles, "gradient": mode})).double()
        ids = torch.zeros(len(x_tokens), dtype=torch.long)
        carry = model.initial_carry(x_tokens, None, ids)
        z_H, _ = model.recursion(carry.z_H, carry.z_L, model.embed(x_tokens, ids))
        model.lm_head(z_H).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype)
                                for p in model.parameters()]))
    return torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0).item()


def check_one_step_cosine(one_step_cosine: Callable, cycles: Sequence[int] = (1, 2, 4)) -> Verdict:
    """Grade ``one_step_cosine(cfg, x_tokens, n_cycles, seed) -> float`` against the reference measurement."""
    cfg, x_tokens = cosine_problem()
    for n in cycles:
        case = f"n_cycles={n} (to rerun: `cfg, x_tokens = cosine_problem(); one_step_cosine(cfg, x_tokens, {n}, 0)`)"
        ok, got = call_learner("one_step_cosine", one_step_cosine, cfg, x_tokens, n, 0, case=case)
        if not ok:
            return got
        want = reference_one_step_cosine(cfg, x_tokens, n, 0)
        same, msg = compare_outputs(got, want, atol=1e-8, rtol=1e-6, where=f"cosine at N={n}")
        if not same:
            return verdict("one_step_cosine", False, f"{msg}. Failing case: {case}.")
    return verdict("one_step_cosine", True, f"your measurement agrees with the grader's at N = {list(cycles)}")


TREND_OPTIONS = ("falls", "rises", "stays within 0.05")


@lru_cache(maxsize=8)
def measured_trend(cycles: tuple[int, ...] = (1, 2, 4, 8), seeds: tuple[int, ...] = (0, 1, 2)) -> str:
    """The grader's own answer: how the mean cosine (over ``seeds``) moves from the first to the last of
    ``cycles``: one of :data:`TREND_OPTIONS`."""
    cfg, x_tokens = cosine_problem()
    first = sum(reference_one_step_cosine(cfg, x_tokens, cycles[0], s) for s in seeds) / len(seeds)
    last = sum(reference_one_step_cosine(cfg, x_tokens, cycles[-1], s) for s in seeds) / len(seeds)
    if abs(last - first) <= 0.05:
        return TREND_OPTIONS[2]
    return TREND_OPTIONS[1] if last > first else TREND_OPTIONS[0]


def check_cosine_trend(answer: Callable[[], str]) -> Verdict:
    """Grade ``answer() -> str``: how the 1-step gradient's cosine to full backprop (mean of seeds 0-2) moves from
    N = 1 to N = 8 cycles on the untrained toy HRM; one of :data:`TREND_OPTIONS`."""
    ok, got = call_learner("cosine_trend", answer)
    if not ok:
        return got
    return check_choice("cosine_trend", got, measured_trend(), TREND_OPTIONS,
                        explain="Compare the mean of your three seeds at N = 1 with the mean at N = 8.")
