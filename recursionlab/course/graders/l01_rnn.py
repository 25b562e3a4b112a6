"""Graders for exercise 01 (RNNs from scratch): the Elman forward pass, a GRU forward pass in PyTorch's layout, and
the experiment "how long does a random RNN remember its first input?".

Each ``check_*`` takes the learner's function, builds its own inputs (fixed seeds, float64), compares with the
library or with PyTorch, and returns a :class:`~recursionlab.course.checks.Verdict` (raising in grading mode).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from recursionlab.course.checks import Verdict, call_learner, check, check_choice, check_value, verdict
from recursionlab.nn.rnn import elman_forward, matrix_with_spectral_radius

__all__ = [
    "FORGETTING_RADII",
    "FORGETTING_THRESHOLD",
    "check_first_input_influence",
    "check_gru_forward",
    "check_longest_memory",
    "check_rnn_forward",
    "forgetting_problem",
    "gru_problem",
    "rnn_problem",
]

F64 = torch.float64


def rnn_problem(seed: int) -> tuple[torch.Tensor, ...]:
    """A random Elman problem ``(x (B, T, D), h0 (B, H), W_xh (H, D), W_hh (H, H), b (H,))``; T = 1 for seed 0
    (the case where forgetting to carry the state does not show), then longer sequences, with D != H."""
    g = torch.Generator().manual_seed(seed)
    B, T, D, H = 1 + seed % 3, [1, 2, 5, 9, 16][seed % 5], 3 + seed % 2, 4 + seed
    return (torch.randn(B, T, D, generator=g, dtype=F64), torch.randn(B, H, generator=g, dtype=F64),
            0.5 * torch.randn(H, D, generator=g, dtype=F64), 0.5 * torch.randn(H, H, generator=g, dtype=F64),
            0.1 * torch.randn(H, generator=g, dtype=F64))


def check_rnn_forward(rnn_forward: Callable) -> Verdict:
    """Grade ``rnn_forward(x, h0, W_xh, W_hh, b) -> hs (B, T, H)`` against :func:`recursionlab.nn.rnn.elman_forward`."""
    return check("rnn_forward", rnn_forward, lambda *args: elman_forward(*args)[0], inputs=rnn_problem, trials=5,
                 atol=1e-10, rtol=1e-8, output_names=None, time_dim=1)


def gru_problem(seed: int) -> tuple[torch.Tensor, ...]:
    """A random GRU problem in ``torch.nn.GRU``'s layout: ``(x (B, T, D), h0 (B, H), W_ih (3H, D), W_hh (3H, H),
    b_ih (3H,), b_hh (3H,))`` with the gate blocks in the order r, z, n."""
    g = torch.Generator().manual_seed(100 + seed)
    B, T, D, H = 1 + seed % 2, [1, 3, 6, 10][seed % 4], 2 + seed % 3, 3 + seed
    return (torch.randn(B, T, D, generator=g, dtype=F64), torch.randn(B, H, generator=g, dtype=F64),
            0.6 * torch.randn(3 * H, D, generator=g, dtype=F64), 0.6 * torch.randn(3 * H, H, generator=g, dtype=F64),
            0.3 * torch.randn(3 * H, generator=g, dtype=F64), 0.3 * torch.randn(3 * H, generator=g, dtype=F64))


def torch_gru_states(x, h0, W_ih, W_hh, b_ih, b_hh) -> torch.Tensor:
    """Every hidden state of ``torch.nn.GRU(batch_first=True)`` with the given weights: ``(B, T, H)``."""
    H = h0.shape[-1]
    gru = torch.nn.GRU(x.shape[-1], H, batch_first=True).to(x.dtype)
    with torch.no_grad():
        for name, value in (("weight_ih_l0", W_ih), ("weight_hh_l0", W_hh), ("bias_ih_l0", b_ih),
                            ("bias_hh_l0", b_hh)):
            getattr(gru, name).copy_(value)
        hs, _ = gru(x, h0[None])
    return hs


def check_gru_forward(gru_forward: Callable) -> Verdict:
    """Grade ``gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh) -> hs (B, T, H)`` against ``torch.nn.GRU``."""
    return check("gru_forward", gru_forward, torch_gru_states, inputs=gru_problem, trials=4, atol=1e-10, rtol=1e-8,
                 time_dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Experiment: how long does a random tanh RNN remember its first input?

FORGETTING_RADII: tuple[float, ...] = (0.5, 0.9, 1.5)
FORGETTING_THRESHOLD = 1e-3
FORGETTING_MAX_T = 60


def forgetting_problem(radius: float, T: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A random tanh RNN (H=32, D=4) whose ``W_hh`` has spectral radius ``radius``, and two batches of 16 input
    sequences of length ``T`` that differ only in their first input (by +1 in every entry).

    Returns ``(x (16, T, 4), x_changed (16, T, 4), h0 (16, 32), W_xh (32, 4), W_hh (32, 32), b (32,))``.
    """
    if T < 1 or T > FORGETTING_MAX_T:
        raise ValueError(f"T must be in 1..{FORGETTING_MAX_T}, got {T}")
    g = torch.Generator().manual_seed(seed)
    W_hh = matrix_with_spectral_radius(32, radius, g, dtype=F64)
    W_xh = 0.5 * torch.randn(32, 4, generator=g, dtype=F64)
    x = torch.randn(16, FORGETTING_MAX_T, 4, generator=g, dtype=F64)[:, :T]
    x_changed = x.clone()
    x_changed[:, 0] += 1.0
    return x, x_changed, torch.zeros(16, 32, dtype=F64), W_xh, W_hh, torch.zeros(32, dtype=F64)


@functools.lru_cache(maxsize=16)
def _influence_curve(radius: float) -> tuple[float, ...]:
    # the forward pass is causal, so h_T of the length-T problem is step T of the longest one: one run per radius
    x, x_changed, h0, W_xh, W_hh, b = forgetting_problem(radius, FORGETTING_MAX_T)
    diff = elman_forward(x, h0, W_xh, W_hh, b)[0] - elman_forward(x_changed, h0, W_xh, W_hh, b)[0]
    return tuple(diff.norm(dim=-1).mean(dim=0).tolist())


def _influence(radius: float, T: int) -> float:
    return _influence_curve(radius)[T - 1]


def memory_length(radius: float) -> int:
    """The grader's measurement: the smallest T at which the mean influence of x_1 on h_T is below the threshold
    (``FORGETTING_MAX_T + 1`` if it never is, up to ``FORGETTING_MAX_T``)."""
    for T, value in enumerate(_influence_curve(radius), start=1):
        if value < FORGETTING_THRESHOLD:
            return T
    return FORGETTING_MAX_T + 1


def check_first_input_influence(first_input_influence: Callable) -> Verdict:
    """Grade ``first_input_influence(radius, T) -> float`` (the mean over the batch of ``||h_T - h_T'||``) on a few
    radii and lengths, against the grader's own measurement."""
    name = "first_input_influence"
    for radius, T in ((0.9, 1), (0.9, 7), (0.5, 12), (1.5, 30)):
        case = f"radius={radius}, T={T} (rerun: `first_input_influence({radius}, {T})`)"
        ok, got = call_learner(name, first_input_influence, radius, T, case=case)
        if not ok:
            return got
        want = _influence(radius, T)
        result = check_value(name, got, want, rtol=1e-6, atol=1e-12, what=f"your influence for {case}",
                             hint="Use forgetting_problem(radius, T), the last state h_T of both batches, the norm of "
                                  "their difference per sequence, then the mean over the 16 sequences.", quiet=True)
        if not result:
            return verdict(name, False, result.message.removeprefix(f"\u274c {name}: "))
    return verdict(name, True, "matches the grader's measurement at 4 (radius, T) pairs")


def check_longest_memory(memory_lengths: Callable, answer: Callable) -> Verdict:
    """Grade the experiment: ``memory_lengths() -> {radius: T}`` for every radius in :data:`FORGETTING_RADII`
    (the smallest T whose influence is below :data:`FORGETTING_THRESHOLD`, or ``FORGETTING_MAX_T + 1``), and
    ``answer() -> float``: the radius that remembers longest."""
    name = "memory_lengths"
    ok, got = call_learner(name, memory_lengths)
    if not ok:
        return got
    want = {r: memory_length(r) for r in FORGETTING_RADII}
    if not isinstance(got, dict) or set(got) != set(want):
        keys = sorted(got) if isinstance(got, dict) else type(got).__name__
        return verdict(name, False, f"expected a dict with the radii {list(FORGETTING_RADII)} as keys, got {keys}.")
    for r in FORGETTING_RADII:
        if got[r] != want[r]:
            return verdict(name, False, f"for radius {r} you found T={got[r]!r}, the grader measures {want[r]} (the "
                           f"smallest T with first_input_influence({r}, T) < {FORGETTING_THRESHOLD:g}; "
                           f"{FORGETTING_MAX_T + 1} if none up to {FORGETTING_MAX_T}).")
    verdict(name, True, f"memory lengths {want} agree with the grader's measurement")
    ok, chosen = call_learner("longest_memory", answer)
    if not ok:
        return chosen
    longest = max(FORGETTING_RADII, key=lambda r: want[r])
    return check_choice("longest_memory", chosen, longest, FORGETTING_RADII,
                        explain="Look at your own memory_lengths(): which radius keeps h_T sensitive to x_1 longest?")
