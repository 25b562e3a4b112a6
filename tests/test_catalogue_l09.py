"""Exercise 09's graders accept the master solutions and reject a catalogue of known-wrong ones."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recursionlab.course.checks import assert_rejected
from recursionlab.course.graders import l09_recurrent_depth as g
from recursionlab.models.recurrent_depth import kl_exit_steps, sample_recurrences
from recursionlab.nn.attention import KVCache

# ------------------------------------------------------------------------------------------------- the sampler


def _split(r, k):
    return max(r - k, 0), min(r, k)


def sampler_no_mean_correction(step, mean, sigma, k, seed):
    # tau ~ N(log mean, sigma^2) without -sigma^2/2: E[r] comes out too large
    rng = np.random.default_rng((seed, step))
    tau = rng.normal(math.log(mean), sigma)
    return _split(int(rng.poisson(math.exp(tau))) + 1, k)


def sampler_without_plus_one(step, mean, sigma, k, seed):
    # r = Poisson(e^tau): r = 0 recurrences becomes possible
    rng = np.random.default_rng((seed, step))
    tau = rng.normal(math.log(mean) - sigma**2 / 2, sigma)
    return _split(int(rng.poisson(math.exp(tau))), k)


def sampler_wrong_draw_order(step, mean, sigma, k, seed):
    # the Poisson draw first: a valid sampler, but not the library's (lockstep across GPUs needs one definition)
    rng = np.random.default_rng((seed, step))
    u = rng.poisson(mean)
    tau = rng.normal(math.log(mean) - sigma**2 / 2, sigma)
    return _split(int(u * 0 + rng.poisson(math.exp(tau))) + 1, k)


def sampler_seeded_by_step_only(step, mean, sigma, k, seed):
    # ignores the run's seed: every run draws the same depths
    rng = np.random.default_rng(step)
    tau = rng.normal(math.log(mean) - sigma**2 / 2, sigma)
    return _split(int(rng.poisson(math.exp(tau))) + 1, k)


def sampler_split_swapped(step, mean, sigma, k, seed):
    # (grad_steps, no_grad_steps) in the wrong order
    n, gr = sample_recurrences(step, mean, sigma, k, seed)
    return gr, n


WRONG_SAMPLERS = [sampler_no_mean_correction, sampler_without_plus_one, sampler_wrong_draw_order,
                  sampler_seeded_by_step_only, sampler_split_swapped]

# ------------------------------------------------------------------------------------ truncated backprop loop


def run_master(core_step, state, n, k):
    with torch.no_grad():
        for _ in range(n):
            state = core_step(state)
    state = state.detach()
    for _ in range(k):
        state = core_step(state)
    return state


def run_graph_then_detach(core_step, state, n, k):
    # every call builds a graph, detached before the last k: same state and gradients, no memory saved
    for _ in range(n):
        state = core_step(state)
    state = state.detach()
    for _ in range(k):
        state = core_step(state)
    return state


def run_all_no_grad(core_step, state, n, k):
    # nothing differentiated: the model never learns
    with torch.no_grad():
        for _ in range(n + k):
            state = core_step(state)
    return state


def run_no_truncation(core_step, state, n, k):
    # full backprop through all r steps
    for _ in range(n + k):
        state = core_step(state)
    return state


def run_grad_phase_first(core_step, state, n, k):
    # the differentiated steps first, then the no-grad ones: the gradient is cut off
    for _ in range(k):
        state = core_step(state)
    with torch.no_grad():
        for _ in range(n):
            state = core_step(state)
    return state


def run_one_step_too_many_with_graph(core_step, state, n, k):
    # off by one: the last no-grad step is already differentiated
    with torch.no_grad():
        for _ in range(max(n - 1, 0)):
            state = core_step(state)
    state = state.detach()
    for _ in range(k + min(n, 1)):
        state = core_step(state)
    return state


WRONG_RUNS = [run_graph_then_detach, run_all_no_grad, run_no_truncation, run_grad_phase_first,
              run_one_step_too_many_with_graph]

# ---------------------------------------------------------------------------------------------- the KL exit


def _exit(kl, step_logits, threshold, min_steps, force_cap=True):
    S = step_logits.shape[0]
    step = torch.arange(1, S + 1).view(-1, *([1] * (kl.dim() - 1)))
    ok = (kl < threshold) & (step >= min_steps)
    if force_cap:
        ok[-1] = True
    first = ok.long().argmax(0)
    at = torch.gather(step_logits, 0, first[None, ..., None].expand(1, *step_logits.shape[1:]))[0]
    return first + 1, at


def exit_no_uniform_start(step_logits, threshold, min_steps=1):
    # p_0 = p_1: the KL at step 1 is 0, so every token "exits" at once
    logp = F.log_softmax(step_logits.float(), -1)
    prev = torch.cat((logp[:1], logp[:-1]))
    return _exit((prev.exp() * (prev - logp)).sum(-1), step_logits, threshold, min_steps)


def exit_reversed_kl(step_logits, threshold, min_steps=1):
    # KL(p_i || p_{i-1}) instead of KL(p_{i-1} || p_i)
    logp = F.log_softmax(step_logits.float(), -1)
    prev = torch.cat((torch.full_like(logp[:1], -math.log(logp.shape[-1])), logp[:-1]))
    return _exit((logp.exp() * (logp - prev)).sum(-1), step_logits, threshold, min_steps)


def exit_ignores_min_steps(step_logits, threshold, min_steps=1):
    return kl_exit_steps(step_logits, threshold, 1)


def exit_without_cap(step_logits, threshold, min_steps=1):
    # tokens that never converge get argmax of all-False = step 1 instead of the cap
    logp = F.log_softmax(step_logits.float(), -1)
    prev = torch.cat((torch.full_like(logp[:1], -math.log(logp.shape[-1])), logp[:-1]))
    return _exit((prev.exp() * (prev - logp)).sum(-1), step_logits, threshold, min_steps, force_cap=False)


def exit_zero_based_step(step_logits, threshold, min_steps=1):
    # returns the index 0..S-1 instead of the step 1..S
    steps, at = kl_exit_steps(step_logits, threshold, min_steps)
    return steps - 1, at


WRONG_EXITS = [exit_no_uniform_start, exit_reversed_kl, exit_ignores_min_steps, exit_without_cap,
               exit_zero_based_step]

# ---------------------------------------------------------------------------------------- the shared cache


def slot_master(cache, recurrence, layer, budget):
    slot = cache.core.setdefault(((recurrence - 1) % budget + 1, layer), KVCache())
    if slot.length > cache.length:
        slot.k, slot.v = slot.k[:, :, : cache.length], slot.v[:, :, : cache.length]
    return slot


def slot_zero_based_modulo(cache, recurrence, layer, budget):
    # recurrence % budget labels the slots differently but groups the same recurrences: also right
    slot = cache.core.setdefault((recurrence % budget + 1, layer), KVCache())
    if slot.length > cache.length:
        slot.k, slot.v = slot.k[:, :, : cache.length], slot.v[:, :, : cache.length]
    return slot


def slot_appends(cache, recurrence, layer, budget):
    # shares the slot but appends: a token gets several entries, attention sees it twice
    return cache.core.setdefault(((recurrence - 1) % budget + 1, layer), KVCache())


def slot_ignores_budget(cache, recurrence, layer, budget):
    # the full (recurrence, layer) cache: right logits only when budget >= r, and r slots of memory
    return cache.core.setdefault((recurrence, layer), KVCache())


def slot_always_one(cache, recurrence, layer, budget):
    # one slot per layer whatever the budget
    return slot_master(cache, recurrence, layer, 1)


def slot_resets(cache, recurrence, layer, budget):
    # overwrites the whole slot: the earlier tokens' entries are lost
    slot = cache.core.setdefault(((recurrence - 1) % budget + 1, layer), KVCache())
    if slot.length > cache.length:
        slot.reset()
    return slot


def slot_drops_oldest(cache, recurrence, layer, budget):
    # keeps the slot's length by dropping the oldest position instead of this token's older entry
    slot = cache.core.setdefault(((recurrence - 1) % budget + 1, layer), KVCache())
    if slot.length > cache.length:
        slot.k, slot.v = slot.k[:, :, 1:], slot.v[:, :, 1:]
    return slot


WRONG_SLOTS = [slot_appends, slot_ignores_budget, slot_always_one, slot_resets, slot_drops_oldest]

# --------------------------------------------------------------------------------------------------- the tests




def test_master_solutions_pass(capsys):
    assert g.check_sample_depth(sample_recurrences)
    assert g.check_run_recurrence(run_master)
    assert g.check_kl_exit(kl_exit_steps)
    assert g.check_shared_core_slot(slot_master)
    assert g.check_shared_core_slot(slot_zero_based_modulo)
    assert g.check_gradient_share(g.reference_gradient_share, n_steps=300)
    assert g.check_gradient_share_answer(lambda: "about a quarter", n_steps=300)
    assert capsys.readouterr().out.count("\u2705") == 7


@pytest.mark.parametrize("wrong", WRONG_SAMPLERS, ids=lambda f: f.__name__)
def test_wrong_samplers_are_rejected(wrong, capsys):
    assert_rejected(g.check_sample_depth, wrong)


@pytest.mark.parametrize("wrong", WRONG_RUNS, ids=lambda f: f.__name__)
def test_wrong_truncated_loops_are_rejected(wrong, capsys):
    assert_rejected(g.check_run_recurrence, wrong)


def test_graph_then_detach_is_named(capsys):
    g.check_run_recurrence(run_graph_then_detach)
    out = capsys.readouterr().out
    assert "built an autograd graph" in out and "torch.no_grad()" in out


@pytest.mark.parametrize("wrong", WRONG_EXITS, ids=lambda f: f.__name__)
def test_wrong_exit_rules_are_rejected(wrong, capsys):
    assert_rejected(g.check_kl_exit, wrong)


@pytest.mark.parametrize("wrong", WRONG_SLOTS, ids=lambda f: f.__name__)
def test_wrong_shared_caches_are_rejected(wrong, capsys):
    assert_rejected(g.check_shared_core_slot, wrong)


def test_wrong_gradient_shares_and_answers_are_rejected(capsys):
    def steps_share(mean, sigma, k, n_steps, seed):  # share of *steps* with r <= k, not of core applications
        splits = [sample_recurrences(t, mean, sigma, k, seed) for t in range(n_steps)]
        return float(np.mean([n == 0 for n, _ in splits]))

    def k_over_mean(mean, sigma, k, n_steps, seed):  # k / r-bar: ignores the distribution (and E[r] = r-bar + 1)
        return min(k / mean, 1.0)

    for wrong in (steps_share, k_over_mean, lambda *a: 0.25):
        assert_rejected(lambda f: g.check_gradient_share(f, n_steps=300), wrong)
    for wrong in ("about half", "almost all"):
        assert_rejected(lambda f: g.check_gradient_share_answer(f, n_steps=300), lambda w=wrong: w)
    assert_rejected(lambda f: g.check_gradient_share_answer(f, n_steps=300), lambda: "1/4")  # not an option
