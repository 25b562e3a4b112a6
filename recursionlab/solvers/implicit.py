"""Gradients through a fixed point z* = f(z*) (lesson 05) and one object that does it all, :class:`DEQSolver`.

Let J = df/dz at z* and g = dL/dz*. Differentiating z* = f(z*, theta) gives (implicit function theorem)

    dL/dtheta = u  df/dtheta,   where   u = g (I - J)^{-1},   i.e.   u = J^T u + g     (a linear fixed point).

Four ways to get a gradient, chosen by ``grad=``:

* ``"ift"``      -- exact (up to solver tolerance): the forward solve runs without a graph, one tracked call
                    z_out = f(z*) attaches the parameters, and a custom autograd Function swaps the incoming
                    gradient g for u, found by solving u = J^T u + g with the same solvers (VJPs only).
                    Memory: one call of f, whatever the number of iterations.
* ``"jfb"``      -- Jacobian-free / 1-step gradient (Fung et al., arXiv 2103.12803; HRM's approximation):
                    (I - J)^{-1} ~ I, i.e. backprop through the single tracked call z_out = f(z*).
* ``"phantom"``  -- phantom gradient (Geng et al., arXiv 2111.05177): backprop through k damped steps
                    z <- tau f(z) + (1 - tau) z started at z*. k = 1, tau = 1 is the JFB.
* ``"unrolled"`` -- reference BPTT: plain (damped) iteration from z0 with the graph kept for every step;
                    memory grows linearly with the number of iterations.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from recursionlab.solvers.fixed_point import (
    _ALIASES,
    SOLVERS,
    FixedPointDiverged,
    FixedPointResult,
    _Monitor,
    solve,
)
from recursionlab.solvers.jacobian import jacobian_penalty

__all__ = [
    "FixedPointDiverged",
    "GRAD_MODES",
    "DEQInfo",
    "DEQSolver",
    "adjoint_solve",
    "implicit_fixed_point",
    "phantom_fixed_point",
    "unrolled_fixed_point",
]

GRAD_MODES = ("ift", "jfb", "phantom", "unrolled")


@dataclass
class DEQInfo:
    """What one DEQ call did.

    Attributes:
        forward:  the forward solve's :class:`FixedPointResult` (NFE, traces, per-sample lowest residuals).
        backward: the adjoint solve's result, filled in when backward runs (``grad="ift"`` only), else None.
        grad:     the gradient mode used.
        tracked_calls: calls of f made with the autograd graph kept (1 for ift/jfb, k for phantom, every
            step for unrolled).
        jac_loss: 0-d Hutchinson Jacobian penalty at z* when requested and grad is enabled, else None.
    """

    forward: FixedPointResult
    grad: str
    tracked_calls: int
    backward: FixedPointResult | None = None
    jac_loss: Tensor | None = None
    extra: dict = field(default_factory=dict)

    @property
    def nfe(self) -> int:
        """Forward function evaluations of the solve (what 'NFE' means in the DEQ papers)."""
        return self.forward.nfe

    @property
    def residual(self) -> float:
        """Worst sample's final forward residual."""
        return self.forward.residual

    def metrics(self) -> dict[str, float]:
        """Floats to log: ``nfe``, ``residual`` and, once backward ran, ``b_nfe`` / ``b_residual``."""
        out = {"nfe": float(self.nfe), "residual": self.residual}
        if self.backward is not None:
            out["b_nfe"] = float(self.backward.nfe)
            out["b_residual"] = self.backward.residual
        if self.jac_loss is not None:
            out["jac_loss"] = float(self.jac_loss.detach())
        return out


# ----------------------------------------------------------------------------------------------------------
# The implicit (IFT) backward
# ----------------------------------------------------------------------------------------------------------


def adjoint_solve(
    f: Callable[[Tensor], Tensor],
    z_star: Tensor,
    grad_output: Tensor,
    solver: str = "anderson",
    **solver_kwargs: Any,
) -> FixedPointResult:
    """Solve the adjoint fixed point u = J^T u + g at z* with VJPs only.

    Args:
        f: (B, ...) -> (B, ...), the layer at its fixed input; z_star: (B, ...) equilibrium;
        grad_output: (B, ...) g = dL/dz*.
        solver / solver_kwargs: any solver of :mod:`recursionlab.solvers.fixed_point`, started at u0 = g.
    Returns:
        :class:`FixedPointResult` whose ``solution`` (B, ...) is u = g (I - J)^{-1}.
    """
    z = z_star.detach().requires_grad_()
    with torch.enable_grad():
        fz = f(z)
    if fz.shape != z.shape:
        raise ValueError(f"adjoint_solve: f(z) must keep the shape {tuple(z.shape)}, got {tuple(fz.shape)}")
    g = grad_output.detach().to(z.dtype)

    def adjoint_map(u: Tensor) -> Tensor:  # u -> J^T u + g, one VJP
        (vjp,) = torch.autograd.grad(fz, z, u, retain_graph=True)
        return vjp + g

    return solve(adjoint_map, g, solver, **solver_kwargs)


class _ImplicitGrad(torch.autograd.Function):
    """Identity on z_out = f(z*) whose backward replaces g by u = g (I - J)^{-1}."""

    @staticmethod
    def forward(ctx, z_out: Tensor, z_star: Tensor, f: Callable, backward_fn: Callable) -> Tensor:  # type: ignore[override]
        ctx.f = f
        ctx.backward_fn = backward_fn
        ctx.save_for_backward(z_star)
        return z_out.view_as(z_out)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (z_star,) = ctx.saved_tensors
        u = ctx.backward_fn(ctx.f, z_star, grad_out)
        return u, None, None, None


def implicit_fixed_point(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    solver: str = "anderson",
    solver_kwargs: dict | None = None,
    b_solver: str | None = None,
    b_solver_kwargs: dict | None = None,
    raise_on_divergence: bool = True,
) -> tuple[Tensor, DEQInfo]:
    """Fixed point with the exact implicit gradient (functional form of ``DEQSolver(grad="ift")``).

    Args:
        f: (B, ...) -> (B, ...), a closure over the input and the layer (gradients reach both).
        z0: (B, ...) start (no gradient flows into it).
        solver / solver_kwargs: forward solver;
        b_solver / b_solver_kwargs: adjoint solver (default: the same).
    Returns:
        z: (B, ...) = f(z*), tracked; info: :class:`DEQInfo` (``info.backward`` is set when backward runs).
    """
    fwd = solve(f, z0.detach(), solver, raise_on_divergence=raise_on_divergence, **(solver_kwargs or {}))
    z_star = fwd.solution
    info = DEQInfo(forward=fwd, grad="ift", tracked_calls=1)
    z_out = f(z_star)
    if not (torch.is_grad_enabled() and z_out.requires_grad):
        return z_out, info
    bk = dict(b_solver_kwargs if b_solver_kwargs is not None else (solver_kwargs or {}))
    bk.setdefault("raise_on_divergence", raise_on_divergence)

    def backward_fn(f_: Callable, z_: Tensor, g: Tensor) -> Tensor:
        res = adjoint_solve(f_, z_, g, b_solver or solver, **bk)
        info.backward = res
        return res.solution.to(g.dtype)

    return _ImplicitGrad.apply(z_out, z_star, f, backward_fn), info


# ----------------------------------------------------------------------------------------------------------
# Inexact gradients and the unrolled reference
# ----------------------------------------------------------------------------------------------------------


def phantom_fixed_point(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    steps: int = 1,
    tau: float = 1.0,
    solver: str = "anderson",
    solver_kwargs: dict | None = None,
    raise_on_divergence: bool = True,
) -> tuple[Tensor, DEQInfo]:
    """Solve without a graph, then take ``steps`` tracked damped steps z <- tau f(z) + (1 - tau) z from z*.

    steps = 1, tau = 1 is the Jacobian-free (1-step) gradient. Its gradient is what backprop through those
    steps gives: for k steps it approximates (I - J)^{-1} by a damped, truncated Neumann-like product.

    Args:
        f: (B, ...) -> (B, ...); z0: (B, ...) start; steps: k >= 1; tau in (0, 1].
    Returns:
        z: (B, ...) tracked output; info: :class:`DEQInfo`.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"phantom_fixed_point: steps must be an integer >= 1, got {steps!r}")
    if not (0.0 < tau <= 1.0):
        raise ValueError(f"phantom_fixed_point: tau must be in (0, 1], got {tau!r}")
    fwd = solve(f, z0.detach(), solver, raise_on_divergence=raise_on_divergence, **(solver_kwargs or {}))
    z = fwd.solution
    for _ in range(steps):
        z = tau * f(z) + (1.0 - tau) * z if tau != 1.0 else f(z)
    mode = "jfb" if steps == 1 and tau == 1.0 else "phantom"
    return z, DEQInfo(forward=fwd, grad=mode, tracked_calls=steps)


def unrolled_fixed_point(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    max_iter: int = 50,
    tol: float = 1e-4,
    tau: float = 1.0,
    stop_mode: str = "rel",
    eps: float = 1e-9,
    divergence_factor: float = 1e4,
    raise_on_divergence: bool = True,
) -> tuple[Tensor, DEQInfo]:
    """Reference BPTT: damped iteration z_{k+1} = tau f(z_k) + (1 - tau) z_k with every step on the graph.

    Stops at ``max_iter`` evaluations or when every sample's residual is below ``tol`` (``tol=0``: always run
    ``max_iter``). Returns the last image f(z_k) (tracked), so the output matches the other modes' f(z*).

    Args:
        f: (B, ...) -> (B, ...); z0: (B, ...) start (may carry a gradient).
    Returns:
        z: (B, ...) tracked; info: :class:`DEQInfo` (traces in ``info.forward``).
    """
    if not (0.0 < tau <= 1.0):
        raise ValueError(f"unrolled_fixed_point: tau must be in (0, 1], got {tau!r}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"unrolled_fixed_point: max_iter must be an integer >= 1, got {max_iter!r}")
    # The monitor records residuals on detached copies; the graph itself is built below.
    mon = _Monitor(f, z0, tol, stop_mode, eps, divergence_factor, "unrolled")
    z = z0
    fz = z0
    for _ in range(max_iter):
        fz = f(z)
        mon.record(mon.flat(z.detach()), mon.flat(fz.detach()))
        if mon.done() or mon.diverged_reason:
            break
        z = tau * fz + (1.0 - tau) * z if tau != 1.0 else fz
    fwd = mon.result(raise_on_divergence)
    return fz, DEQInfo(forward=fwd, grad="unrolled", tracked_calls=fwd.nfe)


# ----------------------------------------------------------------------------------------------------------
# One object
# ----------------------------------------------------------------------------------------------------------


def _solver_keywords(name: str) -> set[str]:
    """Keyword options a registered solver accepts (besides f and z0)."""
    fn = SOLVERS[_ALIASES.get(name, name)]
    return {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}


class DEQSolver(nn.Module):
    """Fixed point + gradient in one call:  ``z, info = deq(f, z0)``.

    ``f`` is a closure, e.g. ``lambda z: layer(z, x_injected)``; gradients flow to the layer's parameters and
    to ``x`` (never into ``z0``). ``z`` has z0's shape (B, ...); ``info`` is a :class:`DEQInfo`.

    Args:
        solver: "anderson" (default), "broyden" or "fixed_point_iter" for the forward solve.
        grad: "ift" (exact implicit gradient, default), "jfb" (1-step), "phantom" or "unrolled".
        max_iter / tol: forward NFE budget and stopping tolerance (relative residual by default).
        b_solver / b_max_iter / b_tol: adjoint solve for grad="ift" (defaults: same as forward).
        phantom_steps / phantom_tau: k and tau of the phantom gradient.
        jac_reg: also return a Hutchinson Jacobian penalty at z* in ``info.jac_loss`` (only while grad is on).
        jac_samples: probe vectors for that estimate.
        raise_on_divergence: raise :class:`FixedPointDiverged` when a solve diverges (default True).
        **solver_kwargs: passed to the solver, e.g. ``m=5, lam=1e-4, beta=1.0`` (Anderson), ``tau=0.8``
            (damping), ``memory=20`` (Broyden), ``stop_mode="abs"``.

    Call-time overrides ``deq(f, z0, max_iter=..., tol=...)`` (e.g. more iterations at test time).
    """

    def __init__(
        self,
        solver: str = "anderson",
        grad: str = "ift",
        max_iter: int = 40,
        tol: float = 1e-3,
        *,
        b_solver: str | None = None,
        b_max_iter: int | None = None,
        b_tol: float | None = None,
        phantom_steps: int = 5,
        phantom_tau: float = 0.5,
        jac_reg: bool = False,
        jac_samples: int = 1,
        raise_on_divergence: bool = True,
        **solver_kwargs: Any,
    ) -> None:
        super().__init__()
        if grad not in GRAD_MODES:
            raise ValueError(f"DEQSolver: grad must be one of {GRAD_MODES}, got {grad!r}")
        for name, value in (("solver", solver), ("b_solver", b_solver)):
            if value is not None and _ALIASES.get(value, value) not in SOLVERS:
                raise ValueError(
                    f"DEQSolver: unknown {name} {value!r}; choose one of {sorted(SOLVERS) + sorted(_ALIASES)}"
                )
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"DEQSolver: max_iter must be an integer >= 1, got {max_iter!r}")
        if grad == "phantom" and (not isinstance(phantom_steps, int) or phantom_steps < 1):
            raise ValueError(f"DEQSolver: phantom_steps must be an integer >= 1, got {phantom_steps!r}")
        self.solver, self.grad, self.max_iter, self.tol = solver, grad, max_iter, tol
        self.b_solver = b_solver or solver
        self.b_max_iter = b_max_iter if b_max_iter is not None else max_iter
        self.b_tol = b_tol if b_tol is not None else tol
        self.phantom_steps, self.phantom_tau = phantom_steps, phantom_tau
        self.jac_reg, self.jac_samples = jac_reg, jac_samples
        self.raise_on_divergence = raise_on_divergence
        accepted = _solver_keywords(solver)
        unknown = sorted(set(solver_kwargs) - accepted)
        if unknown:
            raise ValueError(
                f"DEQSolver: {unknown} are not options of solver {solver!r}; it accepts {sorted(accepted)}"
            )
        self.solver_kwargs = dict(solver_kwargs)

    def extra_repr(self) -> str:
        extra = (
            f", phantom_steps={self.phantom_steps}, phantom_tau={self.phantom_tau}"
            if self.grad == "phantom"
            else ""
        )
        return (
            f"solver={self.solver!r}, grad={self.grad!r}, max_iter={self.max_iter}, tol={self.tol}{extra}, "
            f"jac_reg={self.jac_reg}, solver_kwargs={self.solver_kwargs}"
        )

    def forward(
        self,
        f: Callable[[Tensor], Tensor],
        z0: Tensor,
        max_iter: int | None = None,
        tol: float | None = None,
        b_max_iter: int | None = None,
        b_tol: float | None = None,
    ) -> tuple[Tensor, DEQInfo]:
        """Solve z = f(z) from ``z0`` (B, ...) and return (z (B, ...), :class:`DEQInfo`).

        ``max_iter`` / ``tol`` / ``b_max_iter`` / ``b_tol`` override the constructor's values for this call.
        """
        fkw = dict(
            self.solver_kwargs, max_iter=max_iter or self.max_iter, tol=self.tol if tol is None else tol
        )
        if self.grad == "unrolled":
            keep = {
                k: v
                for k, v in fkw.items()
                if k in ("max_iter", "tol", "tau", "stop_mode", "eps", "divergence_factor")
            }
            z, info = unrolled_fixed_point(f, z0, raise_on_divergence=self.raise_on_divergence, **keep)
        elif self.grad == "ift":
            # Options of the forward solver that the adjoint solver also understands carry over.
            b_accepts = _solver_keywords(self.b_solver)
            bkw = {k: v for k, v in self.solver_kwargs.items() if k in b_accepts}
            bkw.update(max_iter=b_max_iter or self.b_max_iter, tol=self.b_tol if b_tol is None else b_tol)
            z, info = implicit_fixed_point(
                f, z0, self.solver, fkw, self.b_solver, bkw, raise_on_divergence=self.raise_on_divergence
            )
        else:
            steps, tau = (1, 1.0) if self.grad == "jfb" else (self.phantom_steps, self.phantom_tau)
            z, info = phantom_fixed_point(
                f, z0, steps, tau, self.solver, fkw, raise_on_divergence=self.raise_on_divergence
            )
        if self.jac_reg and torch.is_grad_enabled():
            info.jac_loss = jacobian_penalty(f, info.forward.solution, n_samples=self.jac_samples)
        return z, info
