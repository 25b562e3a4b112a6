"""One transformer block: a token mixer then a channel SwiGLU, each wrapped in a residual + RMSNorm.

Three placements of the normalisation (x is the residual stream, f a sub-layer)::

    post     x <- norm(x + f(x))                 (original Transformer; HRM and TRM)
    pre      x <- x + f(norm(x))                 (GPT-2 onwards)
    sandwich x <- x + norm_out(f(norm_in(x)))    (Huginn / recurrent depth)

Two token mixers::

    attention  multi-head self-attention (RoPE optional, KV cache for causal decoding)
    mlp        TRM's attention-free MLP-mixer variant (Tolstikhin et al. 2021, arXiv 2105.01601): a
               SwiGLU applied along the *sequence* axis, i.e. on x transposed to (B, D, T); its RMSNorm is
               taken over the sequence axis too (while transposed), exactly as in the TRM code. Needs a fixed
               ``seq_len``.
"""

from __future__ import annotations

import torch
from torch import nn

from recursionlab.nn.attention import Attention, KVCache
from recursionlab.nn.mlp import SwiGLU
from recursionlab.nn.norms import RMSNorm

NORM_PLACEMENTS = ("post", "pre", "sandwich")
MIXERS = ("attention", "mlp")


class TransformerBlock(nn.Module):
    """Token mixer + SwiGLU with residuals and RMSNorm.

    Args:
        dim: width D; n_heads: attention heads (unused by the mlp mixer).
        norm: "post" | "pre" | "sandwich" (see module docstring).
        causal: causal attention (attention mixer only).
        expansion: SwiGLU expansion (inner width by ``swiglu_inner_dim``); the token mixer uses it too.
        mixer: "attention" | "mlp".
        seq_len: the fixed sequence length T, required by the mlp mixer.
        qk_bias: query/key biases in attention.
        learnable_norm: give each RMSNorm a learnable gain (HRM/TRM: False, parameter-free).
        eps: RMSNorm epsilon.
        ffn_multiple_of: SwiGLU inner widths are rounded up to a multiple of this (HRM/TRM: 256).

    forward(x (B, T, D), rope=(cos, sin) (T, Dh) or None, cache=KVCache or None) -> (B, T, D).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        norm: str = "post",
        causal: bool = False,
        expansion: float = 4.0,
        mixer: str = "attention",
        seq_len: int | None = None,
        qk_bias: bool = False,
        learnable_norm: bool = False,
        eps: float = 1e-5,
        ffn_multiple_of: int = 256,
    ) -> None:
        super().__init__()
        if norm not in NORM_PLACEMENTS:
            raise ValueError(f"unknown norm placement {norm!r}; allowed: {', '.join(NORM_PLACEMENTS)}")
        if mixer not in MIXERS:
            raise ValueError(f"unknown mixer {mixer!r}; allowed: {', '.join(MIXERS)}")
        self.norm_placement, self.mixer_kind, self.dim = norm, mixer, int(dim)
        n_norms = 2 if norm == "sandwich" else 1
        if mixer == "attention":
            self.mixer = Attention(dim, n_heads, causal=causal, qk_bias=qk_bias)
            mix_norm_dim = dim
            self.seq_len = seq_len
        else:
            if seq_len is None or int(seq_len) <= 0:
                raise ValueError(f"mixer='mlp' mixes along the sequence and needs seq_len > 0, got {seq_len}")
            if causal:
                raise ValueError(
                    "mixer='mlp' mixes all positions and cannot be causal; use mixer='attention'"
                )
            self.seq_len = int(seq_len)
            self.mixer = SwiGLU(self.seq_len, expansion=expansion, multiple_of=ffn_multiple_of)
            mix_norm_dim = self.seq_len
        self.mlp = SwiGLU(dim, expansion=expansion, multiple_of=ffn_multiple_of)
        self.mix_norms = nn.ModuleList(RMSNorm(mix_norm_dim, learnable_norm, eps) for _ in range(n_norms))
        self.mlp_norms = nn.ModuleList(RMSNorm(dim, learnable_norm, eps) for _ in range(n_norms))

    # --- the token-mixing sub-layer and its norm (over channels for attention, over positions for mlp) ---
    def _mix(self, x: torch.Tensor, rope, cache: KVCache | None) -> torch.Tensor:
        if self.mixer_kind == "attention":
            return self.mixer(x, rope=rope, cache=cache)
        return self.mixer(x.transpose(1, 2)).transpose(1, 2)

    def _mix_norm(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.mixer_kind == "attention":
            return self.mix_norms[i](x)
        return self.mix_norms[i](x.transpose(1, 2)).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"TransformerBlock expected x of shape (B, T, {self.dim}), got {tuple(x.shape)}")
        if self.mixer_kind == "mlp":
            if x.shape[1] != self.seq_len:
                raise ValueError(f"mixer='mlp' was built for seq_len={self.seq_len}, got T={x.shape[1]}")
            if cache is not None:
                raise ValueError("mixer='mlp' has no KV cache; pass cache=None")
        if self.norm_placement == "post":
            x = self._mix_norm(0, x + self._mix(x, rope, cache))
            x = self.mlp_norms[0](x + self.mlp(x))
        elif self.norm_placement == "pre":
            x = x + self._mix(self._mix_norm(0, x), rope, cache)
            x = x + self.mlp(self.mlp_norms[0](x))
        else:  # sandwich
            x = x + self._mix_norm(1, self._mix(self._mix_norm(0, x), rope, cache))
            x = x + self.mlp_norms[1](self.mlp(self.mlp_norms[0](x)))
        return x
