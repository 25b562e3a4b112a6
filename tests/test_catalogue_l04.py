"""Lesson 04's wrong-solution catalogue: the master solutions pass every check; every known-wrong variant fails
(a falsy verdict for the learner, CheckFailed under grading)."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from recursionlab.course.checks import CheckFailed, grading
from recursionlab.course.graders import l04_fixed_points as g
from recursionlab.solvers import anderson, fixed_point_iter

# ------------------------------------------------------------------------------------------------------------------
# The Anderson step: one body, switches for the mistakes


def _anderson(X, F, lam=1e-4, beta=1.0, *, border=1.0, ridge="scaled", swap_mix=False):
    B, n, _ = X.shape
    G = F - X
    gram = G @ G.transpose(1, 2)
    if ridge == "scaled":
        reg = lam * gram.diagonal(dim1=1, dim2=2).mean(dim=1)
    elif ridge == "absolute":
        reg = torch.full((B,), lam, dtype=X.dtype)
    elif ridge == "sum":
        reg = lam * gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    else:
        reg = torch.zeros(B, dtype=X.dtype)
    eye = torch.eye(n, dtype=X.dtype)
    H = torch.zeros(B, n + 1, n + 1, dtype=X.dtype)
    H[:, 0, 1:] = border
    H[:, 1:, 0] = 1.0
    H[:, 1:, 1:] = gram + reg[:, None, None] * eye
    rhs = torch.zeros(B, n + 1, 1, dtype=X.dtype)
    rhs[:, 0] = 1.0
    alpha = torch.linalg.solve(H, rhs)[:, 1:, 0]
    mixed_f = torch.einsum("bn,bnd->bd", alpha, F)
    mixed_x = torch.einsum("bn,bnd->bd", alpha, X)
    if swap_mix:
        return beta * mixed_x + (1 - beta) * mixed_f
    return beta * mixed_f + (1 - beta) * mixed_x


def anderson_master(X, F, lam=1e-4, beta=1.0):
    return _anderson(X, F, lam, beta)


def anderson_border_sign(X, F, lam=1e-4, beta=1.0):
    # -1 in the top border: the weights sum to -1 instead of 1
    return _anderson(X, F, lam, beta, border=-1.0)


def anderson_absolute_ridge(X, F, lam=1e-4, beta=1.0):
    # a fixed ridge lam instead of lam * mean ||g_i||^2: swamps the Gram matrix when residuals are small
    return _anderson(X, F, lam, beta, ridge="absolute")


def anderson_sum_ridge(X, F, lam=1e-4, beta=1.0):
    # lam * sum ||g_i||^2 instead of the mean: n times too strong
    return _anderson(X, F, lam, beta, ridge="sum")


def anderson_no_ridge(X, F, lam=1e-4, beta=1.0):
    # no regularisation at all
    return _anderson(X, F, lam, beta, ridge="none")


def anderson_swapped_mix(X, F, lam=1e-4, beta=1.0):
    # beta weights the iterates and 1 - beta the images
    return _anderson(X, F, lam, beta, swap_mix=True)


def anderson_last_image(X, F, lam=1e-4, beta=1.0):
    # ignores the history: a plain (damped) step from the newest pair
    return beta * F[:, -1] + (1 - beta) * X[:, -1]


def anderson_float32(X, F, lam=1e-4, beta=1.0):
    # right formula in float32: rounding-level differences, but far above the check's tolerance for float64 inputs
    return _anderson(X.float(), F.float(), lam, beta).to(X.dtype)


# ------------------------------------------------------------------------------------------------------------------
# Newton's step


def newton_master(f, jacobian, z):
    eye = torch.eye(z.shape[1], dtype=z.dtype)
    return z - torch.linalg.solve(jacobian(z) - eye, (f(z) - z)[..., None])[..., 0]


def newton_solve_with_J(f, jacobian, z):
    # uses J instead of the Jacobian J - I of g(z) = f(z) - z
    return z - torch.linalg.solve(jacobian(z), (f(z) - z)[..., None])[..., 0]


def newton_wrong_sign(f, jacobian, z):
    # steps uphill: z + (J - I)^{-1} g
    eye = torch.eye(z.shape[1], dtype=z.dtype)
    return z + torch.linalg.solve(jacobian(z) - eye, (f(z) - z)[..., None])[..., 0]


def newton_transposed_jacobian(f, jacobian, z):
    # solves with (J - I)^T: the rows/columns convention mixed up
    eye = torch.eye(z.shape[1], dtype=z.dtype)
    return z - torch.linalg.solve((jacobian(z) - eye).transpose(1, 2), (f(z) - z)[..., None])[..., 0]


def newton_plain_step(f, jacobian, z):
    # no Jacobian at all: a plain fixed-point step
    return f(z)


def newton_shared_jacobian(f, jacobian, z):
    # uses sample 0's Jacobian for the whole batch
    eye = torch.eye(z.shape[1], dtype=z.dtype)
    J = jacobian(z)[:1].expand(z.shape[0], -1, -1)
    return z - torch.linalg.solve(J - eye, (f(z) - z)[..., None])[..., 0]


# ------------------------------------------------------------------------------------------------------------------
# Anderson memory experiment


@lru_cache(maxsize=2)
def _memory_master(dim):
    f = g.memory_problem(dim)
    z0 = torch.zeros(4, dim, dtype=torch.float64)
    return {m: anderson(f, z0, m=m, tol=1e-8, max_iter=500).nfe for m in g.MEMORIES}


def memory_master(dim):
    return dict(_memory_master(dim))


def memory_wrong_tolerance(dim):
    # the library's default tolerance instead of 1e-8
    f = g.memory_problem(dim)
    z0 = torch.zeros(4, dim, dtype=torch.float64)
    return {m: anderson(f, z0, m=m, max_iter=500).nfe for m in g.MEMORIES}


def memory_plain_iteration(dim):
    # measures plain iteration for every m
    f = g.memory_problem(dim)
    n = fixed_point_iter(f, torch.zeros(4, dim, dtype=torch.float64), tol=1e-8, max_iter=500).nfe
    return {m: n for m in g.MEMORIES}


def memory_missing_keys(dim):
    # only the small memories
    return {m: n for m, n in memory_master(dim).items() if m <= 5}


DIM = 16


def _right_answer():
    return g.smallest_good_memory(g.measure_memory_nfe(DIM))


def _rejected(check_call) -> None:
    assert not check_call()
    with grading(), pytest.raises(CheckFailed):
        check_call()


def test_masters_pass():
    answer = _right_answer()
    with grading():
        assert g.check_anderson_step(anderson_master)
        assert g.check_newton_step(newton_master)
        assert g.check_anderson_memory(memory_master, DIM, lambda: answer)


@pytest.mark.parametrize("variant", [anderson_border_sign, anderson_absolute_ridge, anderson_sum_ridge,
                                     anderson_no_ridge, anderson_swapped_mix, anderson_last_image, anderson_float32])
def test_wrong_anderson_steps_are_rejected(variant):
    _rejected(lambda: g.check_anderson_step(variant))


@pytest.mark.parametrize("variant", [newton_solve_with_J, newton_wrong_sign, newton_transposed_jacobian,
                                     newton_plain_step, newton_shared_jacobian])
def test_wrong_newton_steps_are_rejected(variant):
    _rejected(lambda: g.check_newton_step(variant))


@pytest.mark.parametrize("variant", [memory_wrong_tolerance, memory_plain_iteration, memory_missing_keys])
def test_wrong_memory_measurements_are_rejected(variant):
    answer = _right_answer()
    _rejected(lambda: g.check_anderson_memory(variant, DIM, lambda: answer))


def test_wrong_memory_answers_are_rejected():
    answer = _right_answer()
    for wrong in [1, 20, 7]:
        assert wrong != answer
        _rejected(lambda wrong=wrong: g.check_anderson_memory(memory_master, DIM, lambda: wrong))


def test_unsolved_stubs_are_not_implemented():
    def stub(*args, **kwargs):
        raise NotImplementedError

    for call in (lambda: g.check_anderson_step(stub), lambda: g.check_newton_step(stub),
                 lambda: g.check_anderson_memory(stub, DIM, stub)):
        verdict = call()
        assert not verdict and verdict.todo
