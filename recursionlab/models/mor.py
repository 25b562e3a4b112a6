"""Mixture-of-Recursions (Bae et al. 2025, arXiv 2507.10524): one shared block stack, a per-token depth.

A recursive transformer re-uses one stack of B blocks N_r times. Which layers share weights is a *sharing
scheme* (section 1). MoR adds a tiny router per recursion that decides, token by token, whether to go one
recursion deeper, so easy tokens stop early and hard ones think longer::

    H^1 = Prelude(E[x])                         (Middle-Cycle: the first layer is not shared)
    for r = 1 .. N_r:
        expert-choice: A_r = top-k_r of  g^r_t = alpha * sigmoid(theta_r . H^r_t)   over t in A_{r-1}
                       H^{r+1}_t = H^r_t + g^r_t * f(H^r_t)   if t in A_r,   else H^{r+1}_t = H^r_t
    logits = Coda(H^{N_r+1})                    (Middle-Cycle: the last layer is not shared)

f is the shared stack (its blocks keep their own residual connections, as in the paper's code), and only the
tokens of A_r attend to each other at recursion r. Top-k over the *sequence* looks at future tokens, so at
generation time the model instead thresholds sigma(theta_r . H) >= 1/2, a per-token (causal) rule that the
auxiliary BCE loss teaches to agree with top-k. Token-choice routing picks each token's depth once, at the
first recursion (softmax over N_r depths, top-1), and needs a balancing loss instead.

The model follows the protocol of ``recursionlab.models.transformer_lm`` (``forward(ids, cache) -> LMOutput``,
``new_cache``, ``generate``). Its cache is *recursion-wise*: one slot per (recursion, layer) holding only the
tokens that were active there; with ``kv_sharing`` only the first recursion stores keys/values and deeper
recursions read them. Helpers below count cache entries (against (N_r+1)/(2N_r) and 1/N_r), FLOPs per token,
show the causality leak of top-k, and build vanilla / recursive / MoR models with matched parameter counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.models.transformer_lm import (
    CausalLMBase,
    LMOutput,
    TransformerLM,
    check_token_ids,
    count_parameters,
)
from recursionlab.nn.blocks import TransformerBlock
from recursionlab.nn.rotary import apply_rotary

# ---------------------------------------------------------------------------------------------------------
# 1. Parameter-sharing schemes: which unique block each of the L unrolled layers uses
# ---------------------------------------------------------------------------------------------------------

SHARING_SCHEMES = ("cycle", "sequence", "middle_cycle", "middle_sequence")
ROUTINGS = ("none", "expert", "token")
ROUTING_RULES = ("topk", "threshold")


def _check_scheme(scheme: str, n_layers: int, n_recursions: int) -> int:
    """Validate and return the number B of shared blocks per recursion."""
    if scheme not in SHARING_SCHEMES:
        raise ValueError(f"unknown sharing scheme {scheme!r}; allowed: {', '.join(SHARING_SCHEMES)}")
    if int(n_recursions) < 1:
        raise ValueError(f"n_recursions must be >= 1, got {n_recursions}")
    shared = n_layers - 2 if scheme.startswith("middle") else n_layers
    if shared < n_recursions or shared % n_recursions:
        what = "n_layers - 2 (the middle layers)" if scheme.startswith("middle") else "n_layers"
        raise ValueError(
            f"scheme {scheme!r} needs {what} = {shared} to be a positive multiple of n_recursions={n_recursions} "
            f"(got n_layers={n_layers}); the paper's code subsamples layers instead, here pick n_layers = "
            f"{'2 + ' if scheme.startswith('middle') else ''}B * n_recursions"
        )
    return shared // n_recursions


def shared_layer_map(scheme: str, n_layers: int, n_recursions: int) -> list[int]:
    """For each unrolled layer l = 0 .. L-1, the index of the unique block it uses.

    With B = L / N_r (or (L - 2) / N_r for the Middle schemes):
        cycle            l -> l mod B                           L=6, N_r=3: [0,1, 0,1, 0,1]
        sequence         l -> l // N_r                          L=6, N_r=3: [0,0,0, 1,1,1]
        middle_cycle     0 -> 0, L-1 -> B+1, l -> 1 + (l-1) mod B      L=8, N_r=3: [0, 1,2, 1,2, 1,2, 3]
        middle_sequence  0 -> 0, L-1 -> B+1, l -> 1 + (l-1) // N_r     L=8, N_r=3: [0, 1,1,1, 2,2,2, 3]
    """
    B = _check_scheme(scheme, n_layers, n_recursions)
    if scheme == "cycle":
        return [layer % B for layer in range(n_layers)]
    if scheme == "sequence":
        return [layer // n_recursions for layer in range(n_layers)]
    middle = range(n_layers - 2)
    if scheme == "middle_cycle":
        inner = [1 + i % B for i in middle]
    else:
        inner = [1 + i // n_recursions for i in middle]
    return [0, *inner, B + 1]


def n_unique_blocks(scheme: str, n_layers: int, n_recursions: int) -> int:
    """Number of distinct blocks a scheme needs (B, or B + 2 for the Middle schemes)."""
    return max(shared_layer_map(scheme, n_layers, n_recursions)) + 1


# ---------------------------------------------------------------------------------------------------------
# 2. Capacities and top-k in causal order (expert-choice)
# ---------------------------------------------------------------------------------------------------------


def default_capacities(n_recursions: int) -> tuple[float, ...]:
    """The paper's schedule c_r = (N_r - r + 1) / N_r, r = 1 .. N_r (1, 2/3, 1/3 for N_r = 3)."""
    if int(n_recursions) < 1:
        raise ValueError(f"n_recursions must be >= 1, got {n_recursions}")
    return tuple((n_recursions - r) / n_recursions for r in range(n_recursions))


def check_capacities(capacities: tuple[float, ...] | list[float], n_recursions: int) -> tuple[float, ...]:
    """Return ``capacities`` as a tuple after checking: N_r values in (0, 1], non-increasing (nested sets)."""
    caps = tuple(float(c) for c in capacities)
    if len(caps) != n_recursions:
        raise ValueError(f"need one capacity per recursion ({n_recursions}), got {len(caps)}: {caps}")
    if any(not 0.0 < c <= 1.0 for c in caps):
        raise ValueError(f"capacities must lie in (0, 1], got {caps}")
    if any(b > a for a, b in zip(caps, caps[1:])):
        raise ValueError(f"capacities must be non-increasing (a token only goes deeper if it was active), got {caps}")
    return caps


def tokens_per_recursion(capacities: tuple[float, ...] | list[float], seq_len: int) -> list[int]:
    """k_r = max(1, floor(c_r * L)) tokens selected at each recursion for a sequence of length L."""
    if int(seq_len) < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    # the tiny epsilon keeps floor(2/3 * 6) at 4 despite binary rounding
    return [max(1, math.floor(c * seq_len + 1e-9)) for c in capacities]


def topk_in_causal_order(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores of every row, sorted back into increasing (causal) order.

    scores: (B, N) float -> (B, k) long. torch.topk returns them by score; attention among the selected
    tokens needs them in sequence order, or a token would be treated as "earlier" than one before it.
    """
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"k must lie in [1, {scores.shape[-1]}], got {k}")
    return scores.topk(k, dim=-1, sorted=False).indices.sort(dim=-1).values


def pack_active(active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices of the active entries of every row, in order, padded at the end.

    active: (B, N) bool -> (index (B, K) long, valid (B, K) bool), K = max active count of a row.
    Padded slots point at *inactive* positions (all indices of a row are distinct) and come after the
    real ones, so a causal mask never lets a real token see a padded one.
    """
    B, N = active.shape
    order = torch.arange(N, device=active.device).expand(B, N)
    key = torch.where(active, order, order + N)  # active first, each group in sequence order
    index = key.argsort(dim=-1)
    K = int(active.sum(dim=-1).max()) if N else 0
    index = index[:, :K]
    return index, active.gather(1, index)


def expert_choice_topk(
    router_logits: torch.Tensor, k: int, alpha: float, decider_logits: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One expert-choice routing step with its auxiliary loss (training rule).

    router_logits: (B, n) theta_r . H_t for the n candidates -> (selected (B, k) long, in causal order;
    gates (B, k) = alpha * sigmoid(logit) of the selected; bce 0-d = BCE(decider, 1[t in top-k]) summed over
    the B x n candidates and divided by B x n). ``decider_logits`` (B, n): the logits that must learn to
    predict membership (default: the router's own, the "aux loss" fix; an auxiliary router's for "aux router").
    """
    gate = alpha * torch.sigmoid(router_logits)
    selected = topk_in_causal_order(gate, k)
    decider = router_logits if decider_logits is None else decider_logits
    target = torch.zeros_like(decider).scatter(1, selected, 1.0)
    bce = F.binary_cross_entropy_with_logits(decider, target, reduction="sum") / decider.numel()
    return selected, gate.gather(1, selected), bce


# ---------------------------------------------------------------------------------------------------------
# 3. Recursion-wise KV cache: every sequence of the batch holds its own number of tokens per slot
# ---------------------------------------------------------------------------------------------------------


class RaggedKVCache:
    """Keys/values of one (recursion, layer) slot, where row b holds ``lengths[b]`` tokens.

    Stored as k, v: (B, capacity + 1, H, Dh) (the last column is a scratch slot for padded writes) with the
    absolute position of every entry in ``positions`` (B, capacity + 1). Entries of a row are in causal order.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = int(batch_size)
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.lengths: torch.Tensor | None = None

    @property
    def capacity(self) -> int:
        return 0 if self.k is None else self.k.shape[1] - 1

    def entries(self) -> int:
        """Number of cached (token, sequence) key/value pairs in this slot."""
        return 0 if self.lengths is None else int(self.lengths.sum())

    def _grow(self, need: int, like: torch.Tensor) -> None:
        B, H, Dh = self.batch_size, like.shape[1], like.shape[3]
        if self.k is None:
            self.lengths = torch.zeros(B, dtype=torch.long, device=like.device)
        if need <= self.capacity:
            return
        cap = max(need, 2 * self.capacity, 16)
        k = like.new_zeros(B, cap + 1, H, Dh)
        v = like.new_zeros(B, cap + 1, H, Dh)
        positions = torch.zeros(B, cap + 1, dtype=torch.long, device=like.device)
        if self.k is not None:
            old = self.capacity
            k[:, :old], v[:, :old], positions[:, :old] = self.k[:, :old], self.v[:, :old], self.positions[:, :old]
        self.k, self.v, self.positions = k, v, positions

    def write(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor,
        rows: torch.Tensor | None = None,
    ) -> None:
        """Append the valid tokens: k, v (b, H, n, Dh); positions, valid (b, n); rows (b,) long or None (all)."""
        if rows is None:
            rows = torch.arange(self.batch_size, device=k.device)
        self._grow(1, k)
        counts = valid.long().sum(dim=1)
        self._grow(int((self.lengths[rows] + counts).max()), k)
        dest = self.lengths[rows, None] + valid.long().cumsum(dim=1) - 1
        dest = torch.where(valid, dest, torch.full_like(dest, self.capacity))  # padded -> scratch column
        row_index = rows[:, None].expand_as(dest)
        self.k[row_index, dest] = k.transpose(1, 2).to(self.k.dtype)
        self.v[row_index, dest] = v.transpose(1, 2).to(self.v.dtype)
        self.positions[row_index, dest] = positions
        self.lengths[rows] += counts

    def read(self, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return k, v (b, H, S, Dh), positions (b, S), present (b, S) bool for the given rows (S = longest row)."""
        if self.k is None:
            raise RuntimeError("reading an empty KV slot (nothing was written at this recursion yet)")
        lengths = self.lengths if rows is None else self.lengths[rows]
        S = max(1, int(lengths.max()))
        k, v, positions = self.k[:, :S], self.v[:, :S], self.positions[:, :S]  # views, no copy
        if rows is not None:
            k, v, positions = k[rows], v[rows], positions[rows]
        present = torch.arange(S, device=lengths.device)[None, :] < lengths[:, None]
        return k.transpose(1, 2), v.transpose(1, 2), positions, present


@dataclass
class MoRCache:
    """Cache of a :class:`MixtureOfRecursionsLM`: one :class:`RaggedKVCache` per slot, created on demand.

    Slot keys: ("layer", l) for the plain recursive model; ("pre", i), ("rec", r, j), ("post", i) for the
    routed model (r = recursion, j = block inside the shared stack). ``depthwise_batching``: at decode time
    send only the still-active sequences through each recursion (else all rows are computed, the exited
    ones discarded).
    """

    batch_size: int
    depthwise_batching: bool = True
    slots: dict[tuple, RaggedKVCache] = field(default_factory=dict)
    length: int = 0

    def slot(self, key: tuple) -> RaggedKVCache:
        if key not in self.slots:
            self.slots[key] = RaggedKVCache(self.batch_size)
        return self.slots[key]

    def entries(self) -> dict[tuple, int]:
        """Cached (token, sequence) pairs per slot."""
        return {key: slot.entries() for key, slot in self.slots.items()}


def recursion_kv_entries(cache: MoRCache, n_recursions: int) -> list[int]:
    """Cache entries held by the shared stack at each recursion r = 0 .. N_r - 1 (summed over its layers)."""
    per = [0] * n_recursions
    for key, n in cache.entries().items():
        if key[0] == "rec":
            per[key[1]] += n
    return per


def kv_memory_ratio(n_recursions: int, scheme: str) -> float:
    """Paper's KV-memory of the shared stack relative to caching every token at every recursion.

    "recursion_wise" with capacities N_r/N_r, ..., 1/N_r: sum_r (N_r - r + 1)/N_r / N_r = (N_r + 1) / (2 N_r);
    "sharing" (only the first recursion is cached): 1 / N_r.
    """
    if scheme == "recursion_wise":
        return (n_recursions + 1) / (2 * n_recursions)
    if scheme == "sharing":
        return 1.0 / n_recursions
    raise ValueError(f"unknown KV scheme {scheme!r}; allowed: 'recursion_wise', 'sharing'")


def recursion_attention_mask(depth: torch.Tensor, recursion: int, kv_sharing: bool = False) -> torch.Tensor:
    """Which keys each query sees inside the shared stack at ``recursion`` (1-based), given token depths.

    depth: (T,) long, recursions per token (token t is active at recursion r iff depth_t >= r) ->
    mask (T, T) bool, mask[t, s] = query t attends key s. Only active queries have rows. Recursion-wise
    caching: s <= t and s active at r (keys computed at this depth). Recursive KV sharing: s <= t for every
    s (the first recursion's keys, which every token has).
    """
    if depth.dim() != 1:
        raise ValueError(f"depth must have shape (T,), got {tuple(depth.shape)}")
    if recursion < 1:
        raise ValueError(f"recursion is 1-based, got {recursion}")
    T = depth.shape[0]
    active = depth >= recursion
    causal = torch.ones(T, T, dtype=torch.bool, device=depth.device).tril()
    keys = torch.ones_like(active) if kv_sharing else active
    return causal & active[:, None] & keys[None, :]


def kv_entries_from_depths(depth: torch.Tensor, n_recursions: int, kv_sharing: bool = False) -> list[int]:
    """Key/value entries one layer of the shared stack caches at each recursion, predicted from depths.

    depth: (B, T) or (T,) long -> [entries at r = 1 .. N_r]: the tokens active at r (recursion-wise), or
    all tokens at r = 1 and none after (sharing). Agrees with :func:`recursion_kv_entries` of a real cache
    divided by the number of shared blocks (tested).
    """
    counts = [int((depth >= r).sum()) for r in range(1, n_recursions + 1)]
    return [int(depth.numel())] + [0] * (n_recursions - 1) if kv_sharing else counts


# ---------------------------------------------------------------------------------------------------------
# 4. The model
# ---------------------------------------------------------------------------------------------------------


@dataclass
class MoRConfig:
    """Configuration of :class:`MixtureOfRecursionsLM` (defaults: a CPU-sized char model).

    - n_layers: L, the unrolled depth (layer applications of the equivalent vanilla model).
    - n_recursions: N_r. sharing: one of SHARING_SCHEMES (routing needs "cycle" or "middle_cycle").
    - routing: "none" (plain recursive model), "expert" or "token".
    - capacities: expert-choice capacity per recursion (default (N_r - r + 1)/N_r).
    - router_alpha: gate scale alpha (default 0.1 expert, 1.0 token, as in the paper's configs).
    - sampling: how expert-choice decides at inference: "aux_loss" (threshold the main router, trained with a
      BCE to agree with top-k) or "aux_router" (a second router on detached states, trained with that BCE).
    - aux_loss_coef: weight of the BCE (paper 0.001). balance_coef: token-choice balancing loss (paper 0.1).
    - z_loss_coef: router z-loss mean(logsumexp(logits)^2). kv_sharing: cache only the first recursion.
    """

    vocab_size: int
    dim: int = 128
    n_heads: int = 4
    n_layers: int = 8
    n_recursions: int = 3
    sharing: str = "middle_cycle"
    routing: str = "expert"
    capacities: tuple[float, ...] | None = None
    router_alpha: float | None = None
    sampling: str = "aux_loss"
    aux_loss_coef: float = 0.001
    balance_coef: float = 0.1
    z_loss_coef: float = 0.0
    kv_sharing: bool = False
    max_seq_len: int = 512
    expansion: float = 4.0
    rope_base: float = 10000.0


class MixtureOfRecursionsLM(CausalLMBase):
    """Recursive causal LM with optional per-token routing (plain recursive when ``routing == "none"``).

    forward(ids (B, T) long, cache=None | MoRCache, rule=None | "topk" | "threshold") -> LMOutput:
        logits (B, T, V); aux_loss (router BCE or balancing loss, weighted); depth (B, T) recursions per token;
        metrics (router agreement per recursion, fraction of tokens per depth).

    ``rule`` (expert-choice): "topk" = training rule (non-causal), "threshold" = inference rule (causal);
    default "topk" in train mode and "threshold" in eval mode. Decoding with a cache needs "threshold".
    """

    def __init__(self, cfg: MoRConfig) -> None:
        super().__init__(cfg.vocab_size, cfg.dim, cfg.n_heads, cfg.max_seq_len, cfg.expansion, cfg.rope_base)
        if cfg.routing not in ROUTINGS:
            raise ValueError(f"unknown routing {cfg.routing!r}; allowed: {', '.join(ROUTINGS)}")
        if cfg.sampling not in ("aux_loss", "aux_router"):
            raise ValueError(f"unknown sampling {cfg.sampling!r}; allowed: 'aux_loss', 'aux_router'")
        self.layer_map = shared_layer_map(cfg.sharing, cfg.n_layers, cfg.n_recursions)
        B = _check_scheme(cfg.sharing, cfg.n_layers, cfg.n_recursions)
        routed = cfg.routing != "none"
        if (routed or cfg.kv_sharing) and cfg.sharing not in ("cycle", "middle_cycle"):
            raise ValueError(
                f"routing / kv_sharing need a recursion block repeated as a whole ('cycle' or 'middle_cycle'), "
                f"got sharing={cfg.sharing!r} (as in the paper's code)"
            )
        if cfg.kv_sharing and not routed:
            raise ValueError("kv_sharing is implemented for the routed models (routing='expert' or 'token')")
        caps = cfg.capacities if cfg.capacities is not None else default_capacities(cfg.n_recursions)
        caps = check_capacities(caps, cfg.n_recursions)
        if cfg.kv_sharing and caps[0] < 1.0:
            raise ValueError(f"kv_sharing reuses the first recursion's keys, so capacities[0] must be 1, got {caps}")
        alpha = cfg.router_alpha if cfg.router_alpha is not None else (1.0 if cfg.routing == "token" else 0.1)
        if alpha <= 0:
            raise ValueError(f"router_alpha must be positive, got {alpha}")
        self.cfg = replace(cfg, capacities=caps, router_alpha=float(alpha))
        self.n_recursions = cfg.n_recursions
        self.blocks = nn.ModuleList(self.make_block() for _ in range(max(self.layer_map) + 1))
        middle = cfg.sharing == "middle_cycle"
        self.prelude_units = [0] if middle else []
        self.recursion_units = list(range(1, B + 1)) if middle else list(range(B))
        self.coda_units = [B + 1] if middle else []
        self.routers = nn.ModuleList()
        self.aux_routers = nn.ModuleList()
        if cfg.routing == "expert":
            self.routers.extend(self._linear_router(1) for _ in range(cfg.n_recursions))
            if cfg.sampling == "aux_router":
                self.aux_routers.extend(self._linear_router(1) for _ in range(cfg.n_recursions))
        elif cfg.routing == "token":
            self.routers.append(self._linear_router(cfg.n_recursions))

    def _linear_router(self, out: int) -> nn.Linear:
        router = nn.Linear(self.dim, out, bias=False)  # the paper's linear router: d -> out, N(0, 0.02)
        nn.init.normal_(router.weight, std=0.02)
        return router

    @property
    def capacities(self) -> tuple[float, ...]:
        return self.cfg.capacities

    def new_cache(self, batch_size: int, depthwise_batching: bool = True) -> MoRCache:
        """An empty recursion-wise cache for ``batch_size`` sequences."""
        return MoRCache(int(batch_size), depthwise_batching=bool(depthwise_batching))

    def router_parameters(self) -> int:
        """Parameters of the routers (what MoR adds on top of the plain recursive model)."""
        return sum(p.numel() for m in (self.routers, self.aux_routers) for p in m.parameters())

    # --- applying a stack of blocks to a (packed) subset of tokens ----------------------------------------
    def _run_units(
        self,
        units: list[int],
        x: torch.Tensor,
        pos: torch.Tensor,
        valid: torch.Tensor,
        key: tuple,
        cache: MoRCache | None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (b, k, D) tokens in causal order (padding at the end), pos/valid: (b, k) -> (b, k, D)."""
        for j, unit in enumerate(units):
            block = self.blocks[unit]
            if cache is None:
                x = block(x, rope=self.rope_at(pos))  # causal attention among the packed tokens only
                continue
            slot_key = (*key, j)
            write: RaggedKVCache | None = cache.slot(slot_key)
            read = write
            if self.cfg.kv_sharing and key[0] == "rec" and key[1] > 0:
                # recursive KV sharing: deeper recursions reuse the first recursion's keys and values
                write, read = None, cache.slot(("rec", 0, j))
            x = _block_with_ragged_cache(block, x, pos, valid, self.rope_at(pos), write, read, rows)
        return x

    def _apply_to_selected(
        self,
        h_in: torch.Tensor,
        index: torch.Tensor,
        valid: torch.Tensor,
        pos: torch.Tensor,
        r: int,
        cache: MoRCache | None,
    ) -> torch.Tensor:
        """f(H) for the tokens index (b, k) of h_in (B, T, D) at recursion r -> (B, k, D) (zeros where invalid)."""
        D = h_in.shape[-1]
        if index.shape[1] == 0:  # no token of any sequence is active at this recursion
            return h_in.new_zeros(index.shape[0], 0, D)
        x = h_in.gather(1, index[..., None].expand(-1, -1, D))
        p = pos.gather(1, index)
        decode_rows = cache is not None and cache.depthwise_batching and index.shape[1] == 1
        if not decode_rows:
            return self._run_units(self.recursion_units, x, p, valid, ("rec", r), cache)
        # depth-wise batching at decode: only the sequences whose new token is still active run the stack
        rows = valid[:, 0].nonzero().squeeze(1)
        y = torch.zeros_like(x)
        if rows.numel():
            y[rows] = self._run_units(self.recursion_units, x[rows], p[rows], valid[rows], ("rec", r), cache, rows)
        return y

    # --- forward -----------------------------------------------------------------------------------------
    def forward(self, ids: torch.Tensor, cache: MoRCache | None = None, rule: str | None = None) -> LMOutput:
        check_token_ids(ids, self.vocab_size)
        rule = rule if rule is not None else ("topk" if self.training else "threshold")
        if rule not in ROUTING_RULES:
            raise ValueError(f"unknown routing rule {rule!r}; allowed: {', '.join(ROUTING_RULES)}")
        B, T = ids.shape
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"cache was made for batch size {cache.batch_size}, got ids of batch size {B}")
        past = 0 if cache is None else cache.length
        if past + T > self.max_seq_len:
            raise ValueError(f"sequence reaches position {past + T}, beyond max_seq_len={self.max_seq_len}")
        if self.cfg.routing == "expert" and rule == "topk" and past > 0:
            raise ValueError(
                "top-k routing ranks the whole sequence, so it cannot decode token by token "
                "(k = max(1, floor(c * 1)) = 1 sends every new token through every recursion); use rule='threshold'"
            )
        if self.cfg.kv_sharing and cache is None:
            cache = self.new_cache(B)  # sharing reads keys across recursions, which the cache path provides
        pos = torch.arange(past, past + T, device=ids.device).expand(B, T)
        every = torch.ones(B, T, dtype=torch.bool, device=ids.device)
        h = self.embed(ids)
        zero = h.new_zeros((), dtype=torch.float32)
        if self.cfg.routing == "none":
            for layer, unit in enumerate(self.layer_map):
                h = self._run_units([unit], h, pos, every, ("layer", layer), cache)
            out = LMOutput(self.read_out(h), zero, {}, torch.full((B, T), self.n_recursions, device=ids.device))
        else:
            for i, unit in enumerate(self.prelude_units):
                h = self._run_units([unit], h, pos, every, ("pre", i), cache)
            if self.cfg.routing == "expert":
                h, aux, metrics, depth, gates = self._expert_choice(h, pos, rule, cache)
            else:
                h, aux, metrics, depth, gates = self._token_choice(h, pos, cache)
            for i, unit in enumerate(self.coda_units):
                h = self._run_units([unit], h, pos, every, ("post", i), cache)
            out = LMOutput(self.read_out(h), aux, metrics, depth, gates)
        if cache is not None:
            cache.length += T
        return out

    def _expert_choice(self, h: torch.Tensor, pos: torch.Tensor, rule: str, cache: MoRCache | None):
        """Expert-choice recursions: every recursion picks its tokens among those the previous one kept."""
        B, T, D = h.shape
        cand = torch.arange(T, device=h.device).expand(B, T)  # (B, n) candidate tokens (hierarchical filtering)
        cand_valid = torch.ones(B, T, dtype=torch.bool, device=h.device)
        depth = torch.zeros(B, T, dtype=torch.long, device=h.device)
        aux = h.new_zeros((), dtype=torch.float32)
        metrics: dict[str, torch.Tensor | float] = {}
        gates = torch.full((B, self.n_recursions, T), float("nan"), device=h.device)
        k_per_r = tokens_per_recursion(self.capacities, T)
        for r in range(self.n_recursions):
            h_cand = h.gather(1, cand[..., None].expand(-1, -1, D))
            logit = self.routers[r](h_cand).squeeze(-1).float()  # (B, n)
            gate = self.cfg.router_alpha * torch.sigmoid(logit)  # g^r_t = alpha * sigma(theta_r . H^r_t)
            # the logit whose sign decides at inference: the router itself, or an aux router on detached states
            decider = self.aux_routers[r](h_cand.detach()).squeeze(-1).float() if self.aux_routers else logit
            if rule == "topk":
                sel, _, bce = expert_choice_topk(logit, min(k_per_r[r], cand.shape[1]), self.cfg.router_alpha, decider)
                sel_valid = torch.ones_like(sel, dtype=torch.bool)
                # BCE normalised by batch x candidates, summed over recursions (as in the paper's code)
                aux = aux + self.cfg.aux_loss_coef * bce
                member = torch.zeros_like(decider, dtype=torch.bool).scatter(1, sel, True)
                metrics[f"router_acc_r{r + 1}"] = ((decider >= 0) == member).float().mean().detach()
            else:
                keep = cand_valid if self.capacities[r] >= 1.0 else cand_valid & (decider >= 0)  # sigma >= 1/2
                sel, sel_valid = pack_active(keep)
            index = cand.gather(1, sel)  # (B, k) positions among the T tokens, causal order
            y = self._apply_to_selected(h, index, sel_valid, pos, r, cache)
            g = (gate.gather(1, sel) * sel_valid).to(y.dtype)
            # H^{r+1}_t = H^r_t + g^r_t f(H^r_t) for the selected tokens; the rest keep H^r_t
            h = h.scatter_add(1, index[..., None].expand(-1, -1, D), g[..., None] * y)
            depth = depth.scatter_add(1, index, sel_valid.long())
            gates[:, r] = gates[:, r].scatter(1, index, torch.where(sel_valid, g.detach().float(), float("nan")))
            cand, cand_valid = index, sel_valid
        for r in range(self.n_recursions):
            metrics[f"frac_depth_ge{r + 1}"] = (depth > r).float().mean().detach()
        return h, aux, metrics, depth, gates

    def _token_choice(self, h: torch.Tensor, pos: torch.Tensor, cache: MoRCache | None):
        """Token-choice recursions: each token picks its depth i_t once, from H^1 (a causal decision)."""
        B, T, D = h.shape
        logits = self.routers[0](h).float()  # (B, T, N_r)
        probs = torch.softmax(logits, dim=-1) * self.cfg.router_alpha
        choice = probs.argmax(dim=-1)  # i_t - 1, top-1 depth
        gate = probs.gather(-1, choice[..., None]).squeeze(-1)
        out, state = h, h
        for r in range(self.n_recursions):
            index, valid = pack_active(choice >= r)
            y = self._apply_to_selected(state, index, valid, pos, r, cache)
            chosen = choice.gather(1, index)
            finish = (chosen == r) & valid
            # tokens ending here: output H^1 + g_t f(H^{i_t}); tokens going on: H^{r+1} = f(H^r) (ungated)
            g = (gate.gather(1, index) * finish).to(y.dtype)
            out = out.scatter_add(1, index[..., None].expand(-1, -1, D), g[..., None] * y)
            go_on = ((chosen > r) & valid)[..., None]
            old = state.gather(1, index[..., None].expand(-1, -1, D))
            state = state.scatter(1, index[..., None].expand(-1, -1, D), torch.where(go_on, y, old))
        # Switch-style balance: N_r * sum_i P_i f_i, P_i mean router probability, f_i fraction routed to i
        frac = torch.bincount(choice.flatten(), minlength=self.n_recursions).float() / choice.numel()
        balance = self.n_recursions * (probs.mean(dim=(0, 1)) * frac).sum()
        aux = self.cfg.balance_coef * balance
        if self.cfg.z_loss_coef:
            aux = aux + self.cfg.z_loss_coef * torch.logsumexp(logits, dim=-1).pow(2).mean()
        depth = choice + 1
        metrics: dict[str, torch.Tensor | float] = {"balance_loss": balance.detach()}
        for r in range(self.n_recursions):
            metrics[f"frac_depth_ge{r + 1}"] = (depth > r).float().mean().detach()
        # the gate g_t multiplies the last recursion's output only: record it there
        gates = torch.full((B, self.n_recursions, T), float("nan"), device=h.device)
        gates = gates.scatter(1, choice[:, None], gate.detach()[:, None].float())
        return out, aux, metrics, depth, gates


def _block_with_ragged_cache(
    block: TransformerBlock,
    x: torch.Tensor,
    pos: torch.Tensor,
    valid: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor],
    write: RaggedKVCache | None,
    read: RaggedKVCache,
    rows: torch.Tensor | None,
) -> torch.Tensor:
    """The pre-norm block ``x + Attn(norm x); x + SwiGLU(norm x)`` with keys/values from a ragged slot.

    x: (b, n, D), pos/valid: (b, n), rope: per-row tables (b, 1, n, Dh). New keys/values are written to
    ``write`` (if any) first; queries then attend to the entries of ``read`` at positions <= their own.
    Uses the block's own parameters, so it computes exactly what ``block(x, rope)`` computes on the same
    tokens (tests check cached == uncached).
    """
    if block.norm_placement != "pre" or block.mixer_kind != "attention":
        raise ValueError("the recursion-wise cache path expects pre-norm attention blocks")
    attn = block.mixer
    b, n, D = x.shape
    hn = block.mix_norms[0](x)
    q, k, v = attn.qkv(hn).view(b, n, 3, attn.n_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    if attn.qk_bias is not None:
        q, k = q + attn.qk_bias[0].to(q.dtype), k + attn.qk_bias[1].to(k.dtype)
    cos, sin = rope
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    if write is not None:
        write.write(k, v, pos, valid, rows)
    keys, values, key_pos, present = read.read(rows)
    mask = present[:, None, :] & (key_pos[:, None, :] <= pos[:, :, None])  # (b, n, S): causal by position
    mask = mask | ~valid[:, :, None]  # padded queries see everything (their output is discarded): no NaN rows
    y = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype), attn_mask=mask[:, None])
    x = x + attn.out(y.transpose(1, 2).reshape(b, n, D))
    return x + block.mlp(block.mlp_norms[0](x))


# ---------------------------------------------------------------------------------------------------------
# 5. Looking inside: the causality leak, router agreement, depths
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def token_depths(model: MixtureOfRecursionsLM, ids: torch.Tensor, rule: str = "threshold") -> torch.Tensor:
    """Recursions each token goes through under a routing rule: ids (B, T) -> depth (B, T) long.

    Expert-choice sets are nested, so token t is in the top-k of recursion r exactly when depth_t >= r.
    """
    was = model.training
    model.eval()
    try:
        return model(ids, rule=rule).depth
    finally:
        model.train(was)


@torch.no_grad()
def causality_leak(
    model: MixtureOfRecursionsLM, ids: torch.Tensor, position: int, new_token: int, rule: str = "topk"
) -> dict[str, torch.Tensor]:
    """Change the token at ``position`` and report which *earlier* tokens change depth.

    ids: (T,) or (1, T) long. Returns depth_before, depth_after (T,) and changed (T,) bool restricted to
    positions < ``position``. Under "topk" an earlier token's membership can flip (k is spent over the
    whole sequence, future included); under "threshold" it never can (the rule is causal).
    """
    if model.cfg.routing != "expert":
        raise ValueError(f"the causality leak concerns expert-choice routing, model has routing={model.cfg.routing!r}")
    row = ids.reshape(1, -1)
    if not 0 <= position < row.shape[1]:
        raise ValueError(f"position must lie in [0, {row.shape[1]}), got {position}")
    changed_ids = row.clone()
    changed_ids[0, position] = new_token
    before = token_depths(model, row, rule)[0]
    after = token_depths(model, changed_ids, rule)[0]
    earlier = torch.arange(row.shape[1], device=row.device) < position
    return {"depth_before": before, "depth_after": after, "changed": (before != after) & earlier}


@torch.no_grad()
def router_agreement(model: MixtureOfRecursionsLM, ids: torch.Tensor) -> dict[str, list[float]]:
    """How well the causal inference rule reproduces top-k, per recursion r = 1 .. N_r.

    ids: (B, T). "step": among the candidates of recursion r under top-k, the fraction where
    sigma(logit) >= 1/2 equals top-k membership (the paper's "sampling accuracy"); "membership": the fraction
    of tokens whose membership of recursion r is the same under the threshold rule and under top-k.
    """
    if model.cfg.routing != "expert":
        raise ValueError(f"router agreement concerns expert-choice routing, model has routing={model.cfg.routing!r}")
    was = model.training
    model.eval()
    try:
        top = model(ids, rule="topk")
        thr = model(ids, rule="threshold").depth
    finally:
        model.train(was)
    n = model.n_recursions
    step = [float(top.metrics[f"router_acc_r{r + 1}"]) for r in range(n)]
    member = [float(((top.depth > r) == (thr > r)).float().mean()) for r in range(n)]
    return {"step": step, "membership": member}


# ---------------------------------------------------------------------------------------------------------
# 6. FLOPs per token and matched baselines
# ---------------------------------------------------------------------------------------------------------


def block_flops_per_token(dim: int, mlp_inner: int, n_keys: float) -> tuple[float, float]:
    """Forward FLOPs of one pre-norm block for one token attending to ``n_keys`` keys.

    Returns (matmul, attention): 2 * (4 D^2 + 3 D * inner) for the qkv/out/SwiGLU matrices, and
    4 D n_keys for q k^T and attn v. Norms, softmax and rotary are O(D) and ignored.
    """
    return 2.0 * (4 * dim * dim + 3 * dim * mlp_inner), 4.0 * dim * n_keys


def forward_flops_per_token(
    model: nn.Module, seq_len: int, depth_fractions: list[float] | None = None
) -> dict[str, float]:
    """Forward FLOPs per token, averaged over a sequence of ``seq_len`` tokens (training = ~3x this).

    model: a TransformerLM or MixtureOfRecursionsLM. depth_fractions: fraction of tokens active at each
    recursion r = 1 .. N_r (default: k_r / L from the capacities for expert-choice, a balanced split
    (N_r - r + 1) / N_r for token-choice, all ones for the plain recursive model; pass measured fractions
    for the threshold rule). Attention among n active tokens costs on average (n + 1) / 2 keys per query.
    Returns {"matmul", "attention", "routers", "read_out", "total", "layer_applications"}; "matmul" +
    "routers" + "read_out" is exactly what ``torch.utils.flop_counter`` counts for the top-k rule (tested).
    """
    L = int(seq_len)
    if L < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    D, inner = model.dim, model.mlp_inner
    mm, att_full = block_flops_per_token(D, inner, (L + 1) / 2)
    out = {"matmul": 0.0, "attention": 0.0, "routers": 0.0, "read_out": 2.0 * D * model.vocab_size,
           "layer_applications": 0.0}

    def add_blocks(count: float, n_keys: float) -> None:
        out["matmul"] += count * mm
        out["attention"] += count * block_flops_per_token(D, inner, n_keys)[1]
        out["layer_applications"] += count

    if isinstance(model, TransformerLM):
        add_blocks(model.n_layers, (L + 1) / 2)
    elif not isinstance(model, MixtureOfRecursionsLM):
        raise TypeError(f"expected a TransformerLM or MixtureOfRecursionsLM, got {type(model).__name__}")
    elif model.cfg.routing == "none":
        add_blocks(len(model.layer_map), (L + 1) / 2)
    else:
        n = model.n_recursions
        if depth_fractions is None:
            if model.cfg.routing == "expert":
                depth_fractions = [k / L for k in tokens_per_recursion(model.capacities, L)]
            else:
                depth_fractions = list(default_capacities(n))
        if len(depth_fractions) != n:
            raise ValueError(f"need {n} depth fractions, got {len(depth_fractions)}")
        add_blocks(len(model.prelude_units) + len(model.coda_units), (L + 1) / 2)
        for r, frac in enumerate(depth_fractions):
            # active queries attend to each other, or (KV sharing, r > 1) to every earlier token's first keys
            keys = (L + 1) / 2 if (model.cfg.kv_sharing and r > 0) else (frac * L + 1) / 2
            add_blocks(frac * len(model.recursion_units), keys)
            if model.cfg.routing == "expert":
                candidates = 1.0 if r == 0 else depth_fractions[r - 1]
                out["routers"] += candidates * 2.0 * D * (2 if len(model.aux_routers) else 1)
        if model.cfg.routing == "token":
            out["routers"] = 2.0 * D * n
    out["total"] = out["matmul"] + out["attention"] + out["routers"] + out["read_out"]
    return out


def matched_models(
    vocab_size: int,
    dim: int = 128,
    n_heads: int = 4,
    n_unique_layers: int = 4,
    n_recursions: int = 3,
    max_seq_len: int = 512,
    expansion: float = 4.0,
    seed: int = 0,
    **mor_options: object,
) -> dict[str, nn.Module]:
    """Vanilla, plain recursive and MoR (expert, token) models with the same unique transformer parameters.

    The vanilla model has ``n_unique_layers`` blocks; the recursive and MoR models use Middle-Cycle sharing
    with the same ``n_unique_layers`` unique blocks (first and last unshared, B = n_unique_layers - 2 shared,
    unrolled N_r times), so their transformer parameters are *identical in count*; MoR adds only its
    routers (N_r * D weights), reported by ``router_parameters``. Extra ``mor_options`` go to MoRConfig.
    This is the "equal parameters" comparison; the recursive model then spends the most FLOPs per token,
    MoR less (capacities), vanilla the least. For the paper's equal-FLOPs view see :func:`equal_flops_vanilla_layers`.
    """
    if n_unique_layers < 3:
        raise ValueError(f"Middle-Cycle needs n_unique_layers >= 3 (first, >=1 shared, last), got {n_unique_layers}")
    B = n_unique_layers - 2
    base = dict(vocab_size=vocab_size, dim=dim, n_heads=n_heads, n_layers=2 + B * n_recursions,
                n_recursions=n_recursions, sharing="middle_cycle", max_seq_len=max_seq_len, expansion=expansion)
    models: dict[str, nn.Module] = {}
    torch.manual_seed(seed)
    models["vanilla"] = TransformerLM(vocab_size, dim, n_heads, n_unique_layers, max_seq_len, expansion)
    for name, routing in (("recursive", "none"), ("mor_expert", "expert"), ("mor_token", "token")):
        torch.manual_seed(seed)
        opts = {k: v for k, v in mor_options.items() if routing != "none"}
        models[name] = MixtureOfRecursionsLM(MoRConfig(**base, routing=routing, **opts))
    return models


def transformer_parameters(model: nn.Module) -> int:
    """Parameters excluding routers: what :func:`matched_models` makes equal."""
    routers = model.router_parameters() if isinstance(model, MixtureOfRecursionsLM) else 0
    return count_parameters(model) - routers


def equal_flops_vanilla_layers(model: MixtureOfRecursionsLM, seq_len: int) -> int:
    """Depth of the vanilla model whose FLOPs per token are closest to ``model``'s (the paper's view:
    at equal FLOPs MoR has fewer unique parameters than the vanilla model)."""
    target = forward_flops_per_token(model, seq_len)
    per_layer = sum(block_flops_per_token(model.dim, model.mlp_inner, (seq_len + 1) / 2))
    return max(1, round((target["matmul"] + target["attention"]) / per_layer))
