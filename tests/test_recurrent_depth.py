"""Recurrent-depth (Huginn-style) model, its sampler, cache, adaptive exit and the chain-root task (lesson 09)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from recursionlab.data.latent_tasks import chain_accuracy_by_depth, chain_depths, chain_roots, make_chain_batch
from recursionlab.models.recurrent_depth import (
    RecurrentDepthConfig,
    RecurrentDepthModel,
    kl_exit_steps,
    recurrence_pmf,
    sample_recurrences,
    split_recurrences,
)
from recursionlab.train import fit
from recursionlab.train.recipes import get_config
from recursionlab.train.recipes.recurrent_depth import build_chains, recurrent_depth_loss


def tiny_model(seed: int = 0, **kw) -> RecurrentDepthModel:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=17, dim=32, n_heads=4, mlp_inner=64, max_positions=48, core_layers=2, backprop_k=2)
    cfg.update(kw)
    return RecurrentDepthModel(RecurrentDepthConfig(**cfg)).eval()


# ---------------------------------------------------------------------------------------------------- the task
def test_chain_task_is_consistent():
    b = make_chain_batch(64, num_nodes=20, max_chain=7, generator=3)
    pos = torch.arange(20)
    assert bool((b.tokens <= pos).all()) and bool((b.tokens >= 0).all())  # parents sit to the left
    # a slow one-hop-at-a-time walk agrees with pointer doubling and with the depth count
    p = b.tokens.clone()
    for _ in range(20):
        p = torch.gather(b.tokens, 1, p)
    assert torch.equal(p, b.targets)
    assert int(b.depth.max()) <= 6 and int(b.depth.max()) >= 4
    assert torch.equal(chain_roots(b.tokens), b.targets) and torch.equal(chain_depths(b.tokens), b.depth)
    again = make_chain_batch(64, num_nodes=20, max_chain=7, generator=3)
    assert torch.equal(again.tokens, b.tokens)  # deterministic in the seed
    acc = chain_accuracy_by_depth(b.targets, b.targets, b.depth)
    assert torch.allclose(acc, torch.ones_like(acc))
    with pytest.raises(ValueError, match="max_chain"):
        make_chain_batch(4, num_nodes=5, max_chain=6)
    with pytest.raises(ValueError, match="parent"):
        chain_roots(torch.tensor([[1, 0]]))


# ------------------------------------------------------------------------------------------------- the sampler
def test_sampler_is_a_deterministic_function_of_the_step():
    draws = [sample_recurrences(s, mean=8.0, sigma=0.5, backprop_k=4, seed=7) for s in range(50)]
    assert draws == [sample_recurrences(s, mean=8.0, sigma=0.5, backprop_k=4, seed=7) for s in range(50)]
    assert len({sum(d) for d in draws}) > 5  # but it does vary from step to step
    for n_free, n_grad in draws:
        r = n_free + n_grad
        assert (n_free, n_grad) == (max(r - 4, 0), min(r, 4))
    assert split_recurrences(3, 8) == (0, 3)
    with pytest.raises(ValueError, match="step"):
        sample_recurrences(-1, 8.0)
    with pytest.raises(ValueError, match="mean"):
        sample_recurrences(0, 0.0)


def test_sampler_matches_the_log_normal_poisson_distribution():
    mean, sigma, n = 8.0, 0.5, 4000
    r = np.array([sum(sample_recurrences(s, mean, sigma, backprop_k=4, seed=11)) for s in range(n)])
    pmf = recurrence_pmf(mean, sigma, max_r=400)
    assert abs(pmf.sum() - 1.0) < 1e-6
    support = np.arange(pmf.size)
    exact_mean = float((support * pmf).sum())
    exact_var = float((support**2 * pmf).sum()) - exact_mean**2
    assert abs(exact_mean - (mean + 1)) < 1e-6  # E[r] = mean + 1
    assert abs(exact_var - (mean + mean**2 * math.expm1(sigma**2))) < 1e-3  # Poisson + log-normal variance
    # sample mean within 4 standard errors of the exact mean
    assert abs(r.mean() - exact_mean) < 4 * math.sqrt(exact_var / n)
    # chi-square goodness of fit on bins with >= 5 expected counts (tail merged)
    expected, observed, lo = [], [], 1
    for hi in range(2, 400):
        e = n * pmf[lo:hi].sum()
        if e >= 8 and n * pmf[hi:].sum() >= 8:
            expected.append(e)
            observed.append(((r >= lo) & (r < hi)).sum())
            lo = hi
    expected.append(n * pmf[lo:].sum())
    observed.append((r >= lo).sum())
    chi2 = float(((np.array(observed) - np.array(expected)) ** 2 / np.array(expected)).sum())
    assert stats.chi2.sf(chi2, df=len(expected) - 1) > 1e-3, (chi2, len(expected))
    # the exact pmf also agrees with an independent Monte Carlo of the definition (another generator)
    rng = np.random.default_rng(2024)
    tau = rng.normal(math.log(mean) - sigma**2 / 2, sigma, size=200_000)
    mc = np.bincount(rng.poisson(np.exp(tau)) + 1, minlength=60)[:60] / 200_000
    assert np.abs(mc - pmf[:60]).max() < 4e-3


# --------------------------------------------------------------------------------------------- truncated backprop
def test_no_gradient_reaches_recurrences_older_than_k():
    model = tiny_model(core_layers=1, backprop_k=2).train()
    x = torch.randint(0, 17, (2, 9), generator=torch.Generator().manual_seed(0))
    outputs = []

    def keep(module, inputs, out):  # record every recurrence's adapter output A[s_{i-1}, e]
        if out.requires_grad:
            out.retain_grad()
        outputs.append(out)

    hook = model.adapter.register_forward_hook(keep)
    loss = model(x, 6, noise_seed=1).logsumexp(-1).mean()
    loss.backward()
    hook.remove()
    assert len(outputs) == 6
    assert [o.requires_grad for o in outputs] == [False] * 4 + [True] * 2  # only the last k are in the graph
    assert all(o.grad is not None and float(o.grad.abs().sum()) > 0 for o in outputs[4:])
    assert model.embedding.weight.grad is not None  # the prelude still learns, through e

    # same gradient as an explicit detach: start from s_4 (computed separately) and run the last 2 steps
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    with torch.no_grad():
        pos = torch.arange(9)
        rope = model.rotary(pos)
        e = model.embed(x, pos, rope)
        s = model.initial_state(e, pos, noise_seed=1)
        for _ in range(4):
            s = model.core_step(s, e, rope)
    model(x, (0, 2), initial_state=s).logsumexp(-1).mean().backward()
    for n, p in model.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-5, msg=f"gradient of {n} differs")

    # the autograd graph (hence activation memory) does not grow with r
    def graph_size(r: int) -> int:
        out = model(x, r, noise_seed=1).sum()
        seen, stack = set(), [out.grad_fn]
        while stack:
            fn = stack.pop()
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            stack.extend(f for f, _ in fn.next_functions)
        return len(seen)

    assert graph_size(3) == graph_size(12) == graph_size(30)


# ------------------------------------------------------------------------------------------------------ the cache
def test_cached_generation_equals_uncached():
    model = tiny_model()
    prompt = torch.randint(0, 17, (3, 5), generator=torch.Generator().manual_seed(1))
    for steps in (1, 4):
        cached = model.generate(prompt, 12, num_steps=steps, use_cache=True)
        uncached = model.generate(prompt, 12, num_steps=steps, use_cache=False)
        assert torch.equal(cached, uncached)
    seq = torch.randint(0, 17, (2, 14), generator=torch.Generator().manual_seed(2))
    logits, steps = model.adaptive_forward(seq, exit_threshold=None, max_steps=5, noise_seed=3)
    torch.testing.assert_close(logits, model(seq, 5, noise_seed=3), atol=1e-5, rtol=1e-4)
    assert bool((steps == 5).all())
    cache = model.new_cache()
    for t in range(4):
        model.decode_step(seq[:, t : t + 1], cache, max_steps=5)
    assert sorted(cache.core) == [(i, layer) for i in range(1, 6) for layer in range(2)]  # (recurrence, layer)
    assert all(c.length == 4 for c in cache.core.values())
    with pytest.raises(ValueError, match="max_steps"):
        model.decode_step(seq[:, 4:5], cache, max_steps=3)


def test_shared_cache_overwrites_k_slots_and_is_exact_only_when_k_covers_the_depth():
    model = tiny_model()
    seq = torch.randint(0, 17, (2, 9), generator=torch.Generator().manual_seed(4))
    full = model(seq, 6, noise_seed=0)
    for budget in (6, 9):  # K >= r: every recurrence keeps its own slot
        logits, _ = model.adaptive_forward(seq, None, max_steps=6, cache_budget=budget)
        torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-4)
    for budget in (1, 4):  # K < r: earlier tokens' keys come from a later recurrence sharing the slot
        logits, _ = model.adaptive_forward(seq, None, max_steps=6, cache_budget=budget)
        torch.testing.assert_close(logits[:, 0], full[:, 0], atol=1e-5, rtol=1e-4)  # nothing cached yet
        assert (logits - full).abs().max() > 1e-3
    cache = model.new_cache(core_budget=4)
    for t in range(5):
        model.decode_step(seq[:, t : t + 1], cache, max_steps=6)
    assert sorted(cache.core) == [(i, layer) for i in range(1, 5) for layer in range(2)]
    assert all(c.length == 5 for c in cache.core.values())  # overwritten, not appended
    # the first token's entry in slot 1 is its recurrence-5 key (5 = 1 + K), as a full cache computes it
    exact = model.new_cache()
    model.decode_step(seq[:, :1], exact, max_steps=6)
    torch.testing.assert_close(cache.core[(1, 0)].k[:, :, 0], exact.core[(5, 0)].k[:, :, 0])
    assert (cache.core[(1, 0)].k[:, :, 0] - exact.core[(1, 0)].k[:, :, 0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="core_budget"):
        model.new_cache(core_budget=0)
    with pytest.raises(ValueError, match="core_budget"):
        model.decode_step(seq[:, :1], model.new_cache(2), max_steps=4, exit_threshold=1e-3)


# ------------------------------------------------------------------------------------------------ adaptive exit
def test_kl_exit_rule_on_known_trajectories():
    V, S = 5, 6
    settle = torch.tensor([0.0, 3.0, 0.0, 0.0, 0.0])
    logits = torch.zeros(S, 2, V)
    logits[:, 0] = settle  # token 0: the same distribution from step 1 on -> exits at step 2
    logits[:, 1] = torch.randn(S, V, generator=torch.Generator().manual_seed(0)) * 3  # token 1 keeps changing
    steps, at_exit = kl_exit_steps(logits, threshold=1e-4)
    assert steps.tolist() == [2, S]
    torch.testing.assert_close(at_exit, torch.stack([logits[1, 0], logits[S - 1, 1]]))
    assert kl_exit_steps(logits, 0.0)[0].tolist() == [S, S]  # KL is never < 0: everyone runs to the cap
    assert kl_exit_steps(logits, float("inf"), min_steps=3)[0].tolist() == [3, 3]
    with pytest.raises(ValueError, match="min_steps"):
        kl_exit_steps(logits, 1e-3, min_steps=S + 1)


def test_adaptive_exit_is_per_token_capped_and_row_independent():
    model = tiny_model(seed=3)
    seq = torch.randint(0, 17, (3, 10), generator=torch.Generator().manual_seed(4))
    cap = 7
    logits, steps = model.adaptive_forward(seq, exit_threshold=5e-2, max_steps=cap)
    assert steps.shape == (3, 10) and int(steps.min()) >= 1 and int(steps.max()) <= cap
    assert len(set(steps.flatten().tolist())) > 1  # tokens stop at different depths
    # a row's result does not depend on the other rows of the batch (exact per-token exit)
    for b in range(3):
        lg1, st1 = model.adaptive_forward(seq[b : b + 1], exit_threshold=5e-2, max_steps=cap)
        assert torch.equal(st1[0], steps[b])
        torch.testing.assert_close(lg1[0], logits[b], atol=1e-5, rtol=1e-4)
    # warm start also respects the cap
    _, warm = model.adaptive_forward(seq, exit_threshold=5e-2, max_steps=cap, warm_start=True)
    assert int(warm.max()) <= cap and int(warm.min()) >= 1


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="injection"):
        RecurrentDepthConfig(vocab_size=5, injection="multiply")
    with pytest.raises(ValueError, match="tie_embeddings"):
        RecurrentDepthConfig(vocab_size=5, out_vocab_size=6, tie_embeddings=True)
    model = tiny_model()
    with pytest.raises(ValueError, match="token ids"):
        model(torch.tensor([[0, 17]]))
    with pytest.raises(ValueError, match="recurrences"):
        model(torch.tensor([[0, 1]]), 0)


# ------------------------------------------------------------------------------------------------ learning test
def test_more_test_time_recurrences_solve_more_chains(one_thread):
    torch.manual_seed(0)
    cfg = get_config(
        "recurrent-depth-chains",
        profile="smoke",
        overrides={
            "num_nodes": 12,
            "train_max_chain": 6,
            "test_max_chain": 12,
            "batch_size": 32,
            "dim": 32,
            "mlp_inner": 64,
            "mean_recurrence": 6.0,
            "backprop_k": 3,
            "train.steps": 250,
            "train.lr": 3e-3,
            "train.warmup_steps": 20,
            "train.progress": False,
        },
    )
    job = build_chains(cfg)
    fit(job.model, recurrent_depth_loss, job.batch_fn, job.train)
    model = job.model.eval()
    val = make_chain_batch(512, 12, 12, generator=99)  # held out, and chains up to twice the training length
    logits = model.step_logits(val.tokens, 16, noise_seed=0)
    correct = {r: logits[r - 1].argmax(-1) == val.targets for r in (1, 6, 16)}
    deep = val.depth >= 3  # nodes three or more hops from their root
    acc = {r: c.float().mean().item() for r, c in correct.items()}
    acc_deep = {r: c[deep].float().mean().item() for r, c in correct.items()}
    assert acc_deep[6] > acc_deep[1] + 0.08, acc_deep  # thinking longer solves deep nodes
    assert acc[6] > 0.9, acc  # it learned the task
    assert acc[16] >= acc[6] - 0.01, acc  # running past the training mean does not hurt
