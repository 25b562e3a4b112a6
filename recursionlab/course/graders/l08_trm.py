"""Graders for exercise 08 (TRM): the recursion with full backprop through the last recursion, the halting loss,
the recursion with the last k recursions on the graph, and how many test-time segments a trained TRM needs.

The recursion graders compare answers, latents, parameter gradients and -- so that a graph built and then
detached does not pass -- which calls of ``model.net`` held an autograd graph.
"""

from __future__ import annotations

from collections.abc import Callable

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
from recursionlab.models.hrm import halting_bce
from recursionlab.models.puzzle_eval import evaluate_puzzles
from recursionlab.models.trm import TRM, TRMConfig

# (T = H_cycles, n = L_cycles): beyond {1, 2}, so a schedule hard-wired for small counts fails
RECURSION_SCHEDULES: tuple[tuple[int, int], ...] = ((1, 1), (2, 3), (3, 2), (4, 3), (3, 5), (1, 4))


def recursion_problem(seed: int) -> tuple[TRM, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small float64 TRM (T, n from :data:`RECURSION_SCHEDULES`), tokens and carried states.

    Returns ``(model, x_tokens (2, 8), y (2, 10, 16), z (2, 10, 16))``.
    """
    torch.manual_seed(seed)
    T, n = RECURSION_SCHEDULES[seed % len(RECURSION_SCHEDULES)]
    cfg = TRMConfig(vocab_size=6, seq_len=8, hidden=16, n_heads=2, puzzle_emb_len=2, H_cycles=T, L_cycles=n)
    model = TRM(cfg).double()
    x_tokens = torch.randint(1, 6, (2, 8))
    y = torch.randn(2, 10, 16, dtype=torch.float64)
    z = torch.randn(2, 10, 16, dtype=torch.float64)
    return model, x_tokens, y, z


def run_recursion(fn: Callable, model: TRM, x_tokens: torch.Tensor, y: torch.Tensor, z: torch.Tensor, *extra):
    """Run ``fn(model, y, z, x~, *extra)``, backpropagate a fixed scalar of its outputs and record which calls of
    ``model.net`` held a graph. Returns ``{"y", "z", "gradients", "graph"}``."""
    ids = torch.zeros(len(x_tokens), dtype=torch.long)
    model.zero_grad()
    x = model.embed(x_tokens, ids)
    out, flags = graph_calls(model.net, lambda: fn(model, y, z, x, *extra))
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        return {"outputs": out}
    new_y, new_z = out
    (model.lm_head(new_y).square().mean() + new_z.mean()).backward()
    grads = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype)
                       for p in model.parameters()])
    return {"y": new_y.detach(), "z": new_z.detach(), "gradients": grads, "graph": flags}


def _compare_recursion(got: dict, want: dict) -> tuple[bool, str]:
    if "outputs" in got:
        return False, "return the pair (new y, new z)"
    if len(got["graph"]) != len(want["graph"]):
        return False, (f"model.net was called {len(got['graph'])} times, expected {len(want['graph'])} "
                       "(T recursions of n latent updates and one answer update)")
    if got["graph"] != want["graph"]:
        calls = "".join("G" if g else "." for g in got["graph"])
        expected = "".join("G" if g else "." for g in want["graph"])
        return False, (f"the calls of model.net holding an autograd graph are {calls!r} (G = graph, . = none), "
                       f"expected {expected!r}. Calls before the graph-holding ones must run under torch.no_grad(); "
                       "building a graph and detaching later gives the same numbers but keeps every call's "
                       "activations in memory")
    for key in ("y", "z", "gradients"):
        ok, msg = compare_outputs(got[key], want[key], atol=1e-10, rtol=1e-8, where=key)
        if not ok:
            return False, msg
    return True, ""


def check_trm_recursion(trm_recursion: Callable) -> Verdict:
    """Grade ``trm_recursion(model, y, z, x) -> (y, z)`` against ``TRM.recursion`` for T, n up to 4 and 5."""
    return check("trm_recursion",
                 lambda *a: run_recursion(trm_recursion, *a),
                 lambda *a: run_recursion(lambda m, y, z, x: m.recursion(y, z, x), *a),
                 inputs=recursion_problem, trials=len(RECURSION_SCHEDULES), compare=_compare_recursion)


def halting_problem(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (6, 5, 4), labels (6, 5) with ignored (-100) cells, Q-halt logits (6,): some puzzles right, one
    right only where supervised."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 5, 4, generator=g)
    labels = torch.randint(0, 4, (6, 5), generator=g)
    labels[:3] = logits[:3].argmax(-1)  # three puzzles answered exactly right
    labels[1, 2] = -100  # an ignored position in a right puzzle
    labels[4, :] = torch.where(torch.arange(5) < 4, logits[4].argmax(-1), torch.tensor(-100))
    labels[5, :4] = logits[5, :4].argmax(-1)  # right everywhere but one supervised cell
    labels[5, 4] = (logits[5, 4].argmax() + 1) % 4
    return logits, labels, torch.randn(6, generator=g) * 2


def _halting_with_grad(fn: Callable, logits, labels, q):
    q = q.clone().requires_grad_(True)
    loss = fn(logits, labels, q)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        return {"loss": loss}
    loss.backward()
    return {"loss": loss.detach().reshape(()), "dloss/dq": q.grad if q.grad is not None else torch.zeros_like(q)}


def check_halting_loss(halting_loss: Callable) -> Verdict:
    """Grade ``halting_loss(logits, labels, q_halt_logits) -> scalar`` (value and its gradient in the Q logits)
    against ``recursionlab.models.hrm.halting_bce``."""
    return check("halting_loss", lambda *a: _halting_with_grad(halting_loss, *a),
                 lambda *a: _halting_with_grad(halting_bce, *a), inputs=halting_problem, trials=5,
                 atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Transfer: the last k recursions on the graph


def recursion_last_k_reference(model: TRM, y: torch.Tensor, z: torch.Tensor, x: torch.Tensor, k: int):
    """TRM's supervision step with the last ``k`` of its T recursions on the graph (k = 1: the paper; k = T:
    backprop through every call). y, z, x: (B, S, D) -> (y, z)."""
    cfg, rope = model.config, model.rotary()

    def one(y, z):
        for _ in range(cfg.L_cycles):
            z = model.net(z, y + x, rope)
        return model.net(y, z, rope), z

    with torch.no_grad():
        for _ in range(cfg.H_cycles - k):
            y, z = one(y, z)
    for _ in range(k):
        y, z = one(y, z)
    return y, z


def last_k_problem(seed: int):
    """:func:`recursion_problem` plus ``k`` in 1..T."""
    model, x_tokens, y, z = recursion_problem(seed + 1)
    T = model.config.H_cycles
    return model, x_tokens, y, z, 1 + (seed * 7) % T


def check_recursion_last_k(recursion_last_k: Callable) -> Verdict:
    """Grade ``recursion_last_k(model, y, z, x, k) -> (y, z)``: values, gradients and the graph-holding calls."""
    return check("recursion_last_k",
                 lambda *a: run_recursion(recursion_last_k, *a),
                 lambda *a: run_recursion(recursion_last_k_reference, *a),
                 inputs=last_k_problem, trials=len(RECURSION_SCHEDULES), compare=_compare_recursion)


# ---------------------------------------------------------------------------------------------------------------
# Experiment: how many test-time segments does the trained TRM need?


_EVALS: dict[tuple[int, int, int], object] = {}


def _evaluate(model: TRM, puzzles, max_steps: int):
    # graders re-measure; the same model on the same puzzles gives the same result, so measure once per session
    key = (id(model), id(puzzles), max_steps)
    if key not in _EVALS:
        _EVALS.clear()
        _EVALS[key] = evaluate_puzzles(model, puzzles, n_steps=max_steps)
    return _EVALS[key]


def reference_segments_to_plateau(model: TRM, puzzles, max_steps: int, tol: float = 0.01) -> int:
    """The fewest supervision steps S' <= ``max_steps`` whose exact accuracy is within ``tol`` of the accuracy
    after ``max_steps``."""
    exact = evaluate_puzzles(model, puzzles, n_steps=max_steps).exact_by_step
    return next(s + 1 for s, acc in enumerate(exact) if acc >= exact[-1] - tol)


def check_segments_to_plateau(segments_to_plateau: Callable, model: TRM, puzzles, max_steps: int,
                              tol: float = 0.01) -> Verdict:
    """Grade ``segments_to_plateau(model, puzzles, max_steps, tol) -> int`` by measuring it again."""
    case = f"your function on the notebook's model and puzzles with max_steps={max_steps}, tol={tol}"
    ok, got = call_learner("segments_to_plateau", segments_to_plateau, model, puzzles, max_steps, tol, case=case)
    if not ok:
        return got
    exact = _evaluate(model, puzzles, max_steps).exact_by_step
    want = next(s + 1 for s, acc in enumerate(exact) if acc >= exact[-1] - tol)
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = int(got.item())
    if not isinstance(got, int) or isinstance(got, bool):
        return verdict("segments_to_plateau", False, f"return an int (a number of segments), got {got!r}")
    if got != want:
        hint = " (segments count from 1)" if got == want - 1 else ""
        return verdict("segments_to_plateau", False, f"you found {got} segments, the grader measures {want}{hint}.")
    return verdict("segments_to_plateau", True, f"{got} segments, as the grader measures")


HALT_OPTIONS = ("earlier", "later", "about the same (within 0.5 segments)")


def measured_halting_vs_plateau(model: TRM, puzzles, max_steps: int, tol: float = 0.01) -> str:
    """Does the Q head halt (mean first halting step) earlier or later than the accuracy plateau of
    :func:`reference_segments_to_plateau`? One of :data:`HALT_OPTIONS`."""
    result = _evaluate(model, puzzles, max_steps)
    plateau = next(s + 1 for s, acc in enumerate(result.exact_by_step) if acc >= result.exact_by_step[-1] - tol)
    mean_halt = float(result.halt_steps.mean())
    if abs(mean_halt - plateau) <= 0.5:
        return HALT_OPTIONS[2]
    return HALT_OPTIONS[0] if mean_halt < plateau else HALT_OPTIONS[1]


def check_halting_vs_plateau(answer: Callable[[], str], model: TRM, puzzles, max_steps: int,
                             tol: float = 0.01) -> Verdict:
    """Grade ``answer() -> str`` against the grader's own measurement on the same model and puzzles."""
    ok, got = call_learner("halting_vs_plateau", answer)
    if not ok:
        return got
    return check_choice("halting_vs_plateau", got, measured_halting_vs_plateau(model, puzzles, max_steps, tol),
                        HALT_OPTIONS, explain="Compare the mean halting step (result.halt_steps.mean()) with your "
                        "plateau.")
