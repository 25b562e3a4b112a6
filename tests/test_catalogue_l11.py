"""Wrong-solution catalogue for exercise 11 (the capstone): the master solutions pass every check, and every
known-wrong variant is rejected (a falsy verdict in learner mode, ``CheckFailed`` in grading mode)."""

from __future__ import annotations

import contextlib
import io
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from recursionlab.course.checks import CheckFailed, grading
from recursionlab.course.graders import l11_capstone as grader
from recursionlab.data.latent_tasks import chain_depths, chain_roots, make_chain_batch
from recursionlab.train.recipes.capstone import partial_correlation as library_partial


# ------------------------------------------------------------------------------- (a) partial correlation
def _corr(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def _residual(v, z, intercept=True):
    design = torch.stack([torch.ones_like(z), z], 1) if intercept else z[:, None]
    return v - (design @ torch.linalg.lstsq(design, v[:, None]).solution)[:, 0]


def _flat(*ts):
    return [t.double().flatten() for t in ts]


def partial_master(x, y, z):
    x, y, z = _flat(x, y, z)
    return _corr(_residual(x, z), _residual(y, z))


def partial_is_plain_correlation(x, y, z):
    # ignores z altogether
    x, y = _flat(x, y)
    return _corr(x, y)


def partial_residualises_x_only(x, y, z):
    # the semi-partial correlation: position removed from x but not from y
    x, y, z = _flat(x, y, z)
    return _corr(_residual(x, z), y)


def partial_without_intercept(x, y, z):
    # regression through the origin: the residuals keep an offset and a slope error
    x, y, z = _flat(x, y, z)
    return _corr(_residual(x, z, intercept=False), _residual(y, z, intercept=False))


def partial_sign_flipped_formula(x, y, z):
    # r_xy + r_xz r_yz in the numerator
    x, y, z = _flat(x, y, z)
    rxy, rxz, ryz = _corr(x, y), _corr(x, z), _corr(y, z)
    return (rxy + rxz * ryz) / math.sqrt((1 - rxz**2) * (1 - ryz**2))


def partial_covariance(x, y, z):
    # right residuals, but their covariance instead of their correlation
    x, y, z = _flat(x, y, z)
    rx, ry = _residual(x, z), _residual(y, z)
    return float(((rx - rx.mean()) * (ry - ry.mean())).mean())


# ------------------------------------------------------------------------------- (b) k-hop baseline
def k_hop_master(parents, k):
    where = torch.arange(parents.shape[1]).expand_as(parents).clone()
    for _ in range(k):
        where = torch.gather(parents, 1, where)
    return where


def k_hop_one_short(parents, k):
    # off by one: k - 1 hops (k = 0 and 1 both give the node itself)
    return k_hop_master(parents, max(0, k - 1))


def k_hop_doubling(parents, k):
    # k rounds of pointer doubling: 2^k hops, not k
    p = parents.clone()
    if k == 0:
        return torch.arange(parents.shape[1]).expand_as(parents).clone()
    for _ in range(k - 1):
        p = torch.gather(p, 1, p)
    return p


def k_hop_always_root(parents, k):
    # answers the root whatever k is: right only when k exceeds every depth
    return chain_roots(parents)


def k_hop_zero_is_parent(parents, k):
    # starts from the parents, so k = 0 copies the parent and every k is one hop too far
    where = parents.clone()
    for _ in range(k):
        where = torch.gather(parents, 1, where)
    return where


# ------------------------------------------------------------------------------- (c) matched total steps
def total_master(total_flops, step_flops, infer_flops_per_seq, queries):
    return max(0, math.floor((total_flops - queries * infer_flops_per_seq) / step_flops + 1e-9))


def total_ignores_inference(total_flops, step_flops, infer_flops_per_seq, queries):
    # matches training compute only
    return math.floor(total_flops / step_flops + 1e-9)


def total_rounds(total_flops, step_flops, infer_flops_per_seq, queries):
    # rounds to the nearest step: can overspend the budget
    return max(0, round((total_flops - queries * infer_flops_per_seq) / step_flops))


def total_negative(total_flops, step_flops, infer_flops_per_seq, queries):
    # no floor at 0 when answering alone costs more than the budget
    return math.floor((total_flops - queries * infer_flops_per_seq) / step_flops + 1e-9)


def total_float(total_flops, step_flops, infer_flops_per_seq, queries):
    # a fractional step count
    return max(0.0, (total_flops - queries * infer_flops_per_seq) / step_flops)


def total_inference_per_step(total_flops, step_flops, infer_flops_per_seq, queries):
    # charges the answers once per training step instead of once
    return max(0, math.floor(total_flops / (step_flops + queries * infer_flops_per_seq) + 1e-9))


# ------------------------------------------------------------------------------- (d) router experiment
class FakeRouter(nn.Module):
    """Stands in for a trained hybrid: at test time (rule="threshold") it gives each node ``f(position, depth)``
    recurrences; the training rule (top-k) gives something else, so reading the wrong rule is caught."""

    def __init__(self, by: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.by = by

    def forward(self, tokens, rule="topk", max_recurrences=None, noise_seed=None):
        position = torch.arange(tokens.shape[1]).expand_as(tokens)
        depth = chain_depths(tokens)
        if rule != "threshold":
            return SimpleNamespace(depth=(tokens.shape[1] - position) // 3)
        if self.by == "position":
            return SimpleNamespace(depth=1 + position // 4)
        return SimpleNamespace(depth=1 + depth)


BATCH = make_chain_batch(64, 16, 8, generator=11)


def measure_master(model, batch):
    model.eval()
    with torch.no_grad():
        given = model(batch.tokens, rule="threshold", noise_seed=0).depth.double()
    position = torch.arange(batch.tokens.shape[1]).expand_as(batch.tokens).double()
    depth = batch.depth.double()
    return {"raw": _corr(given.flatten(), depth.flatten()), "partial": library_partial(given, depth, position)}


def measure_raw_as_partial(model, batch):
    # reports the raw correlation as the partial one: the confound is never removed
    raw = measure_master(model, batch)["raw"]
    return {"raw": raw, "partial": raw}


def measure_training_rule(model, batch):
    # the routing of training (top-k), not the causal rule used at test time
    given = model(batch.tokens, noise_seed=0).depth.double()
    position = torch.arange(batch.tokens.shape[1]).expand_as(batch.tokens).double()
    depth = batch.depth.double()
    return {"raw": _corr(given.flatten(), depth.flatten()), "partial": library_partial(given, depth, position)}


def measure_position_vs_depth(model, batch):
    # partial correlation of the wrong pair: depth with position given the recurrences
    m = measure_master(model, batch)
    given = model(batch.tokens, rule="threshold").depth.double()
    position = torch.arange(batch.tokens.shape[1]).expand_as(batch.tokens).double()
    return {"raw": m["raw"], "partial": library_partial(batch.depth.double(), position, given)}


def answer_for(model, from_key="partial"):
    def answer():
        return grader.router_answer_for(measure_master(model, BATCH)[from_key])

    return answer


# ------------------------------------------------------------------------------- the catalogue
def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


CATALOGUE = [
    (grader.check_partial_correlation, partial_master,
     [partial_is_plain_correlation, partial_residualises_x_only, partial_without_intercept,
      partial_sign_flipped_formula, partial_covariance]),
    (grader.check_k_hop_baseline, k_hop_master,
     [k_hop_one_short, k_hop_doubling, k_hop_always_root, k_hop_zero_is_parent]),
    (grader.check_matched_total_steps, total_master,
     [total_ignores_inference, total_rounds, total_negative, total_float, total_inference_per_step]),
]


@pytest.mark.parametrize("check, master, wrongs", CATALOGUE, ids=["partial", "k_hop", "total_steps"])
def test_masters_pass_and_every_wrong_variant_is_rejected(check, master, wrongs):
    assert _quiet(check, master)
    with grading():
        _quiet(check, master)
    for wrong in wrongs:
        assert not _quiet(check, wrong), f"{wrong.__name__} was accepted"
        with grading(), pytest.raises(CheckFailed):
            _quiet(check, wrong)


def test_router_experiment_master_passes_and_wrong_ways_are_rejected():
    by_position, by_depth = FakeRouter("position"), FakeRouter("depth")
    # the position-only router: raw correlation high, nothing left once position is held fixed
    measured = measure_master(by_position, BATCH)
    assert measured["raw"] > 0.3 and grader.router_answer_for(measured["partial"]) == "vanishes"
    assert grader.router_answer_for(measure_master(by_depth, BATCH)["partial"]) == "survives"
    for model in (by_position, by_depth):
        assert _quiet(grader.check_router_experiment, measure_master, answer_for(model), model, BATCH)
    wrong_cases = [
        (measure_raw_as_partial, answer_for(by_position), by_position),
        (measure_training_rule, answer_for(by_position), by_position),
        (measure_position_vs_depth, answer_for(by_depth), by_depth),
        # right measurement, answer read off the RAW correlation
        (measure_master, answer_for(by_position, "raw"), by_position),
        # an answer outside the allowed options
        (measure_master, lambda: "yes", by_depth),
    ]
    for measure, answer, model in wrong_cases:
        assert not _quiet(grader.check_router_experiment, measure, answer, model, BATCH), measure.__name__
        with grading(), pytest.raises(CheckFailed):
            _quiet(grader.check_router_experiment, measure, answer, model, BATCH)


def test_unsolved_stubs_get_the_not_implemented_verdict():
    def stub(*args, **kwargs):
        raise NotImplementedError

    for check in (grader.check_partial_correlation, grader.check_k_hop_baseline, grader.check_matched_total_steps):
        verdict = _quiet(check, stub)
        assert not verdict and "not implemented" in verdict.message
    verdict = _quiet(grader.check_router_experiment, stub, stub, FakeRouter("depth"), BATCH)
    assert not verdict and "not implemented" in verdict.message
