"""A vanilla causal transformer language model: the baseline of the Mixture-of-Recursions lesson (10).

Reads top to bottom like a small GPT with LLaMA-style parts (pre-norm RMSNorm, rotary positions, SwiGLU):

    h_0 = E[x_t]                                   token embedding, E: (V, D)
    h_l = Block_l(h_{l-1}),  l = 1 .. L            pre-norm: h + Attn(norm h), then h + SwiGLU(norm h)
    logits_t = norm(h_L) E^T                       tied input/output embeddings (as SmolLM, which MoR builds on)

Every model of the lesson (this one, the plain recursive model and MoR in ``recursionlab.models.mor``)
shares the protocol defined here: ``forward(ids, cache=None) -> LMOutput`` (logits plus an auxiliary loss
that the training loss adds), ``new_cache(batch_size)`` for incremental decoding, and :func:`generate`, which
works for all of them with and without a cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.nn.attention import KVCache
from recursionlab.nn.blocks import TransformerBlock
from recursionlab.nn.mlp import swiglu_inner_dim
from recursionlab.nn.norms import RMSNorm
from recursionlab.nn.rotary import RotaryEmbedding


@dataclass
class LMOutput:
    """What every language model of lesson 10 returns.

    logits: (B, T, V) float. aux_loss: 0-d tensor, already weighted, to be *added* to the cross-entropy
    (routers' auxiliary / balancing losses; zero for models without a router). metrics: name -> 0-d tensor
    or float, for logging. depth: (B, T) long, number of recursions each token went through (None for
    models without recursion). gates: (B, N_r, T) float, the router gate g^r_t applied to token t at
    recursion r (NaN where the token was not updated there; None for models without a router).
    """

    logits: torch.Tensor
    aux_loss: torch.Tensor
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    depth: torch.Tensor | None = None
    gates: torch.Tensor | None = None


def count_parameters(model: nn.Module) -> int:
    """Number of unique trainable parameters (tied/shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_token_ids(ids: torch.Tensor, vocab_size: int) -> None:
    """Raise a clear error unless ``ids`` is a (B, T) integer tensor with entries in [0, vocab_size)."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise TypeError(f"token ids must be an integer tensor of shape (B, T), got {shape}")
    if ids.shape[1] == 0:
        raise ValueError("token ids must contain at least one position (T >= 1)")
    if ids.device.type == "cpu" and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}); got range [{int(ids.min())}, {int(ids.max())}]")


class CausalLMBase(nn.Module):
    """Embedding, rotary table, final norm and tied read-out shared by the lesson's language models.

    Args:
        vocab_size: V.
        dim: D.
        n_heads: attention heads (D divisible by it).
        max_seq_len: longest position the rotary table covers (prompt + generated tokens).
        expansion: SwiGLU expansion (inner width by ``swiglu_inner_dim``).
        rope_base: rotary frequency base.
    """

    def __init__(
        self, vocab_size: int, dim: int, n_heads: int, max_seq_len: int, expansion: float, rope_base: float
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("dim", dim), ("n_heads", n_heads),
                            ("max_seq_len", max_seq_len)):
            if int(value) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if dim % n_heads or (dim // n_heads) % 2:
            raise ValueError(f"dim={dim} must split into n_heads={n_heads} heads of even width")
        self.vocab_size, self.dim, self.n_heads = int(vocab_size), int(dim), int(n_heads)
        self.max_seq_len, self.expansion = int(max_seq_len), float(expansion)
        self.embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(dim))
        self.rope = RotaryEmbedding(dim // n_heads, max_seq_len, base=rope_base)
        self.final_norm = RMSNorm(dim)

    def make_block(self) -> TransformerBlock:
        """One pre-norm causal block (attention + SwiGLU), the unit every model here stacks or shares."""
        return TransformerBlock(
            self.dim, self.n_heads, norm="pre", causal=True, expansion=self.expansion, learnable_norm=True
        )

    def rope_at(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary tables for positions (T,) -> (T, Dh) each, or per row (B, T) -> (B, 1, T, Dh) each."""
        cos, sin = self.rope(positions)
        if positions.dim() == 2:  # one row of positions per sequence: broadcast over heads
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return cos, sin

    def read_out(self, h: torch.Tensor) -> torch.Tensor:
        """h: (B, T, D) -> logits (B, T, V) through the final norm and the tied embedding."""
        return F.linear(self.final_norm(h), self.embed.weight)

    @property
    def mlp_inner(self) -> int:
        """SwiGLU inner width of every block."""
        return swiglu_inner_dim(self.dim, self.expansion)


class TransformerLM(CausalLMBase):
    """Vanilla causal LM: L distinct pre-norm blocks, each applied once.

    Args: vocab_size, dim, n_heads, n_layers (L), max_seq_len, expansion, rope_base (see CausalLMBase).
    forward(ids (B, T) long, cache=None | TransformerCache) -> LMOutput with logits (B, T, V).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        n_heads: int = 4,
        n_layers: int = 4,
        max_seq_len: int = 512,
        expansion: float = 4.0,
        rope_base: float = 10000.0,
    ) -> None:
        super().__init__(vocab_size, dim, n_heads, max_seq_len, expansion, rope_base)
        if int(n_layers) <= 0:
            raise ValueError(f"n_layers must be a positive integer, got {n_layers}")
        self.n_layers = int(n_layers)
        self.blocks = nn.ModuleList(self.make_block() for _ in range(self.n_layers))

    def new_cache(self, batch_size: int, **_: object) -> TransformerCache:
        """An empty KV cache: one append-only ``KVCache`` per layer."""
        return TransformerCache([KVCache() for _ in range(self.n_layers)])

    def forward(self, ids: torch.Tensor, cache: TransformerCache | None = None) -> LMOutput:
        check_token_ids(ids, self.vocab_size)
        past = 0 if cache is None else cache.length
        T = ids.shape[1]
        if past + T > self.max_seq_len:
            raise ValueError(f"sequence reaches position {past + T}, beyond max_seq_len={self.max_seq_len}")
        rope = self.rope_at(torch.arange(past, past + T, device=ids.device))
        h = self.embed(ids)
        for i, block in enumerate(self.blocks):
            h = block(h, rope=rope, cache=None if cache is None else cache.layers[i])
        if cache is not None:
            cache.length += T
        return LMOutput(self.read_out(h), h.new_zeros(()))


@dataclass
class TransformerCache:
    """KV cache of a :class:`TransformerLM`: ``layers[l]`` holds layer l's keys/values (B, H, T_seen, Dh)."""

    layers: list[KVCache]
    length: int = 0

    def entries(self) -> dict[str, int]:
        """Cached (token, layer) key/value pairs per layer, summed over the batch."""
        return {f"layer{i}": 0 if c.k is None else int(c.k.shape[0] * c.k.shape[2]) for i, c in enumerate(self.layers)}


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: torch.Tensor,
    n_new: int,
    use_cache: bool = True,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    **cache_options: object,
) -> torch.Tensor:
    """Continue ``prompt`` by ``n_new`` tokens with any lesson-10 LM (greedy when ``temperature == 0``).

    prompt: (B, T0) long -> (B, T0 + n_new) long. With ``use_cache`` the prompt is fed once and then one
    token at a time against the model's cache (``model.new_cache(B, **cache_options)``); without it the
    whole sequence is recomputed for every new token. The two give the same tokens (tests check it).
    """
    if int(n_new) < 0:
        raise ValueError(f"n_new must be >= 0, got {n_new}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    was_training = model.training
    model.eval()
    try:
        seq = prompt
        cache = model.new_cache(prompt.shape[0], **cache_options) if use_cache else None
        feed = prompt
        for _ in range(int(n_new)):
            logits = model(feed if use_cache else seq, cache=cache).logits[:, -1].float()
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(seq.device)
            seq = torch.cat([seq, nxt], dim=1)
            feed = nxt
        return seq
    finally:
        model.train(was_training)
