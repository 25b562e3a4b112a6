"""Jacobian probes at a fixed point: Hutchinson's Frobenius-norm estimate, a power-method spectral radius.

Both use vector-Jacobian products only (``torch.autograd.grad``), never the Jacobian itself, so they cost
about one backward pass through f per sample vector / per power iteration.

* :func:`jacobian_frobenius_estimate` -- E_eps ||eps^T J||^2 = tr(J^T J) = ||J||_F^2 for eps ~ N(0, I)
  (Hutchinson), divided by the number of elements of z. With ``create_graph=True`` it is differentiable and
  serves as the Jacobian regulariser of Bai, Koltun & Kolter (ICML 2021, arXiv 2106.14342).
* :func:`spectral_radius` -- the power method on J^T (same spectrum as J): the size of the largest eigenvalue,
  per sample. rho < 1 at z* means naive iteration converges locally and the adjoint (backward) solve too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["jacobian_frobenius_estimate", "jacobian_penalty", "spectral_radius", "exact_jacobian"]


def jacobian_frobenius_estimate(
    fz: Tensor,
    z: Tensor,
    n_samples: int = 1,
    create_graph: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Hutchinson estimate of ||df/dz||_F^2 / z.numel().

    Args:
        fz: (B, ...) output of f evaluated at ``z`` (with an autograd graph to ``z``).
        z:  (B, ...) the point, ``requires_grad=True``.
        n_samples: number of Gaussian probe vectors averaged (>= 1).
        create_graph: keep the graph so the estimate can be differentiated (needed for regularisation).
        generator: optional torch.Generator for the probes (CPU generators work for any device).
    Returns:
        0-d tensor: the estimate (unbiased for the shape-normalised squared Frobenius norm).
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"jacobian_frobenius_estimate: n_samples must be an integer >= 1, got {n_samples!r}")
    if not z.requires_grad:
        raise ValueError(
            "jacobian_frobenius_estimate: z must require grad (evaluate fz = f(z) after z.requires_grad_())"
        )
    if fz.shape != z.shape:
        raise ValueError(
            f"jacobian_frobenius_estimate: fz {tuple(fz.shape)} and z {tuple(z.shape)} must match"
        )
    acc_dtype = torch.promote_types(fz.dtype, torch.float32)  # bf16 sums lose too much
    total = fz.new_zeros((), dtype=acc_dtype)
    for _ in range(n_samples):
        eps = torch.randn(fz.shape, generator=generator, dtype=fz.dtype).to(fz.device)
        (vjp,) = torch.autograd.grad(fz, z, eps, retain_graph=True, create_graph=create_graph)
        total = total + vjp.to(acc_dtype).pow(2).sum()
    return total / (n_samples * z.numel())


def jacobian_penalty(
    f: Callable[[Tensor], Tensor],
    z_star: Tensor,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Jacobian regularisation term at a fixed point: Hutchinson ||df/dz(z*)||_F^2 / numel, differentiable
    in f's parameters (one extra call of f plus a double backward).

    Args:
        f: (B, ...) -> (B, ...); z_star: (B, ...) the (detached) equilibrium.
    Returns:
        0-d tensor.
    """
    z = z_star.detach().requires_grad_()
    with torch.enable_grad():
        fz = f(z)
        return jacobian_frobenius_estimate(fz, z, n_samples=n_samples, create_graph=True, generator=generator)


def spectral_radius(
    f: Callable[[Tensor], Tensor],
    z_star: Tensor,
    n_iter: int = 50,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Power-method estimate of the spectral radius of J = df/dz at ``z_star``, per sample.

    Iterates v <- v^T J / ||v^T J||. The one-step growth ||v^T J|| of a unit vector oscillates when the
    dominant eigenvalues are a complex pair or J is far from normal, so the estimate is the geometric mean of
    the growth over the second half of the iterations (it converges to ``|lambda_max|`` as n_iter grows).

    Args:
        f: (B, ...) -> (B, ...), independent per sample; z_star: (B, ...) point.
        n_iter: power iterations (>= 2).
        generator: optional torch.Generator for the start vector.
    Returns:
        (B,) estimated ``|lambda_max|`` per sample (detached).
    """
    if not isinstance(n_iter, int) or n_iter < 2:
        raise ValueError(f"spectral_radius: n_iter must be an integer >= 2, got {n_iter!r}")
    z = z_star.detach().requires_grad_()
    with torch.enable_grad():
        fz = f(z)
    B = z.shape[0]
    unflat = (B, *([1] * (z.dim() - 1)))
    v = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    v = v / v.reshape(B, -1).norm(dim=1).clamp_min(1e-30).reshape(unflat)
    log_growth = []
    for _ in range(n_iter):
        (w,) = torch.autograd.grad(fz, z, v, retain_graph=True)
        norm = w.reshape(B, -1).norm(dim=1)
        log_growth.append(norm.clamp_min(1e-30).log())
        v = w / norm.clamp_min(1e-30).reshape(unflat)
    tail = torch.stack(log_growth[n_iter // 2 :])  # drop the transient of the random start
    return tail.mean(dim=0).exp().detach()


def exact_jacobian(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """The full per-sample Jacobian (for small checks and teaching only: D VJPs).

    Args:
        f: (B, ...) -> (B, ...), independent per sample; z: (B, ...) point.
    Returns:
        (B, D, D) with D = z[0].numel(); entry [b, i, j] = d f(z)_b,i / d z_b,j.
    """
    B = z.shape[0]
    zf = z.detach().reshape(B, -1).requires_grad_()
    with torch.enable_grad():
        fz = f(zf.reshape(z.shape)).reshape(B, -1)
    D = zf.shape[1]
    rows = []
    for i in range(D):
        e = torch.zeros_like(fz)
        e[:, i] = 1.0
        (row,) = torch.autograd.grad(fz, zf, e, retain_graph=True)
        rows.append(row)
    return torch.stack(rows, dim=1)
