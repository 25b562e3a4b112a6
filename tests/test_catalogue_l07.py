"""Exercise 07's graders accept the master solutions and reject a catalogue of known-wrong ones."""

import pytest
import torch

from recursionlab.course.checks import assert_rejected
from recursionlab.course.graders import l07_hrm as g


def segment_right(model, z_H, z_L, x):
    cfg, rope = model.config, model.rotary()
    with torch.no_grad():
        for i in range(cfg.H_cycles * cfg.L_cycles - 1):
            z_L = model.L_level(z_L, z_H + x, rope)
            if (i + 1) % cfg.L_cycles == 0:
                z_H = model.H_level(z_H, z_L, rope)
    z_L = model.L_level(z_L, z_H + x, rope)
    z_H = model.H_level(z_H, z_L, rope)
    return z_H, z_L


def segment_graph_then_detach(model, z_H, z_L, x):
    # right numbers, wrong way: every call builds a graph, the states are detached before the last two calls
    cfg, rope = model.config, model.rotary()
    for i in range(cfg.H_cycles * cfg.L_cycles - 1):
        z_L = model.L_level(z_L, z_H + x, rope)
        if (i + 1) % cfg.L_cycles == 0:
            z_H = model.H_level(z_H, z_L, rope)
    z_H, z_L, x = z_H.detach(), z_L.detach(), x
    z_L = model.L_level(z_L, z_H + x, rope)
    return model.H_level(z_H, z_L, rope), z_L


def segment_full_backprop(model, z_H, z_L, x):
    # no torch.no_grad(): the gradient of the whole segment, not the 1-step gradient
    cfg, rope = model.config, model.rotary()
    for _ in range(cfg.H_cycles):
        for _ in range(cfg.L_cycles):
            z_L = model.L_level(z_L, z_H + x, rope)
        z_H = model.H_level(z_H, z_L, rope)
    return z_H, z_L


def segment_two_cycles_only(model, z_H, z_L, x):
    # hard-wired for N = 2 (passes a check that only tries N, T in {1, 2} with N = 2)
    cfg, rope = model.config, model.rotary()
    with torch.no_grad():
        for i in range(2 * cfg.L_cycles - 1):
            z_L = model.L_level(z_L, z_H + x, rope)
            if (i + 1) % cfg.L_cycles == 0:
                z_H = model.H_level(z_H, z_L, rope)
    z_L = model.L_level(z_L, z_H + x, rope)
    return model.H_level(z_H, z_L, rope), z_L


def segment_off_by_one(model, z_H, z_L, x):
    # N*T low-level steps under no_grad and then one more: one f_L call too many
    cfg, rope = model.config, model.rotary()
    with torch.no_grad():
        for i in range(cfg.H_cycles * cfg.L_cycles):
            z_L = model.L_level(z_L, z_H + x, rope)
            if (i + 1) % cfg.L_cycles == 0 and i + 1 < cfg.H_cycles * cfg.L_cycles:
                z_H = model.H_level(z_H, z_L, rope)
    z_L = model.L_level(z_L, z_H + x, rope)
    return model.H_level(z_H, z_L, rope), z_L


def segment_forgets_z_H(model, z_H, z_L, x):
    # the low level hears only the input, not the high level
    cfg, rope = model.config, model.rotary()
    with torch.no_grad():
        for i in range(cfg.H_cycles * cfg.L_cycles - 1):
            z_L = model.L_level(z_L, x, rope)
            if (i + 1) % cfg.L_cycles == 0:
                z_H = model.H_level(z_H, z_L, rope)
    z_L = model.L_level(z_L, x, rope)
    return model.H_level(z_H, z_L, rope), z_L


WRONG_SEGMENTS = [segment_graph_then_detach, segment_full_backprop, segment_two_cycles_only, segment_off_by_one,
                  segment_forgets_z_H]


def target_right(h, c, last):
    return torch.sigmoid(torch.where(last, h, torch.maximum(h, c)))


WRONG_TARGETS = [
    lambda h, c, last: torch.sigmoid(torch.maximum(h, c)),  # ignores the last step
    lambda h, c, last: torch.where(last, h, torch.maximum(h, c)),  # logits, not probabilities
    lambda h, c, last: torch.sigmoid(torch.where(last, c, torch.maximum(h, c))),  # continue at the last step
    lambda h, c, last: torch.sigmoid(torch.where(last, h, torch.minimum(h, c))),  # min instead of max
]


def three_level_all_graph(f1, f2, f3, z1, z2, z3, x, T1, T2, N):
    # the right schedule, but every call holds a graph (full backprop, memory grows with the counts)
    for _ in range(N):
        for _ in range(T2):
            for _ in range(T1):
                z1 = f1(z1, z2 + x)
            z2 = f2(z2, z1 + z3)
        z3 = f3(z3, z2)
    return z1, z2, z3


def three_level_slow_every_middle(f1, f2, f3, z1, z2, z3, x, T1, T2, N):
    # the slow level updates after every middle step instead of after T2 of them
    with torch.no_grad():
        for _ in range(N * T2 - 1):
            for _ in range(T1):
                z1 = f1(z1, z2 + x)
            z2 = f2(z2, z1 + z3)
            z3 = f3(z3, z2)
        for _ in range(T1 - 1):
            z1 = f1(z1, z2 + x)
    z1 = f1(z1, z2 + x)
    z2 = f2(z2, z1 + z3)
    return z1, z2, f3(z3, z2)


def three_level_middle_ignores_slow(f1, f2, f3, z1, z2, z3, x, T1, T2, N):
    # the right calls with the right graphs, but the middle level never hears the slow one: f2(z2, z1)
    with torch.no_grad():
        for step in range(N * T2 * T1 - 1):
            z1 = f1(z1, z2 + x)
            if (step + 1) % T1 == 0:
                z2 = f2(z2, z1)
                if (step + 1) % (T1 * T2) == 0:
                    z3 = f3(z3, z2)
    z1 = f1(z1, z2 + x)
    z2 = f2(z2, z1)
    return z1, z2, f3(z3, z2)


WRONG_THREE_LEVEL = [three_level_all_graph, three_level_slow_every_middle, three_level_middle_ignores_slow]


def cosine_right(cfg, x_tokens, n, seed):
    return g.reference_one_step_cosine(cfg, x_tokens, n, seed)


WRONG_COSINES = [
    lambda cfg, x, n, seed: 1.0,  # compares the 1-step gradient with itself
    lambda cfg, x, n, seed: g.reference_one_step_cosine(cfg, x, n, seed + 1),  # another initialisation
    lambda cfg, x, n, seed: g.reference_one_step_cosine(cfg, x, 1, seed),  # ignores the number of cycles
]




def test_master_solutions_pass(capsys):
    assert g.check_hrm_segment(segment_right)
    assert g.check_continue_target(target_right)
    assert g.check_three_level_segment(g.three_level_reference)
    assert g.check_one_step_cosine(cosine_right)
    assert g.check_cosine_trend(lambda: "falls")
    assert capsys.readouterr().out.count("\u2705") == 5


@pytest.mark.parametrize("wrong", WRONG_SEGMENTS, ids=lambda f: f.__name__)
def test_wrong_segments_are_rejected(wrong, capsys):
    assert_rejected(g.check_hrm_segment, wrong)


def test_detach_variant_is_rejected_for_the_graph_not_the_numbers(capsys):
    g.check_hrm_segment(segment_graph_then_detach)
    assert "hold an autograd graph" in capsys.readouterr().out


@pytest.mark.parametrize("i", range(len(WRONG_TARGETS)))
def test_wrong_targets_are_rejected(i, capsys):
    assert_rejected(g.check_continue_target, WRONG_TARGETS[i])


@pytest.mark.parametrize("wrong", WRONG_THREE_LEVEL, ids=lambda f: f.__name__)
def test_wrong_three_level_schedules_are_rejected(wrong, capsys):
    assert_rejected(g.check_three_level_segment, wrong)


@pytest.mark.parametrize("i", range(len(WRONG_COSINES)))
def test_wrong_cosines_are_rejected(i, capsys):
    assert_rejected(g.check_one_step_cosine, WRONG_COSINES[i])


def test_wrong_trend_answers_are_rejected(capsys):
    for wrong in ("rises", "stays within 0.05", "goes up"):
        assert_rejected(g.check_cosine_trend, lambda w=wrong: w)


def test_unsolved_stubs_say_not_implemented(capsys):
    def stub(*args):
        raise NotImplementedError

    for checker in (g.check_hrm_segment, g.check_continue_target, g.check_three_level_segment,
                    g.check_one_step_cosine, g.check_cosine_trend):
        assert not checker(stub)
        assert "not implemented yet" in capsys.readouterr().out
