"""Adaptive computation: ACT (Graves 2016), the Universal Transformer (Dehghani et al. 2018) and PonderNet
(Banino et al. 2021).

All three apply *one* step function again and again (weight-tied depth) and let the network decide how many
times. Read top to bottom:

1. :func:`act` -- Graves's halting loop around any step function ``state -> (state, output, halting prob)``.
2. :class:`ParityPonderCell` -- a GRU step for the static-vector parity task, shared by the two parity models.
3. :class:`ACTParityNet` -- the cell inside :func:`act` (Graves's parity experiment, scaled down).
4. :class:`UniversalTransformer` -- a weight-tied Transformer block iterated with per-position ACT.
5. PonderNet: :func:`pondernet_halting_distribution`, :func:`truncated_geometric_prior`, :func:`pondernet_loss`,
   :func:`sample_halting_step` and :class:`PonderNetParityNet`.
6. Pointer chasing, where a harder input needs more steps: :class:`PointerHopCell` (one pointer hop per step),
   :class:`ACTPointerNet` and :class:`PonderNetPointerNet`.

ACT equations (per unit u -- an example, or a position for the Universal Transformer -- and ponder step n):

    s^n = S(s^{n-1}, x^n),   y^n = W_y s^n + b_y,   h^n = sigmoid(W_h s^n + b_h)
    N   = min{ M, min{ n' : sum_{n<=n'} h^n >= 1 - eps } }
    R   = 1 - sum_{n<N} h^n                       (the remainder)
    p^n = h^n for n < N,  p^N = R                 (so sum_n p^n = 1 exactly)
    y   = sum_n p^n y^n,   s = sum_n p^n s^n      (mean-field output and state: deterministic, differentiable)
    rho = N + R                                   (ponder cost; loss = task loss + tau * mean(rho))

N is piecewise constant in the parameters, so the ponder cost's gradient flows only through R.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.nn.blocks import TransformerBlock

__all__ = [
    "ACTResult",
    "act",
    "ParityPonderCell",
    "ACTParityNet",
    "coordinate_embedding",
    "UniversalTransformer",
    "pondernet_halting_distribution",
    "truncated_geometric_prior",
    "PonderLoss",
    "pondernet_loss",
    "sample_halting_step",
    "expected_steps",
    "PonderNetResult",
    "PonderNetParityNet",
    "pondernet_step_losses",
    "pondernet_unroll",
    "PointerHopCell",
    "ACTPointerNet",
    "PonderNetPointerNet",
]

StepFn = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------------------------------------------
# 1. The ACT halting loop
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ACTResult:
    """What :func:`act` returns. ``U`` is the shape of the halting units (e.g. ``(B,)`` or ``(B, T)``).

    Attributes:
        output: ``(*U, ...)`` mean-field output ``sum_n p^n y^n``.
        state: ``(*U, ...)`` mean-field state ``sum_n p^n s^n``.
        halting_probs: ``(*U, S)`` float, ``p^n`` for the ``S`` steps that were run (0 after a unit halted).
        n_steps: ``(*U,)`` int64, ``N`` for each unit (1..max_steps).
        remainder: ``(*U,)`` float, ``R = 1 - sum_{n<N} h^n``.
    """

    output: torch.Tensor
    state: torch.Tensor
    halting_probs: torch.Tensor
    n_steps: torch.Tensor
    remainder: torch.Tensor

    @property
    def ponder_cost(self) -> torch.Tensor:
        """``(*U,)`` float ``rho = N + R``; its gradient flows only through ``R``."""
        return self.n_steps.to(self.remainder.dtype) + self.remainder


def _unsqueeze_like(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Append singleton dims to ``weights`` ``(*U,)`` so that it broadcasts against ``like`` ``(*U, ...)``."""
    return weights.reshape(weights.shape + (1,) * (like.dim() - weights.dim()))


def act(
    step_fn: StepFn,
    state: torch.Tensor,
    max_steps: int,
    epsilon: float = 0.01,
    halt_shape: tuple[int, ...] | None = None,
) -> ACTResult:
    """Run Graves's Adaptive Computation Time loop around ``step_fn``.

    Args:
        step_fn: ``step_fn(state, n) -> (new_state, output, halt_prob)`` for ponder step ``n = 1, 2, ...``;
            ``state``/``new_state``: ``(*U, ...)`` tensors, ``output``: ``(*U, ...)``, ``halt_prob``: ``(*U,)`` in
            [0, 1] (a sigmoid of a halting unit). ``n`` lets the step add a first-step flag or a step embedding.
        state: ``(*U, ...)`` the initial state ``s^0``.
        max_steps: M, the most ponder steps any unit may take (>= 1).
        epsilon: a unit halts once its cumulative halting probability reaches ``1 - epsilon`` (0 <= eps < 1).
        halt_shape: the shape ``U`` of the halting units; default: the shape of the first ``halt_prob``.

    Returns:
        an :class:`ACTResult`. Units that have halted keep their state frozen (the Universal Transformer's
        "copy the state forward"), so later steps can still read it; the loop stops early once all have halted.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    if not 0.0 <= float(epsilon) < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon!r}")
    if not torch.is_tensor(state):
        raise TypeError(f"state must be a torch.Tensor, got {type(state).__name__}")

    cumulative = running = n_steps = remainder = None
    output_sum = state_sum = None
    probs: list[torch.Tensor] = []
    for n in range(1, max_steps + 1):
        new_state, output, halt_prob = step_fn(state, n)
        if cumulative is None:  # first step: learn the unit shape and allocate the bookkeeping
            shape = tuple(halt_prob.shape) if halt_shape is None else tuple(halt_shape)
            if tuple(halt_prob.shape) != shape:
                raise ValueError(f"step_fn returned halt_prob of shape {tuple(halt_prob.shape)}, expected {shape}")
            if tuple(new_state.shape[: len(shape)]) != shape or tuple(output.shape[: len(shape)]) != shape:
                raise ValueError(
                    f"state {tuple(new_state.shape)} and output {tuple(output.shape)} must start with the "
                    f"halting-unit shape {shape}"
                )
            cumulative = halt_prob.new_zeros(shape)  # sum_{k<n} h^k of running units
            remainder = halt_prob.new_zeros(shape)
            running = torch.ones(shape, dtype=torch.bool, device=halt_prob.device)
            n_steps = torch.zeros(shape, dtype=torch.long, device=halt_prob.device)
        elif halt_prob.shape != cumulative.shape:
            raise ValueError(f"halt_prob changed shape at step {n}: {tuple(halt_prob.shape)}")

        # Halt where the cumulative sum would reach 1 - eps, and everywhere at the cap M.
        if n == max_steps:
            halts_now = running
        else:
            halts_now = running & (cumulative + halt_prob >= 1.0 - epsilon)
        # p^n = R for the halting step, h^n while still running, 0 once halted.
        p = torch.where(halts_now, 1.0 - cumulative, torch.where(running, halt_prob, torch.zeros_like(halt_prob)))
        remainder = torch.where(halts_now, 1.0 - cumulative, remainder)
        n_steps = torch.where(halts_now, torch.full_like(n_steps, n), n_steps)

        weighted_out = _unsqueeze_like(p, output) * output
        weighted_state = _unsqueeze_like(p, new_state) * new_state
        output_sum = weighted_out if output_sum is None else output_sum + weighted_out
        state_sum = weighted_state if state_sum is None else state_sum + weighted_state
        probs.append(p)

        still_running = running & ~halts_now
        cumulative = cumulative + torch.where(still_running, halt_prob, torch.zeros_like(halt_prob))
        # Halted units copy their state forward (frozen), running units take the new state.
        state = torch.where(_unsqueeze_like(running, new_state), new_state, state)
        running = still_running
        if not bool(running.any()):
            break

    return ACTResult(
        output=output_sum,
        state=state_sum,
        halting_probs=torch.stack(probs, dim=-1),
        n_steps=n_steps,
        remainder=remainder,
    )


# ----------------------------------------------------------------------------------------------------------------
# 2-3. A recurrent step for static-vector parity, and ACT around it
# ----------------------------------------------------------------------------------------------------------------


class ParityPonderCell(nn.Module):
    """One ponder step for the parity task: a GRU cell that reads the same vector at every step.

    Input at step n is ``[x, 1]`` for n = 1 and ``[x, 0]`` after (Graves's binary first-step flag).
    ``forward(x (B, E), state (B, H), n) -> (state (B, H), logits (B, 2), halt_prob (B,))``.
    """

    def __init__(self, n_elems: int, hidden: int = 128, halt_bias_init: float = 1.0) -> None:
        super().__init__()
        if n_elems < 1 or hidden < 1:
            raise ValueError(f"n_elems and hidden must be >= 1, got n_elems={n_elems}, hidden={hidden}")
        self.n_elems = n_elems
        self.hidden = hidden
        self.cell = nn.GRUCell(n_elems + 1, hidden)
        self.to_logits = nn.Linear(hidden, 2)  # y^n = W_y s^n + b_y
        self.to_halt = nn.Linear(hidden, 1)  # h^n = sigmoid(W_h s^n + b_h)
        # The halting bias sets the initial number of steps: sigmoid(1.0) ~ 0.73 halts after ~2 steps
        # (the tensor2tensor Universal Transformer default), so training starts cheap and learns to ponder.
        nn.init.constant_(self.to_halt.bias, halt_bias_init)

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H) zeros: the parity task has a single input step, so pondering starts from s^0 = 0."""
        return x.new_zeros(x.shape[0], self.hidden)

    def forward(self, x: torch.Tensor, state: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flag = x.new_full((x.shape[0], 1), 1.0 if n == 1 else 0.0)
        state = self.cell(torch.cat([x, flag], dim=-1), state)
        # Halting probabilities in fp32: under bf16 autocast 1 - eps = 0.99 is not even representable.
        return state, self.to_logits(state), torch.sigmoid(self.to_halt(state).float()).squeeze(-1)


def _check_vectors(x: torch.Tensor, n_elems: int) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"x must be a float tensor of shape (B, {n_elems}), got {getattr(x, 'dtype', type(x))}")
    if x.dim() != 2 or x.shape[1] != n_elems:
        raise ValueError(f"x must have shape (B, {n_elems}), got {tuple(x.shape)}")


class ACTParityNet(nn.Module):
    """Graves's parity model: a recurrent cell pondering one static vector, halted by :func:`act`.

    ``forward(x (B, n_elems) float) -> ACTResult`` with ``output`` = mean-field logits (B, 2), ``n_steps`` (B,),
    ``ponder_cost`` (B,). Train with ``cross_entropy(result.output, y) + tau * result.ponder_cost.mean()``.
    """

    def __init__(
        self,
        n_elems: int = 8,
        hidden: int = 128,
        max_steps: int = 20,
        epsilon: float = 0.01,
        halt_bias_init: float = 1.0,
    ) -> None:
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.cell = ParityPonderCell(n_elems, hidden, halt_bias_init)
        self.max_steps = max_steps
        self.epsilon = epsilon

    def forward(self, x: torch.Tensor) -> ACTResult:
        _check_vectors(x, self.cell.n_elems)

        def step(state: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return self.cell(x, state, n)

        return act(step, self.cell.initial_state(x), self.max_steps, self.epsilon)


# ----------------------------------------------------------------------------------------------------------------
# 4. Universal Transformer: one tied block, iterated with per-position ACT
# ----------------------------------------------------------------------------------------------------------------


def coordinate_embedding(seq_len: int, step: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """The Universal Transformer's position + step ("coordinate") embedding, (T, D).

    P^t_{i,2j} = sin(i / 10000^{2j/d}) + sin(t / 10000^{2j/d}),  P^t_{i,2j+1} = cos(i / ...) + cos(t / ...).
    """
    if dim % 2:
        raise ValueError(f"dim must be even for the sinusoidal coordinate embedding, got {dim}")
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    pos = torch.arange(seq_len, device=device, dtype=torch.float32)[:, None] * freqs  # (T, D/2)
    stp = float(step) * freqs  # (D/2,)
    emb = torch.empty(seq_len, dim, device=device)
    emb[:, 0::2] = torch.sin(pos) + torch.sin(stp)
    emb[:, 1::2] = torch.cos(pos) + torch.cos(stp)
    return emb


class UniversalTransformer(nn.Module):
    """A Universal-Transformer encoder: ONE Transformer block applied up to ``max_steps`` times, halted per position.

    Each step: ``H^t = Block(H^{t-1} + P^t)`` (P^t the coordinate embedding), ``h^t = sigmoid(w . H^t + b)``;
    :func:`act` halts each position separately (halted positions stay frozen but are still attended to).
    With ``use_act=False`` every position runs exactly ``max_steps`` steps (a plain weight-tied stack).

    ``forward(tokens (B, T) int64) -> (logits (B, T, n_classes), ACTResult with units (B, T))``.
    """

    def __init__(
        self,
        vocab_size: int,
        n_classes: int,
        dim: int = 64,
        n_heads: int = 4,
        max_steps: int = 8,
        epsilon: float = 0.01,
        halt_bias_init: float = 1.0,
        use_act: bool = True,
        block: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim ({dim}) must be divisible by n_heads ({n_heads})")
        self.dim, self.max_steps, self.epsilon, self.use_act = dim, max_steps, epsilon, use_act
        self.embed = nn.Embedding(vocab_size, dim)
        self.block = block if block is not None else _default_block(dim, n_heads)
        self.to_halt = nn.Linear(dim, 1)
        nn.init.constant_(self.to_halt.bias, halt_bias_init)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ACTResult]:
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be an int64 tensor (B, T), got {tokens.dtype} {tuple(tokens.shape)}")
        state = self.embed(tokens) * math.sqrt(self.dim)
        seq_len = tokens.shape[1]

        def step(h: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            h = self.block(h + coordinate_embedding(seq_len, n, self.dim, h.device).to(h.dtype))
            halt = torch.sigmoid(self.to_halt(h).float()).squeeze(-1)
            if not self.use_act:  # never halt before the cap: a plain tied stack of max_steps layers
                halt = torch.zeros_like(halt)
            return h, h, halt

        result = act(step, state, self.max_steps, self.epsilon)
        return self.head(result.state), result


def _default_block(dim: int, n_heads: int) -> nn.Module:
    """The shared post-norm Transformer block (``recursionlab.nn.blocks``), as in the Universal Transformer paper."""
    return TransformerBlock(dim, n_heads, norm="post", causal=False)


# ----------------------------------------------------------------------------------------------------------------
# 5. PonderNet: a probabilistic halting distribution and a KL prior
# ----------------------------------------------------------------------------------------------------------------


def _check_probabilities(name: str, values: torch.Tensor) -> None:
    if not torch.is_tensor(values) or not values.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {getattr(values, 'dtype', type(values))}")
    if values.dim() < 1 or values.shape[-1] < 1:
        raise ValueError(f"{name} must have a last dimension of ponder steps N >= 1, got {tuple(values.shape)}")
    if bool(((values < 0) | (values > 1) | torch.isnan(values)).any()):
        raise ValueError(f"{name} must lie in [0, 1] (probabilities), got values in [{values.min()}, {values.max()}]")


def pondernet_halting_distribution(lambdas: torch.Tensor) -> torch.Tensor:
    """PonderNet's unconditional halting probabilities.

    p_n = lambda_n * prod_{j<n} (1 - lambda_j), with lambda_N := 1 at the cap so that sum_n p_n = 1.

    Args:
        lambdas: (..., N) conditional halting probabilities in [0, 1].
    Returns:
        p: (..., N), non-negative and summing to 1 over the last dim.
    """
    _check_probabilities("lambdas", lambdas)
    lambdas = torch.cat([lambdas[..., :-1], torch.ones_like(lambdas[..., -1:])], dim=-1)
    # prod_{j<n}(1 - lambda_j): an exclusive cumulative product (1 for n = 1).
    survive = torch.cumprod(1.0 - lambdas, dim=-1)
    not_halted_before = torch.cat([torch.ones_like(survive[..., :1]), survive[..., :-1]], dim=-1)
    return lambdas * not_halted_before


def truncated_geometric_prior(
    lambda_p: float, n_steps: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> torch.Tensor:
    """The PonderNet prior p_G(n) = (1 - lambda_p)^n lambda_p for n = 0..N-1, renormalised to sum to 1 on N steps.

    Returns (N,). Its mean is about 1/lambda_p steps when N is much larger than that.
    """
    if not 0.0 < float(lambda_p) <= 1.0:
        raise ValueError(f"lambda_p must be in (0, 1], got {lambda_p!r}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
    k = torch.arange(n_steps, dtype=torch.float64, device=device)
    prior = (1.0 - lambda_p) ** k * lambda_p
    return (prior / prior.sum()).to(dtype)


@dataclass
class PonderLoss:
    """The PonderNet loss and its parts (0-d tensors): ``total = reconstruction + beta * kl``."""

    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def pondernet_loss(step_losses: torch.Tensor, halting_dist: torch.Tensor, lambda_p: float, beta: float) -> PonderLoss:
    """L = sum_n p_n L_n + beta * KL(p || p_G(lambda_p)), averaged over the batch.

    Args:
        step_losses: (B, N) task loss of the prediction made at each ponder step.
        halting_dist: (B, N) PonderNet halting distribution p (see :func:`pondernet_halting_distribution`).
        lambda_p: the geometric prior's halting probability (expected steps ~ 1/lambda_p).
        beta: weight of the KL term (>= 0).
    """
    if step_losses.shape != halting_dist.shape or step_losses.dim() != 2:
        raise ValueError(
            f"step_losses and halting_dist must both be (B, N), got {tuple(step_losses.shape)} and "
            f"{tuple(halting_dist.shape)}"
        )
    if float(beta) < 0:
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    prior = truncated_geometric_prior(lambda_p, halting_dist.shape[-1], halting_dist.dtype, halting_dist.device)
    reconstruction = (halting_dist * step_losses).sum(-1).mean()
    # KL(p || p_G) = sum_n p_n (log p_n - log p_G(n)), with 0 * log 0 = 0. A saturated sigmoid (lambda_n = 1 in
    # fp32) makes later p_n exactly 0; xlogy(p, p) would then back-propagate log(0) * 0 = NaN, so clamp inside the log.
    log_p = torch.log(halting_dist.clamp_min(torch.finfo(halting_dist.dtype).tiny))
    kl = (halting_dist * (log_p - prior.log())).sum(-1).mean()
    return PonderLoss(total=reconstruction + beta * kl, reconstruction=reconstruction, kl=kl)


def sample_halting_step(lambdas: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample PonderNet's halting step at test time: walk n = 1..N, halt with probability lambda_n (lambda_N = 1).

    Args:
        lambdas: (B, N) conditional halting probabilities.
        generator: optional ``torch.Generator`` on the same device as ``lambdas``.
    Returns:
        (B,) int64 zero-based index of the halting step (0..N-1).
    """
    _check_probabilities("lambdas", lambdas)
    coins = torch.rand(lambdas.shape, generator=generator, device=lambdas.device, dtype=lambdas.dtype)
    halts = coins < lambdas
    halts[..., -1] = True  # lambda_N = 1
    return halts.float().argmax(dim=-1)  # the first True


def expected_steps(halting_dist: torch.Tensor) -> torch.Tensor:
    """(...,) expected number of ponder steps ``sum_n n p_n`` (n counted from 1) of a (..., N) halting distribution."""
    n = torch.arange(1, halting_dist.shape[-1] + 1, dtype=halting_dist.dtype, device=halting_dist.device)
    return (halting_dist * n).sum(-1)


@dataclass
class PonderNetResult:
    """PonderNet's outputs for every ponder step.

    Attributes:
        logits: (B, N, C) prediction at each step;  lambdas: (B, N) conditional halting probabilities;
        halting_dist: (B, N) ``p_n`` (sums to 1).
    """

    logits: torch.Tensor
    lambdas: torch.Tensor
    halting_dist: torch.Tensor

    def at_sampled_step(self, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Test time: sample a halting step per example from the lambdas; returns that step's logits (B, C) and
        the step (B,) (1-based)."""
        halt = sample_halting_step(self.lambdas, generator)
        chosen = self.logits.gather(1, halt[:, None, None].expand(-1, 1, self.logits.shape[-1])).squeeze(1)
        return chosen, halt + 1


def pondernet_unroll(step_fn: StepFn, state: torch.Tensor, max_steps: int) -> PonderNetResult:
    """Run ``step_fn(state, n) -> (state, y_n, lambda_n)`` for n = 1..max_steps (no early exit: every step's
    prediction is scored) and collect the :class:`PonderNetResult` (``lambda_N`` is forced to 1 by
    :func:`pondernet_halting_distribution`)."""
    logits, lambdas = [], []
    for n in range(1, max_steps + 1):
        state, y_n, lambda_n = step_fn(state, n)
        logits.append(y_n)
        lambdas.append(lambda_n)
    lam = torch.stack(lambdas, dim=1)
    return PonderNetResult(torch.stack(logits, dim=1), lam, pondernet_halting_distribution(lam))


class PonderNetParityNet(nn.Module):
    """PonderNet on static-vector parity: the same GRU step as ACT, run for ``max_steps`` steps, with
    lambda_n = sigmoid(W_h s^n + b_h) read as a conditional halting probability.

    ``forward(x (B, n_elems) float) -> PonderNetResult``; ``predict(x, generator) -> (logits (B, 2), steps (B,))``
    samples the halting step as at test time.
    """

    def __init__(self, n_elems: int = 8, hidden: int = 128, max_steps: int = 20, halt_bias_init: float = -1.0) -> None:
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        # sigmoid(-1) ~ 0.27: a start near the prior's 1/lambda_p steps for lambda_p ~ 0.2-0.3.
        self.cell = ParityPonderCell(n_elems, hidden, halt_bias_init)
        self.max_steps = max_steps

    def forward(self, x: torch.Tensor) -> PonderNetResult:
        _check_vectors(x, self.cell.n_elems)
        return pondernet_unroll(lambda state, n: self.cell(x, state, n), self.cell.initial_state(x), self.max_steps)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Test-time prediction: sample a halting step per example; returns logits (B, 2) and steps (B,) (1-based)."""
        return self.forward(x).at_sampled_step(generator)


def pondernet_step_losses(result: PonderNetResult, targets: torch.Tensor) -> torch.Tensor:
    """(B, N) cross-entropy of each step's prediction against ``targets`` (B,) int64."""
    b, n, c = result.logits.shape
    return F.cross_entropy(result.logits.reshape(b * n, c), targets.repeat_interleave(n), reduction="none").view(b, n)


# ----------------------------------------------------------------------------------------------------------------
# 6. Pointer chasing: one hop per ponder step, so harder inputs need more steps
# ----------------------------------------------------------------------------------------------------------------


def _check_pointer_inputs(parents: torch.Tensor, query: torch.Tensor, num_nodes: int) -> None:
    bad_table = not torch.is_tensor(parents) or parents.dtype != torch.long or parents.dim() != 2
    if bad_table or parents.shape[1] != num_nodes:
        raise ValueError(f"parents must be an int64 tensor of shape (B, {num_nodes}), got "
                         f"{getattr(parents, 'dtype', type(parents).__name__)} {tuple(getattr(parents, 'shape', ()))}")
    if not torch.is_tensor(query) or query.dtype != torch.long or tuple(query.shape) != (parents.shape[0],):
        raise ValueError(f"query must be an int64 tensor of shape ({parents.shape[0]},), got "
                         f"{getattr(query, 'dtype', type(query).__name__)} {tuple(getattr(query, 'shape', ()))}")
    for name, ids in (("parents", parents), ("query", query)):
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_nodes):
            raise ValueError(f"{name} ids must lie in 0..{num_nodes - 1}, got {int(ids.min())}..{int(ids.max())}")


class PointerHopCell(nn.Module):
    """One ponder step for pointer chasing: read the current node's parent from the node table (one hop).

    The input is a forest as a table of parent pointers and a query node (``recursionlab.data.pointer_chase``).
    Every node id ``i`` has a learned embedding ``e_i``; the table is encoded once as keys ``k_i = W_k e_i`` (which
    node a row is about) and values ``v_i = W_v e_{parent(i)}`` (where it points). The state ``s`` is "the node I
    am at", written like a value: ``s^0 = W_v e_query``. One step::

        a^n = softmax_i( (W_q s^{n-1}) . k_i / sqrt(D) )       attend to the row of the current node
        s^n = sum_i a^n_i v_i                                  read its parent: one hop
        c^n = [ |s^n - s^{n-1}|, s^n * s^{n-1} ]               did the hop move? (matching features)
        h^n = sigmoid( w_h . relu(W_c c^n + b_c) + b_h )       halting probability
        y^n = (W_o s^n) . e_j  for every node j                logits over nodes: "the root is j"

    A root points to itself, so once the state reaches the root further hops leave it there: the answer can only
    get better with more steps, and the halting unit can learn "the hop did not move, stop". A query of depth d
    then needs d hops plus one step to notice, d + 1 steps; nothing in the cell can reach the root faster.

    ``encode(parents (B, N), query (B,)) -> (keys (B, N, D), values (B, N, D), s^0 (B, D))``;
    ``forward(keys, values, state (B, D)) -> (state (B, D), logits (B, N), halt_prob (B,))``.
    """

    def __init__(self, num_nodes: int, dim: int = 32, halt_hidden: int = 32, halt_bias_init: float = -1.0) -> None:
        super().__init__()
        if num_nodes < 1 or dim < 1 or halt_hidden < 1:
            raise ValueError(
                f"num_nodes, dim and halt_hidden must be >= 1, got {num_nodes}, {dim}, {halt_hidden}"
            )
        self.num_nodes, self.dim = num_nodes, dim
        self.node_embed = nn.Embedding(num_nodes, dim)
        self.to_query = nn.Linear(dim, dim, bias=False)
        self.to_key = nn.Linear(dim, dim, bias=False)
        self.to_value = nn.Linear(dim, dim, bias=False)
        self.halt_hidden = nn.Linear(2 * dim, halt_hidden)
        self.to_halt = nn.Linear(halt_hidden, 1)
        self.to_answer = nn.Linear(dim, dim)
        # sigmoid(-1) ~ 0.27: about 4 steps at initialisation, as in the parity recipe.
        nn.init.constant_(self.to_halt.bias, halt_bias_init)

    def encode(self, parents: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_pointer_inputs(parents, query, self.num_nodes)
        ids = torch.arange(self.num_nodes, device=parents.device)
        keys = self.to_key(self.node_embed(ids)).expand(parents.shape[0], -1, -1)  # (B, N, D)
        values = self.to_value(self.node_embed(parents))  # (B, N, D)
        return keys, values, self.to_value(self.node_embed(query))

    def forward(
        self, keys: torch.Tensor, values: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores = torch.einsum("bd,bnd->bn", self.to_query(state), keys) / math.sqrt(self.dim)
        new_state = torch.einsum("bn,bnd->bd", torch.softmax(scores, dim=-1), values)
        compare = torch.cat([(new_state - state).abs(), new_state * state], dim=-1)
        halt_logit = self.to_halt(torch.relu(self.halt_hidden(compare))).squeeze(-1)
        logits = self.to_answer(new_state) @ self.node_embed.weight.t()  # (B, N)
        # Halting probabilities in fp32 (see ParityPonderCell).
        return new_state, logits, torch.sigmoid(halt_logit.float())


class ACTPointerNet(nn.Module):
    """ACT around :class:`PointerHopCell`: chase pointers from the query until the halting unit says "root".

    ``forward(parents (B, N) int64, query (B,) int64) -> ACTResult`` with ``output`` = mean-field logits over
    nodes (B, N), ``n_steps`` (B,), ``ponder_cost`` (B,). Train with
    ``cross_entropy(result.output, root) + tau * result.ponder_cost.mean()``.
    """

    def __init__(
        self,
        num_nodes: int = 16,
        dim: int = 32,
        max_steps: int = 10,
        epsilon: float = 0.01,
        halt_bias_init: float = -1.0,
        halt_hidden: int = 32,
    ) -> None:
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.cell = PointerHopCell(num_nodes, dim, halt_hidden, halt_bias_init)
        self.max_steps, self.epsilon = max_steps, epsilon

    def forward(self, parents: torch.Tensor, query: torch.Tensor) -> ACTResult:
        keys, values, state = self.cell.encode(parents, query)

        def step(state: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return self.cell(keys, values, state)

        return act(step, state, self.max_steps, self.epsilon)


class PonderNetPointerNet(nn.Module):
    """PonderNet around :class:`PointerHopCell`: run ``max_steps`` hops, read ``h^n`` as lambda_n.

    ``forward(parents (B, N), query (B,)) -> PonderNetResult`` (logits (B, max_steps, N));
    ``predict(parents, query, generator) -> (logits (B, N), steps (B,))`` samples the halting step.
    """

    def __init__(
        self,
        num_nodes: int = 16,
        dim: int = 32,
        max_steps: int = 10,
        halt_bias_init: float = -1.0,
        halt_hidden: int = 32,
    ) -> None:
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.cell = PointerHopCell(num_nodes, dim, halt_hidden, halt_bias_init)
        self.max_steps = max_steps

    def forward(self, parents: torch.Tensor, query: torch.Tensor) -> PonderNetResult:
        keys, values, state = self.cell.encode(parents, query)
        return pondernet_unroll(lambda state, n: self.cell(keys, values, state), state, self.max_steps)

    @torch.no_grad()
    def predict(
        self, parents: torch.Tensor, query: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Test time: sample a halting step per example; returns logits (B, N) and steps (B,) (1-based)."""
        return self.forward(parents, query).at_sampled_step(generator)
