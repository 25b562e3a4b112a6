"""recursionlab.solvers: fixed-point solvers and gradients through fixed points (lessons 04 and 05).

* :mod:`~recursionlab.solvers.fixed_point` -- damped iteration, Anderson, Broyden; one result type.
* :mod:`~recursionlab.solvers.implicit`    -- implicit (IFT), 1-step (JFB), phantom and unrolled gradients,
  and :class:`DEQSolver`, the one-call API: ``z, info = DEQSolver("anderson", grad="ift")(f, z0)``.
* :mod:`~recursionlab.solvers.jacobian`    -- Hutchinson Jacobian penalty and spectral-radius probe.
* :mod:`~recursionlab.solvers.newton`      -- Newton's method with an exact Jacobian (quadratic convergence).
"""

from recursionlab.solvers.fixed_point import (
    SOLVERS,
    FixedPointDiverged,
    FixedPointResult,
    anderson,
    anderson_step,
    anderson_weights,
    broyden,
    fixed_point_iter,
    solve,
)
from recursionlab.solvers.implicit import (
    GRAD_MODES,
    DEQInfo,
    DEQSolver,
    adjoint_solve,
    implicit_fixed_point,
    phantom_fixed_point,
    unrolled_fixed_point,
)
from recursionlab.solvers.jacobian import (
    exact_jacobian,
    jacobian_frobenius_estimate,
    jacobian_penalty,
    spectral_radius,
)
from recursionlab.solvers.newton import newton, newton_step

__all__ = [
    "SOLVERS",
    "GRAD_MODES",
    "FixedPointDiverged",
    "FixedPointResult",
    "DEQInfo",
    "DEQSolver",
    "adjoint_solve",
    "anderson",
    "anderson_step",
    "anderson_weights",
    "broyden",
    "exact_jacobian",
    "fixed_point_iter",
    "implicit_fixed_point",
    "jacobian_frobenius_estimate",
    "jacobian_penalty",
    "newton",
    "newton_step",
    "phantom_fixed_point",
    "solve",
    "spectral_radius",
    "unrolled_fixed_point",
]
