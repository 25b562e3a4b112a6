"""A recurrent-depth language model in the style of Huginn (Geiping et al. 2025, arXiv 2502.05171).

Three groups of causal transformer blocks; only the middle one recurs::

    e    = P(x)                                   prelude: embed the tokens once
    s_0  ~ N(0, sigma_s^2 I),  sigma_s^2 = 2/5    a random initial latent state
    s_i  = R(e, s_{i-1}) = core(A [s_{i-1}, e])   i = 1..r: the core sees the input e at every step
    p    = C(s_r)                                 coda + head: next-token logits

``A`` is a linear adapter R^{2h} -> R^h on the concatenation (the paper's injection at scale). Because every step
gets ``e`` and ``s_0`` is noise, the core is pushed to be a *path-independent* iteration: more steps refine the
answer instead of drifting.

Training draws one recurrence count ``r`` per optimisation step from a log-normal Poisson distribution (identical
for the whole batch and for every DDP rank, hence a function of the step: :func:`sample_recurrences`) and
backpropagates only through the last ``k`` recurrences (the earlier ones run under ``no_grad``), so activation
memory does not grow with ``r``. At test time ``r`` is a free knob: run the core longer to think longer.

Test-time extras from the paper, all without extra training:

* a KV cache indexed by (recurrence, core layer) -- every recurrence has its own keys/values -- so token-by-token
  generation equals the full forward (:meth:`RecurrentDepthModel.generate`);
* per-token adaptive exit: stop a token's recurrence once successive next-token distributions differ by less
  than a KL threshold (:func:`kl_exit_steps`, :meth:`RecurrentDepthModel.adaptive_forward`); keys/values a token
  never computed (it exited early) are read from its latest computed recurrence, as in the paper;
* warm start ("continuous compute"): the next token starts from the previous token's final state instead of noise.

A fixed-depth twin is the same model trained with ``schedule="fixed"`` (always ``r = mean_recurrence``).

Norm placement: the shared :class:`~recursionlab.nn.blocks.TransformerBlock` ``"sandwich"`` is
``x + norm(f(norm(x)))`` (the residual stream itself is not normalised), while Huginn's sandwich block also
normalises the stream after each sub-layer, so the state leaving its core always has unit RMS. We keep that
property explicitly with ``state_norm`` after the core, which is what keeps hundreds of repeated applications
of the core from blowing the state up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recursionlab.nn.attention import KVCache
from recursionlab.nn.blocks import NORM_PLACEMENTS, TransformerBlock
from recursionlab.nn.init import trunc_normal_corrected_
from recursionlab.nn.mlp import SwiGLU
from recursionlab.nn.norms import RMSNorm
from recursionlab.nn.rotary import RotaryEmbedding

__all__ = [
    "RecurrentDepthConfig",
    "RecurrentDepthModel",
    "RecurrentDepthCache",
    "sample_recurrences",
    "split_recurrences",
    "recurrence_pmf",
    "kl_exit_steps",
    "SCHEDULES",
    "INJECTIONS",
]

SCHEDULES = ("lognormal-poisson", "fixed")
INJECTIONS = ("concat", "add")


# ----------------------------------------------------------------------------------------------------------------
# The recurrence sampler (log-normal Poisson) and truncated backprop split
# ----------------------------------------------------------------------------------------------------------------
def split_recurrences(r: int, backprop_k: int) -> tuple[int, int]:
    """Split ``r`` recurrences into ``(no_grad_steps, grad_steps) = (max(r - k, 0), min(r, k))``."""
    if isinstance(r, bool) or int(r) != r or r < 1:
        raise ValueError(f"the number of recurrences must be an integer >= 1, got {r!r}")
    if isinstance(backprop_k, bool) or int(backprop_k) != backprop_k or backprop_k < 1:
        raise ValueError(f"backprop_k must be an integer >= 1, got {backprop_k!r}")
    r, k = int(r), int(backprop_k)
    return max(r - k, 0), min(r, k)


def sample_recurrences(
    step: int, mean: float, sigma: float = 0.5, backprop_k: int = 8, seed: int = 514229
) -> tuple[int, int]:
    """Draw the recurrence count of training step ``step`` and split it for truncated backprop.

        tau ~ N(log(mean) - sigma^2 / 2, sigma^2)      (so E[e^tau] = mean)
        r   = Poisson(e^tau) + 1                        (E[r] = mean + 1; heavy right tail)

    The draw is a deterministic function of ``(seed, step)``: every example of the batch and every DDP rank gets
    the same ``r`` (the paper's "lockstep"), and a resumed run repeats it exactly.

    Returns ``(no_grad_steps, grad_steps) = (max(r - k, 0), min(r, k))`` with ``k = backprop_k``; their sum is ``r``.
    """
    if isinstance(step, bool) or int(step) != step or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    if not mean > 0:
        raise ValueError(f"mean recurrence must be > 0, got {mean!r}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng((int(seed), int(step)))
    tau = rng.normal(math.log(mean) - 0.5 * sigma**2, sigma)  # sigma = 0 gives tau = log(mean)
    r = int(rng.poisson(math.exp(tau))) + 1
    return split_recurrences(r, backprop_k)


def recurrence_pmf(mean: float, sigma: float = 0.5, max_r: int = 200, quadrature_nodes: int = 96) -> np.ndarray:
    """Exact probabilities P(r = n) of :func:`sample_recurrences`'s ``r`` for ``n = 0..max_r`` (entry 0 is 0).

    P(r = n + 1) = E_tau[ Poisson(n; e^tau) ], the log-normal mixture integrated by Gauss-Hermite quadrature.
    Returns a float64 array of shape (max_r + 1,); the mass above ``max_r`` is left out.
    """
    if not mean > 0 or not sigma >= 0 or max_r < 1:
        raise ValueError(f"need mean > 0, sigma >= 0 and max_r >= 1, got {mean}, {sigma}, {max_r}")
    n = np.arange(max_r, dtype=np.float64)  # Poisson count; r = n + 1
    log_fact = np.array([math.lgamma(v + 1.0) for v in n])
    if sigma == 0:
        taus, weights = np.array([math.log(mean)]), np.array([1.0])
    else:
        # int f(tau) N(tau; mu, sigma^2) dtau = sum_j w_j f(mu + sqrt(2) sigma x_j) / sqrt(pi)
        x, w = np.polynomial.hermite.hermgauss(quadrature_nodes)
        taus = math.log(mean) - 0.5 * sigma**2 + math.sqrt(2.0) * sigma * x
        weights = w / math.sqrt(math.pi)
    lam = np.exp(taus)[:, None]
    log_pois = n[None, :] * np.log(lam) - lam - log_fact[None, :]
    pmf = np.zeros(max_r + 1)
    pmf[1:] = (weights[:, None] * np.exp(log_pois)).sum(0)
    return pmf


# ----------------------------------------------------------------------------------------------------------------
# The KL exit rule
# ----------------------------------------------------------------------------------------------------------------
def kl_exit_steps(step_logits: torch.Tensor, threshold: float, min_steps: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token exit step from the next-token distributions after every recurrence.

    step_logits: (S, ..., V) logits after recurrences 1..S (``S`` is the cap).
    A token exits at the first step ``i >= min_steps`` with ``KL(p_{i-1} || p_i) < threshold``, where
    ``p_0`` is the uniform distribution (the Huginn code's direction and start); tokens that never meet the rule
    stop at the cap ``S``.

    Returns ``(exit_step (...) long in 1..S, logits_at_exit (..., V))``.
    """
    if step_logits.dim() < 2:
        raise ValueError(f"step_logits must have shape (S, ..., V), got {tuple(step_logits.shape)}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold!r}")
    n_steps = step_logits.shape[0]
    if not 1 <= min_steps <= n_steps:
        raise ValueError(f"min_steps must lie in 1..{n_steps} (the number of steps given), got {min_steps}")
    logp = F.log_softmax(step_logits.float(), dim=-1)
    uniform = torch.full_like(logp[:1], -math.log(logp.shape[-1]))
    prev = torch.cat((uniform, logp[:-1]), dim=0)
    kl = (prev.exp() * (prev - logp)).sum(-1)  # (S, ...): KL(p_{i-1} || p_i)
    steps = torch.arange(1, n_steps + 1, device=kl.device).view(-1, *([1] * (kl.dim() - 1)))
    ok = (kl < threshold) & (steps >= min_steps)
    ok[-1] = True  # the cap
    exit_index = ok.long().argmax(0)  # first True
    gathered = torch.gather(step_logits, 0, exit_index[None, ..., None].expand(1, *step_logits.shape[1:]))[0]
    return exit_index + 1, gathered


# ----------------------------------------------------------------------------------------------------------------
# Configuration, cache and model
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class RecurrentDepthConfig:
    """Sizes and recurrence settings of a :class:`RecurrentDepthModel`.

    - vocab_size: input tokens; out_vocab_size: output classes (default ``vocab_size``).
    - dim, n_heads, expansion: block width, heads and SwiGLU expansion.
    - mlp_inner: explicit SwiGLU inner width (the shared blocks round ``expansion`` up to a multiple of 256, which is
      right at d = 512 but 4x too wide for the tiny CPU models of the lesson).
    - prelude_layers, core_layers, coda_layers: (l_P, l_R, l_C) -- Huginn-0125 uses (2, 4, 2).
    - norm: placement in the shared blocks ("sandwich" | "pre" | "post").
    - max_positions: longest sequence (RoPE table, optional learned positions).
    - absolute_positions: add a learned position embedding (useful for pointer tasks where tokens *are* positions).
    - injection: "concat" (adapter on [s, e], the paper's choice at scale) or "add" (s + e).
    - mean_recurrence, recurrence_sigma: r-bar and sigma of the log-normal Poisson sampler (E[r] = r-bar + 1).
    - backprop_k: truncated backprop depth k (only the last k recurrences get gradients).
    - schedule: "lognormal-poisson" (random depth) or "fixed" (the fixed-depth twin: r = mean_recurrence).
    - state_std: standard deviation of s_0 (sqrt(2/5) as in the paper).
    - tie_embeddings: share the embedding and head matrices (needs out_vocab_size == vocab_size).
    - sampler_seed: seed of the per-step recurrence sampler (Huginn: 514229).
    """

    vocab_size: int
    out_vocab_size: int | None = None
    dim: int = 64
    n_heads: int = 4
    expansion: float = 4.0
    mlp_inner: int | None = None
    prelude_layers: int = 1
    core_layers: int = 1
    coda_layers: int = 1
    norm: str = "sandwich"
    max_positions: int = 256
    rope_base: float = 10000.0
    absolute_positions: bool = False
    qk_bias: bool = True
    injection: str = "concat"
    mean_recurrence: float = 8.0
    recurrence_sigma: float = 0.5
    backprop_k: int = 4
    schedule: str = "lognormal-poisson"
    state_std: float = field(default_factory=lambda: math.sqrt(2.0 / 5.0))
    tie_embeddings: bool = False
    sampler_seed: int = 514229

    def __post_init__(self) -> None:
        if self.out_vocab_size is None:
            self.out_vocab_size = self.vocab_size
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and what is allowed."""
        for name in ("vocab_size", "out_vocab_size", "dim", "n_heads", "core_layers", "max_positions", "backprop_k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("prelude_layers", "coda_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.mlp_inner is not None and (
            isinstance(self.mlp_inner, bool) or not isinstance(self.mlp_inner, int) or self.mlp_inner < 1
        ):
            raise ValueError(f"mlp_inner must be None or an integer >= 1, got {self.mlp_inner!r}")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads}) into an even head width")
        if self.norm not in NORM_PLACEMENTS:
            raise ValueError(f"unknown norm {self.norm!r}; allowed: {', '.join(NORM_PLACEMENTS)}")
        if self.injection not in INJECTIONS:
            raise ValueError(f"unknown injection {self.injection!r}; allowed: {', '.join(INJECTIONS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")
        if not self.mean_recurrence >= 1:
            raise ValueError(f"mean_recurrence must be >= 1, got {self.mean_recurrence!r}")
        if not self.recurrence_sigma >= 0:
            raise ValueError(f"recurrence_sigma must be >= 0, got {self.recurrence_sigma!r}")
        if not self.state_std >= 0:
            raise ValueError(f"state_std must be >= 0, got {self.state_std!r}")
        if self.tie_embeddings and self.out_vocab_size != self.vocab_size:
            raise ValueError(
                f"tie_embeddings needs out_vocab_size == vocab_size, got {self.out_vocab_size} != {self.vocab_size}"
            )


@dataclass
class RecurrentDepthCache:
    """Decoding state of a :class:`RecurrentDepthModel`.

    prelude, coda: one :class:`KVCache` per layer. core: one :class:`KVCache` per (recurrence i >= 1, core layer l),
    because the same core layer sees a different state at every recurrence -- a plain per-layer cache would
    overwrite recurrence 1's keys with recurrence 2's. length: positions cached. last_state: (B, 1, D) final state
    of the last token (for warm starts). exit_steps: recurrences each cached token used, list of (B,) tensors.

    core_budget: ``None`` keeps every recurrence (the exact cache). An integer K is Huginn's KV-cache *sharing*
    (the official code's ``compress-s{K * core_layers}``): only K slots per core layer; recurrence i writes and
    reads slot ``(i - 1) % K + 1``, and a token's entry in a slot is *overwritten* by its later recurrences, not
    appended. The core then holds K (not r) entries per token and layer; it equals the exact cache when K >= r.
    """

    prelude: list[KVCache]
    coda: list[KVCache]
    core: dict[tuple[int, int], KVCache] = field(default_factory=dict)
    length: int = 0
    last_state: torch.Tensor | None = None
    exit_steps: list[torch.Tensor] = field(default_factory=list)
    core_budget: int | None = None

    def __post_init__(self) -> None:
        if self.core_budget is not None and (
            isinstance(self.core_budget, bool) or int(self.core_budget) != self.core_budget or self.core_budget < 1
        ):
            raise ValueError(f"core_budget must be None (keep every recurrence) or an integer >= 1, "
                             f"got {self.core_budget!r}")

    def core_slot(self, recurrence: int, layer: int) -> KVCache:
        """The cache of core ``layer`` at ``recurrence`` (1-based), created empty on first use.

        With a ``core_budget`` K, recurrence i shares slot ``(i - 1) % K + 1``; if the token being decoded already
        wrote that slot at an earlier recurrence, its entry is dropped here so that the layer's append overwrites it.
        """
        slot_index = int(recurrence)
        if self.core_budget is not None:
            slot_index = (slot_index - 1) % int(self.core_budget) + 1
        key = (slot_index, int(layer))
        if key not in self.core:
            if self.length > 0:
                raise ValueError(
                    f"recurrence {recurrence} has no cached keys for the {self.length} earlier positions; decode "
                    "with a step cap at least as large as the one used for earlier tokens"
                )
            self.core[key] = KVCache()
        slot = self.core[key]
        if self.core_budget is not None and slot.length > self.length:
            # overwrite, not append: keep the earlier positions, forget this token's older recurrence
            slot.k, slot.v = slot.k[:, :, : self.length], slot.v[:, :, : self.length]
        return slot

    @property
    def max_recurrence(self) -> int:
        """Largest recurrence index with a cache slot (0 when empty)."""
        return max((i for i, _ in self.core), default=0)


class RecurrentDepthModel(nn.Module):
    """Prelude -> recurrent core (iterated r times with input injection) -> coda. See the module docstring.

    forward(tokens (B, T) long, num_steps=None | r | (no_grad_steps, grad_steps), init_scale=1.0,
            noise_seed=None, initial_state=None (B, T, D)) -> logits (B, T, out_vocab).

    ``num_steps=None`` runs ``round(mean_recurrence)`` steps (the evaluation default, as in Huginn); an int ``r``
    is split as ``(max(r - k, 0), min(r, k))``; with gradients off the split does not matter.
    """

    def __init__(self, config: RecurrentDepthConfig) -> None:
        super().__init__()
        if not isinstance(config, RecurrentDepthConfig):
            raise TypeError(f"config must be a RecurrentDepthConfig, got {type(config).__name__}")
        config.validate()
        self.config = c = config
        h = c.dim
        self.embedding = nn.Embedding(c.vocab_size, h)
        self.position_embedding = nn.Embedding(c.max_positions, h) if c.absolute_positions else None
        self.rotary = RotaryEmbedding(h // c.n_heads, c.max_positions, base=c.rope_base)

        def block() -> TransformerBlock:
            blk = TransformerBlock(
                h, c.n_heads, norm=c.norm, causal=True, expansion=c.expansion, qk_bias=c.qk_bias, learnable_norm=True
            )
            if c.mlp_inner is not None:
                blk.mlp = SwiGLU(h, inner=c.mlp_inner)
            return blk

        self.prelude = nn.ModuleList(block() for _ in range(c.prelude_layers))
        self.adapter = nn.Linear(2 * h, h, bias=False) if c.injection == "concat" else None
        self.core = nn.ModuleList(block() for _ in range(c.core_layers))
        self.state_norm = RMSNorm(h)  # the state leaving the core has unit RMS (Huginn's last sandwich norm)
        self.coda = nn.ModuleList(block() for _ in range(c.coda_layers))
        self.final_norm = RMSNorm(h)
        self.head = nn.Linear(h, c.out_vocab_size, bias=False)
        self._init_weights()
        if c.tie_embeddings:
            self.head.weight = self.embedding.weight

    # -- initialisation ("takase", as in the Huginn code): small std everywhere, outputs scaled by effective depth
    @torch.no_grad()
    def _init_weights(self) -> None:
        c = self.config
        std = math.sqrt(2.0 / (5.0 * c.dim))
        effective_depth = c.prelude_layers + c.coda_layers + c.core_layers * c.mean_recurrence
        out_std = std / math.sqrt(2.0 * effective_depth)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue  # norm gains stay at 1, q/k biases at 0
            is_output = name.endswith("mixer.out.weight") or name.endswith("mlp.down.weight")
            trunc_normal_corrected_(p, std=out_std if is_output else std, lower=-3.0, upper=3.0)

    # -- the four pieces ------------------------------------------------------------------------------------------
    def embed(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """e = P(x): scaled token (+ position) embedding through the prelude. tokens (B, T) -> e (B, T, D)."""
        if tokens.dtype not in (torch.int32, torch.int64) or tokens.dim() != 2:
            raise ValueError(
                f"tokens must be an integer tensor of shape (B, T), got {tokens.dtype} {tuple(tokens.shape)}"
            )
        if (
            tokens.device.type == "cpu"
            and tokens.numel()
            and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size)
        ):
            raise ValueError(
                f"token ids must lie in [0, {self.config.vocab_size}), "
                f"got range [{int(tokens.min())}, {int(tokens.max())}]"
            )
        x = self.embedding(tokens)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)[None]
        x = x * math.sqrt(self.config.dim)  # embedding scale gamma = sqrt(h)
        for i, blk in enumerate(self.prelude):
            x = blk(x, rope=rope, cache=None if caches is None else caches[i])
        return x

    def initial_state(
        self, e: torch.Tensor, positions: torch.Tensor, init_scale: float = 1.0, noise_seed: int | None = None
    ) -> torch.Tensor:
        """s_0 ~ N(0, (init_scale * state_std)^2), shape of ``e`` (B, T, D).

        With ``noise_seed`` the noise is a fixed table indexed by position (the same for every row), so a
        token gets the same s_0 whether it is decoded alone or inside a full sequence.
        """
        std = float(init_scale) * self.config.state_std
        if std == 0:
            return torch.zeros_like(e)
        if noise_seed is None:
            return torch.randn_like(e) * std
        g = torch.Generator().manual_seed(int(noise_seed))
        table = torch.randn(self.config.max_positions, self.config.dim, generator=g)
        return (table.to(e.device, e.dtype)[positions] * std)[None].expand_as(e).contiguous()

    def core_step(
        self,
        state: torch.Tensor,
        e: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """One recurrence s_i = R(e, s_{i-1}). state, e: (B, T, D) -> (B, T, D)."""
        if self.adapter is not None:
            x = self.adapter(torch.cat((state, e), dim=-1))  # A [s, e]: input injection by concat + adapter
        else:
            x = state + e
        for i, blk in enumerate(self.core):
            x = blk(x, rope=rope, cache=None if caches is None else caches[i])
        return self.state_norm(x)

    def decode(
        self, state: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], caches: list[KVCache] | None = None
    ) -> torch.Tensor:
        """p = C(s_r): coda blocks, final norm, head. state (B, T, D) -> logits (B, T, out_vocab)."""
        x = state
        for i, blk in enumerate(self.coda):
            x = blk(x, rope=rope, cache=None if caches is None else caches[i])
        return self.head(self.final_norm(x))

    # -- recurrence bookkeeping -----------------------------------------------------------------------------------
    def default_steps(self) -> int:
        """The evaluation depth: round(mean_recurrence)."""
        return max(1, int(round(self.config.mean_recurrence)))

    def training_recurrences(self, step: int) -> tuple[int, int]:
        """(no_grad_steps, grad_steps) for training step ``step``: sampled (random depth) or fixed (the twin)."""
        c = self.config
        if c.schedule == "fixed":
            return split_recurrences(self.default_steps(), c.backprop_k)
        return sample_recurrences(step, c.mean_recurrence, c.recurrence_sigma, c.backprop_k, c.sampler_seed)

    def _split(self, num_steps: int | tuple[int, int] | None) -> tuple[int, int]:
        if num_steps is None:
            return split_recurrences(self.default_steps(), self.config.backprop_k)
        if isinstance(num_steps, torch.Tensor):
            num_steps = tuple(int(v) for v in num_steps.flatten().tolist()) if num_steps.numel() > 1 else int(num_steps)
        if isinstance(num_steps, (tuple, list)):
            if len(num_steps) != 2 or any(int(v) != v or v < 0 for v in num_steps) or sum(num_steps) < 1:
                raise ValueError(
                    "num_steps as a pair must be (no_grad_steps >= 0, grad_steps >= 0) with a sum >= 1, "
                    f"got {num_steps!r}"
                )
            return int(num_steps[0]), int(num_steps[1])
        return split_recurrences(num_steps, self.config.backprop_k)

    def iterate(
        self,
        state: torch.Tensor,
        e: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        no_grad_steps: int,
        grad_steps: int,
    ) -> torch.Tensor:
        """Run the core ``no_grad_steps`` times without autograd, then ``grad_steps`` times with it.

        Truncated backprop: nothing before the last ``grad_steps`` recurrences is in the autograd graph, so memory
        is independent of the total depth (the prelude still gets gradients through ``e`` in the last steps).
        state, e: (B, T, D) -> (B, T, D).
        """
        if no_grad_steps:
            with torch.no_grad():
                for _ in range(no_grad_steps):
                    state = self.core_step(state, e, rope)
            state = state.detach()
        for _ in range(grad_steps):
            state = self.core_step(state, e, rope)
        return state

    # -- full-sequence forward ------------------------------------------------------------------------------------
    def forward(
        self,
        tokens: torch.Tensor,
        num_steps: int | tuple[int, int] | None = None,
        init_scale: float = 1.0,
        noise_seed: int | None = None,
        initial_state: torch.Tensor | None = None,
    ) -> torch.Tensor:
        no_grad_steps, grad_steps = self._split(num_steps)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        rope = self.rotary(positions)
        e = self.embed(tokens, positions, rope)
        if initial_state is None:
            state = self.initial_state(e, positions, init_scale, noise_seed)
        else:
            if initial_state.shape != e.shape:
                raise ValueError(f"initial_state must have shape {tuple(e.shape)}, got {tuple(initial_state.shape)}")
            state = initial_state
        state = self.iterate(state, e, rope, no_grad_steps, grad_steps)
        return self.decode(state, rope)

    @torch.no_grad()
    def step_logits(
        self, tokens: torch.Tensor, max_steps: int, init_scale: float = 1.0, noise_seed: int | None = None
    ) -> torch.Tensor:
        """Logits after every recurrence 1..max_steps of one run (no gradients).

        tokens (B, T) -> (max_steps, B, T, out_vocab). Entry ``i - 1`` equals ``forward(tokens, i)`` with the same
        ``s_0``: one run gives the whole "quality vs test-time recurrences" curve.
        """
        if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        rope = self.rotary(positions)
        e = self.embed(tokens, positions, rope)
        state = self.initial_state(e, positions, init_scale, noise_seed)
        out = []
        for _ in range(int(max_steps)):
            state = self.core_step(state, e, rope)
            out.append(self.decode(state, rope))
        return torch.stack(out)

    # -- token-by-token decoding with the (recurrence, layer) KV cache ---------------------------------------------
    def new_cache(self, core_budget: int | None = None) -> RecurrentDepthCache:
        """An empty decoding cache; ``core_budget`` K shares K slots per core layer (:class:`RecurrentDepthCache`)."""
        return RecurrentDepthCache(prelude=[KVCache() for _ in self.prelude], coda=[KVCache() for _ in self.coda],
                                   core_budget=core_budget)

    @torch.no_grad()
    def decode_step(
        self,
        token: torch.Tensor,
        cache: RecurrentDepthCache,
        max_steps: int | None = None,
        exit_threshold: float | None = None,
        min_steps: int = 1,
        warm_start: bool = False,
        init_scale: float = 1.0,
        noise_seed: int | None = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Process one new token per row against ``cache`` (updated in place).

        token: (B, 1) long. Runs ``max_steps`` recurrences (default ``round(mean_recurrence)``), or, with
        ``exit_threshold``, stops each row as soon as ``KL(p_{i-1} || p_i) < exit_threshold`` (cap ``max_steps``).
        A row that exits keeps its state; for the recurrences it skipped, its cache slots get the keys/values of
        its last computed recurrence (the paper's "latest available" rule), so later tokens always find one entry
        per position in every (recurrence, layer) slot. With ``warm_start`` the state starts from the previous
        token's final state instead of noise.

        Returns ``(logits (B, out_vocab), steps_used (B,) long)``.
        """
        if token.dim() != 2 or token.shape[1] != 1:
            raise ValueError(f"decode_step takes one token per row, shape (B, 1), got {tuple(token.shape)}")
        cap = self.default_steps() if max_steps is None else int(max_steps)
        if cap < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps!r}")
        if cache.length and cap < cache.max_recurrence:
            cap_msg = f"max_steps={cap} is below the {cache.max_recurrence} recurrences already cached"
            raise ValueError(cap_msg + "; keep the cap fixed while decoding one sequence")
        if exit_threshold is not None and not exit_threshold >= 0:
            raise ValueError(f"exit_threshold must be >= 0 or None, got {exit_threshold!r}")
        if exit_threshold is not None and cache.core_budget is not None:
            raise ValueError(f"exit_threshold={exit_threshold!r} with a shared cache (core_budget="
                             f"{cache.core_budget}) is not supported: use core_budget=None with the KL exit")
        B = token.shape[0]
        positions = torch.arange(cache.length, cache.length + 1, device=token.device)
        rope = self.rotary(positions)
        e = self.embed(token, positions, rope, caches=cache.prelude)
        if warm_start and cache.last_state is not None:
            state = cache.last_state
        else:
            state = self.initial_state(e, positions, init_scale, noise_seed)
        n_core = len(self.core)
        steps = torch.full((B,), cap, dtype=torch.long, device=token.device)
        done = torch.zeros(B, dtype=torch.bool, device=token.device)
        prev_logp = torch.full(
            (B, self.config.out_vocab_size), -math.log(self.config.out_vocab_size), device=token.device
        )
        ran = 0
        for i in range(1, cap + 1):
            new_state = self.core_step(state, e, rope, [cache.core_slot(i, layer) for layer in range(n_core)])
            ran = i
            state = torch.where(done[:, None, None], state, new_state)  # exited rows keep their state
            if exit_threshold is None:
                continue
            # peek at the prediction through the coda without writing this step into the coda cache
            peek = [KVCache(c.k, c.v) for c in cache.coda]
            logp = F.log_softmax(self.decode(state, rope, peek)[:, 0].float(), dim=-1)
            kl = (prev_logp.exp() * (prev_logp - logp)).sum(-1)
            newly = ~done & (kl < exit_threshold) & (i >= min_steps)
            steps = torch.where(newly, torch.full_like(steps, i), steps)
            done = done | newly
            prev_logp = logp
            if bool(done.all()):
                break
        if exit_threshold is not None:
            self._fill_skipped_slots(cache, steps, ran, cap)
        logits = self.decode(state, rope, cache.coda)[:, 0]
        cache.length += 1
        cache.last_state = state
        cache.exit_steps.append(steps)
        return logits, steps

    @staticmethod
    def _fill_skipped_slots(cache: RecurrentDepthCache, steps: torch.Tensor, ran: int, cap: int) -> None:
        """Make slot (i, l)'s newest entry, for each row b, the one computed at recurrence min(i, steps[b])."""
        layers = sorted({layer for _, layer in cache.core})
        for layer in layers:
            k_new = torch.stack([cache.core[(i, layer)].k[:, :, -1:] for i in range(1, ran + 1)])  # (ran, B, H, 1, Dh)
            v_new = torch.stack([cache.core[(i, layer)].v[:, :, -1:] for i in range(1, ran + 1)])
            for i in range(1, cap + 1):
                src = torch.clamp(torch.minimum(steps, torch.full_like(steps, i)), max=ran) - 1  # (B,)
                rows = torch.arange(steps.shape[0], device=steps.device)
                k_i, v_i = k_new[src, rows], v_new[src, rows]  # (B, H, 1, Dh)
                slot = cache.core_slot(i, layer)
                if i <= ran:
                    slot.k[:, :, -1:] = k_i
                    slot.v[:, :, -1:] = v_i
                else:
                    slot.append(k_i, v_i)

    @torch.no_grad()
    def adaptive_forward(
        self,
        tokens: torch.Tensor,
        exit_threshold: float | None,
        max_steps: int | None = None,
        min_steps: int = 1,
        warm_start: bool = False,
        init_scale: float = 1.0,
        noise_seed: int | None = 0,
        cache_budget: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score a whole sequence token by token with the cache and per-token exit.

        tokens (B, T) -> (logits (B, T, out_vocab), steps_used (B, T) long). ``exit_threshold=None`` runs every
        token for ``max_steps`` recurrences (then the logits equal ``forward(tokens, max_steps)`` with the same
        ``noise_seed``). ``cache_budget`` K decodes with Huginn's shared cache of K slots per core layer (exact when
        K >= max_steps; no exit then).
        """
        cache = self.new_cache(cache_budget)
        logits, steps = [], []
        for t in range(tokens.shape[1]):
            lg, st = self.decode_step(
                tokens[:, t : t + 1], cache, max_steps, exit_threshold, min_steps, warm_start, init_scale, noise_seed
            )
            logits.append(lg)
            steps.append(st)
        return torch.stack(logits, 1), torch.stack(steps, 1)

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        num_steps: int | None = None,
        use_cache: bool = True,
        exit_threshold: float | None = None,
        warm_start: bool = False,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
        noise_seed: int | None = 0,
        cache_budget: int | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt`` (B, T0) by ``max_new_tokens`` tokens -> (B, T0 + max_new_tokens) long.

        ``temperature=0`` is greedy. ``use_cache=False`` recomputes the full forward for every new token (the
        reference the cache must match; only with a fixed depth, no exit and no warm start). ``num_steps`` is the
        depth (the cap with ``exit_threshold``). ``cache_budget`` K: Huginn's shared cache, K slots per core layer.
        """
        if prompt.dim() != 2 or prompt.shape[1] < 1:
            raise ValueError(f"prompt must have shape (B, T0) with T0 >= 1, got {tuple(prompt.shape)}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if not use_cache and (exit_threshold is not None or warm_start):
            raise ValueError("exit_threshold and warm_start need use_cache=True (they are defined token by token)")
        if prompt.shape[1] + max_new_tokens > self.config.max_positions:
            raise ValueError(
                f"prompt length {prompt.shape[1]} + max_new_tokens {max_new_tokens} exceeds max_positions "
                f"{self.config.max_positions}"
            )
        steps = self.default_steps() if num_steps is None else int(num_steps)

        def pick(logits: torch.Tensor) -> torch.Tensor:
            if temperature <= 0:
                return logits.argmax(-1, keepdim=True)
            probs = F.softmax(logits.float() / temperature, dim=-1)
            return torch.multinomial(probs, 1, generator=generator)

        seq = prompt
        if not use_cache:
            for _ in range(max_new_tokens):
                logits = self.forward(seq, steps, noise_seed=noise_seed)[:, -1]
                seq = torch.cat((seq, pick(logits).to(seq.dtype)), dim=1)
            return seq
        cache = self.new_cache(cache_budget)
        logits = None
        for t in range(prompt.shape[1]):
            logits, _ = self.decode_step(
                prompt[:, t : t + 1], cache, steps, exit_threshold, 1, warm_start, 1.0, noise_seed
            )
        for _ in range(max_new_tokens):
            nxt = pick(logits).to(seq.dtype)
            seq = torch.cat((seq, nxt), dim=1)
            if seq.shape[1] == prompt.shape[1] + max_new_tokens:
                break
            logits, _ = self.decode_step(nxt, cache, steps, exit_threshold, 1, warm_start, 1.0, noise_seed)
        return seq

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts per group (the recurrent core is reused r times)."""

        def count(mods) -> int:
            return sum(p.numel() for m in mods for p in m.parameters())

        emb = [self.embedding] + ([self.position_embedding] if self.position_embedding is not None else [])
        core = list(self.core) + [self.state_norm] + ([self.adapter] if self.adapter is not None else [])
        return {
            "embedding": count(emb),
            "prelude": count(self.prelude),
            "core": count(core),
            "coda": count(list(self.coda) + [self.final_norm]),
            "head": 0 if self.config.tie_embeddings else self.head.weight.numel(),
            "total": sum(p.numel() for p in self.parameters()),
        }
