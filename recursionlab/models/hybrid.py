"""A hybrid of the last two lessons: Mixture-of-Recursions routing over a recurrent-depth core (lesson 11).

Commentators on both papers suggest the same combination: Huginn (Geiping et al. 2025, arXiv 2502.05171) lets
every token think for r core recurrences but picks r once for the whole batch; Mixture-of-Recursions (Bae et
al. 2025, arXiv 2507.10524) picks a depth per token but recurses a block that reads no input and only ever
attends to the tokens still active. The hybrid keeps Huginn's prelude / core / coda and input injection and
adds MoR's per-token router, so each token decides how many core recurrences it gets::

    e      = P(x)                                   prelude (Huginn), once
    s^0    ~ N(0, sigma_s^2 I)                      random initial state (Huginn)
    A_0    = all tokens
    for i = 1 .. R:                                 R = the cap (``max_recurrences``, a test-time knob)
        u^i_t = Adapter([s^{i-1}_t, e_t])           input injection for every token (also the router's input)
        g^i_t = alpha * sigmoid(theta . u^i_t)      ONE router shared by all recurrences (so R can grow at test time)
        A_i   = top-k_i of g^i over A_{i-1}         training rule (expert-choice, nested sets, k_i = c_i T)
              = {t in A_{i-1} : sigmoid(theta . u^i_t) >= 1/2}   inference rule (per token, causal)
        c^i_t = Core(u^i)_t  for t in A_i           queries from active tokens only; keys/values from ALL
                                                    tokens, an exited token showing its latest state (Huginn's
                                                    "latest available" rule at adaptive exit)
        s^i_t = s^{i-1}_t + g^i_t (c^i_t - s^{i-1}_t)   if t in A_i,   else s^i_t = s^{i-1}_t
    logits = C(s^R)                                 coda + head

Two choices differ from plain MoR and are the point of the hybrid:

* MoR's update H + g f(H) adds a residual; Huginn's core returns the *next state* (unit RMS), so the gated
  update interpolates: g is a per-token step size (a learned damping factor, as in a damped fixed-point
  iteration), and g = 0 means "skip this recurrence".
* MoR lets an active token attend only to other active tokens. Here it attends to every token, reading the
  latest state of those that exited. On the capstone's pointer-chasing task a deep node needs its parent's
  answer, and the parent (shallower) exits first: hiding exited tokens would cut the chain.

The router is trained through the gate (the loss depends on g) and by MoR's auxiliary BCE, which teaches
``sigmoid(theta . u) >= 1/2`` to agree with top-k membership, so the causal inference rule can replace top-k.

Library pieces reused: :class:`~recursionlab.models.recurrent_depth.RecurrentDepthModel` (embedding, prelude,
adapter, core blocks, state norm, coda, initial state) and MoR's ``topk_in_causal_order`` / ``pack_active`` /
``default_capacities`` / ``check_capacities``. The one adapter written here is :func:`sandwich_block_on_queries`:
the shared sandwich block evaluated for a subset of query tokens against keys/values of all tokens, with the
block's own parameters (the library block computes queries for every token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.models.mor import check_capacities, default_capacities, pack_active, topk_in_causal_order
from recursionlab.models.recurrent_depth import RecurrentDepthConfig, RecurrentDepthModel
from recursionlab.nn.blocks import TransformerBlock
from recursionlab.nn.rotary import apply_rotary

__all__ = ["HybridConfig", "HybridOutput", "RoutedRecurrentDepth", "sandwich_block_on_queries", "ROUTING_RULES"]

ROUTING_RULES = ("topk", "threshold")


@dataclass
class HybridConfig:
    """Sizes and routing settings of a :class:`RoutedRecurrentDepth`.

    - vocab_size / out_vocab_size: input tokens and output classes (default: same).
    - dim, n_heads, mlp_inner: block width, heads, SwiGLU inner width (None: the library default).
    - prelude_layers, core_layers, coda_layers: Huginn's (l_P, l_R, l_C).
    - max_positions, absolute_positions: as in :class:`RecurrentDepthConfig` (pointer tasks need absolute ones).
    - max_recurrences: R, the training cap on core recurrences per token.
    - capacities: fraction of tokens kept at each recurrence 1..R during training (non-increasing, in (0, 1]);
      default MoR's (R - i + 1) / R, i.e. 1, (R-1)/R, ..., 1/R: mean depth (R + 1) / 2.
    - router_alpha: gate scale alpha (1: the gate is a step size in (0, 1)).
    - aux_loss_coef: weight of the BCE that trains the inference (threshold) rule (MoR uses 0.001 over thousands of
      steps; a few hundred steps need a larger weight for sigmoid >= 1/2 to agree with top-k).
    - state_std: std of s^0 (Huginn: sqrt(2/5)).
    """

    vocab_size: int
    out_vocab_size: int | None = None
    dim: int = 64
    n_heads: int = 4
    mlp_inner: int | None = None
    prelude_layers: int = 1
    core_layers: int = 1
    coda_layers: int = 1
    max_positions: int = 256
    absolute_positions: bool = False
    max_recurrences: int = 8
    capacities: tuple[float, ...] | None = None
    router_alpha: float = 1.0
    aux_loss_coef: float = 0.1
    state_std: float = field(default_factory=lambda: math.sqrt(2.0 / 5.0))

    def __post_init__(self) -> None:
        if self.out_vocab_size is None:
            self.out_vocab_size = self.vocab_size
        cap = self.max_recurrences
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ValueError(f"max_recurrences must be an integer >= 1, got {self.max_recurrences!r}")
        if self.capacities is None:
            self.capacities = default_capacities(self.max_recurrences)
        self.capacities = check_capacities(self.capacities, self.max_recurrences)
        if not self.router_alpha > 0:
            raise ValueError(f"router_alpha must be > 0, got {self.router_alpha!r}")
        if not self.aux_loss_coef >= 0:
            raise ValueError(f"aux_loss_coef must be >= 0, got {self.aux_loss_coef!r}")

    def core_config(self) -> RecurrentDepthConfig:
        """The recurrent-depth model that provides the prelude, core and coda (validates the shared fields)."""
        return RecurrentDepthConfig(
            vocab_size=self.vocab_size,
            out_vocab_size=self.out_vocab_size,
            dim=self.dim,
            n_heads=self.n_heads,
            mlp_inner=self.mlp_inner,
            prelude_layers=self.prelude_layers,
            core_layers=self.core_layers,
            coda_layers=self.coda_layers,
            norm="sandwich",
            max_positions=self.max_positions,
            absolute_positions=self.absolute_positions,
            injection="concat",
            mean_recurrence=float(self.max_recurrences),
            schedule="fixed",
            state_std=self.state_std,
        )


@dataclass
class HybridOutput:
    """logits: (B, T, V); aux_loss: 0-d, already weighted (add it to the task loss); depth: (B, T) long,
    core recurrences each token received (0..cap); metrics: floats / 0-d tensors for logging."""

    logits: torch.Tensor
    aux_loss: torch.Tensor
    depth: torch.Tensor
    metrics: dict[str, torch.Tensor | float]


def sandwich_block_on_queries(
    block: TransformerBlock,
    x: torch.Tensor,
    index: torch.Tensor,
    valid: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> torch.Tensor:
    """The causal sandwich block ``x + n(Attn(n x)); x + n(MLP(n x))`` for the query tokens ``index`` only.

    x: (B, T, D) every token's input (keys and values come from all of them); index: (B, K) long positions of
    the query tokens in causal order (padding after the real ones); valid: (B, K) bool; cos, sin: (T, Dh)
    rotary tables of positions 0..T-1. Returns (B, K, D): what ``block(x, rope)`` gives at those positions
    when K = T (a test checks it). Cost: queries, output projection and MLP for K tokens, keys/values for T.
    """
    if block.norm_placement != "sandwich" or block.mixer_kind != "attention" or not block.mixer.causal:
        raise ValueError("sandwich_block_on_queries expects a causal sandwich-norm attention block")
    attn = block.mixer
    B, T, D = x.shape
    K = index.shape[1]
    H, Dh = attn.n_heads, attn.head_dim
    h = block.mix_norms[0](x)  # (B, T, D)
    h_q = h.gather(1, index[..., None].expand(-1, -1, D))  # (B, K, D)
    w_q, w_kv = attn.qkv.weight[:D], attn.qkv.weight[D:]  # the block's own projections, split
    q = F.linear(h_q, w_q).view(B, K, H, Dh).transpose(1, 2)  # (B, H, K, Dh)
    k, v = F.linear(h, w_kv).view(B, T, 2, H, Dh).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, Dh) each
    if attn.qk_bias is not None:
        q, k = q + attn.qk_bias[0].to(q.dtype), k + attn.qk_bias[1].to(k.dtype)
    q = apply_rotary(q, cos[index][:, None], sin[index][:, None]) if K else q  # per-row query positions
    k = apply_rotary(k, cos, sin)
    keys = torch.arange(T, device=x.device)
    mask = keys[None, None, :] <= index[:, :, None]  # (B, K, T): causal by absolute position
    mask = mask | ~valid[:, :, None]  # padded queries see everything (output discarded): no empty rows
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
    x_q = x.gather(1, index[..., None].expand(-1, -1, D))
    x_q = x_q + block.mix_norms[1](attn.out(y.transpose(1, 2).reshape(B, K, D)))
    return x_q + block.mlp_norms[1](block.mlp(block.mlp_norms[0](x_q)))


class RoutedRecurrentDepth(nn.Module):
    """Huginn-style prelude / core / coda whose core recurrences are routed per token (see module docstring).

    forward(tokens (B, T) long, rule=None | "topk" | "threshold", max_recurrences=None, noise_seed=None)
        -> :class:`HybridOutput`.

    ``rule`` defaults to "topk" in train mode and "threshold" in eval mode; ``max_recurrences`` (default: the
    config's R) is the cap, which may exceed R at test time only under "threshold" (top-k has R capacities).
    """

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        if not isinstance(config, HybridConfig):
            raise TypeError(f"config must be a HybridConfig, got {type(config).__name__}")
        self.config = config
        self.base = RecurrentDepthModel(config.core_config())  # embedding, prelude, adapter, core, coda
        self.router = nn.Linear(config.dim, 1, bias=False)  # theta: d -> 1, shared across recurrences
        nn.init.normal_(self.router.weight, std=0.02)  # MoR's router init

    def router_parameters(self) -> int:
        """Parameters the router adds to the recurrent-depth model."""
        return sum(p.numel() for p in self.router.parameters())

    def _core_on(self, u: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, cos, sin) -> torch.Tensor:
        """c = state_norm(Core(u)) at the query tokens ``index``: u (B, T, D) -> (B, K, D).

        With several core layers, inactive tokens keep their layer input as keys/values for the next layer
        (they do not compute), which is exact for the default single core layer.
        """
        D = u.shape[-1]
        x = u
        out = None
        for j, blk in enumerate(self.base.core):
            out = sandwich_block_on_queries(blk, x, index, valid, cos, sin)
            if j + 1 < len(self.base.core):
                x = x.scatter(1, index[..., None].expand(-1, -1, D), out.to(x.dtype))
        return self.base.state_norm(out)

    def forward(
        self,
        tokens: torch.Tensor,
        rule: str | None = None,
        max_recurrences: int | None = None,
        noise_seed: int | None = None,
    ) -> HybridOutput:
        c = self.config
        rule = rule if rule is not None else ("topk" if self.training else "threshold")
        if rule not in ROUTING_RULES:
            raise ValueError(f"unknown routing rule {rule!r}; allowed: {', '.join(ROUTING_RULES)}")
        cap = c.max_recurrences if max_recurrences is None else max_recurrences
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ValueError(f"max_recurrences must be an integer >= 0, got {max_recurrences!r}")
        if rule == "topk" and cap > c.max_recurrences:
            raise ValueError(
                f"top-k routing has capacities for {c.max_recurrences} recurrences, got max_recurrences={cap}; "
                "use rule='threshold' to think longer than the training cap"
            )
        B, T = tokens.shape[0], tokens.shape[-1]
        positions = torch.arange(T, device=tokens.device)
        cos, sin = self.base.rotary(positions)
        e = self.base.embed(tokens, positions, (cos, sin))  # e = P(x): (B, T, D)
        s = self.base.initial_state(e, positions, noise_seed=noise_seed)  # s^0
        D = e.shape[-1]
        cand = positions.expand(B, T)  # A_0: every token, (B, n) positions in causal order
        cand_valid = torch.ones(B, T, dtype=torch.bool, device=tokens.device)
        depth = torch.zeros(B, T, dtype=torch.long, device=tokens.device)
        aux = e.new_zeros((), dtype=torch.float32)
        agree, n_checked = e.new_zeros((), dtype=torch.float32), 0
        for i in range(cap):
            u = self.base.adapter(torch.cat((s, e), dim=-1))  # u^i = A[s^{i-1}, e]: (B, T, D)
            logit = self.router(u.gather(1, cand[..., None].expand(-1, -1, D))).squeeze(-1).float()  # (B, n)
            gate = c.router_alpha * torch.sigmoid(logit)  # g^i_t
            if rule == "topk":
                k = max(1, math.floor(c.capacities[i] * T + 1e-9))
                sel = topk_in_causal_order(gate, min(k, cand.shape[1]))  # (B, k) indices into the candidates
                sel_valid = torch.ones_like(sel, dtype=torch.bool)
                member = torch.zeros_like(logit).scatter(1, sel, 1.0)  # 1[t in top-k]
                # MoR's auxiliary BCE: sigmoid(logit) >= 1/2 should mean "selected" (normalised by candidates)
                bce = F.binary_cross_entropy_with_logits(logit, member, reduction="none")
                aux = aux + c.aux_loss_coef * (bce * cand_valid).sum() / cand_valid.sum().clamp_min(1)
                agree = agree + (((logit >= 0).float() == member).float() * cand_valid).sum().detach()
                n_checked += int(cand_valid.sum())
            else:
                keep_all = i < c.max_recurrences and c.capacities[i] >= 1.0
                keep = cand_valid if keep_all else cand_valid & (logit >= 0)  # sigmoid >= 1/2
                if not bool(keep.any()):
                    break  # every token of every row has exited: stop computing
                sel, sel_valid = pack_active(keep)
            index = cand.gather(1, sel)  # (B, k) positions of the active tokens, causal order
            c_new = self._core_on(u, index, sel_valid, cos, sin)  # Core(u) at the active tokens
            s_old = s.gather(1, index[..., None].expand(-1, -1, D))
            g = (gate.gather(1, sel) * sel_valid).to(s.dtype)[..., None]  # 0 on padded slots
            # s^i_t = s^{i-1}_t + g^i_t (c^i_t - s^{i-1}_t) on the active tokens; the others keep s^{i-1}_t
            s = s.scatter(1, index[..., None].expand(-1, -1, D), (s_old + g * (c_new - s_old)).to(s.dtype))
            depth = depth.scatter_add(1, index, sel_valid.long())
            cand, cand_valid = index, sel_valid
        logits = self.base.decode(s, (cos, sin))  # p = C(s^R)
        metrics: dict[str, torch.Tensor | float] = {"mean_depth": depth.float().mean().detach()}
        if n_checked:
            metrics["router_agreement"] = agree / n_checked
        return HybridOutput(logits, aux, depth, metrics)

    def num_parameters(self) -> int:
        """Trainable parameters (the core counted once, however often it recurs)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
