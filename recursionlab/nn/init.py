"""Initialisers used by HRM and TRM: the truncated LeCun normal with the standard-deviation correction.

``torch.nn.init.trunc_normal_(t, std=s, a=-2s, b=2s)`` cuts the tails of N(0, s^2) but does not rescale, so
the samples' real standard deviation is only ~0.88 s. JAX's ``truncated_normal`` initialisers (and the HRM
code, which comments on exactly this) divide by the truncated distribution's standard deviation so that the
*actual* std is s.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _std_normal_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _std_normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def truncated_normal_std(lower: float = -2.0, upper: float = 2.0) -> float:
    """Standard deviation of a standard normal truncated to ``[lower, upper]`` (0.8796 for +-2)."""
    if not lower < upper:
        raise ValueError(f"need lower < upper, got lower={lower}, upper={upper}")
    z = _std_normal_cdf(upper) - _std_normal_cdf(lower)
    pa, pb = _std_normal_pdf(lower), _std_normal_pdf(upper)
    var = 1.0 + (lower * pa - upper * pb) / z - ((pa - pb) / z) ** 2
    return math.sqrt(var)


@torch.no_grad()
def trunc_normal_corrected_(
    tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0
) -> torch.Tensor:
    """Fill ``tensor`` in place from a normal truncated at ``[lower, upper]`` standard deviations,
    rescaled so the result has standard deviation exactly ``std``. Returns ``tensor`` (any shape)."""
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    if std == 0:
        return tensor.zero_()
    nn.init.trunc_normal_(tensor, mean=0.0, std=1.0, a=lower, b=upper)
    return tensor.mul_(std / truncated_normal_std(lower, upper))


def lecun_trunc_normal_(tensor: torch.Tensor, fan_in: int | None = None, gain: float = 1.0) -> torch.Tensor:
    """LeCun normal init, truncated at +-2 sigma with the std correction: target std ``gain / sqrt(fan_in)``.

    tensor: a weight of shape (out, in, ...) -- ``fan_in`` defaults to ``tensor.shape[1] * prod(shape[2:])``
    (``nn.Linear`` stores (out_features, in_features)). Returns ``tensor``, filled in place.
    """
    if fan_in is None:
        if tensor.dim() < 2:
            raise ValueError(f"cannot infer fan_in of a tensor of shape {tuple(tensor.shape)}; pass fan_in=")
        fan_in = tensor.shape[1] * math.prod(tensor.shape[2:])
    if fan_in <= 0:
        raise ValueError(f"fan_in must be positive, got {fan_in}")
    return trunc_normal_corrected_(tensor, std=gain / math.sqrt(fan_in))


def init_linears_lecun_(module: nn.Module) -> nn.Module:
    """Re-initialise every ``nn.Linear`` in ``module``: weight LeCun trunc-normal (corrected), bias zero."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            lecun_trunc_normal_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
    return module
