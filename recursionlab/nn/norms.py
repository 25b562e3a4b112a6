"""Root-mean-square normalisation (Zhang & Sennrich 2019, arXiv 1910.07467).

``rms_norm`` is the parameter-free form HRM and TRM use ("scale and bias parameters are excluded from
RMSNorm", HRM paper section 2); ``RMSNorm`` adds an optional learnable gain for the models that have one
(e.g. Huginn). Both compute in float32 whatever the input dtype, because the mean of squares of bf16
activations loses the small entries, then cast back.
"""

from __future__ import annotations

import torch
from torch import nn


def rms_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise the last axis to unit root-mean-square: ``x / sqrt(mean(x**2) + eps)``.

    x: (..., D) any float dtype -> (..., D) same dtype. Computed in float32.
    """
    if not torch.is_floating_point(x):
        raise TypeError(f"rms_norm needs a floating-point tensor, got dtype {x.dtype}")
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return x32.to(dtype)


class RMSNorm(nn.Module):
    """RMS normalisation of the last axis, with an optional learnable per-channel gain.

    Args:
        dim: size D of the normalised (last) axis.
        learnable: if True a gain ``weight`` (D,) initialised to ones multiplies the result; if False the
            module has no parameters at all (HRM/TRM).
        eps: added to the mean square for stability.

    forward: x (..., D) -> (..., D), same dtype.
    """

    def __init__(self, dim: int, learnable: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        if int(dim) <= 0:
            raise ValueError(f"RMSNorm dim must be a positive integer, got {dim}")
        self.dim = int(dim)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(self.dim)) if learnable else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"RMSNorm expected last axis of size {self.dim}, got input of shape {tuple(x.shape)}"
            )
        y = rms_norm(x, self.eps)
        if self.weight is not None:
            y = y * self.weight.to(y.dtype)
        return y

    def extra_repr(self) -> str:
        return f"{self.dim}, learnable={self.weight is not None}, eps={self.eps}"
