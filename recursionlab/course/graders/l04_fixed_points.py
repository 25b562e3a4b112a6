"""Graders for lesson 04's exercises (DEQ fixed points): the Anderson step, Newton's step, Anderson's memory.

Every check builds its own inputs (fixed seeds, float64) and compares with the library
(:func:`recursionlab.solvers.anderson_step`, :func:`recursionlab.solvers.newton_step`,
:func:`recursionlab.solvers.anderson`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from recursionlab.course.checks import Verdict, call_learner, check, check_choice, verdict
from recursionlab.solvers import anderson, anderson_step, newton_step

DTYPE = torch.float64


def _relay(name: str, quiet_verdict: Verdict) -> Verdict:
    """Print a quiet sub-check's failure as this check's verdict (a crash or "not implemented" is already printed)."""
    if quiet_verdict.todo or "your code raised" in quiet_verdict.message:
        return quiet_verdict
    return verdict(name, False, quiet_verdict.message.split(f"{name}: ", 1)[-1])


def anderson_history(seed: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """A random history ``(X (B, n, D), F (B, n, D), lam, beta)``: n = 1..6, residuals of very different sizes
    (the scaled ridge matters when they are tiny), ridges from 1e-4 to 1 (a wrong ridge shows), damped mixes."""
    gen = torch.Generator().manual_seed(seed)
    n = [1, 2, 3, 5, 6, 4, 3, 2][seed % 8]
    batch, dim = [3, 1, 4, 2, 3, 5, 2, 3][seed % 8], [12, 7, 20, 9, 30, 5, 16, 8][seed % 8]
    X = torch.randn(batch, n, dim, generator=gen, dtype=DTYPE)
    scale = [1.0, 1e-3, 1.0, 10.0, 1e-2, 1.0, 1e-4, 3.0][seed % 8]
    F = X + scale * torch.randn(batch, n, dim, generator=gen, dtype=DTYPE)
    lam = [1e-4, 1e-4, 0.1, 1e-2, 1.0, 0.5, 1e-4, 0.3][seed % 8]
    beta = [1.0, 0.5, 0.8, 1.0, 0.3, 0.7, 1.0, 0.6][seed % 8]
    return X, F, lam, beta


def check_anderson_step(learner_fn: Callable) -> Verdict:
    """Core: ``my_anderson_step(X, F, lam, beta) -> (B, D)`` equals the library's step on 8 histories."""
    return check("anderson_step", learner_fn, anderson_step, inputs=anderson_history, trials=8, atol=1e-9, rtol=1e-7)


def newton_case(seed: int) -> tuple[Callable, Callable, torch.Tensor]:
    """``(f, jacobian, z)`` for a tanh layer with a non-symmetric W (a transposed Jacobian shows) at a random z."""
    gen = torch.Generator().manual_seed(50 + seed)
    dim, batch = [5, 8, 3, 12][seed % 4], [3, 2, 1, 4][seed % 4]
    W = torch.randn(dim, dim, generator=gen, dtype=DTYPE)
    W = [0.5, 1.5, 3.0, 0.9][seed % 4] * W / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(batch, dim, generator=gen, dtype=DTYPE)

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ W.T + x)

    def jacobian(z: torch.Tensor) -> torch.Tensor:  # diag(1 - f^2) W, per sample: (B, D, D)
        return (1 - f(z) ** 2)[:, :, None] * W

    z = 0.5 * torch.randn(batch, dim, generator=gen, dtype=DTYPE)
    return f, jacobian, z


def _library_newton(f: Callable, jacobian: Callable, z: torch.Tensor) -> torch.Tensor:
    return newton_step(z, f(z), jacobian(z))


def check_newton_step(learner_fn: Callable) -> Verdict:
    """Transfer: ``my_newton_step(f, jacobian, z) -> (B, D)`` equals ``z - (J - I)^{-1}(f(z) - z)`` at 4 points,
    and, iterated from 0 on a layer with ||W||_2 = 3, converges quadratically (error squared per step)."""
    name = "Newton step"
    verdict_1 = check(name, learner_fn, _library_newton, inputs=newton_case, trials=4, atol=1e-9, rtol=1e-7,
                      quiet=True)
    if not verdict_1:
        return _relay(name, verdict_1)
    f, jacobian, _ = newton_case(2)
    z_star = torch.zeros(1, 3, dtype=DTYPE)
    for _ in range(60):
        z_star = _library_newton(f, jacobian, z_star)
    z = z_star + 0.05
    errors = []
    for _ in range(4):
        ok, z = call_learner(name, learner_fn, f, jacobian, z, case="the convergence test")
        if not ok:
            return z
        errors.append(float((z - z_star).norm()))
    if not (errors[1] < 1e-4 and errors[2] < 1e-9):
        return verdict(name, False, f"your step matches on single points but iterating it from a start 0.05 away "
                       f"does not converge fast: errors {', '.join(f'{e:.1e}' for e in errors)}.")
    return verdict(name, True, "matches z - (J - I)^{-1}(f(z) - z) on 4 layers and converges quadratically "
                   f"(errors {', '.join(f'{e:.0e}' for e in errors[:3])})")


MEMORIES = (1, 2, 3, 5, 10, 20)


def memory_problem(dim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The slow-modes problem of the exercise: a symmetric W with eigenvalues spread up to 0.98, a small input."""
    gen = torch.Generator().manual_seed(7)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=DTYPE))
    W = Q @ torch.diag(torch.linspace(-0.5, 0.98, dim, dtype=DTYPE)) @ Q.T
    x = 0.1 * torch.randn(4, dim, generator=gen, dtype=DTYPE)
    return lambda z: torch.tanh(z @ W.T + x)


def measure_memory_nfe(dim: int, memories: tuple[int, ...] = MEMORIES) -> dict[int, int]:
    """The grader's own measurement: NFE of ``anderson(m=m, tol=1e-8, max_iter=500)`` from z = 0, per m."""
    return dict(_measure_memory_nfe(dim, tuple(memories)))


@lru_cache(maxsize=8)
def _measure_memory_nfe(dim: int, memories: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    f = memory_problem(dim)
    z0 = torch.zeros(4, dim, dtype=DTYPE)
    return tuple((m, anderson(f, z0, m=m, tol=1e-8, max_iter=500).nfe) for m in memories)


def smallest_good_memory(nfe: dict[int, int], within: float = 0.1) -> int:
    """The smallest m whose NFE is within ``within`` (10 %) of the best NFE over all m."""
    best = min(nfe.values())
    return min(m for m, n in nfe.items() if n <= (1 + within) * best)


def check_anderson_memory(learner_fn: Callable, dim: int, answer_fn: Callable) -> Verdict:
    """Experiment: ``nfe_by_memory(dim) -> {m: NFE}`` re-measured by the grader, and ``answer_fn() -> int``, the
    smallest m within 10 % of the best NFE, graded against the grader's measurement."""
    name = "Anderson memory experiment"
    ok, got = call_learner(name, learner_fn, dim, case=f"dim = {dim}")
    if not ok:
        return got
    want = measure_memory_nfe(dim)
    if not isinstance(got, dict) or sorted(got) != sorted(want):
        return verdict(name, False, f"nfe_by_memory should return a dict with keys {list(MEMORIES)}, got "
                       f"{got if not isinstance(got, dict) else sorted(got)!r}.")
    for m in MEMORIES:
        if abs(int(got[m]) - want[m]) > 1:
            return verdict(name, False, f"for m = {m} you measured NFE {got[m]}, the grader measures {want[m]} "
                           "(anderson(f, z0, m=m, tol=1e-8, max_iter=500) from z0 = 0; read `.nfe`).")
    ok, answer = call_learner(name, answer_fn)
    if not ok:
        return answer
    return check_choice(name, answer, smallest_good_memory(want), list(MEMORIES),
                        explain="Find the lowest NFE in your table, allow 10 % more, and take the smallest m that "
                                "stays within it.")
