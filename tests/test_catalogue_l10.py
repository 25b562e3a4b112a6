"""Exercise 10's graders accept the master solutions and reject a catalogue of known-wrong ones."""

import pytest
import torch

from recursionlab.course.checks import assert_rejected
from recursionlab.course.graders import l10_mor as g
from recursionlab.models import mor


def step_naive_log(x, k, alpha):
    # right values for moderate logits, but log(sigmoid) underflows: NaN/inf at saturated routers
    gates_all = alpha * torch.sigmoid(x)
    sel = gates_all.topk(k, dim=-1).indices.sort(dim=-1).values
    y = torch.zeros_like(x).scatter(1, sel, 1.0)
    p = torch.sigmoid(x)
    return sel, gates_all.gather(1, sel), -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()


def step_unsorted(x, k, alpha):
    # top-k in score order: attention among the selected tokens would not be causal
    gates_all = alpha * torch.sigmoid(x)
    sel = gates_all.topk(k, dim=-1).indices
    y = torch.zeros_like(x).scatter(1, sel, 1.0)
    return sel, gates_all.gather(1, sel), torch.nn.functional.binary_cross_entropy_with_logits(x, y)


def step_detached_bce(x, k, alpha):
    # the auxiliary loss computed on detached logits: the router never learns the threshold
    sel, gates, _ = mor.expert_choice_topk(x, k, alpha)
    y = torch.zeros_like(x).scatter(1, sel, 1.0)
    return sel, gates, torch.nn.functional.binary_cross_entropy_with_logits(x.detach(), y)


def step_gates_without_alpha(x, k, alpha):
    sel, _, bce = mor.expert_choice_topk(x, k, alpha)
    return sel, torch.sigmoid(x).gather(1, sel), bce


def step_summed_bce(x, k, alpha):
    # summed instead of averaged over batch x candidates
    sel, gates, _ = mor.expert_choice_topk(x, k, alpha)
    y = torch.zeros_like(x).scatter(1, sel, 1.0)
    return sel, gates, torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="sum")


WRONG_STEPS = [step_naive_log, step_unsorted, step_detached_bce, step_gates_without_alpha, step_summed_bce]


def mask_no_causal(depth, recursion, kv_sharing):
    active = depth >= recursion
    keys = torch.ones_like(active) if kv_sharing else active
    return active[:, None] & keys[None, :]


def mask_sharing_ignored(depth, recursion, kv_sharing):
    return mor.recursion_attention_mask(depth, recursion, False)


def mask_inactive_rows_kept(depth, recursion, kv_sharing):
    T = depth.shape[0]
    keys = torch.ones(T, dtype=torch.bool) if kv_sharing else depth >= recursion
    return torch.ones(T, T, dtype=torch.bool).tril() & keys[None, :]


WRONG_MASKS = [mask_no_causal, mask_sharing_ignored, mask_inactive_rows_kept]

WRONG_KV = [
    lambda depth, n, share: [int((depth >= r).sum()) for r in range(1, n + 1)],  # sharing ignored
    lambda depth, n, share: [depth.numel()] * n,  # every token cached at every recursion
    lambda depth, n, share: [int((depth > r).sum()) for r in range(1, n + 1)] if not share
    else [depth.numel()] + [0] * (n - 1),  # off by one in "active"
]


def threshold_topk(logits, caps):
    # the training rule (rank within the sequence): not causal
    R, T = logits.shape
    cand = torch.arange(T)
    depth = torch.zeros(T, dtype=torch.long)
    for r in range(R):
        k = max(1, int(caps[r] * T))
        if caps[r] < 1.0:
            cand = cand[logits[r, cand].topk(min(k, len(cand))).indices]
        depth[cand] += 1
    return depth


def threshold_not_nested(logits, caps):
    # each recursion thresholds every token, not only those the previous recursion kept
    return sum(((logits[r] >= 0) | (caps[r] >= 1.0)).long() for r in range(len(caps)))


def threshold_strict(logits, caps):
    # sigma > 1/2 instead of >= 1/2
    R, T = logits.shape
    active, depth = torch.ones(T, dtype=torch.bool), torch.zeros(T, dtype=torch.long)
    for r in range(R):
        if caps[r] < 1.0:
            active = active & (logits[r] > 0)
        depth += active.long()
    return depth


WRONG_THRESHOLD = [threshold_topk, threshold_not_nested, threshold_strict]




def test_master_solutions_pass(capsys):
    assert g.check_expert_choice_step(mor.expert_choice_topk)
    assert g.check_attention_mask(mor.recursion_attention_mask)
    assert g.check_kv_entries(mor.kv_entries_from_depths)
    assert g.check_threshold_depths(g.reference_threshold_depths)
    assert g.check_leak_fraction(g.reference_leak_fraction)
    assert g.check_leak_trend(lambda: "falls")
    assert capsys.readouterr().out.count("\u2705") == 6


@pytest.mark.parametrize("wrong", WRONG_STEPS, ids=lambda f: f.__name__)
def test_wrong_routing_steps_are_rejected(wrong, capsys):
    assert_rejected(g.check_expert_choice_step, wrong)


def test_naive_log_is_caught_by_its_nan_gradient(capsys):
    g.check_expert_choice_step(step_naive_log)
    assert "NaN" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", WRONG_MASKS, ids=lambda f: f.__name__)
def test_wrong_masks_are_rejected(wrong, capsys):
    assert_rejected(g.check_attention_mask, wrong)


@pytest.mark.parametrize("i", range(len(WRONG_KV)))
def test_wrong_kv_counts_are_rejected(i, capsys):
    assert_rejected(g.check_kv_entries, WRONG_KV[i])


@pytest.mark.parametrize("wrong", WRONG_THRESHOLD, ids=lambda f: f.__name__)
def test_wrong_threshold_routers_are_rejected(wrong, capsys):
    assert_rejected(g.check_threshold_depths, wrong)


def test_wrong_leak_measurements_and_answers_are_rejected(capsys):
    def counts_the_last_position(model, ids, new, rule):  # includes the replaced token itself
        fr = []
        for row, n in zip(ids, new):
            out = mor.causality_leak(model, row, row.shape[0] - 1, int(n), rule)
            changed = out["changed"].clone()
            changed[-1] = (out["depth_before"] != out["depth_after"])[-1]
            fr.append(changed.float().mean().item())
        return sum(fr) / len(fr)

    assert_rejected(g.check_leak_fraction, lambda m, ids, new, rule: 0.0)  # "there is no leak"
    assert_rejected(g.check_leak_fraction, counts_the_last_position)
    for wrong in ("rises", "stays within 0.01"):
        assert_rejected(g.check_leak_trend, lambda w=wrong: w)
