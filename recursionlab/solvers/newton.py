"""Newton's method for a fixed point (lesson 04): quadratic convergence, at the price of a Jacobian per step.

A fixed point of f is a root of g(z) = f(z) - z, whose Jacobian is J - I with J = df/dz. Newton's step solves the
linearised problem exactly: z_next = z - (J - I)^{-1} (f(z) - z). Near a fixed point where I - J is invertible the
error is squared at every step (the number of correct digits doubles), which no first-order method matches; but
each step needs the D x D Jacobian (D vector-Jacobian products) and a dense solve, which is why DEQs use Broyden's
low-rank estimate or Anderson instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from recursionlab.solvers.fixed_point import FixedPointResult, _check_common, _Monitor
from recursionlab.solvers.jacobian import exact_jacobian


def newton_step(z: Tensor, f_z: Tensor, jacobian: Tensor) -> Tensor:
    """One Newton step for the root of g(z) = f(z) - z.

    Args:
        z: (B, D) current iterate; f_z: (B, D) its image f(z).
        jacobian: (B, D, D) the Jacobian df/dz at z (entry [b, i, j] = d f_i / d z_j).
    Returns:
        (B, D) ``z - (J - I)^{-1} (f(z) - z)``.
    """
    if z.dim() != 2 or f_z.shape != z.shape or jacobian.shape != (*z.shape, z.shape[1]):
        raise ValueError(
            f"newton_step: need z and f_z of shape (B, D) and jacobian (B, D, D), got {tuple(z.shape)}, "
            f"{tuple(f_z.shape)} and {tuple(jacobian.shape)}"
        )
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    return z - torch.linalg.solve(jacobian - eye, (f_z - z)[..., None])[..., 0]


@torch.no_grad()
def newton(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    jacobian: Callable[[Tensor], Tensor] | None = None,
    max_iter: int = 30,
    tol: float = 1e-10,
    stop_mode: str = "rel",
    eps: float = 1e-9,
    divergence_factor: float = 1e4,
) -> FixedPointResult:
    """Newton's method on g(z) = f(z) - z for states (B, D).

    Args:
        f: (B, D) -> (B, D), independent per sample.
        z0: (B, D) float start.
        jacobian: ``z -> (B, D, D)`` Jacobian of f at z; default: :func:`exact_jacobian` (D VJPs per step).
        max_iter, tol, stop_mode: as for the other solvers.
    Returns:
        :class:`FixedPointResult`; ``nfe`` counts evaluations of f only, not the Jacobians.
    """
    _check_common("newton", z0, max_iter, tol, stop_mode, divergence_factor)
    if z0.dim() != 2:
        raise ValueError(f"newton: z0 must be (B, D), got shape {tuple(z0.shape)}")
    jac = jacobian if jacobian is not None else (lambda z: exact_jacobian(f, z))
    mon = _Monitor(f, z0, tol, stop_mode, eps, divergence_factor, "newton")
    z = mon.flat(z0)
    for _ in range(max_iter):
        fz = mon.evaluate(z)
        if mon.done() or mon.diverged_reason:
            break
        z = newton_step(z, fz, jac(z.to(z0.dtype)).to(z.dtype))
    return mon.result(raise_on_divergence=False)
