"""Lesson 03's wrong-solution catalogue: the master solutions pass every check; every known-wrong variant fails
(a falsy verdict for the learner, CheckFailed under grading)."""

from __future__ import annotations

import pytest
import torch

from recursionlab.course.checks import CheckFailed, grading
from recursionlab.course.graders import l03_adaptive as g
from recursionlab.data.algorithmic import parity_batch
from recursionlab.models.act import ACTParityNet

# ------------------------------------------------------------------------------------------------------------------
# ACT halting loop: the master and its variants share one body with switches for the mistakes


def _act(step_fn, state, max_steps, epsilon=0.01, *, remainder_is_h=False, no_cap=False, freeze=True,
         stop_early=True, use_epsilon=True):
    output_sum, probs = 0.0, []
    running = cumulative = n_steps = remainder = None
    threshold = 1 - epsilon if use_epsilon else 1.0
    n = 0
    while True:
        n += 1
        if not no_cap and n > max_steps:
            break
        new_state, output, h = step_fn(state, n)
        if running is None:
            running = torch.ones_like(h, dtype=torch.bool)
            cumulative, remainder = torch.zeros_like(h), torch.zeros_like(h)
            n_steps = torch.zeros_like(h, dtype=torch.long)
        at_cap = (n == max_steps) if not no_cap else False
        halts_now = running & ((cumulative + h >= threshold) | at_cap)
        last = h if remainder_is_h else 1 - cumulative
        p = torch.where(halts_now, last, torch.where(running, h, torch.zeros_like(h)))
        remainder = torch.where(halts_now, 1 - cumulative, remainder)
        n_steps = torch.where(halts_now, torch.full_like(n_steps, n), n_steps)
        output_sum = output_sum + p[:, None] * output
        probs.append(p)
        cumulative = cumulative + torch.where(running & ~halts_now, h, torch.zeros_like(h))
        state = torch.where(running[:, None], new_state, state) if freeze else new_state
        running = running & ~halts_now
        if stop_early and not running.any():
            break
    return output_sum, torch.stack(probs, dim=-1), n_steps, remainder


def act_master(step_fn, state, max_steps, epsilon=0.01):
    return _act(step_fn, state, max_steps, epsilon)


def act_weight_h_at_halt(step_fn, state, max_steps, epsilon=0.01):
    # weight h^N instead of the remainder R at the halting step: the halting weights sum to more than 1
    return _act(step_fn, state, max_steps, epsilon, remainder_is_h=True)


def act_no_cap(step_fn, state, max_steps, epsilon=0.01):
    # never forces a halt at the cap: keeps asking for steps past max_steps
    return _act(step_fn, state, max_steps, epsilon, no_cap=True)


def act_no_freeze(step_fn, state, max_steps, epsilon=0.01):
    # halted units keep updating their state (the others read it)
    return _act(step_fn, state, max_steps, epsilon, freeze=False)


def act_runs_to_cap(step_fn, state, max_steps, epsilon=0.01):
    # never stops early: halting_probs has max_steps columns instead of the steps actually run
    return _act(step_fn, state, max_steps, epsilon, stop_early=False)


def act_ignores_epsilon(step_fn, state, max_steps, epsilon=0.01):
    # halts only when the sum reaches 1 exactly
    return _act(step_fn, state, max_steps, epsilon, use_epsilon=False)


def act_cap_without_remainder_rule(step_fn, state, max_steps, epsilon=0.01):
    # right loop, but n_steps counted from 0 (off by one)
    out, probs, n_steps, remainder = _act(step_fn, state, max_steps, epsilon)
    return out, probs, n_steps - 1, remainder


# ------------------------------------------------------------------------------------------------------------------
# PonderNet halting distribution + KL


def _halting(lambdas, *, cap=True):
    lam = torch.cat([lambdas[:, :-1], torch.ones_like(lambdas[:, -1:])], dim=1) if cap else lambdas
    alive = torch.cumprod(1 - lam, dim=1)
    return lam * torch.cat([torch.ones_like(alive[:, :1]), alive[:, :-1]], dim=1)


def _prior(lambda_p, n_steps, dtype, normalise=True):
    k = torch.arange(n_steps, dtype=dtype)
    prior = (1 - lambda_p) ** k * lambda_p
    return prior / prior.sum() if normalise else prior


def kl_master(lambdas, lambda_p):
    p = _halting(lambdas)
    prior = _prior(lambda_p, lambdas.shape[1], lambdas.dtype)
    log_p = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
    return p, (p * (log_p - prior.log())).sum(dim=1).mean()


def kl_where_nan_grad(lambdas, lambda_p):
    # the pattern of the old lesson cell: right value, NaN gradient where some p_n = 0
    p = _halting(lambdas)
    prior = _prior(lambda_p, lambdas.shape[1], lambdas.dtype)
    terms = torch.where(p > 0, p * (p.log() - prior.log()), torch.zeros_like(p))
    return p, terms.sum(dim=1).mean()


def kl_xlogy_nan_grad(lambdas, lambda_p):
    # xlogy(p, p) has the right value too, and also back-propagates NaN at p = 0
    p = _halting(lambdas)
    prior = _prior(lambda_p, lambdas.shape[1], lambdas.dtype)
    return p, (torch.xlogy(p, p) - p * prior.log()).sum(dim=1).mean()


def kl_prior_not_renormalised(lambdas, lambda_p):
    # the truncated prior does not sum to 1
    p = _halting(lambdas)
    prior = _prior(lambda_p, lambdas.shape[1], lambdas.dtype, normalise=False)
    log_p = torch.log(p.clamp_min(1e-300))
    return p, (p * (log_p - prior.log())).sum(dim=1).mean()


def kl_no_forced_halt(lambdas, lambda_p):
    # lambda_N is not replaced by 1: p does not sum to 1
    p = _halting(lambdas, cap=False)
    prior = _prior(lambda_p, lambdas.shape[1], lambdas.dtype)
    log_p = torch.log(p.clamp_min(1e-300))
    return p, (p * (log_p - prior.log())).sum(dim=1).mean()


def kl_reversed(lambdas, lambda_p):
    # KL(prior || p) instead of KL(p || prior), with a clamp so that it stays finite
    p = _halting(lambdas)
    prior = _prior(lambda_p, lambdas.shape[1], lambdas.dtype)
    return p, (prior * (prior.log() - torch.log(p.clamp_min(1e-300)))).sum(dim=1).mean()


def kl_detached(lambdas, lambda_p):
    # right numbers, but computed from a detached p: the KL term cannot train the halting unit
    p, kl = kl_master(lambdas.detach(), lambda_p)
    return p, kl.detach()


def kl_summed_over_batch(lambdas, lambda_p):
    # sums over the batch instead of averaging
    p, kl = kl_master(lambdas, lambda_p)
    return p, kl * lambdas.shape[0]


# ------------------------------------------------------------------------------------------------------------------
# Sampled halting step


def sample_master(lambdas, coins):
    halts = coins < lambdas
    halts[:, -1] = True
    return halts.long().argmax(dim=1) + 1


def sample_zero_based(lambdas, coins):
    # returns the index 0..N-1 instead of the step 1..N
    return sample_master(lambdas, coins) - 1


def sample_with_p(lambdas, coins):
    # compares the coins with the unconditional p_n instead of the conditional lambda_n
    return sample_master(g.pondernet_halting_distribution(lambdas), coins)


def sample_no_forced_halt(lambdas, coins):
    # no halt at N: a walk that never stops reports step 1 (argmax of all-False)
    return (coins < lambdas).long().argmax(dim=1) + 1


def sample_last_success(lambdas, coins):
    # takes the last step whose coin came up, not the first
    halts = coins < lambdas
    halts[:, -1] = True
    idx = torch.arange(1, lambdas.shape[1] + 1).expand_as(halts)
    return torch.where(halts, idx, torch.zeros_like(idx)).amax(dim=1)


# ------------------------------------------------------------------------------------------------------------------
# Epsilon experiment


@pytest.fixture(scope="module")
def act_model():
    torch.manual_seed(0)
    model = ACTParityNet(n_elems=6, hidden=16, max_steps=10, epsilon=0.01, halt_bias_init=-1.0).eval()
    x, y, _ = parity_batch(400, n_elems=6, generator=3)
    return model, x, y


@torch.no_grad()
def eps_master(model, x, y, epsilon):
    before = model.epsilon
    model.epsilon = epsilon
    res = model(x)
    model.epsilon = before
    return res.n_steps.float().mean().item(), (res.output.argmax(-1) == y).float().mean().item()


@torch.no_grad()
def eps_ignores_epsilon(model, x, y, epsilon):
    # measures at the model's own epsilon whatever is asked
    res = model(x)
    return res.n_steps.float().mean().item(), (res.output.argmax(-1) == y).float().mean().item()


@torch.no_grad()
def eps_expected_not_actual(model, x, y, epsilon):
    # reports the ponder cost N + R instead of the number of steps N
    before = model.epsilon
    model.epsilon = epsilon
    res = model(x)
    model.epsilon = before
    return res.ponder_cost.mean().item(), (res.output.argmax(-1) == y).float().mean().item()


@torch.no_grad()
def eps_swapped(model, x, y, epsilon):
    # returns (accuracy, steps)
    steps, acc = eps_master(model, x, y, epsilon)
    return acc, steps


def _answer_for(model, x, y):
    table = {e: g.measure_epsilon(model, x, y, e) for e in g.EPSILONS}
    return g.largest_safe_epsilon(table)


# ------------------------------------------------------------------------------------------------------------------


def _rejected(check_call) -> None:
    assert not check_call()
    with grading(), pytest.raises(CheckFailed):
        check_call()


def test_masters_pass(act_model):
    model, x, y = act_model
    answer = _answer_for(model, x, y)
    with grading():
        assert g.check_act(act_master)
        assert g.check_halting_and_kl(kl_master)
        assert g.check_sample_halting_step(sample_master)
        assert g.check_epsilon_experiment(eps_master, model, x, y, lambda: answer)


@pytest.mark.parametrize("variant", [act_weight_h_at_halt, act_no_cap, act_no_freeze, act_runs_to_cap,
                                     act_ignores_epsilon, act_cap_without_remainder_rule])
def test_wrong_act_loops_are_rejected(variant):
    _rejected(lambda: g.check_act(variant))


@pytest.mark.parametrize("variant", [kl_where_nan_grad, kl_xlogy_nan_grad, kl_prior_not_renormalised,
                                     kl_no_forced_halt, kl_reversed, kl_detached, kl_summed_over_batch])
def test_wrong_kls_are_rejected(variant):
    _rejected(lambda: g.check_halting_and_kl(variant))


def test_the_where_kl_has_the_right_value_but_nan_gradients():
    # the catalogue's headline case: the values agree, so only the gradient check can catch it
    lambdas, lambda_p = g.lambdas_case(1)
    lam = lambdas.clone().requires_grad_()
    p, kl = kl_where_nan_grad(lam, lambda_p)
    assert torch.allclose(kl, g.library_halting_and_kl(lambdas, lambda_p)[1])
    (grad,) = torch.autograd.grad(kl, lam)
    assert not torch.isfinite(grad).all()


@pytest.mark.parametrize("variant", [sample_zero_based, sample_with_p, sample_no_forced_halt, sample_last_success])
def test_wrong_halting_samplers_are_rejected(variant):
    _rejected(lambda: g.check_sample_halting_step(variant))


@pytest.mark.parametrize("variant", [eps_ignores_epsilon, eps_expected_not_actual, eps_swapped])
def test_wrong_epsilon_measurements_are_rejected(variant, act_model):
    model, x, y = act_model
    answer = _answer_for(model, x, y)
    _rejected(lambda: g.check_epsilon_experiment(variant, model, x, y, lambda: answer))


def test_wrong_epsilon_answers_are_rejected(act_model):
    model, x, y = act_model
    answer = _answer_for(model, x, y)
    for wrong in [e for e in g.EPSILONS if e != answer] + [0.2]:
        _rejected(lambda wrong=wrong: g.check_epsilon_experiment(eps_master, model, x, y, lambda: wrong))


def test_unsolved_stubs_are_not_implemented(act_model):
    def stub(*args, **kwargs):
        raise NotImplementedError

    model, x, y = act_model
    for call in (lambda: g.check_act(stub), lambda: g.check_halting_and_kl(stub),
                 lambda: g.check_sample_halting_step(stub),
                 lambda: g.check_epsilon_experiment(stub, model, x, y, stub)):
        verdict = call()
        assert not verdict and verdict.todo
