"""Graders for lesson 05's exercises (DEQ implicit gradients): the adjoint solve, the weight gradient, the implicit
gradient of a convolutional DEQ layer, and the cost of the backward solve as the spectral radius grows.

Inputs are built here (fixed seeds, float64, non-symmetric weights so that J and J^T differ) and compared with the
library (:func:`recursionlab.solvers.adjoint_solve`, :class:`recursionlab.solvers.DEQSolver`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F

from recursionlab.course.checks import Verdict, call_learner, check, check_choice, verdict
from recursionlab.solvers import DEQSolver, adjoint_solve, solve

DTYPE = torch.float64


def layer(z: torch.Tensor, W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The tanh layer of lessons 04-05, per row: f(z) = tanh(W z + x); z, x (B, D), W (D, D)."""
    return torch.tanh(z @ W.T + x)


@lru_cache(maxsize=32)
def random_problem(seed: int, dim: int | None = None, batch: int | None = None):
    """``(W (D, D), x (B, D), z_star (B, D), g (B, D))``: a non-symmetric contraction of varying size and strength
    (||W||_2 from 0.3 to 0.8), its input, fixed point and an upstream gradient g = dL/dz*."""
    gen = torch.Generator().manual_seed(seed)
    dim = dim or [6, 1, 9, 4, 12][seed % 5]
    batch = batch or [3, 2, 1, 4, 2][seed % 5]
    W = torch.randn(dim, dim, generator=gen, dtype=DTYPE)
    W = [0.7, 0.5, 0.8, 0.3, 0.75][seed % 5] * W / torch.linalg.matrix_norm(W, ord=2)
    x = torch.randn(batch, dim, generator=gen, dtype=DTYPE)
    z_star = solve(lambda z: layer(z, W, x), torch.zeros(batch, dim, dtype=DTYPE), "anderson", tol=1e-14,
                   max_iter=500).solution
    g = torch.randn(batch, dim, generator=gen, dtype=DTYPE)
    return W, x, z_star, g


def adjoint_inputs(seed: int):
    """``(f, z_star, g)`` for the adjoint solve."""
    W, x, z_star, g = random_problem(seed)
    return (lambda z: layer(z, W, x)), z_star, g


def library_adjoint(f: Callable, z_star: torch.Tensor, g: torch.Tensor, n_iter: int = 200) -> torch.Tensor:
    return adjoint_solve(f, z_star, g, "fixed_point_iter", tol=1e-14, max_iter=1000).solution


def check_implicit_backward(learner_fn: Callable) -> Verdict:
    """Core: ``implicit_backward(f, z_star, grad_output) -> u`` solves ``u = J^T u + g`` (5 problems, D = 1..12)."""
    return check("implicit_backward", learner_fn, library_adjoint, inputs=adjoint_inputs, trials=5, atol=1e-9,
                 rtol=1e-7)


def library_grad_W(W: torch.Tensor, x: torch.Tensor, z_star: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    W_ = W.detach().requires_grad_()
    deq = DEQSolver("anderson", grad="ift", max_iter=500, tol=1e-14, b_tol=1e-14)
    with torch.enable_grad():
        z, _ = deq(lambda z: layer(z, W_, x), torch.zeros_like(x))
        return torch.autograd.grad((z * g).sum(), W_)[0]


def check_implicit_grad_W(learner_fn: Callable) -> Verdict:
    """Core: ``implicit_grad_W(W, x, z_star, grad_output) -> dL/dW`` for L = sum(g * z*)."""
    return check("implicit_grad_W", learner_fn, library_grad_W, inputs=random_problem, trials=5, atol=1e-8,
                 rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Transfer: a convolutional DEQ layer


def conv_layer(z: torch.Tensor, kernel: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """f(z) = tanh(conv1d(z, kernel, padding 1) + x); z, x (B, C, L), kernel (C, C, 3)."""
    return torch.tanh(F.conv1d(z, kernel, padding=1) + x)


@lru_cache(maxsize=16)
def conv_problem(seed: int):
    """``(kernel (C, C, 3), x (B, C, L), z_star (B, C, L), g (B, C, L))``; the kernel is scaled so that the sum of
    its taps' spectral norms is below 1, which makes the layer a contraction."""
    gen = torch.Generator().manual_seed(300 + seed)
    channels, length, batch = [3, 2, 4, 1][seed % 4], [7, 5, 10, 6][seed % 4], [2, 3, 1, 2][seed % 4]
    kernel = torch.randn(channels, channels, 3, generator=gen, dtype=DTYPE)
    tap_norms = sum(torch.linalg.matrix_norm(kernel[:, :, t], ord=2) for t in range(3))
    kernel = [0.8, 0.6, 0.7, 0.9][seed % 4] * kernel / tap_norms
    x = torch.randn(batch, channels, length, generator=gen, dtype=DTYPE)
    z_star = solve(lambda z: conv_layer(z, kernel, x), torch.zeros_like(x), "anderson", tol=1e-14,
                   max_iter=1000).solution
    g = torch.randn(batch, channels, length, generator=gen, dtype=DTYPE)
    return kernel, x, z_star, g


def library_conv_grads(kernel: torch.Tensor, x: torch.Tensor, z_star: torch.Tensor, g: torch.Tensor):
    kernel_ = kernel.detach().requires_grad_()
    x_ = x.detach().requires_grad_()
    deq = DEQSolver("anderson", grad="ift", max_iter=1000, tol=1e-14, b_tol=1e-14)
    with torch.enable_grad():
        z, _ = deq(lambda z: conv_layer(z, kernel_, x_), torch.zeros_like(x))
        return torch.autograd.grad((z * g).sum(), (kernel_, x_))


def check_conv_deq_grads(learner_fn: Callable) -> Verdict:
    """Transfer: ``conv_deq_grads(kernel, x, z_star, grad_output) -> (grad_kernel, grad_x)`` for a 1-D
    convolutional DEQ layer (4 problems; a non-symmetric kernel, so that solving with J instead of J^T shows)."""
    return check("conv_deq_grads", learner_fn, library_conv_grads, inputs=conv_problem, trials=4, atol=1e-8,
                 rtol=1e-6, output_names=("grad_kernel", "grad_x"))


# ---------------------------------------------------------------------------------------------------------------
# Experiment: the backward solve's cost as rho(J*) -> 1

SCALES = (0.5, 0.9, 0.99)
ADJOINT_SOLVERS = ("fixed_point_iter", "anderson")
ADVANTAGE_OPTIONS = ("grows", "shrinks", "stays about the same")


def backward_problem(scale: float, dim: int):
    """``(f, z_star, g)``: a tanh layer whose W has spectral radius ``scale`` (small input, so rho(J*) ~ scale)."""
    gen = torch.Generator().manual_seed(11)
    W = torch.randn(dim, dim, generator=gen, dtype=DTYPE)
    W = scale * W / torch.linalg.eigvals(W).abs().max()
    x = 0.3 * torch.randn(4, dim, generator=gen, dtype=DTYPE)
    g = torch.randn(4, dim, generator=gen, dtype=DTYPE)

    def f(z: torch.Tensor) -> torch.Tensor:
        return layer(z, W, x)

    z_star = solve(f, torch.zeros(4, dim, dtype=DTYPE), "anderson", tol=1e-13, max_iter=3000).solution
    return f, z_star, g


def measure_backward_vjps(dim: int) -> dict[tuple[str, float], int]:
    """The grader's measurement: VJPs of ``adjoint_solve(..., solver, tol=1e-8, max_iter=20000)`` per solver/scale."""
    return dict(_measure_backward_vjps(dim))


@lru_cache(maxsize=8)
def _measure_backward_vjps(dim: int) -> tuple[tuple[tuple[str, float], int], ...]:
    out = {}
    for scale in SCALES:
        f, z_star, g = backward_problem(scale, dim)
        for solver in ADJOINT_SOLVERS:
            out[solver, scale] = adjoint_solve(f, z_star, g, solver, tol=1e-8, max_iter=20000).nfe
    return tuple(out.items())


def advantage_trend(vjps: dict[tuple[str, float], int]) -> str:
    """How Anderson's advantage (plain VJPs / Anderson VJPs) changes from the smallest to the largest scale."""
    ratios = [vjps["fixed_point_iter", s] / vjps["anderson", s] for s in SCALES]
    if ratios[-1] > 1.25 * ratios[0]:
        return "grows"
    if ratios[-1] < 0.8 * ratios[0]:
        return "shrinks"
    return "stays about the same"


def check_backward_cost(learner_fn: Callable, dim: int, answer_fn: Callable) -> Verdict:
    """Experiment: ``backward_vjps(solver, scale, dim) -> int`` for both solvers and three scales (re-measured by
    the grader, within 10 % or 2 VJPs), then ``answer_fn()``: does Anderson's advantage grow as rho -> 1?"""
    name = "backward cost experiment"
    want = measure_backward_vjps(dim)
    for (solver, scale), n in want.items():
        ok, got = call_learner(name, learner_fn, solver, scale, dim, case=f"backward_vjps({solver!r}, {scale}, {dim})")
        if not ok:
            return got
        try:
            value = int(got)
        except (TypeError, ValueError):
            return verdict(name, False, f"backward_vjps({solver!r}, {scale}, {dim}) should return an int, got "
                           f"{got!r}.")
        if abs(value - n) > max(2, 0.1 * n):
            return verdict(name, False, f"backward_vjps({solver!r}, {scale}, {dim}) returned {value}; the grader "
                           f"measures {n} VJPs (adjoint_solve(f, z_star, g, {solver!r}, tol=1e-8, "
                           "max_iter=20000).nfe on backward_problem(scale, dim)).")
    ok, answer = call_learner(name, answer_fn)
    if not ok:
        return answer
    return check_choice(name, answer, advantage_trend(want), ADVANTAGE_OPTIONS,
                        explain="Divide the plain VJPs by Anderson's at each scale and compare the ratios.")
