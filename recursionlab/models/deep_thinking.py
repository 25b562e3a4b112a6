"""Deep Thinking networks (Schwarzschild et al. 2021; Bansal et al. 2022, arXiv 2202.05826), 1-D version.

A network that can "think longer" at test time: one weight-tied block is iterated as many times as you like::

    phi_0 = ReLU(conv(x))                            projection of the input into a width-w feature map
    phi_i = R([phi_{i-1}, x])      i = 1..n          recurrent block (recall: the input x is concatenated again
                                                     at every iteration; without recall R sees only phi_{i-1})
    y_i   = H(phi_i)                                 head: per-position 2-way logits after any iteration

R = (recall conv + ReLU) then residual blocks (conv-ReLU-conv + skip, ReLU), no normalisation; H = three convs.

One difference from the reference code: integer bits are one-hot encoded (2 input channels) by default instead of
fed as a single 0/1 channel. With bias-free convolutions a 0 bit is otherwise indistinguishable from the zero
padding, and at this course's tiny budgets (a few hundred steps) the one-hot input trained far more reliably
across seeds. ``in_channels=1`` gives the reference encoding.

Progressive loss (Bansal et al. 2022), with M = max iterations in training::

    n ~ U{0, ..., M-1},  k ~ U{1, ..., M-n}
    run n iterations without gradient, detach phi_n, run k more with gradient  ->  L_prog = CE(y_{n+k})
    L_max = CE(y_M) (full unroll),   L = (1 - alpha) L_max + alpha L_prog

The detached warm start teaches the block to improve *whatever* state it is given, not to count iterations, so
running it longer than in training keeps refining instead of drifting ("overthinking").

CPU pitfall: the long, normalisation-free iterations produce denormal floats that slow a CPU down 6-25x;
call ``torch.set_flush_denormal(True)`` before training or evaluating on CPU (the recipes do).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BasicBlock1d",
    "DeepThinkingOutput",
    "DeepThinking1d",
    "sample_progressive_iters",
    "progressive_loss",
    "accuracy_per_iteration",
]


def _conv(in_ch: int, out_ch: int) -> nn.Conv1d:
    """A length-preserving 1-D convolution (kernel 3, no bias, as in the reference code)."""
    return nn.Conv1d(in_ch, out_ch, kernel_size=3, padding=1, bias=False)


class BasicBlock1d(nn.Module):
    """Residual block ``ReLU(x + conv(ReLU(conv(x))))`` on (B, W, L)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv(width, width), _conv(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


@dataclass
class DeepThinkingOutput:
    """Outputs of :meth:`DeepThinking1d.forward`.

    Attributes:
        logits: (B, L, 2) prediction after the last iteration.
        state: (B, W, L) the feature map phi after the last iteration (feed it back as ``initial_state``).
        all_logits: (B, n_iters, L, 2) the prediction after every iteration, or ``None`` unless ``return_all``.
    """

    logits: torch.Tensor
    state: torch.Tensor
    all_logits: torch.Tensor | None = None


class DeepThinking1d(nn.Module):
    """1-D Deep Thinking network for per-position binary tasks on bit strings (e.g. prefix sums).

    Args:
        width: channels w of the feature map phi.
        n_blocks: residual blocks inside the recurrent block R.
        recall: concatenate the input to phi at every iteration (the "recall" architecture).
        in_channels: 2 (default): integer bits are one-hot encoded; 1: bits enter as one 0/1 channel (reference
            code); any C: pass (B, C, L) float inputs yourself.

    ``forward(bits (B, L) int64 | (B, C, L) float, n_iters, initial_state=None, return_all=False)
    -> DeepThinkingOutput``. Any ``n_iters >= 1`` works, independent of training.
    """

    # The progressive loss's gradient pass starts from a detached warm state and skips ``projection``: under
    # DDP the trainer must then expect parameters without a gradient in some steps.
    may_leave_parameters_unused = True

    def __init__(self, width: int = 64, n_blocks: int = 2, recall: bool = True, in_channels: int = 2) -> None:
        super().__init__()
        if width < 2 or n_blocks < 1 or in_channels < 1:
            raise ValueError(
                f"need width >= 2, n_blocks >= 1, in_channels >= 1; got width={width}, n_blocks={n_blocks}, "
                f"in_channels={in_channels}"
            )
        self.width, self.recall, self.in_channels = width, recall, in_channels
        self.projection = _conv(in_channels, width)
        layers: list[nn.Module] = []
        if recall:
            layers += [_conv(width + in_channels, width), nn.ReLU()]
        layers += [BasicBlock1d(width) for _ in range(n_blocks)]
        self.recurrent_block = nn.Sequential(*layers)
        self.head = nn.Sequential(
            _conv(width, width), nn.ReLU(), _conv(width, width // 2), nn.ReLU(), _conv(width // 2, 2)
        )

    def _as_channels(self, bits: torch.Tensor) -> torch.Tensor:
        """(B, L) integer bits -> (B, 2, L) one-hot or (B, 1, L) 0/1 floats; (B, C, L) floats pass through."""
        if not torch.is_tensor(bits):
            raise TypeError(f"bits must be a tensor, got {type(bits).__name__}")
        dtype = self.projection.weight.dtype
        if bits.dim() == 2 and not bits.is_floating_point() and self.in_channels in (1, 2):
            if bool(((bits < 0) | (bits > 1)).any()):
                raise ValueError(f"bits must be 0 or 1, got values in [{int(bits.min())}, {int(bits.max())}]")
            if self.in_channels == 1:
                return bits[:, None, :].to(dtype)
            return F.one_hot(bits.long(), 2).transpose(1, 2).to(dtype)
        if bits.dim() == 3 and bits.is_floating_point() and bits.shape[1] == self.in_channels:
            return bits.to(dtype)
        raise ValueError(
            f"bits must be (B, L) integers in {{0, 1}} (in_channels 1 or 2) or (B, {self.in_channels}, L) floats, "
            f"got {bits.dtype} {tuple(bits.shape)}"
        )

    def step(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One iteration phi_i = R([phi_{i-1}, x]) (or R(phi_{i-1}) without recall). state (B, W, L), x (B, C, L)."""
        return self.recurrent_block(torch.cat([state, x], dim=1) if self.recall else state)

    def output_head(self, state: torch.Tensor) -> torch.Tensor:
        """H(phi): (B, W, L) -> logits (B, L, 2)."""
        return self.head(state).transpose(1, 2)

    def forward(
        self,
        bits: torch.Tensor,
        n_iters: int,
        initial_state: torch.Tensor | None = None,
        return_all: bool = False,
    ) -> DeepThinkingOutput:
        if isinstance(n_iters, bool) or not isinstance(n_iters, int) or n_iters < 1:
            raise ValueError(f"n_iters must be an int >= 1, got {n_iters!r}")
        x = self._as_channels(bits)
        if initial_state is None:
            state = F.relu(self.projection(x))  # phi_0
        else:
            expected = (x.shape[0], self.width, x.shape[2])
            if tuple(initial_state.shape) != expected:
                raise ValueError(f"initial_state must have shape {expected}, got {tuple(initial_state.shape)}")
            state = initial_state
        all_logits = []
        for _ in range(n_iters):
            state = self.step(state, x)
            if return_all:
                all_logits.append(self.output_head(state))
        logits = all_logits[-1] if return_all else self.output_head(state)
        return DeepThinkingOutput(logits, state, torch.stack(all_logits, dim=1) if return_all else None)


def sample_progressive_iters(max_iters: int, generator: torch.Generator | None = None) -> tuple[int, int]:
    """Draw the progressive-loss iteration counts: n ~ U{0..M-1} (no grad), k ~ U{1..M-n} (with grad)."""
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters must be an int >= 1, got {max_iters!r}")
    n = int(torch.randint(0, max_iters, (1,), generator=generator))
    k = int(torch.randint(1, max_iters - n + 1, (1,), generator=generator))
    return n, k


def progressive_loss(
    model: DeepThinking1d,
    bits: torch.Tensor,
    targets: torch.Tensor,
    max_iters: int,
    alpha: float,
    n: int,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L = (1 - alpha) CE(y_M) + alpha CE(y_{n+k} after a detached n-iteration warm start).

    Args:
        model: a :class:`DeepThinking1d`.
        bits: (B, L) input bits;  targets: (B, L) int64 labels.
        max_iters: M, the full-unroll length.
        alpha: mix in [0, 1] (1 = progressive loss only, the prefix-sums setting; 0 = plain full unroll).
        n, k: iteration counts from :func:`sample_progressive_iters` (0 <= n < M, 1 <= k <= M - n).
    Returns:
        (loss 0-d, logits (B, L, 2) of the term used for metrics: the progressive one when alpha > 0).
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not (0 <= n < max_iters and 1 <= k <= max_iters - n):
        raise ValueError(f"need 0 <= n < max_iters and 1 <= k <= max_iters - n, got n={n}, k={k}, M={max_iters}")
    if targets.shape != bits.shape[:1] + bits.shape[-1:]:
        raise ValueError(f"targets must be (B, L) matching bits, got {tuple(targets.shape)} vs {tuple(bits.shape)}")

    def ce(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, 2).float(), targets.reshape(-1))

    loss = torch.zeros((), device=targets.device)
    logits = None
    if alpha < 1.0:
        logits = model(bits, max_iters).logits
        loss = loss + (1.0 - alpha) * ce(logits)
    if alpha > 0.0:
        warm = None
        if n > 0:
            with torch.no_grad():
                warm = model(bits, n).state
        logits = model(bits, k, initial_state=None if warm is None else warm.detach()).logits
        loss = loss + alpha * ce(logits)
    return loss, logits


@torch.no_grad()
def accuracy_per_iteration(
    model: DeepThinking1d, bits: torch.Tensor, targets: torch.Tensor, n_iters: int, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy after every iteration 1..n_iters (the "think longer" curve).

    Args:
        bits, targets: (B, L) int64.
    Returns:
        (sequence accuracy (n_iters,), per-position accuracy (n_iters,)) as float tensors on CPU; a sequence counts
        as solved only if every position is right.
    """
    if bits.shape != targets.shape or bits.dim() != 2:
        raise ValueError(f"bits and targets must both be (B, L), got {tuple(bits.shape)} and {tuple(targets.shape)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    seq_correct = torch.zeros(n_iters)
    pos_correct = torch.zeros(n_iters)
    for start in range(0, bits.shape[0], batch_size):
        b = bits[start : start + batch_size].to(device)
        t = targets[start : start + batch_size].to(device)
        correct = model(b, n_iters, return_all=True).all_logits.argmax(-1) == t[:, None, :]  # (b, n_iters, L)
        seq_correct += correct.all(-1).sum(0).float().cpu()
        pos_correct += correct.float().mean(-1).sum(0).cpu()
    model.train(was_training)
    return seq_correct / bits.shape[0], pos_correct / bits.shape[0]
