"""Fixed-point solvers (lesson 04): convergence, NFE, lowest-residual return, divergence diagnosis, Anderson maths."""

from __future__ import annotations

import pytest
import torch

from recursionlab.solvers import (
    SOLVERS,
    FixedPointDiverged,
    anderson,
    anderson_step,
    anderson_weights,
    broyden,
    fixed_point_iter,
    newton,
    newton_step,
    solve,
)

DTYPE = torch.float64


def linear_problem(dim: int = 30, batch: int = 3, top: float = 0.99, seed: int = 0):
    """z = A z + b with symmetric A, eigenvalues spread in [0.1, top] (a slow mode near 1); exact solution too."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=DTYPE))
    A = Q @ torch.diag(torch.linspace(0.1, top, dim, dtype=DTYPE)) @ Q.T
    b = torch.randn(batch, dim, generator=gen, dtype=DTYPE)
    exact = torch.linalg.solve(torch.eye(dim, dtype=DTYPE) - A, b.T).T
    return (lambda z: z @ A.T + b), b, exact


def tanh_problem(scale: float, dim: int = 16, batch: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(dim, dim, generator=gen, dtype=DTYPE) / dim**0.5
    W = scale * W / torch.linalg.matrix_norm(W, 2)
    x = torch.randn(batch, dim, generator=gen, dtype=DTYPE)
    return (lambda z: torch.tanh(z @ W.T + x)), x


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_finds_the_linear_fixed_point(name):
    f, b, exact = linear_problem(top=0.9)
    res = solve(f, torch.zeros_like(b), name, max_iter=500, tol=1e-10)
    assert res.converged and not res.diverged, res.diagnosis
    assert torch.allclose(res.solution, exact, rtol=1e-7, atol=1e-8)
    assert res.nfe == res.rel_trace.shape[0] == res.abs_trace.shape[0]
    assert res.rel_trace.shape[1] == b.shape[0]
    assert "converged" in res.diagnosis


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_states_of_any_shape_are_flattened_and_restored(name):
    f_flat, x = tanh_problem(0.7, dim=12)
    z0 = torch.zeros(x.shape[0], 3, 4, dtype=DTYPE)  # (B, C, L) state

    def f(z):
        return f_flat(z.reshape(z.shape[0], -1)).reshape(z.shape)

    res = solve(f, z0, name, max_iter=200, tol=1e-9)
    assert res.solution.shape == z0.shape and res.solution.dtype == z0.dtype
    assert res.converged, res.diagnosis
    assert torch.allclose(f(res.solution), res.solution, atol=1e-7)


def test_anderson_beats_plain_iteration_on_a_slow_mode():
    f, b, exact = linear_problem(top=0.99)
    naive = fixed_point_iter(f, torch.zeros_like(b), max_iter=5000, tol=1e-6)
    acc = anderson(f, torch.zeros_like(b), max_iter=5000, tol=1e-6, m=5)
    assert naive.converged and acc.converged
    assert acc.nfe < naive.nfe / 3, (acc.nfe, naive.nfe)  # about 1000 vs well under 200 evaluations
    # A relative residual of 1e-6 with a slowest rate of 0.99 bounds the error by about 1e-6 / (1 - 0.99).
    assert (acc.solution - exact).norm() / exact.norm() < 1e-3


def test_broyden_converges_on_a_nonlinear_map_plain_iteration_cannot_solve():
    f, x = tanh_problem(1.5)  # ||W||_2 = 1.5: not a contraction everywhere
    naive = fixed_point_iter(f, torch.zeros_like(x), max_iter=100, tol=1e-8)
    quasi_newton = broyden(f, torch.zeros_like(x), max_iter=100, tol=1e-8, memory=30)
    assert quasi_newton.converged, quasi_newton.diagnosis
    assert torch.allclose(f(quasi_newton.solution), quasi_newton.solution, atol=1e-6)
    assert quasi_newton.nfe < naive.nfe


def test_damping_turns_an_oscillating_map_into_a_converging_one():
    # z -> -1.2 z + 1 oscillates and grows (eigenvalue -1.2); tau = 0.4 gives eigenvalue 1 - 0.4 * 2.2 = 0.12.
    def f(z):
        return -1.2 * z + 1.0

    z0 = torch.zeros(2, 3, dtype=DTYPE)
    plain = fixed_point_iter(f, z0, max_iter=200, tol=1e-10)
    damped = fixed_point_iter(f, z0, max_iter=200, tol=1e-10, tau=0.4)
    assert plain.diverged and not plain.converged
    assert damped.converged
    assert torch.allclose(damped.solution, torch.full_like(z0, 1.0 / 2.2))


def test_the_lowest_residual_iterate_is_returned_per_sample():
    f, x = tanh_problem(3.0)  # iteration wanders without converging
    res = fixed_point_iter(f, torch.zeros_like(x), max_iter=40, tol=1e-12)
    assert not res.converged
    assert torch.allclose(res.rel_lowest, res.rel_trace.amin(dim=0))
    fz = f(res.solution)
    rel = (fz - res.solution).norm(dim=1) / (fz.norm(dim=1) + 1e-9)
    assert torch.allclose(rel, res.rel_lowest, rtol=1e-9)
    assert "not converged" in res.diagnosis and "No progress" in res.diagnosis


def test_stopping_needs_every_sample_below_tol():
    # Two samples contract at different rates: the solve must run until the slow one is done.
    rates = torch.tensor([[0.1], [0.9]], dtype=DTYPE)

    def f(z):
        return rates * z + 1.0

    res = fixed_point_iter(f, torch.zeros(2, 1, dtype=DTYPE), max_iter=1000, tol=1e-8)
    assert res.converged
    assert float(res.rel_trace[-1, 1]) < 1e-8
    assert int((res.rel_trace[:, 0] >= 1e-8).sum()) < res.nfe // 4  # the fast sample was done long before


def test_plain_iteration_diverges_when_the_spectral_radius_passes_one():
    f, b, _ = linear_problem(top=1.5)
    res = fixed_point_iter(f, torch.zeros_like(b), max_iter=500, tol=1e-8)
    assert res.diverged and not res.converged
    assert "grew" in res.diagnosis and "spectral radius" in res.diagnosis
    assert torch.isfinite(res.solution).all()


@pytest.mark.parametrize("name", ["fixed_point_iter", "broyden"])
def test_divergence_is_reported_with_a_diagnosis(name):
    # z = exp(z) has no real solution; these solvers run away and must say so.
    z0 = torch.zeros(3, 4, dtype=DTYPE)
    res = solve(torch.exp, z0, name, max_iter=300, tol=1e-8)
    assert res.diverged and not res.converged
    assert "diverged" in res.diagnosis and "grew" in res.diagnosis
    assert torch.isfinite(res.solution).all()
    with pytest.raises(FixedPointDiverged) as err:
        solve(torch.exp, z0, name, max_iter=300, tol=1e-8, raise_on_divergence=True)
    assert err.value.result.diverged and "spectral radius" in str(err.value)


def test_anderson_without_a_fixed_point_reports_failure():
    # Anderson's affine mixing does not run away on z = exp(z); it stalls, and the diagnosis says so.
    res = anderson(torch.exp, torch.zeros(3, 4, dtype=DTYPE), max_iter=100, tol=1e-8)
    assert not res.converged
    assert "not converged" in res.diagnosis and "No progress" in res.diagnosis


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_nan_is_reported_not_returned(name):
    def f(z):
        out = 0.5 * z + 1.0
        out[0] = float("nan")  # sample 0 breaks at once
        return out

    z0 = torch.zeros(3, 4, dtype=DTYPE)
    res = solve(f, z0, name, max_iter=50, tol=1e-6)
    assert res.diverged and "NaN" in res.diagnosis and "samples [0]" in res.diagnosis
    assert torch.isfinite(res.solution).all()
    with pytest.raises(FixedPointDiverged, match="NaN"):
        solve(f, z0, name, max_iter=50, tol=1e-6, raise_on_divergence=True)


def test_anderson_weights_solve_the_constrained_least_squares():
    gen = torch.Generator().manual_seed(1)
    G = torch.randn(3, 4, 10, generator=gen, dtype=DTYPE)
    lam = 1e-3
    alpha, ok = anderson_weights(G, lam)
    assert ok.all()
    assert torch.allclose(alpha.sum(dim=1), torch.ones(3, dtype=DTYPE))
    # Closed form: alpha = K^{-1} 1 / (1^T K^{-1} 1) with K = G G^T + lam * mean ||g_i||^2 I.
    gram = G @ G.transpose(1, 2)
    ridge = lam * gram.diagonal(dim1=1, dim2=2).mean(dim=1)
    K = gram + ridge[:, None, None] * torch.eye(4, dtype=DTYPE)
    w = torch.linalg.solve(K, torch.ones(3, 4, 1, dtype=DTYPE))[..., 0]
    assert torch.allclose(alpha, w / w.sum(dim=1, keepdim=True), atol=1e-10)


def test_anderson_falls_back_to_a_damped_step_when_the_system_is_singular():
    G = torch.ones(2, 3, 5, dtype=DTYPE)  # identical residuals and no ridge: the bordered system is singular
    alpha, ok = anderson_weights(G, lam=0.0)
    assert not ok.any()
    assert torch.equal(alpha, torch.tensor([[0.0, 0.0, 1.0]] * 2, dtype=DTYPE))
    # In a 1-D problem every residual history is rank one: without a ridge the solver keeps falling back,
    # yet still converges and never produces NaN.
    res = anderson(torch.cos, torch.zeros(2, 1, dtype=DTYPE), lam=0.0, tol=1e-10, max_iter=200)
    assert res.converged and res.fallbacks > 0
    assert "fell back" in res.diagnosis


def test_anderson_step_mixes_images_and_iterates():
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(2, 3, 6, generator=gen, dtype=DTYPE)
    F = torch.randn(2, 3, 6, generator=gen, dtype=DTYPE)
    alpha, _ = anderson_weights(F - X, 1e-4)
    for beta in (1.0, 0.5):
        want = beta * torch.einsum("bn,bnd->bd", alpha, F) + (1 - beta) * torch.einsum("bn,bnd->bd", alpha, X)
        assert torch.allclose(anderson_step(X, F, lam=1e-4, beta=beta), want)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda z0: fixed_point_iter(lambda z: z, z0, tau=0.0), "tau"),
        (lambda z0: anderson(lambda z: z, z0, m=0), "memory m"),
        (lambda z0: broyden(lambda z: z, z0, memory=0), "memory"),
        (lambda z0: solve(lambda z: z, z0, "newton"), "unknown solver"),
        (lambda z0: fixed_point_iter(lambda z: z, z0, max_iter=0), "max_iter"),
        (lambda z0: fixed_point_iter(lambda z: z[:, :1], z0), "shape"),
        (lambda z0: fixed_point_iter(lambda z: z, z0, stop_mode="max"), "stop_mode"),
    ],
)
def test_bad_arguments_get_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.zeros(2, 3))


def test_integer_state_is_rejected():
    with pytest.raises(TypeError, match="floating-point"):
        fixed_point_iter(lambda z: z, torch.zeros(2, 3, dtype=torch.int64))



def test_newton_converges_quadratically_where_plain_iteration_crawls():
    # ||W||_2 = 3: plain iteration is far from converged after 100 steps; Newton's last steps square the error
    f, _ = tanh_problem(3.0, dim=12, batch=3, seed=2)
    plain = fixed_point_iter(f, torch.zeros(3, 12, dtype=DTYPE), max_iter=100, tol=1e-12)
    result = newton(f, torch.zeros(3, 12, dtype=DTYPE), tol=1e-12, max_iter=60)
    assert result.converged and result.nfe < 40 and not plain.converged
    trace = [r for r in result.trace("rel") if r > 1e-15]
    assert trace[-1] < trace[-2] ** 1.5  # superlinear: the exponent of a linear rate would be 1


def test_newton_step_solves_the_linearised_problem_exactly_on_a_linear_map():
    gen = torch.Generator().manual_seed(1)
    A = 0.5 * torch.randn(5, 5, generator=gen, dtype=DTYPE)
    b = torch.randn(2, 5, generator=gen, dtype=DTYPE)
    z = torch.randn(2, 5, generator=gen, dtype=DTYPE)
    z_next = newton_step(z, z @ A.T + b, A.expand(2, 5, 5))
    assert torch.allclose(z_next @ A.T + b, z_next, atol=1e-10)  # one step lands on the fixed point
    with pytest.raises(ValueError, match="jacobian"):
        newton_step(z, z, A)
