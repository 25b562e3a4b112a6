"""Lesson 05's wrong-solution catalogue: the master solutions pass every check; every known-wrong variant fails
(a falsy verdict for the learner, CheckFailed under grading)."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from recursionlab.course.checks import CheckFailed, grading
from recursionlab.course.graders import l05_implicit as g
from recursionlab.solvers import adjoint_solve, exact_jacobian

# ------------------------------------------------------------------------------------------------------------------
# The adjoint solve


def backward_master(f, z_star, grad_output, n_iter=200):
    z = z_star.detach().requires_grad_()
    with torch.enable_grad():
        fz = f(z)
    u = grad_output.clone()
    for _ in range(n_iter):
        (uJ,) = torch.autograd.grad(fz, z, u, retain_graph=True)
        u = uJ + grad_output
    return u


def backward_with_J(f, z_star, grad_output, n_iter=200):
    # solves u = J u + g (Jacobian-vector products) instead of u = J^T u + g
    J = exact_jacobian(f, z_star.detach())  # (B, D, D), states flattened
    g_flat = grad_output.reshape(J.shape[0], -1)
    u = g_flat.clone()
    for _ in range(n_iter):
        u = (J @ u[..., None])[..., 0] + g_flat
    return u.reshape(grad_output.shape)


def backward_one_step(f, z_star, grad_output, n_iter=200):
    # the 1-step (Jacobian-free) approximation: u = g
    return grad_output.clone()


def backward_no_g(f, z_star, grad_output, n_iter=200):
    # forgets to add g at every iteration: u = J^T u from u0 = g (decays to 0)
    z = z_star.detach().requires_grad_()
    with torch.enable_grad():
        fz = f(z)
    u = grad_output.clone()
    for _ in range(n_iter):
        (u,) = torch.autograd.grad(fz, z, u, retain_graph=True)
    return u


def backward_minus(f, z_star, grad_output, n_iter=200):
    # solves u = g - J^T u (a sign slip from (I + J)^-T)
    z = z_star.detach().requires_grad_()
    with torch.enable_grad():
        fz = f(z)
    u = grad_output.clone()
    for _ in range(n_iter):
        (uJ,) = torch.autograd.grad(fz, z, u, retain_graph=True)
        u = grad_output - uJ
    return u


def backward_few_iterations(f, z_star, grad_output, n_iter=200):
    # stops after 5 iterations: a truncated Neumann series
    return backward_master(f, z_star, grad_output, n_iter=5)


# ------------------------------------------------------------------------------------------------------------------
# The weight gradient


def grad_W_master(W, x, z_star, grad_output):
    u = backward_master(lambda z: g.layer(z, W, x), z_star, grad_output)
    W_ = W.detach().requires_grad_()
    with torch.enable_grad():
        (grad_W,) = torch.autograd.grad(g.layer(z_star.detach(), W_, x), W_, u)
    return grad_W


def grad_W_with_g(W, x, z_star, grad_output):
    # skips the adjoint solve: the 1-step gradient
    W_ = W.detach().requires_grad_()
    with torch.enable_grad():
        (grad_W,) = torch.autograd.grad(g.layer(z_star.detach(), W_, x), W_, grad_output)
    return grad_W


def grad_W_with_J(W, x, z_star, grad_output):
    # the adjoint solved with J instead of J^T
    u = backward_with_J(lambda z: g.layer(z, W, x), z_star, grad_output)
    W_ = W.detach().requires_grad_()
    with torch.enable_grad():
        (grad_W,) = torch.autograd.grad(g.layer(z_star.detach(), W_, x), W_, u)
    return grad_W


def grad_W_no_tanh_derivative(W, x, z_star, grad_output):
    # dL/dW = u^T z* (the outer product) without the tanh' factor
    u = backward_master(lambda z: g.layer(z, W, x), z_star, grad_output)
    return u.T @ z_star


def grad_W_transposed(W, x, z_star, grad_output):
    # the right gradient, transposed
    return grad_W_master(W, x, z_star, grad_output).T


# ------------------------------------------------------------------------------------------------------------------
# The convolutional DEQ layer (transfer)


def conv_master(kernel, x, z_star, grad_output):
    u = backward_master(lambda z: g.conv_layer(z, kernel, x), z_star, grad_output, n_iter=300)
    kernel_ = kernel.detach().requires_grad_()
    x_ = x.detach().requires_grad_()
    with torch.enable_grad():
        return torch.autograd.grad(g.conv_layer(z_star.detach(), kernel_, x_), (kernel_, x_), u)


def conv_with_J(kernel, x, z_star, grad_output):
    # the adjoint solved with J instead of J^T (a non-symmetric convolution tells them apart)
    u = backward_with_J(lambda z: g.conv_layer(z, kernel, x), z_star, grad_output, n_iter=300)
    kernel_ = kernel.detach().requires_grad_()
    x_ = x.detach().requires_grad_()
    with torch.enable_grad():
        return torch.autograd.grad(g.conv_layer(z_star.detach(), kernel_, x_), (kernel_, x_), u)


def conv_input_grad_is_u(kernel, x, z_star, grad_output):
    # dL/dx = u, forgetting the last VJP through df/dx = diag(tanh')
    grad_kernel, _ = conv_master(kernel, x, z_star, grad_output)
    u = backward_master(lambda z: g.conv_layer(z, kernel, x), z_star, grad_output, n_iter=300)
    return grad_kernel, u


def conv_input_grad_is_g(kernel, x, z_star, grad_output):
    # dL/dx through one layer only: the 1-step gradient for the input
    grad_kernel, _ = conv_master(kernel, x, z_star, grad_output)
    x_ = x.detach().requires_grad_()
    with torch.enable_grad():
        (grad_x,) = torch.autograd.grad(g.conv_layer(z_star.detach(), kernel, x_), x_, grad_output)
    return grad_kernel, grad_x


def conv_one_step(kernel, x, z_star, grad_output):
    # the 1-step gradient for both
    kernel_ = kernel.detach().requires_grad_()
    x_ = x.detach().requires_grad_()
    with torch.enable_grad():
        return torch.autograd.grad(g.conv_layer(z_star.detach(), kernel_, x_), (kernel_, x_), grad_output)


def conv_swapped(kernel, x, z_star, grad_output):
    # returns (grad_x, grad_kernel)
    grad_kernel, grad_x = conv_master(kernel, x, z_star, grad_output)
    return grad_x, grad_kernel


# ------------------------------------------------------------------------------------------------------------------
# The backward-cost experiment


@lru_cache(maxsize=16)
def vjps_master(solver, scale, dim):
    f, z_star, grad = g.backward_problem(scale, dim)
    return adjoint_solve(f, z_star, grad, solver, tol=1e-8, max_iter=20000).nfe


def vjps_forward_nfe(solver, scale, dim):
    # measures the forward solve's NFE instead of the backward VJPs
    from recursionlab.solvers import solve

    f, z_star, _ = g.backward_problem(scale, dim)
    return solve(f, torch.zeros_like(z_star), solver, tol=1e-8, max_iter=20000).nfe


def vjps_same_solver(solver, scale, dim):
    # always measures plain iteration
    return vjps_master("fixed_point_iter", scale, dim)


def vjps_loose_tol(solver, scale, dim):
    # the library's default tolerance instead of 1e-8
    f, z_star, grad = g.backward_problem(scale, dim)
    return adjoint_solve(f, z_star, grad, solver, max_iter=20000).nfe


DIM = 16


def _rejected(check_call) -> None:
    assert not check_call()
    with grading(), pytest.raises(CheckFailed):
        check_call()


def test_masters_pass():
    answer = g.advantage_trend(g.measure_backward_vjps(DIM))
    with grading():
        assert g.check_implicit_backward(backward_master)
        assert g.check_implicit_grad_W(grad_W_master)
        assert g.check_conv_deq_grads(conv_master)
        assert g.check_backward_cost(vjps_master, DIM, lambda: answer)


@pytest.mark.parametrize("variant", [backward_with_J, backward_one_step, backward_no_g, backward_minus,
                                     backward_few_iterations])
def test_wrong_adjoint_solves_are_rejected(variant):
    _rejected(lambda: g.check_implicit_backward(variant))


@pytest.mark.parametrize("variant", [grad_W_with_g, grad_W_with_J, grad_W_no_tanh_derivative, grad_W_transposed])
def test_wrong_weight_gradients_are_rejected(variant):
    _rejected(lambda: g.check_implicit_grad_W(variant))


@pytest.mark.parametrize("variant", [conv_with_J, conv_input_grad_is_u, conv_input_grad_is_g, conv_one_step,
                                     conv_swapped])
def test_wrong_conv_gradients_are_rejected(variant):
    _rejected(lambda: g.check_conv_deq_grads(variant))


@pytest.mark.parametrize("variant", [vjps_forward_nfe, vjps_same_solver, vjps_loose_tol])
def test_wrong_vjp_measurements_are_rejected(variant):
    answer = g.advantage_trend(g.measure_backward_vjps(DIM))
    _rejected(lambda: g.check_backward_cost(variant, DIM, lambda: answer))


def test_wrong_trend_answers_are_rejected():
    answer = g.advantage_trend(g.measure_backward_vjps(DIM))
    for wrong in [o for o in g.ADVANTAGE_OPTIONS if o != answer] + ["it depends"]:
        _rejected(lambda wrong=wrong: g.check_backward_cost(vjps_master, DIM, lambda: wrong))


def test_unsolved_stubs_are_not_implemented():
    def stub(*args, **kwargs):
        raise NotImplementedError

    for call in (lambda: g.check_implicit_backward(stub), lambda: g.check_implicit_grad_W(stub),
                 lambda: g.check_conv_deq_grads(stub), lambda: g.check_backward_cost(stub, DIM, stub)):
        verdict = call()
        assert not verdict and verdict.todo
