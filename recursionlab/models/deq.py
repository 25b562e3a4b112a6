"""Deep equilibrium models (Bai, Kolter & Koltun, NeurIPS 2019, arXiv 1909.01377), lessons 04 and 05.

A DEQ replaces a stack of L weight-tied layers  z_{l+1} = f(z_l, x)  by its limit: the equilibrium

    z* = f(z*, x)          (found by a root solver; memory does not grow with the "depth")

and trains through it with the implicit function theorem (or a cheaper approximation), see
:mod:`recursionlab.solvers.implicit`. Two small models:

* :class:`DEQClassifier` -- input projection, a tanh equilibrium layer z = tanh(W z + u(x)), a linear head.
  For the scikit-learn digits (64 pixels -> 10 classes).
* :class:`DEQSequenceModel` -- a weight-tied block over a token sequence whose update of position t reads the
  states of the ``window`` positions before it: z_t = f(z_{t-window..t-1}, x_t). Its equilibrium is the state
  sequence of a recurrent network, and because df/dz is strictly block lower triangular (nilpotent), plain
  iteration reaches it in at most T + 1 evaluations for *any* weights: a DEQ view of an RNN, solved in
  parallel over positions. Trained on prefix sums mod 2 it can be run on longer sequences at test time.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recursionlab.solvers.implicit import DEQInfo, DEQSolver

__all__ = ["TanhEquilibriumLayer", "DEQClassifier", "CausalRecurrenceLayer", "DEQSequenceModel"]


class TanhEquilibriumLayer(nn.Module):
    """f(z, u) = tanh(W z + u): the layer of lesson 04, now with a trainable W.

    ``|tanh'| <= 1``, so f is a contraction in z whenever the spectral norm ||W||_2 < 1; training is free to grow
    W past that, which is when the forward iteration slows down (and Jacobian regularisation earns its keep).

    Args:
        dim: state size D; init_scale: W ~ N(0, init_scale^2 / D), so ||W||_2 ~ 2 init_scale at the start.
    """

    def __init__(self, dim: int, init_scale: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim, dim) * (init_scale / dim**0.5))

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        """z: (B, D) state, u: (B, D) input injection -> (B, D)."""
        return torch.tanh(z @ self.weight.T + u)  # z_{k+1} = tanh(W z_k + u)


class DEQClassifier(nn.Module):
    """Input projection -> equilibrium layer -> linear head.

        u = LayerNorm(U x + b)          (input injection, computed once)
        z* = tanh(W z* + u)             (solved by ``deq``; gradient by ``grad``)
        logits = V z* + c

    Args:
        in_features: input size (64 for the 8x8 digits); n_classes: outputs; hidden: state size D.
        solver / grad / max_iter / tol / jac_reg / solver_kwargs: passed to :class:`DEQSolver`.
        init_scale: initial weight scale of W (see :class:`TanhEquilibriumLayer`).
    """

    def __init__(
        self,
        in_features: int = 64,
        n_classes: int = 10,
        hidden: int = 64,
        solver: str = "anderson",
        grad: str = "ift",
        max_iter: int = 40,
        tol: float = 1e-3,
        jac_reg: bool = False,
        init_scale: float = 0.5,
        raise_on_divergence: bool = True,
        **solver_kwargs: Any,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("n_classes", n_classes), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DEQClassifier: {name} must be a positive int, got {value!r}")
        self.inject = nn.Linear(in_features, hidden)
        self.inject_norm = nn.LayerNorm(hidden)
        self.layer = TanhEquilibriumLayer(hidden, init_scale)
        self.head = nn.Linear(hidden, n_classes)
        self.deq = DEQSolver(
            solver,
            grad=grad,
            max_iter=max_iter,
            tol=tol,
            jac_reg=jac_reg,
            raise_on_divergence=raise_on_divergence,
            **solver_kwargs,
        )

    def equilibrium(self, x: Tensor, **deq_overrides: Any) -> tuple[Tensor, DEQInfo]:
        """x: (B, in_features) -> (z* (B, hidden), info). ``deq_overrides``: max_iter / tol for this call."""
        if x.dim() != 2:
            raise ValueError(f"DEQClassifier expects x of shape (B, features), got {tuple(x.shape)}")
        u = self.inject_norm(self.inject(x))
        return self.deq(lambda z: self.layer(z, u), torch.zeros_like(u), **deq_overrides)

    def forward(self, x: Tensor, return_info: bool = False, **deq_overrides: Any):
        """x: (B, in_features) float -> logits (B, n_classes); with ``return_info``: (logits, DEQInfo)."""
        z, info = self.equilibrium(x, **deq_overrides)
        logits = self.head(z)
        return (logits, info) if return_info else logits


class CausalRecurrenceLayer(nn.Module):
    """f(z, u)_t = LayerNorm(u_t + W_2 GELU(W_1 [z_{t-1}; ...; z_{t-window}] + u_t)), with z_{<0} = 0.

    Position t reads only the states *before* it, so df/dz is strictly block lower triangular.

    Args:
        dim: state size D; hidden: MLP width; window: how many previous positions each update reads.
    """

    def __init__(self, dim: int, hidden: int, window: int = 1) -> None:
        super().__init__()
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"CausalRecurrenceLayer: window must be an int >= 1, got {window!r}")
        self.window = window
        self.read = nn.Linear(window * dim, hidden)
        self.inject = nn.Linear(dim, hidden, bias=False)
        self.write = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        """z: (B, T, D) states, u: (B, T, D) embedded inputs -> (B, T, D)."""
        T = z.shape[1]
        padded = F.pad(z, (0, 0, self.window, 0))  # (B, T + window, D): zeros before position 0
        previous = torch.cat(
            [padded[:, self.window - k : self.window - k + T] for k in range(1, self.window + 1)], -1
        )
        h = F.gelu(self.read(previous) + self.inject(u))  # (B, T, hidden)
        return self.norm(u + self.write(h))  # z_t = LN(u_t + W_2 h_t)


class DEQSequenceModel(nn.Module):
    """Token sequence -> per-position logits through a causal equilibrium.

        u = Embedding(tokens)                                  (B, T, D)
        z* = f(z*, u)  with f = :class:`CausalRecurrenceLayer`   (B, T, D)
        logits = Linear(z*)                                    (B, T, n_classes)

    The solver budget must cover the sequence: exact convergence needs up to T + 1 evaluations, so
    ``max_iter`` defaults to ``None`` = T + 2 for each call (longer sequences automatically get more).

    Args:
        vocab_size, n_classes: input tokens and output classes.
        dim, hidden: state and MLP sizes.
        window: previous positions read per update.
        solver, grad, tol, max_iter, solver_kwargs: for :class:`DEQSolver`.
    """

    def __init__(
        self,
        vocab_size: int = 2,
        n_classes: int = 2,
        dim: int = 32,
        hidden: int = 64,
        window: int = 1,
        solver: str = "fixed_point_iter",
        grad: str = "ift",
        max_iter: int | None = None,
        tol: float = 1e-4,
        raise_on_divergence: bool = True,
        **solver_kwargs: Any,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("n_classes", n_classes),
            ("dim", dim),
            ("hidden", hidden),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DEQSequenceModel: {name} must be a positive int, got {value!r}")
        self.vocab_size = vocab_size
        self.max_iter = max_iter
        self.embed = nn.Embedding(vocab_size, dim)
        self.layer = CausalRecurrenceLayer(dim, hidden, window)
        self.head = nn.Linear(dim, n_classes)
        self.deq = DEQSolver(
            solver,
            grad=grad,
            max_iter=max_iter or 1,
            tol=tol,
            raise_on_divergence=raise_on_divergence,
            **solver_kwargs,
        )

    def forward(self, tokens: Tensor, return_info: bool = False, **deq_overrides: Any):
        """tokens: (B, T) int64 in [0, vocab_size) -> logits (B, T, n_classes) (and :class:`DEQInfo`)."""
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"DEQSequenceModel expects (B, T) integer tokens, got {tuple(tokens.shape)} {tokens.dtype}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"DEQSequenceModel: tokens must lie in [0, {self.vocab_size}), got "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        u = self.embed(tokens)
        budget = self.max_iter or tokens.shape[1] + 2  # exact convergence needs T + 1 evaluations
        deq_overrides.setdefault("max_iter", budget)
        deq_overrides.setdefault("b_max_iter", budget)
        z, info = self.deq(lambda z: self.layer(z, u), torch.zeros_like(u), **deq_overrides)
        logits = self.head(z)
        return (logits, info) if return_info else logits
