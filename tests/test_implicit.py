"""Gradients through fixed points (lesson 05): IFT vs gradcheck / unrolled BPTT, JFB and phantom gradients,
Jacobian probes, and the DEQSolver API."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recursionlab.solvers import (
    GRAD_MODES,
    DEQSolver,
    FixedPointDiverged,
    adjoint_solve,
    exact_jacobian,
    jacobian_frobenius_estimate,
    jacobian_penalty,
    spectral_radius,
)

DTYPE = torch.float64


def tanh_setup(scale: float, dim: int = 8, batch: int = 3, seed: int = 0):
    """W with spectral norm ``scale`` and an input x, both requiring grad (float64)."""
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(dim, dim, generator=gen, dtype=DTYPE)
    W = (scale * W / torch.linalg.matrix_norm(W, 2)).requires_grad_()
    x = torch.randn(batch, dim, generator=gen, dtype=DTYPE).requires_grad_()
    return W, x


def layer(z, W, x):
    return torch.tanh(z @ W.T + x)


def grads_for(mode: str, W, x, solver: str = "anderson", **kw):
    deq = DEQSolver(solver, grad=mode, max_iter=300, tol=1e-12, b_tol=1e-12, **kw)
    z, info = deq(lambda z: layer(z, W, x), torch.zeros_like(x))
    weights = torch.linspace(-1.0, 1.0, x.shape[1], dtype=DTYPE)
    loss = (z * weights).sum() + (z**2).sum()
    gW, gx = torch.autograd.grad(loss, (W, x))
    return torch.cat([gW.flatten(), gx.flatten()]), info


@pytest.mark.parametrize("solver", ["fixed_point_iter", "anderson", "broyden"])
def test_implicit_function_passes_gradcheck(solver):
    W, x = tanh_setup(0.6, dim=3, batch=2)

    def fn(x_, W_):
        deq = DEQSolver(solver, grad="ift", max_iter=300, tol=1e-13, b_tol=1e-13)
        return deq(lambda z: layer(z, W_, x_), torch.zeros_like(x_))[0]

    assert torch.autograd.gradcheck(fn, (x, W), eps=1e-6, atol=1e-6)


def test_implicit_gradient_equals_unrolled_gradient_at_convergence():
    W, x = tanh_setup(0.8)
    g_ift, info_ift = grads_for("ift", W, x)
    g_unrolled, info_unrolled = grads_for("unrolled", W, x)
    assert info_ift.backward is not None and info_ift.backward.converged
    assert info_unrolled.tracked_calls == info_unrolled.nfe > 20  # BPTT through every step
    assert info_ift.tracked_calls == 1
    assert torch.allclose(g_ift, g_unrolled, rtol=1e-8, atol=1e-9)


def test_adjoint_solution_satisfies_the_linear_system():
    W, x = tanh_setup(0.9)
    f = lambda z: layer(z, W, x)  # noqa: E731
    z_star = DEQSolver("anderson", max_iter=300, tol=1e-13)(f, torch.zeros_like(x))[1].forward.solution
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=DTYPE)
    u = adjoint_solve(f, z_star, g, "anderson", max_iter=300, tol=1e-13).solution
    J = exact_jacobian(f, z_star)  # (B, D, D)
    # u = J^T u + g  <=>  u (I - J) = g  (row vectors)
    assert torch.allclose(u - torch.einsum("bi,bij->bj", u, J), g, atol=1e-10)


def test_one_step_and_phantom_gradients_point_the_right_way():
    cos = {}
    for scale in (0.3, 0.9):
        W, x = tanh_setup(scale, dim=20, batch=4)
        exact, _ = grads_for("ift", W, x)
        for mode in ("jfb", "phantom"):
            approx, info = grads_for(mode, W, x, phantom_steps=5, phantom_tau=0.5)
            cos[mode, scale] = float(F.cosine_similarity(approx, exact, dim=0))
            assert info.tracked_calls == (1 if mode == "jfb" else 5)
    assert cos["jfb", 0.3] > 0.98  # weak coupling: (I - J)^{-1} ~ I is a good approximation
    assert cos["jfb", 0.9] < cos["jfb", 0.3]  # it degrades as the contraction weakens
    assert cos["jfb", 0.9] > 0.8  # ... but remains a descent direction here
    assert cos["phantom", 0.9] > cos["jfb", 0.9]  # more damped steps, closer to the exact gradient


def test_deq_solver_keeps_shapes_and_reaches_the_input():
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv1d(2, 2, 3, padding=1).double()
    torch.nn.init.normal_(conv.weight, std=0.1, generator=gen)
    x = torch.randn(3, 2, 7, generator=gen, dtype=DTYPE, requires_grad=True)  # (B, C, L)
    for mode in GRAD_MODES:
        z, info = DEQSolver("anderson", grad=mode, max_iter=100, tol=1e-8)(
            lambda z: torch.tanh(conv(z) + x), torch.zeros_like(x)
        )
        assert z.shape == x.shape
        (gx,) = torch.autograd.grad(z.sum(), x)
        assert torch.isfinite(gx).all() and gx.abs().sum() > 0
        assert info.forward.converged
        assert {"nfe", "residual"} <= set(info.metrics())


def test_ift_backward_stats_are_recorded():
    W, x = tanh_setup(0.7)
    _, info = grads_for("ift", W, x)
    m = info.metrics()
    assert m["b_nfe"] >= 2 and m["b_residual"] < 1e-12


def test_no_grad_call_skips_the_backward_machinery():
    W, x = tanh_setup(0.7)
    with torch.no_grad():
        z, info = DEQSolver("anderson", grad="ift", tol=1e-10, max_iter=100)(
            lambda z: layer(z, W, x), torch.zeros_like(x)
        )
    assert not z.requires_grad and info.backward is None and info.jac_loss is None


def test_diverging_forward_raises_in_training_mode():
    W, x = tanh_setup(1.0)

    def exploding(z):
        return 2.0 * z + x  # spectral radius 2

    with pytest.raises(FixedPointDiverged, match="grew"):
        DEQSolver("fixed_point_iter", max_iter=200)(exploding, torch.zeros_like(x))
    z, info = DEQSolver("fixed_point_iter", max_iter=200, raise_on_divergence=False)(exploding, torch.zeros_like(x))
    assert info.forward.diverged and torch.isfinite(z).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(grad="exact"), "grad must be one of"),
        (dict(solver="newton"), "unknown solver"),
        (dict(solver="anderson", memory=3), "not options of solver"),
        (dict(max_iter=0), "max_iter"),
        (dict(grad="phantom", phantom_steps=0), "phantom_steps"),
    ],
)
def test_deq_solver_rejects_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DEQSolver(**kwargs)


def test_hutchinson_estimate_matches_the_exact_frobenius_norm():
    W, x = tanh_setup(1.2, dim=10, batch=2)
    f = lambda z: layer(z, W, x)  # noqa: E731
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    exact = exact_jacobian(f, z).pow(2).sum() / z.numel()
    zz = z.clone().requires_grad_()
    estimate = jacobian_frobenius_estimate(f(zz), zz, n_samples=3000, generator=torch.Generator().manual_seed(2))
    assert abs(float(estimate.detach()) / float(exact) - 1.0) < 0.05
    # The penalty is differentiable in the parameters (it is a regulariser).
    penalty = jacobian_penalty(f, z, n_samples=2, generator=torch.Generator().manual_seed(3))
    (gW,) = torch.autograd.grad(penalty, W)
    assert torch.isfinite(gW).all() and gW.abs().sum() > 0


def test_power_method_finds_the_spectral_radius():
    W, x = tanh_setup(0.95, dim=12, batch=3)
    f = lambda z: layer(z, W, x)  # noqa: E731
    z_star = DEQSolver("anderson", max_iter=200, tol=1e-12)(f, torch.zeros_like(x))[1].forward.solution
    exact = torch.linalg.eigvals(exact_jacobian(f, z_star)).abs().amax(dim=1)
    estimate = spectral_radius(f, z_star, n_iter=300, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(estimate, exact, rtol=0.05)

