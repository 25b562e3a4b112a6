"""Graders for exercise 10 (Mixture-of-Recursions): the expert-choice routing step with its auxiliary loss, the
recursion-wise attention mask and KV counts, the causal threshold router at inference, and a measurement of
top-k's causality leak."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from recursionlab.course.checks import (
    Verdict,
    call_learner,
    check,
    check_choice,
    compare_outputs,
    verdict,
)
from recursionlab.models import mor

# ---------------------------------------------------------------------------------------------------------------
# Core: one expert-choice step


def routing_case(seed: int) -> tuple[torch.Tensor, int, float]:
    """Router logits (B, n) -- some of them huge, where log(sigmoid) underflows -- , k and alpha."""
    g = torch.Generator().manual_seed(seed)
    B, n = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(2, 40, (1,), generator=g))
    k = int(torch.randint(1, n + 1, (1,), generator=g))
    logits = 2 * torch.randn(B, n, generator=g)
    if seed % 3 == 2:
        logits[:, 0] = 120.0  # saturated router: a naive log(sigmoid) gives -inf and NaN gradients
        logits[:, -1] = -120.0
    return logits, k, float(torch.rand(1, generator=g)) * 0.9 + 0.1


def _with_bce_gradient(fn: Callable, logits: torch.Tensor, k: int, alpha: float):
    x = logits.clone().requires_grad_(True)
    out = fn(x, k, alpha)
    if not (isinstance(out, (tuple, list)) and len(out) == 3):
        return {"outputs": out}
    selected, gates, bce = out
    if not (isinstance(bce, torch.Tensor) and bce.numel() == 1 and bce.requires_grad):
        return {"selected": selected, "gates": gates, "bce": bce, "dbce/dlogits": None}
    bce.backward()
    return {"selected": selected, "gates": gates.detach(), "bce": bce.detach().reshape(()),
            "dbce/dlogits": x.grad}


def _compare_routing(got: dict, want: dict) -> tuple[bool, str]:
    if "outputs" in got:
        return False, "return the three outputs (selected, gates, bce)"
    if got["dbce/dlogits"] is None:
        return False, "bce must be a 0-d tensor that depends on router_logits (so the router gets a gradient)"
    for key in ("selected", "gates", "bce", "dbce/dlogits"):
        ok, msg = compare_outputs(got[key], want[key], atol=1e-6, rtol=1e-5, where=key)
        if not ok:
            if key == "dbce/dlogits" and "NaN" in msg:
                msg += " (log of a sigmoid underflows for large logits: use the with-logits form of the BCE)"
            return False, msg
    return True, ""


def check_expert_choice_step(expert_choice_step: Callable) -> Verdict:
    """Grade ``expert_choice_step(router_logits, k, alpha) -> (selected, gates, bce)`` against
    ``mor.expert_choice_topk``, including the BCE's gradient at saturated logits."""
    return check("expert_choice_step", lambda *a: _with_bce_gradient(expert_choice_step, *a),
                 lambda *a: _with_bce_gradient(mor.expert_choice_topk, *a), inputs=routing_case, trials=9,
                 compare=_compare_routing)


# ---------------------------------------------------------------------------------------------------------------
# Core: recursion-wise caching


def depth_case(seed: int) -> tuple[torch.Tensor, int, bool]:
    """Depths (T,) in 1..3, a recursion in 1..3 and kv_sharing."""
    g = torch.Generator().manual_seed(seed)
    T = int(torch.randint(1, 20, (1,), generator=g))
    return torch.randint(1, 4, (T,), generator=g), int(torch.randint(1, 4, (1,), generator=g)), bool(seed % 2)


def check_attention_mask(attention_mask_at_recursion: Callable) -> Verdict:
    """Grade the (T, T) attention mask against ``mor.recursion_attention_mask``."""
    return check("attention_mask_at_recursion", attention_mask_at_recursion, mor.recursion_attention_mask,
                 inputs=depth_case, trials=10)


def kv_case(seed: int) -> tuple[torch.Tensor, int, bool]:
    """Depths (3, T) in 1..3, the number of recursions (3) and kv_sharing."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 4, (3, 5 + seed), generator=g), 3, bool(seed % 2)


def check_kv_entries(kv_entries: Callable) -> Verdict:
    """Grade the per-recursion KV entry counts against ``mor.kv_entries_from_depths``."""
    return check("kv_entries", kv_entries, mor.kv_entries_from_depths, inputs=kv_case, trials=6)


# ---------------------------------------------------------------------------------------------------------------
# Transfer: the causal threshold router at inference


def reference_threshold_depths(router_logits: torch.Tensor, capacities: tuple[float, ...]) -> torch.Tensor:
    """Depths under the inference rule: router_logits (R, T) (the logit recursion r would give token t) and the
    capacities (R,) -> depth (T,) long. A recursion with capacity 1 takes every candidate; any other keeps the
    candidates with sigma(logit) >= 1/2 (logit >= 0); candidates of recursion r are the tokens kept at r - 1."""
    R, T = router_logits.shape
    active = torch.ones(T, dtype=torch.bool)
    depth = torch.zeros(T, dtype=torch.long)
    for r in range(R):
        if capacities[r] < 1.0:
            active = active & (router_logits[r] >= 0)
        depth += active.long()
    return depth


def threshold_case(seed: int) -> tuple[torch.Tensor, tuple[float, ...]]:
    """Router logits (R, T) with R in 2..4 and the default capacities for R."""
    g = torch.Generator().manual_seed(seed)
    R, T = 2 + seed % 3, int(torch.randint(3, 30, (1,), generator=g))
    logits = torch.randn(R, T, generator=g)
    logits[:, 0] = 0.0  # exactly sigma = 1/2: selected
    return logits, mor.default_capacities(R)


def check_threshold_depths(threshold_depths: Callable, trials: int = 8) -> Verdict:
    """Grade ``threshold_depths(router_logits, capacities) -> (T,) long``: the reference depths, and causality:
    changing the logits of the LAST token must not change any earlier token's depth."""
    name = "threshold_depths"
    for seed in range(trials):
        logits, caps = threshold_case(seed)
        case = f"test case {seed + 1} (to rerun: `args = grader.threshold_case({seed})`)"
        ok, got = call_learner(name, threshold_depths, logits.clone(), caps, case=case)
        if not ok:
            return got
        same, msg = compare_outputs(got, reference_threshold_depths(logits, caps), where="depth")
        if not same:
            return verdict(name, False, f"{msg}. Failing input: {case}.")
        future = logits.clone()
        future[:, -1] = -future[:, -1] + 3.0
        ok, again = call_learner(name, threshold_depths, future, caps, case=f"{case} with the last token changed")
        if not ok:
            return again
        if not torch.equal(torch.as_tensor(again)[:-1], torch.as_tensor(got)[:-1]):
            return verdict(name, False, f"changing only the LAST token's logits changed an earlier token's depth "
                           f"({case}): the inference rule must decide each token on its own.")
    return verdict(name, True, f"depths right and causal on all {trials} test cases")


# ---------------------------------------------------------------------------------------------------------------
# Experiment: how big is top-k's causality leak, and how does it scale with the length?


def leak_model(seed: int = 0) -> mor.MixtureOfRecursionsLM:
    """A small untrained expert-choice MoR model (3 recursions, vocabulary 50) in eval mode."""
    torch.manual_seed(seed)
    cfg = mor.MoRConfig(vocab_size=50, dim=32, n_heads=2, n_layers=5, n_recursions=3, max_seq_len=256)
    return mor.MixtureOfRecursionsLM(cfg).eval()


def leak_batch(T: int, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random sequences (n, T) of token ids in 0..49 and a replacement token (n,) for each last position."""
    g = torch.Generator().manual_seed(1000 + T + seed)
    return torch.randint(0, 50, (n, T), generator=g), torch.randint(0, 50, (n,), generator=g)


def reference_leak_fraction(model: mor.MixtureOfRecursionsLM, ids: torch.Tensor, new_last: torch.Tensor,
                            rule: str) -> float:
    """Mean over the sequences of the fraction of EARLIER positions whose depth changes when the last token of
    the sequence is replaced by ``new_last[i]`` (``mor.causality_leak``). ids (n, T), new_last (n,)."""
    fractions = []
    for row, new in zip(ids, new_last):
        out = mor.causality_leak(model, row, position=row.shape[0] - 1, new_token=int(new), rule=rule)
        fractions.append(out["changed"][:-1].float().mean().item())
    return sum(fractions) / len(fractions)


def check_leak_fraction(leak_fraction: Callable) -> Verdict:
    """Grade ``leak_fraction(model, ids, new_last, rule) -> float`` against the reference on two lengths and both
    rules."""
    model = leak_model()
    name = "leak_fraction"
    for T in (16, 48):
        ids, new_last = leak_batch(T)
        for rule in ("topk", "threshold"):
            case = f"T={T}, rule={rule!r} (to rerun: `ids, new = grader.leak_batch({T})`)"
            ok, got = call_learner(name, leak_fraction, model, ids, new_last, rule, case=case)
            if not ok:
                return got
            same, msg = compare_outputs(got, reference_leak_fraction(model, ids, new_last, rule), atol=1e-9,
                                        where="leak fraction")
            if not same:
                return verdict(name, False, f"{msg} for {case}.")
    return verdict(name, True, "your leak fractions match the grader's for both rules and both lengths")


TREND_OPTIONS = ("falls", "rises", "stays within 0.01")


@lru_cache(maxsize=4)
def measured_leak_trend(lengths: tuple[int, ...] = (16, 64), seeds: tuple[int, ...] = (0, 1, 2)) -> str:
    """How the top-k leak fraction (mean over three models and batches) moves from the shortest to the longest
    length: one of :data:`TREND_OPTIONS`."""
    def mean_at(T: int) -> float:
        vals = []
        for s in seeds:
            ids, new = leak_batch(T, seed=s)
            vals.append(reference_leak_fraction(leak_model(s), ids, new, "topk"))
        return sum(vals) / len(vals)

    first, last = mean_at(lengths[0]), mean_at(lengths[-1])
    if abs(last - first) <= 0.01:
        return TREND_OPTIONS[2]
    return TREND_OPTIONS[1] if last > first else TREND_OPTIONS[0]


def check_leak_trend(answer: Callable[[], str]) -> Verdict:
    """Grade ``answer() -> str``: how the top-k leak fraction moves from T = 16 to T = 64."""
    ok, got = call_learner("leak_trend", answer)
    if not ok:
        return got
    return check_choice("leak_trend", got, measured_leak_trend(), TREND_OPTIONS,
                        explain="Compare the mean top-k leak fraction at T = 16 with the one at T = 64.")
