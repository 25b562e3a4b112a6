"""Fixed-point solvers: find z* with z* = f(z*) for a batch of independent problems.

Three solvers share one contract (lesson 04):

* :func:`fixed_point_iter` -- damped (Krasnosel'skii-Mann) iteration  z <- tau f(z) + (1 - tau) z;
* :func:`anderson`         -- Anderson acceleration: mix the last m iterates with weights that minimise the
                              mixed residual (a small bordered least-squares system per sample);
* :func:`broyden`          -- Broyden's "good" quasi-Newton method on g(z) = f(z) - z with a low-rank
                              (Sherman-Morrison) inverse Jacobian of capped memory.

Every solver takes ``f`` acting on a tensor of any shape ``(B, ...)`` (batch first), flattens states to
``(B, D)`` internally, never builds an autograd graph, and returns a :class:`FixedPointResult`: the
per-sample *lowest-residual* iterate (not the last one), the number of function evaluations (NFE),
per-iteration residual traces (absolute ``||f(z) - z||`` and relative ``||f(z) - z|| / (||f(z)|| + eps)``,
per sample), a converged flag and a diagnosis in words. Divergence (a residual that grows by more than
``divergence_factor`` over its start, or NaN/inf) stops the solve; with ``raise_on_divergence=True`` it raises
:class:`FixedPointDiverged` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "FixedPointResult",
    "FixedPointDiverged",
    "fixed_point_iter",
    "anderson",
    "anderson_weights",
    "anderson_step",
    "broyden",
    "solve",
    "SOLVERS",
]


class FixedPointDiverged(RuntimeError):
    """A fixed-point solve diverged (residual blew up or became NaN/inf). ``.result`` holds what was found."""

    def __init__(self, message: str, result: FixedPointResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class FixedPointResult:
    """What a solver found.

    Attributes:
        solution:   (B, ...) the lowest-residual iterate of each sample (same shape and dtype as ``z0``).
        nfe:        number of evaluations of ``f`` (one per row of the traces).
        abs_trace:  (nfe, B) ``||f(z_k) - z_k||`` for every evaluated iterate z_k, per sample.
        rel_trace:  (nfe, B) ``||f(z_k) - z_k|| / (||f(z_k)|| + eps)``, per sample.
        abs_lowest: (B,) absolute residual of the returned iterate.
        rel_lowest: (B,) relative residual of the returned iterate.
        converged:  every sample's stopping residual fell below ``tol``.
        diverged:   the solve stopped because a residual blew up or became NaN/inf.
        diagnosis:  one or two sentences saying what happened and, if it went wrong, what to try.
        solver:     the solver's name.
        fallbacks:  Anderson only: how many (sample, step) pairs fell back to a damped step because the
                    mixing system was singular or ill-conditioned.
    """

    solution: Tensor
    nfe: int
    abs_trace: Tensor
    rel_trace: Tensor
    abs_lowest: Tensor
    rel_lowest: Tensor
    converged: bool
    diverged: bool
    diagnosis: str
    solver: str
    tol: float
    stop_mode: str
    fallbacks: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def residual(self) -> float:
        """The worst sample's final stopping residual (``rel`` or ``abs`` as the solve used)."""
        lowest = self.rel_lowest if self.stop_mode == "rel" else self.abs_lowest
        return float(lowest.max()) if lowest.numel() else 0.0

    def trace(self, kind: str = "rel", reduce: str = "max") -> list[float]:
        """Residual per evaluation, reduced over the batch: ``kind`` in {"rel", "abs"}, ``reduce`` in
        {"max", "mean", "median"}. Returns a list of ``nfe`` floats (handy for log-scale plots)."""
        if kind not in ("rel", "abs"):
            raise ValueError(f"kind must be 'rel' or 'abs', got {kind!r}")
        values = self.rel_trace if kind == "rel" else self.abs_trace
        if reduce == "max":
            reduced = values.amax(dim=1)
        elif reduce == "mean":
            reduced = values.mean(dim=1)
        elif reduce == "median":
            reduced = values.median(dim=1).values
        else:
            raise ValueError(f"reduce must be 'max', 'mean' or 'median', got {reduce!r}")
        return [float(v) for v in reduced]

    def __repr__(self) -> str:
        return (
            f"FixedPointResult(solver={self.solver!r}, nfe={self.nfe}, converged={self.converged}, "
            f"diverged={self.diverged}, residual({self.stop_mode})={self.residual:.3e}, "
            f"diagnosis={self.diagnosis!r})"
        )


# ----------------------------------------------------------------------------------------------------------
# Shared bookkeeping
# ----------------------------------------------------------------------------------------------------------


def _check_common(name: str, z0: Tensor, max_iter: int, tol: float, stop_mode: str, divergence_factor: float):
    if not isinstance(z0, Tensor):
        raise TypeError(f"{name}: z0 must be a torch.Tensor of shape (B, ...), got {type(z0).__name__}")
    if z0.dim() < 1 or z0.shape[0] == 0:
        raise ValueError(
            f"{name}: z0 must have a non-empty batch dimension first, got shape {tuple(z0.shape)}"
        )
    if not z0.is_floating_point():
        raise TypeError(f"{name}: z0 must be a floating-point tensor, got dtype {z0.dtype}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"{name}: max_iter must be an integer >= 1, got {max_iter!r}")
    if not (tol >= 0.0):
        raise ValueError(f"{name}: tol must be >= 0, got {tol!r}")
    if stop_mode not in ("rel", "abs"):
        raise ValueError(f"{name}: stop_mode must be 'rel' or 'abs', got {stop_mode!r}")
    if not (divergence_factor > 1.0):
        raise ValueError(f"{name}: divergence_factor must be > 1, got {divergence_factor!r}")


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # Low-precision states (bf16/fp16) are carried in fp32: residual norms and mixing systems need the range.
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


class _Monitor:
    """Evaluates f on flat states, records residuals, keeps each sample's lowest-residual iterate."""

    def __init__(
        self,
        f: Callable[[Tensor], Tensor],
        z0: Tensor,
        tol: float,
        stop_mode: str,
        eps: float,
        divergence_factor: float,
        solver: str,
    ) -> None:
        self.f = f
        self.shape = z0.shape
        self.out_dtype = z0.dtype
        self.dtype = _work_dtype(z0.dtype)
        self.batch = z0.shape[0]
        self.tol, self.stop_mode, self.eps = tol, stop_mode, eps
        self.divergence_factor = divergence_factor
        self.solver = solver
        self.abs_rows: list[Tensor] = []
        self.rel_rows: list[Tensor] = []
        self.best_z: Tensor | None = None
        self.best_abs = torch.full((self.batch,), math.inf, device=z0.device, dtype=self.dtype)
        self.best_rel = torch.full_like(self.best_abs, math.inf)
        self.start_abs: Tensor | None = None
        self.diverged_reason = ""

    def flat(self, z: Tensor) -> Tensor:
        return z.reshape(self.batch, -1).to(self.dtype)

    def evaluate(self, z_flat: Tensor) -> Tensor:
        """f at a flat state (B, D) -> flat (B, D); records the residual of ``z_flat``."""
        fz = self.f(z_flat.reshape(self.shape).to(self.out_dtype))
        if not isinstance(fz, Tensor) or fz.shape != self.shape:
            got = tuple(fz.shape) if isinstance(fz, Tensor) else type(fz).__name__
            raise ValueError(
                f"{self.solver}: f(z) must return a tensor of z's shape {tuple(self.shape)}, got {got}"
            )
        fz = self.flat(fz)
        self.record(z_flat, fz)
        return fz

    def record(self, z_flat: Tensor, fz: Tensor) -> None:
        """Record the residual of the flat state ``z_flat`` (B, D) whose image is ``fz`` (B, D)."""
        res = fz - z_flat
        abs_res = res.norm(dim=1)
        rel_res = abs_res / (fz.norm(dim=1) + self.eps)
        self.abs_rows.append(abs_res)
        self.rel_rows.append(rel_res)
        if self.start_abs is None:
            self.start_abs = abs_res.clone()
        key = rel_res if self.stop_mode == "rel" else abs_res
        best_key = self.best_rel if self.stop_mode == "rel" else self.best_abs
        better = key < best_key  # NaN compares False: a NaN iterate never replaces a finite one
        if self.best_z is None:
            self.best_z = z_flat.clone()
        self.best_z = torch.where(better[:, None], z_flat, self.best_z)
        self.best_abs = torch.where(better, abs_res, self.best_abs)
        self.best_rel = torch.where(better, rel_res, self.best_rel)
        self._check_divergence(fz, abs_res)

    def _check_divergence(self, fz: Tensor, abs_res: Tensor) -> None:
        if self.diverged_reason:
            return
        bad = ~torch.isfinite(fz).all(dim=1)
        if bool(bad.any()):
            idx = bad.nonzero().flatten()[:5].tolist()
            self.diverged_reason = (
                f"f(z) became NaN/inf at evaluation {len(self.abs_rows)} for samples {idx}"
                f"{' (and more)' if int(bad.sum()) > 5 else ''}"
            )
            return
        assert self.start_abs is not None
        floor = torch.finfo(self.dtype).tiny
        growth = abs_res / self.start_abs.clamp_min(floor)
        blown = growth > self.divergence_factor
        if bool(blown.any()):
            idx = blown.nonzero().flatten()[:5].tolist()
            self.diverged_reason = (
                f"the residual ||f(z)-z|| grew by {float(growth.max()):.3g}x over its start "
                f"(limit {self.divergence_factor:g}x) at evaluation {len(self.abs_rows)}, samples {idx}"
            )

    @property
    def nfe(self) -> int:
        return len(self.abs_rows)

    def done(self) -> bool:
        """True when every sample's latest stopping residual is below tol."""
        latest = self.rel_rows[-1] if self.stop_mode == "rel" else self.abs_rows[-1]
        return bool((latest < self.tol).all())

    def result(self, raise_on_divergence: bool, fallbacks: int = 0) -> FixedPointResult:
        assert self.best_z is not None
        abs_trace = torch.stack(self.abs_rows)
        rel_trace = torch.stack(self.rel_rows)
        lowest = self.best_rel if self.stop_mode == "rel" else self.best_abs
        converged = bool((lowest < self.tol).all()) and not self.diverged_reason
        diverged = bool(self.diverged_reason)
        diagnosis = self._diagnose(converged, rel_trace if self.stop_mode == "rel" else abs_trace, fallbacks)
        # A sample that never produced a finite residual keeps its first iterate (z0), never garbage.
        result = FixedPointResult(
            solution=self.best_z.reshape(self.shape).to(self.out_dtype),
            nfe=self.nfe,
            abs_trace=abs_trace,
            rel_trace=rel_trace,
            abs_lowest=self.best_abs,
            rel_lowest=self.best_rel,
            converged=converged,
            diverged=diverged,
            diagnosis=diagnosis,
            solver=self.solver,
            tol=self.tol,
            stop_mode=self.stop_mode,
            fallbacks=fallbacks,
        )
        if diverged and raise_on_divergence:
            raise FixedPointDiverged(f"{self.solver}: {diagnosis}", result)
        return result

    def _diagnose(self, converged: bool, trace: Tensor, fallbacks: int) -> str:
        worst = float(trace.amin(dim=0).max())
        fb = (
            f" Anderson fell back to damped steps {fallbacks} times (ill-conditioned mixing)."
            if fallbacks
            else ""
        )
        if self.diverged_reason:
            return (
                f"diverged: {self.diverged_reason}. The map is not a contraction here (spectral radius of "
                "df/dz >= 1?): lower the weight scale / normalise f, damp with tau < 1, or add Jacobian "
                f"regularisation. The lowest-residual iterate is returned.{fb}"
            )
        if converged:
            return (
                f"converged: every sample's {self.stop_mode} residual < {self.tol:g} "
                f"after {self.nfe} evaluations.{fb}"
            )
        # Not converged: did the worst sample still make progress in its last evaluations?
        worst_sample = int(trace.amin(dim=0).argmax())
        col = trace[:, worst_sample]
        window = min(10, col.numel() // 2)
        progress_txt = ""
        if window >= 1:
            recent, earlier = float(col[-window:].min()), float(col[:-window].min())
            if math.isfinite(recent) and math.isfinite(earlier) and earlier > 0:
                if recent < 0.999 * earlier:
                    rate = (recent / earlier) ** (1.0 / window)
                    progress_txt = (
                        f" Still improving (about x{rate:.3f} per evaluation over the last {window}): "
                        "give it more iterations, or accelerate (Anderson/Broyden)."
                    )
                else:
                    progress_txt = (
                        f" No progress in the last {window} evaluations: the map is not contracting here "
                        "-- damp (tau < 1), use Anderson/Broyden, or stabilise f."
                    )
        return (
            f"not converged: the worst sample's lowest {self.stop_mode} residual is {worst:.3e} > tol "
            f"{self.tol:g} after {self.nfe} evaluations.{progress_txt}{fb}"
        )


# ----------------------------------------------------------------------------------------------------------
# Damped fixed-point iteration
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def fixed_point_iter(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    max_iter: int = 50,
    tol: float = 1e-4,
    tau: float = 1.0,
    stop_mode: str = "rel",
    eps: float = 1e-9,
    divergence_factor: float = 1e4,
    raise_on_divergence: bool = False,
) -> FixedPointResult:
    """Damped fixed-point iteration z_{k+1} = tau f(z_k) + (1 - tau) z_k.

    Banach: if f is a contraction (Lipschitz constant L < 1) this converges from any start, with the error
    shrinking like L^k; damping (tau < 1) can turn an oscillating map (eigenvalues of df/dz near -1) into a
    converging one.

    Args:
        f: maps (B, ...) -> (B, ...) (same shape), independent per sample.
        z0: (B, ...) float initial state.
        max_iter: most evaluations of f (NFE budget).
        tol: stop when every sample's residual (``stop_mode``) is below it.
        tau: damping in (0, 1]; 1 is plain iteration.
    Returns:
        :class:`FixedPointResult` with ``solution`` (B, ...).
    """
    _check_common("fixed_point_iter", z0, max_iter, tol, stop_mode, divergence_factor)
    if not (0.0 < tau <= 1.0):
        raise ValueError(f"fixed_point_iter: tau (damping) must be in (0, 1], got {tau!r}")
    mon = _Monitor(f, z0, tol, stop_mode, eps, divergence_factor, "fixed_point_iter")
    z = mon.flat(z0)
    for _ in range(max_iter):
        fz = mon.evaluate(z)
        if mon.done() or mon.diverged_reason:
            break
        z = tau * fz + (1.0 - tau) * z
    return mon.result(raise_on_divergence)


# ----------------------------------------------------------------------------------------------------------
# Anderson acceleration
# ----------------------------------------------------------------------------------------------------------


def anderson_weights(G: Tensor, lam: float = 1e-4, max_weight: float = 1e4) -> tuple[Tensor, Tensor]:
    """Anderson mixing weights from the last n residuals of each sample.

    Solves min_alpha ||sum_i alpha_i g_i||^2 + lam_s ||alpha||^2  s.t.  sum_i alpha_i = 1  through the
    bordered (n+1)x(n+1) system  [[0, 1^T], [1, G G^T + lam_s I]] [nu; alpha] = [1; 0], with the ridge scaled
    to the problem: lam_s = lam * mean_i ||g_i||^2 (an absolute lam over-regularises small residuals).

    Args:
        G: (B, n, D) residuals g_i = f(x_i) - x_i of the stored iterates.
        lam: relative ridge strength (>= 0).
        max_weight: weights larger than this in magnitude count as ill-conditioned.
    Returns:
        The pair ``(alpha, ok)``, with ``alpha`` (B, n) the weights summing to 1 per sample (for a bad sample, a
        one-hot on the newest column, i.e. the caller's plain step) and ``ok`` (B,) bool, False where the system
        was singular, non-finite or ill-conditioned.
    """
    if G.dim() != 3:
        raise ValueError(f"anderson_weights: G must have shape (B, n, D), got {tuple(G.shape)}")
    if lam < 0:
        raise ValueError(f"anderson_weights: lam must be >= 0, got {lam!r}")
    B, n, _ = G.shape
    dtype = _work_dtype(G.dtype)
    with torch.autocast(device_type=G.device.type, enabled=False):
        G = G.to(dtype)
        gram = G @ G.transpose(1, 2)  # (B, n, n)
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1)  # (B,) mean ||g_i||^2
        ridge = lam * scale + torch.finfo(dtype).tiny
        H = torch.zeros(B, n + 1, n + 1, dtype=dtype, device=G.device)
        H[:, 0, 1:] = 1.0
        H[:, 1:, 0] = 1.0
        H[:, 1:, 1:] = gram + ridge[:, None, None] * torch.eye(n, dtype=dtype, device=G.device)
        rhs = torch.zeros(B, n + 1, 1, dtype=dtype, device=G.device)
        rhs[:, 0] = 1.0
        sol, info = torch.linalg.solve_ex(H, rhs)
        alpha = sol[:, 1:, 0]  # (B, n)
        ok = (info == 0) & torch.isfinite(alpha).all(dim=1) & (alpha.abs().amax(dim=1) < max_weight)
        newest = torch.zeros_like(alpha)
        newest[:, -1] = 1.0
        alpha = torch.where(ok[:, None], alpha, newest)
    return alpha, ok


def anderson_step(X: Tensor, F: Tensor, lam: float = 1e-4, beta: float = 1.0) -> Tensor:
    """One Anderson update from a history of iterates and their images.

    z_next = beta * sum_i alpha_i f(x_i) + (1 - beta) * sum_i alpha_i x_i,
    with alpha from :func:`anderson_weights`.

    Args:
        X: (B, n, D) stored iterates x_i (any order, newest last).
        F: (B, n, D) their images f(x_i).
        lam: relative ridge strength; beta: mixing (1 = undamped).
    Returns:
        (B, D) the next iterate.
    """
    if X.shape != F.shape or X.dim() != 3:
        raise ValueError(
            f"anderson_step: X and F must both be (B, n, D), got {tuple(X.shape)} and {tuple(F.shape)}"
        )
    alpha, _ = anderson_weights(F - X, lam)
    alpha = alpha.to(X.dtype)[:, None, :]  # (B, 1, n)
    return beta * (alpha @ F)[:, 0] + (1.0 - beta) * (alpha @ X)[:, 0]


@torch.no_grad()
def anderson(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    max_iter: int = 50,
    tol: float = 1e-4,
    m: int = 5,
    lam: float = 1e-4,
    beta: float = 1.0,
    tau: float = 1.0,
    stop_mode: str = "rel",
    eps: float = 1e-9,
    divergence_factor: float = 1e4,
    raise_on_divergence: bool = False,
) -> FixedPointResult:
    """Anderson acceleration (type II) with memory ``m``.

    Keeps the last m iterates X and images F = f(X) per sample (memory ~ 2 m states) and moves to the affine
    combination of them whose residual is smallest (:func:`anderson_step`). Where a sample's mixing system is
    singular or ill-conditioned it takes a damped plain step tau f(x) + (1 - tau) x instead (counted in
    ``result.fallbacks``).

    Args:
        f: (B, ...) -> (B, ...); z0: (B, ...) float start.
        m: history length (>= 1); lam: ridge relative to ||G||^2; beta: mixing;
        tau: damping of the fallback steps.
    Returns:
        :class:`FixedPointResult`.
    """
    _check_common("anderson", z0, max_iter, tol, stop_mode, divergence_factor)
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"anderson: memory m must be an integer >= 1, got {m!r}")
    if not (0.0 < beta <= 2.0):
        raise ValueError(f"anderson: beta (mixing) must be in (0, 2], got {beta!r}")
    if not (0.0 < tau <= 1.0):
        raise ValueError(f"anderson: tau (fallback damping) must be in (0, 1], got {tau!r}")
    mon = _Monitor(f, z0, tol, stop_mode, eps, divergence_factor, "anderson")
    x = mon.flat(z0)
    B, D = x.shape
    X = torch.zeros(B, m, D, dtype=x.dtype, device=x.device)  # ring buffers of iterates and images
    F = torch.zeros_like(X)
    fallbacks = 0
    fx = mon.evaluate(x)
    X[:, 0], F[:, 0] = x, fx
    k = 1
    while not (mon.done() or mon.diverged_reason) and mon.nfe < max_iter:
        n = min(k, m)
        order = [(k - n + i) % m for i in range(n)]  # oldest -> newest
        Xh, Fh = X[:, order], F[:, order]
        alpha, ok = anderson_weights(Fh - Xh, lam)
        alpha = alpha[:, None, :]
        mixed = beta * (alpha @ Fh)[:, 0] + (1.0 - beta) * (alpha @ Xh)[:, 0]
        damped = tau * Fh[:, -1] + (1.0 - tau) * Xh[:, -1]
        x = torch.where(ok[:, None], mixed, damped)
        fallbacks += int((~ok).sum())
        fx = mon.evaluate(x)
        X[:, k % m], F[:, k % m] = x, fx
        k += 1
    return mon.result(raise_on_divergence, fallbacks=fallbacks)


# ----------------------------------------------------------------------------------------------------------
# Broyden's method
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def broyden(
    f: Callable[[Tensor], Tensor],
    z0: Tensor,
    *,
    max_iter: int = 50,
    tol: float = 1e-4,
    memory: int = 20,
    stop_mode: str = "rel",
    eps: float = 1e-9,
    divergence_factor: float = 1e4,
    raise_on_divergence: bool = False,
) -> FixedPointResult:
    """Broyden's "good" method on g(z) = f(z) - z with a low-rank inverse Jacobian of capped memory.

    Newton would step z <- z - J_g^{-1} g(z). Broyden keeps an estimate M ~ J_g^{-1}, starting from
    M_0 = -I (so the first step is plain iteration, since J_g = df/dz - I), and after each step applies the
    rank-one Sherman-Morrison update  M <- M + (dz - M dg) dz^T M / (dz^T M dg).  M is stored as
    -I + U V^T with at most ``memory`` rank-one terms (memory ~ 2 * memory states); when full, the estimate
    restarts from -I (a restarted, limited-memory Broyden).

    Args:
        f: (B, ...) -> (B, ...); z0: (B, ...) float start; memory: rank cap (>= 1).
    Returns:
        :class:`FixedPointResult`.
    """
    _check_common("broyden", z0, max_iter, tol, stop_mode, divergence_factor)
    if not isinstance(memory, int) or memory < 1:
        raise ValueError(f"broyden: memory must be an integer >= 1, got {memory!r}")
    mon = _Monitor(f, z0, tol, stop_mode, eps, divergence_factor, "broyden")
    z = mon.flat(z0)
    B, D = z.shape
    U = torch.zeros(B, memory, D, dtype=z.dtype, device=z.device)  # M = -I + sum_j u_j v_j^T
    V = torch.zeros_like(U)

    def apply_M(vec: Tensor) -> Tensor:  # M @ vec, per sample: (B, D) -> (B, D)
        return -vec + torch.einsum("bjd,bj->bd", U, torch.einsum("bjd,bd->bj", V, vec))

    def apply_MT(vec: Tensor) -> Tensor:  # vec^T M, per sample
        return -vec + torch.einsum("bjd,bj->bd", V, torch.einsum("bjd,bd->bj", U, vec))

    g = mon.evaluate(z) - z
    k = 0
    while not (mon.done() or mon.diverged_reason) and mon.nfe < max_iter:
        dz = -apply_M(g)  # quasi-Newton step (step size 1, no line search)
        z_new = z + dz
        g_new = mon.evaluate(z_new) - z_new
        dg = g_new - g
        M_dg = apply_M(dg)
        denom = (dz * M_dg).sum(dim=1)  # dz^T M dg
        good = denom.abs() > 1e-30 * (dz.norm(dim=1) * M_dg.norm(dim=1)).clamp_min(torch.finfo(z.dtype).tiny)
        good &= torch.isfinite(denom)
        safe = torch.where(good, denom, torch.ones_like(denom))
        u = torch.where(good[:, None], (dz - M_dg) / safe[:, None], torch.zeros_like(dz))
        v = apply_MT(dz)
        if k == memory:
            # Memory full: restart from M = -I. (Overwriting the oldest rank-one term instead breaks the
            # secant conditions the newer terms were built on, and the iteration can blow up.)
            U.zero_()
            V.zero_()
            k = 0
        U[:, k], V[:, k] = u, torch.where(good[:, None], v, torch.zeros_like(v))
        k += 1
        z, g = z_new, g_new
    return mon.result(raise_on_divergence)


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------

SOLVERS: dict[str, Callable[..., FixedPointResult]] = {
    "fixed_point_iter": fixed_point_iter,
    "anderson": anderson,
    "broyden": broyden,
}
_ALIASES = {"fixed_point": "fixed_point_iter", "naive": "fixed_point_iter", "iter": "fixed_point_iter"}


def solve(f: Callable[[Tensor], Tensor], z0: Tensor, solver: str = "anderson", **kwargs) -> FixedPointResult:
    """Run the solver named ``solver`` (one of :data:`SOLVERS`, or the aliases "fixed_point"/"naive").

    Args:
        f: (B, ...) -> (B, ...); z0: (B, ...) float start; kwargs: the solver's own keyword arguments.
    """
    name = _ALIASES.get(solver, solver)
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS) + sorted(_ALIASES)}")
    return SOLVERS[name](f, z0, **kwargs)
