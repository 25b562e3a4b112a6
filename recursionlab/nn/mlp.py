"""SwiGLU feed-forward layer (Shazeer 2020, "GLU Variants Improve Transformer", arXiv 2002.05202).

    SwiGLU(x) = W_down( silu(W_gate x) * (W_up x) )

The inner width follows the LLaMA/HRM rule: two thirds of ``expansion * dim`` (so the three matrices cost
about as much as a plain 2-matrix MLP of width ``expansion * dim``), rounded up to a multiple of 256. For
HRM/TRM (dim 512, expansion 4) that is 1536. Gate and up projections are one fused matrix; no biases.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.nn.init import lecun_trunc_normal_


def swiglu_inner_dim(dim: int, expansion: float = 4.0, multiple_of: int = 256) -> int:
    """``ceil_to_multiple(round(expansion * dim * 2 / 3))``: 512 -> 1536; 97 (TRM token mixer) -> 512."""
    if dim <= 0 or expansion <= 0 or multiple_of <= 0:
        raise ValueError(f"need positive dim, expansion, multiple_of; got {dim}, {expansion}, {multiple_of}")
    raw = round(expansion * dim * 2 / 3)
    return int(math.ceil(raw / multiple_of) * multiple_of)


class SwiGLU(nn.Module):
    """Gated feed-forward layer over the last axis.

    Args:
        dim: input/output width D.
        expansion: sets the inner width by :func:`swiglu_inner_dim` (ignored when ``inner`` is given).
        multiple_of: the inner width is rounded up to a multiple of this (256 in HRM/TRM; small models on a
            CPU may prefer e.g. 16, since the rounding can dominate their cost).
        inner: explicit inner width.
        bias: add biases (HRM/TRM: no).

    forward: x (..., D) -> (..., D).
    Parameters: ``gate_up`` (2*inner, D) and ``down`` (D, inner), LeCun trunc-normal initialised.
    """

    def __init__(
        self,
        dim: int,
        expansion: float = 4.0,
        inner: int | None = None,
        bias: bool = False,
        multiple_of: int = 256,
    ) -> None:
        super().__init__()
        if int(dim) <= 0:
            raise ValueError(f"SwiGLU dim must be a positive integer, got {dim}")
        if inner is None:
            inner = swiglu_inner_dim(dim, expansion, multiple_of)
        elif int(inner) <= 0:
            raise ValueError(f"SwiGLU inner must be a positive integer, got {inner}")
        self.dim, self.inner = int(dim), int(inner)
        self.gate_up = nn.Linear(self.dim, 2 * self.inner, bias=bias)
        self.down = nn.Linear(self.inner, self.dim, bias=bias)
        for lin in (self.gate_up, self.down):
            lecun_trunc_normal_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"SwiGLU expected last axis of size {self.dim}, got input of shape {tuple(x.shape)}"
            )
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)
