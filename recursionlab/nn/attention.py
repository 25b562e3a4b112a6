"""Multi-head self-attention on ``F.scaled_dot_product_attention``, with RoPE and a KV cache.

    q, k, v = split(W_qkv x);   q, k = rope(q), rope(k);   y = W_out softmax(q k^T / sqrt(Dh) [+ mask]) v

Non-causal (HRM/TRM: every cell of a puzzle sees every other, no padding mask) or causal (language models).
For causal decoding a :class:`KVCache` keeps the keys and values already computed, so that feeding a sequence
one token at a time gives the same outputs as one full forward (``tests/test_nn_blocks.py`` checks this).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.nn.init import lecun_trunc_normal_
from recursionlab.nn.rotary import apply_rotary


@dataclass
class KVCache:
    """Append-only cache of one attention layer's keys and values.

    k, v: (B, H, T_cached, Dh) or None while empty. Keys are stored *after* rotary embedding, so the positions
    of new tokens must be passed to the layer explicitly (``rope=rotary(positions)`` with positions
    ``T_cached .. T_cached + T - 1``).
    """

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Number of cached positions T_cached."""
        return 0 if self.k is None else int(self.k.shape[-2])

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add new keys/values (B, H, T, Dh); return all keys/values (B, H, T_cached + T, Dh)."""
        if k.shape != v.shape or k.dim() != 4:
            raise ValueError(
                f"KVCache.append needs k, v of equal shape (B, H, T, Dh), got {k.shape}, {v.shape}"
            )
        if self.k is None:
            self.k, self.v = k, v
        else:
            if self.k.shape[:2] != k.shape[:2] or self.k.shape[-1] != k.shape[-1]:
                raise ValueError(
                    f"KVCache holds (B, H, ., Dh) = {tuple(self.k.shape)}, cannot append {tuple(k.shape)}"
                )
            self.k = torch.cat((self.k, k), dim=-2)
            self.v = torch.cat((self.v, v), dim=-2)
        return self.k, self.v

    def reset(self) -> None:
        """Forget everything cached."""
        self.k = self.v = None


class Attention(nn.Module):
    """Multi-head self-attention.

    Args:
        dim: model width D (a multiple of ``n_heads``).
        n_heads: H; head width Dh = D / H.
        causal: mask future positions.
        qk_bias: learnable biases added to queries and keys (per head and channel, zero-init), as in Huginn.

    forward(x (B, T, D), rope=(cos, sin) each (T, Dh) or None, cache=KVCache or None,
            attn_mask=None or bool (T, T_total) / (B, 1|H, T, T_total), True = may attend) -> (B, T, D).

    Parameters: ``qkv`` (3D, D) and ``out`` (D, D), no biases, LeCun trunc-normal initialised.
    """

    def __init__(self, dim: int, n_heads: int, causal: bool, qk_bias: bool = False) -> None:
        super().__init__()
        if dim <= 0 or n_heads <= 0 or dim % n_heads:
            raise ValueError(
                f"Attention needs dim divisible by n_heads (both positive), got {dim} and {n_heads}"
            )
        self.dim, self.n_heads, self.head_dim, self.causal = (
            int(dim),
            int(n_heads),
            dim // n_heads,
            bool(causal),
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        lecun_trunc_normal_(self.qkv.weight)
        lecun_trunc_normal_(self.out.weight)
        self.qk_bias = nn.Parameter(torch.zeros(2, n_heads, 1, self.head_dim)) if qk_bias else None

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"Attention expected x of shape (B, T, {self.dim}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.qk_bias is not None:
            q = q + self.qk_bias[0].to(q.dtype)
            k = k + self.qk_bias[1].to(k.dtype)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)
        mask, is_causal = attn_mask, False
        if self.causal:
            if past == 0 and mask is None:
                is_causal = T > 1  # SDPA's built-in mask is top-left aligned: right only without a cache
            else:
                # query i sits at absolute position past + i and may see keys 0 .. past + i
                causal = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
                mask = causal if mask is None else (mask & causal)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        return self.out(y.transpose(1, 2).reshape(B, T, self.dim))
