"""Graders for exercise 09 (recurrent depth, Huginn): the depth sampler, truncated backprop through the recurrence
(with the graph in the right calls), the KL exit rule, Huginn's KV-cache sharing, and a measurement of how much of
the recurrence the truncated gradient sees."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
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
from recursionlab.models.recurrent_depth import (
    RecurrentDepthCache,
    RecurrentDepthConfig,
    RecurrentDepthModel,
    kl_exit_steps,
    sample_recurrences,
    split_recurrences,
)
from recursionlab.nn.attention import KVCache

# ---------------------------------------------------------------------------------------------------------------
# Core: the depth sampler


def sampler_case(seed: int) -> tuple[int, float, float, int, int]:
    """(step, mean, sigma, backprop_k, sampler seed): Huginn's mean 32 and small means, k below and above r."""
    rng = np.random.default_rng(seed)
    return (int(rng.integers(0, 10**6)), float(rng.choice([2.0, 4.0, 8.0, 32.0])), float(rng.choice([0.3, 0.5, 1.0])),
            int(rng.integers(1, 9)), int(rng.integers(0, 10**6)))


def check_sample_depth(sample_depth: Callable) -> Verdict:
    """Grade ``sample_depth(step, mean, sigma, backprop_k, seed) -> (no_grad_steps, grad_steps)`` against
    ``sample_recurrences`` draw for draw."""
    return check("sample_depth", sample_depth, sample_recurrences, inputs=sampler_case, trials=40,
                 output_names=("no_grad_steps", "grad_steps"))


# ---------------------------------------------------------------------------------------------------------------
# Core: truncated backprop through the recurrence


def recurrence_case(seed: int) -> tuple[RecurrentDepthModel, torch.Tensor, int, int]:
    """A tiny model, tokens (2, 6), and a split (no_grad_steps, grad_steps) of r = 1 + 2 * seed recurrences."""
    torch.manual_seed(seed)
    model = RecurrentDepthModel(RecurrentDepthConfig(vocab_size=11, dim=16, n_heads=2, mlp_inner=32, max_positions=16))
    tokens = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(seed))
    return (model, tokens, *split_recurrences(1 + 2 * seed, 1 + seed % 3))


def _recurrence_outcome(run: Callable | None) -> Callable:
    """The final state, the gradient of a loss on it w.r.t. every parameter, and which core calls held a graph."""

    def result(model, tokens, no_grad_steps, grad_steps):
        pos = torch.arange(tokens.shape[1])
        rope = model.rotary(pos)
        e = model.embed(tokens, pos, rope)
        s0 = model.initial_state(e, pos, noise_seed=0)
        with_graph: list[bool] = []

        def core_step(state):
            out = model.core_step(state, e, rope)
            with_graph.append(bool(torch.is_grad_enabled() and out.requires_grad))
            return out

        if run is None:  # the library's loop, called through the same recording core_step
            if no_grad_steps:
                with torch.no_grad():
                    s = s0
                    for _ in range(no_grad_steps):
                        s = core_step(s)
                s = s.detach()
            else:
                s = s0
            for _ in range(grad_steps):
                s = core_step(s)
            torch.testing.assert_close(s, model.iterate(s0, e, rope, no_grad_steps, grad_steps))
        else:
            s = run(core_step, s0, no_grad_steps, grad_steps)
        if not isinstance(s, torch.Tensor):
            return {"returned": s}
        params = list(model.parameters())
        if s.requires_grad:
            loss = model.decode(s, rope).logsumexp(-1).mean()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        else:
            grads = [None] * len(params)
        return {"state": s.detach(), "grads": [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)],
                "with_graph": with_graph, "no_grad_steps": no_grad_steps, "grad_steps": grad_steps}

    return result


def _compare_recurrence(got: dict, want: dict) -> tuple[bool, str]:
    if "returned" in got:
        return False, f"return the final state (a tensor), got {type(got['returned']).__name__}"
    ok, msg = compare_outputs(got["state"], want["state"], atol=1e-6, rtol=1e-5, where="final state")
    if not ok:
        return ok, msg
    n, g = want["no_grad_steps"], want["grad_steps"]
    calls = got["with_graph"]
    if len(calls) != n + g:
        return False, f"core_step was called {len(calls)} times, expected no_grad_steps + grad_steps = {n + g}"
    wrong = [i + 1 for i, (a, b) in enumerate(zip(calls, want["with_graph"])) if a != b]
    if wrong:
        first = wrong[0]
        if first <= n:
            return False, (f"core_step call {first} of {n + g} built an autograd graph: the first no_grad_steps = {n} "
                           "calls must run under `torch.no_grad()`. Building the graph and `.detach()`-ing later gives "
                           "the same numbers, but autograd keeps every step's activations until then: the memory "
                           "saving truncation is about is gone")
        return False, (f"core_step call {first} of {n + g} ran without a graph: the last grad_steps = {g} calls must "
                       "run with autograd on")
    for i, (a, b) in enumerate(zip(got["grads"], want["grads"])):
        ok, msg = compare_outputs(a, b, atol=1e-6, rtol=1e-5, where=f"gradient of parameter {i}")
        if not ok:
            return ok, msg + " (is only the last grad_steps part of the graph, starting from a detached state?)"
    return True, ""


def check_run_recurrence(run_recurrence: Callable) -> Verdict:
    """Grade ``run_recurrence(core_step, state, no_grad_steps, grad_steps) -> state``: the final state, every
    parameter's gradient, and *which* calls of ``core_step`` held an autograd graph (exactly the last grad_steps)."""
    return check("run_recurrence", _recurrence_outcome(run_recurrence), _recurrence_outcome(None),
                 inputs=recurrence_case, trials=6, compare=_compare_recurrence)


# ---------------------------------------------------------------------------------------------------------------
# Core: the KL exit rule


def exit_case(seed: int) -> tuple[torch.Tensor, float, int]:
    """Trajectories (S=12, B=3, T=5, V=7) converging at per-token rates (some never within the cap), a threshold
    and min_steps."""
    g = torch.Generator().manual_seed(seed)
    S, B, T, V = 12, 3, 5, 7
    target = torch.randn(B, T, V, generator=g) * 3
    rate = torch.rand(B, T, 1, generator=g) * 0.8 + 0.1  # each token converges at its own speed
    steps = torch.arange(1, S + 1).view(S, 1, 1, 1)
    logits = target + torch.randn(S, B, T, V, generator=g) * rate**steps * 4
    return logits, float([1e-4, 1e-3, 1e-2, 1e-1][seed % 4]), 1 + seed % 3


def check_kl_exit(kl_exit: Callable) -> Verdict:
    """Grade ``kl_exit(step_logits, threshold, min_steps) -> (exit_step, logits_at_exit)`` against ``kl_exit_steps``."""
    return check("kl_exit", kl_exit, kl_exit_steps, inputs=exit_case, trials=12, atol=1e-6,
                 output_names=("exit_step", "logits_at_exit"))


# ---------------------------------------------------------------------------------------------------------------
# Transfer: Huginn's KV-cache sharing


SHARED_CASES = ((6, 1), (8, 3), (5, 2), (4, 4), (3, 8), (7, 2))  # (step cap r, budget K): K < r, K = r, K > r


def shared_case(seed: int) -> tuple[RecurrentDepthModel, torch.Tensor, int, int]:
    """A tiny model with two core layers, tokens (2, 7), a step cap and a budget K."""
    torch.manual_seed(100 + seed)
    model = RecurrentDepthModel(RecurrentDepthConfig(vocab_size=13, dim=16, n_heads=2, mlp_inner=32, max_positions=16,
                                                     core_layers=2)).eval()
    tokens = torch.randint(0, 13, (2, 7), generator=torch.Generator().manual_seed(seed))
    cap, budget = SHARED_CASES[seed % len(SHARED_CASES)]
    return model, tokens, cap, budget


def _library_slot(cache: RecurrentDepthCache, recurrence: int, layer: int, budget: int) -> KVCache:
    shared = RecurrentDepthCache(prelude=[], coda=[], core=cache.core, length=cache.length, core_budget=budget)
    return shared.core_slot(recurrence, layer)


def _decode_with(slot_fn: Callable) -> Callable:
    def result(model, tokens, cap, budget):
        class LearnerCache(RecurrentDepthCache):
            def core_slot(self, recurrence: int, layer: int) -> KVCache:
                return slot_fn(self, recurrence, layer, budget)

            @property
            def max_recurrence(self) -> int:  # slot labels are the learner's choice; the logits are checked
                return 0

        cache = LearnerCache(prelude=[KVCache() for _ in model.prelude], coda=[KVCache() for _ in model.coda])
        with torch.no_grad():
            logits = torch.stack([model.decode_step(tokens[:, t : t + 1], cache, cap)[0]
                                  for t in range(tokens.shape[1])], 1)
        n_core = len(model.core)
        return {"logits": logits, "slots per core layer": len(cache.core) / n_core,
                "cached entries per token and core layer": sum(c.length for c in cache.core.values())
                / (tokens.shape[1] * n_core)}

    return result


def _compare_shared(got: dict, want: dict) -> tuple[bool, str]:
    ok, msg = compare_outputs(got["logits"], want["logits"], atol=1e-5, rtol=1e-4, where="logits", time_dim=1)
    if not ok:
        return ok, msg + " (t is the token position)"
    for key in ("slots per core layer", "cached entries per token and core layer"):
        if abs(got[key] - want[key]) > 1e-9:
            return False, f"{key}: {got[key]:g}, expected {want[key]:g} (K slots, one entry per token each: " \
                          "overwrite a token's entry, do not append a second one)"
    return True, ""


def check_shared_core_slot(shared_core_slot: Callable) -> Verdict:
    """Grade ``shared_core_slot(cache, recurrence, layer, budget) -> KVCache`` by decoding token by token with it:
    the logits must equal the library's shared cache (``core_budget=budget``) and the cache must hold ``budget``
    slots per core layer with one entry per token each."""
    return check("shared_core_slot", _decode_with(shared_core_slot), _decode_with(_library_slot),
                 inputs=shared_case, trials=len(SHARED_CASES), compare=_compare_shared)


# ---------------------------------------------------------------------------------------------------------------
# Experiment: how much of the recurrence does the truncated gradient see?


def reference_gradient_share(mean: float, sigma: float, backprop_k: int, n_steps: int, seed: int) -> float:
    """Share of all core applications in training steps ``0 .. n_steps - 1`` that run with gradient."""
    splits = [sample_recurrences(t, mean, sigma, backprop_k, seed) for t in range(n_steps)]
    return sum(g for _, g in splits) / sum(n + g for n, g in splits)


SHARE_SETTINGS = ((32.0, 0.5, 8, 514229), (4.0, 0.5, 8, 7), (16.0, 1.0, 4, 3))
SHARE_OPTIONS = ("about a quarter", "about half", "almost all")


def check_gradient_share(gradient_share: Callable, n_steps: int = 2000) -> Verdict:
    """Grade ``gradient_share(mean, sigma, backprop_k, n_steps, seed) -> float`` by re-measuring it with the
    library's sampler on the same steps, for Huginn's setting and two others."""
    for mean, sigma, k, seed in SHARE_SETTINGS:
        case = f"gradient_share({mean}, {sigma}, {k}, {n_steps}, {seed})"
        ok, got = call_learner("gradient_share", gradient_share, mean, sigma, k, n_steps, seed, case=case)
        if not ok:
            return got
        want = reference_gradient_share(mean, sigma, k, n_steps, seed)
        result = check_value("gradient_share", got, want, rtol=1e-6, atol=1e-9, what=f"`{case}`", quiet=True,
                             hint="Count, over those steps, the grad_steps of each split against all recurrences r.")
        if not result:
            return verdict("gradient_share", False, result.message.split(": ", 1)[-1])
    return verdict("gradient_share", True, f"matches the grader's measurement in all {len(SHARE_SETTINGS)} settings")


def check_gradient_share_answer(answer: Callable, n_steps: int = 2000) -> Verdict:
    """Grade ``answer() -> str``: which option describes the share at Huginn's setting (r-bar 32, sigma 1/2, k 8),
    decided by the grader's own measurement."""
    ok, got = call_learner("gradient share answer", answer)
    if not ok:
        return got
    share = reference_gradient_share(32.0, 0.5, 8, n_steps, 514229)
    correct = min(SHARE_OPTIONS, key=lambda o: abs({"about a quarter": 0.25, "about half": 0.5,
                                                    "almost all": 0.95}[o] - share))
    return check_choice("gradient share answer", got, correct, SHARE_OPTIONS,
                        explain="Look at the number your gradient_share returns for (32.0, 0.5, 8, ...).")


__all__: list[Any] = [
    "check_gradient_share",
    "check_gradient_share_answer",
    "check_kl_exit",
    "check_run_recurrence",
    "check_sample_depth",
    "check_shared_core_slot",
    "exit_case",
    "recurrence_case",
    "reference_gradient_share",
    "sampler_case",
    "shared_case",
]
