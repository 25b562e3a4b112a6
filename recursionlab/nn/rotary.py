"""Rotary position embeddings (Su et al., "RoFormer", arXiv 2104.09864), rotate-half convention.

Channel pairs (i, i + Dh/2) of every query and key are rotated by the angle ``pos * base**(-2i/Dh)``:

    rope(x) = x * cos + rotate_half(x) * sin,   rotate_half([a, b]) = [-b, a]

so the dot product of a rotated query and key depends only on their relative position. Tables are built and
applied in float32 (as in HRM) and the result is cast back to the input dtype.
"""

from __future__ import annotations

import torch
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[a, b] -> [-b, a] on the last axis. x: (..., Dh) with Dh even."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys.

    x: (B, H, T, Dh); cos, sin: (T, Dh) (broadcast over batch and heads) -> (B, H, T, Dh), dtype of x.
    """
    if x.shape[-1] != cos.shape[-1] or x.shape[-2] != cos.shape[-2] or cos.shape != sin.shape:
        raise ValueError(
            f"rotary shapes disagree: x {tuple(x.shape)} needs cos/sin of shape (T={x.shape[-2]}, "
            f"Dh={x.shape[-1]}), got cos {tuple(cos.shape)}, sin {tuple(sin.shape)}"
        )
    x32 = x.float()
    return (x32 * cos.float() + rotate_half(x32) * sin.float()).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Cached cos/sin tables for positions ``0 .. max_positions-1``.

    Args:
        head_dim: Dh, must be even.
        max_positions: number of positions tabulated.
        base: the frequency base theta (10000 in HRM/TRM).

    forward(positions (T,) long) -> (cos, sin), each (T, Dh) float32.
    The tables are non-persistent buffers: they follow ``.to(device)`` but are not saved in checkpoints.
    """

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim <= 0 or head_dim % 2:
            raise ValueError(f"RotaryEmbedding head_dim must be a positive even integer, got {head_dim}")
        if max_positions <= 0:
            raise ValueError(f"RotaryEmbedding max_positions must be positive, got {max_positions}")
        self.head_dim, self.max_positions, self.base = int(head_dim), int(max_positions), float(base)
        inv_freq = 1.0 / (self.base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)  # (P, Dh/2)
        angles = torch.cat((angles, angles), dim=-1)  # (P, Dh): pair i and i + Dh/2 share an angle
        self.register_buffer("cos_table", angles.cos(), persistent=False)
        self.register_buffer("sin_table", angles.sin(), persistent=False)

    def forward(self, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if positions is None:
            return self.cos_table, self.sin_table
        if positions.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"positions must be an integer tensor, got dtype {positions.dtype}")
        # range check on CPU only: on a GPU it would force a device sync every call; skipped while compiling
        # (reading values back would break the graph; eager runs of the same code have checked them)
        if (
            positions.device.type == "cpu"
            and not torch.compiler.is_compiling()
            and positions.numel()
            and (int(positions.min()) < 0 or int(positions.max()) >= self.max_positions)
        ):
            raise ValueError(
                f"positions must lie in [0, {self.max_positions}); got range "
                f"[{int(positions.min())}, {int(positions.max())}] (raise max_positions)"
            )
        return self.cos_table[positions], self.sin_table[positions]

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, max_positions={self.max_positions}, base={self.base}"
