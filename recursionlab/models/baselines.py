"""One-pass (non-recursive) transformer for puzzles: the "direct prediction" baseline of HRM and TRM.

The whole answer is predicted in a single forward pass through a fixed stack of N blocks, with no recursion,
no carried state and no deep supervision (HRM paper, arXiv 2506.21734, Fig. 1 "Direct pred": an 8-layer
transformer of HRM's size). It reads a puzzle of L tokens and writes L answer tokens:

    x~  = sqrt(D) * [E_puz(id)] ++ [E_tok(x_1), ..., E_tok(x_L)]   (prefix only when there are puzzle ids)
    h_0 = x~ (+ learned positions, or RoPE inside attention)
    h_n = Block_n(h_{n-1}),  n = 1..N                         (non-causal: every cell sees every cell)
    logits = W_out h_N  (prefix dropped)                      (B, L, V)

Its depth -- N blocks, N sequential "reasoning steps" at most -- is fixed by the architecture, which is the
point of lesson 06: puzzles that need many sequential deductions outgrow it, whatever the training set.
:func:`match_param_count` sizes the baseline to another model's parameter count for fair comparisons.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from recursionlab.nn.blocks import TransformerBlock
from recursionlab.nn.init import lecun_trunc_normal_, trunc_normal_corrected_
from recursionlab.nn.rotary import RotaryEmbedding

__all__ = ["OnePassConfig", "OnePassTransformer", "count_parameters", "match_param_count"]

POSITIONS = ("rope", "learned", "none")


@dataclass
class OnePassConfig:
    """Sizes of a :class:`OnePassTransformer`.

    vocab_size, seq_len (L), num_puzzle_ids come from the :class:`~recursionlab.data.puzzles.PuzzleDataset`;
    dim (D), n_layers (N), n_heads, expansion (SwiGLU width factor); norm "post" (HRM/TRM) or "pre";
    positions "rope" (HRM/TRM default), "learned" or "none"; mixer "attention" or "mlp" (TRM's MLP-mixer);
    puzzle_emb: prepend one learned puzzle-id token (default: only when ``num_puzzle_ids > 1``).
    """

    vocab_size: int
    seq_len: int
    num_puzzle_ids: int = 1
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    expansion: float = 4.0
    norm: str = "post"
    positions: str = "rope"
    mixer: str = "attention"
    puzzle_emb: bool | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        for name in ("vocab_size", "seq_len", "num_puzzle_ids", "dim", "n_layers", "n_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(
                f"dim ({self.dim}) must split into n_heads ({self.n_heads}) heads of even width (RoPE pairs)"
            )
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")

    @property
    def prefix_len(self) -> int:
        """Number of prefix positions (1 with a puzzle embedding, else 0)."""
        use = self.num_puzzle_ids > 1 if self.puzzle_emb is None else self.puzzle_emb
        return 1 if use else 0


class OnePassTransformer(nn.Module):
    """Tokens in, one prediction per token out, in one pass through ``n_layers`` non-causal blocks.

    forward(inputs (B, L) long, puzzle_ids (B,) long or None) -> logits (B, L, vocab_size).
    """

    def __init__(self, cfg: OnePassConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        D, total = cfg.dim, cfg.seq_len + cfg.prefix_len
        self.embed_scale = math.sqrt(D)
        # HRM-style embedding: std 1/sqrt(D) times sqrt(D) -> unit-scale token vectors.
        self.token_emb = nn.Embedding(cfg.vocab_size, D)
        trunc_normal_corrected_(self.token_emb.weight, std=1.0 / math.sqrt(D))
        self.puzzle_emb = nn.Embedding(cfg.num_puzzle_ids, D) if cfg.prefix_len else None
        if self.puzzle_emb is not None:
            nn.init.zeros_(self.puzzle_emb.weight)  # zero-init like HRM/TRM: starts as "no information"
        self.pos_emb = nn.Parameter(torch.zeros(total, D)) if cfg.positions == "learned" else None
        if self.pos_emb is not None:
            trunc_normal_corrected_(self.pos_emb, std=1.0 / math.sqrt(D))
        self.rotary = RotaryEmbedding(D // cfg.n_heads, total) if cfg.positions == "rope" else None
        self.blocks = nn.ModuleList(
            TransformerBlock(
                D, cfg.n_heads, norm=cfg.norm, causal=False, expansion=cfg.expansion, mixer=cfg.mixer,
                seq_len=total,
            )
            for _ in range(cfg.n_layers)
        )
        self.head = nn.Linear(D, cfg.vocab_size, bias=False)
        lecun_trunc_normal_(self.head.weight)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return count_parameters(self)

    def forward(self, inputs: torch.Tensor, puzzle_ids: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.cfg
        if inputs.dim() != 2 or inputs.shape[1] != cfg.seq_len:
            raise ValueError(f"inputs must be (B, {cfg.seq_len}) token ids, got shape {tuple(inputs.shape)}")
        x = self.token_emb(inputs)  # (B, L, D)
        if self.puzzle_emb is not None:
            ids = puzzle_ids if puzzle_ids is not None else torch.zeros_like(inputs[:, 0])
            x = torch.cat((self.puzzle_emb(ids).unsqueeze(1), x), dim=1)  # (B, 1 + L, D)
        if self.pos_emb is not None:
            x = (x + self.pos_emb) / math.sqrt(2.0)  # keep unit scale, as HRM does with learned positions
        h = self.embed_scale * x
        rope = self.rotary() if self.rotary is not None else None
        for block in self.blocks:
            h = block(h, rope=rope)
        return self.head(h[:, cfg.prefix_len :])  # (B, L, V)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of any module."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def match_param_count(
    target: int | nn.Module,
    vocab_size: int,
    seq_len: int,
    n_layers: int = 4,
    n_heads: int = 4,
    **config_kwargs,
) -> OnePassConfig:
    """An :class:`OnePassConfig` with ``n_layers`` blocks whose parameter count is closest to ``target`` (an
    int, or a module whose trainable parameters are counted).

    The width is searched over multiples of ``2 * n_heads`` (even head widths for RoPE); for the two widths
    around the target the SwiGLU ``expansion`` is then tuned too (its inner width moves in steps of 256, so width
    alone lands coarsely on small models). Models are built on the ``meta`` device: nothing is allocated.
    Other fields come from ``config_kwargs``.
    """
    want = count_parameters(target) if isinstance(target, nn.Module) else int(target)
    if want < 1:
        raise ValueError(f"target parameter count must be positive, got {want}")
    if "expansion" in config_kwargs:
        raise ValueError("match_param_count tunes expansion itself; do not pass it")

    step = 2 * n_heads

    def build(units: int, expansion: float) -> tuple[int, OnePassConfig]:
        cfg = OnePassConfig(
            vocab_size=vocab_size, seq_len=seq_len, dim=units * step, n_layers=n_layers, n_heads=n_heads,
            expansion=expansion, **config_kwargs,
        )
        with torch.device("meta"):
            return count_parameters(OnePassTransformer(cfg)), cfg

    tried = []
    units = 0
    while units < 4096 // step:  # widths up to 4096
        units += 1
        tried.append(build(units, 4.0))
        if tried[-1][0] > want:
            break
    for u in {units, max(units - 1, 1)}:
        tried.extend(build(u, e / 2) for e in range(1, 17) if e != 8)
    best = min(tried, key=lambda t: abs(t[0] - want))[1]
    return OnePassConfig(**asdict(best))
