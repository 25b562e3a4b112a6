"""Exercise 08's graders accept the master solutions and reject a catalogue of known-wrong ones."""

import pytest
import torch
import torch.nn.functional as F

from recursionlab.course.checks import CheckFailed, assert_rejected, grading
from recursionlab.course.graders import l08_trm as g


def _one(model, y, z, x, rope, n, with_x_in_answer=False):
    for _ in range(n):
        z = model.net(z, y + x, rope)
    return model.net(y, z + x if with_x_in_answer else z, rope), z


def recursion_right(model, y, z, x):
    cfg, rope = model.config, model.rotary()
    with torch.no_grad():
        for _ in range(cfg.H_cycles - 1):
            y, z = _one(model, y, z, x, rope, cfg.L_cycles)
    return _one(model, y, z, x, rope, cfg.L_cycles)


def recursion_graph_then_detach(model, y, z, x):
    # right numbers, wrong way: graphs for the first T-1 recursions too, cut with .detach() afterwards
    cfg, rope = model.config, model.rotary()
    for _ in range(cfg.H_cycles - 1):
        y, z = _one(model, y, z, x, rope, cfg.L_cycles)
    return _one(model, y.detach(), z.detach(), x, rope, cfg.L_cycles)


def recursion_one_step(model, y, z, x):
    # HRM's 1-step gradient: only the last z update and the y update hold a graph
    cfg, rope = model.config, model.rotary()
    with torch.no_grad():
        for _ in range(cfg.H_cycles - 1):
            y, z = _one(model, y, z, x, rope, cfg.L_cycles)
        for _ in range(cfg.L_cycles - 1):
            z = model.net(z, y + x, rope)
    z = model.net(z, y + x, rope)
    return model.net(y, z, rope), z


def recursion_all_graph(model, y, z, x):
    # backprop through all T recursions
    cfg, rope = model.config, model.rotary()
    for _ in range(cfg.H_cycles):
        y, z = _one(model, y, z, x, rope, cfg.L_cycles)
    return y, z


def recursion_x_in_answer(model, y, z, x):
    # the answer update also sees the puzzle: the network cannot tell the two updates apart any more
    cfg, rope = model.config, model.rotary()
    with torch.no_grad():
        for _ in range(cfg.H_cycles - 1):
            y, z = _one(model, y, z, x, rope, cfg.L_cycles, with_x_in_answer=True)
    return _one(model, y, z, x, rope, cfg.L_cycles, with_x_in_answer=True)


def recursion_two_recursions_only(model, y, z, x):
    # hard-wired for T = 2 (a check that only tries T in {1, 2} misses it for T = 1 only)
    cfg, rope = model.config, model.rotary()
    with torch.no_grad():
        y, z = _one(model, y, z, x, rope, cfg.L_cycles)
    return _one(model, y, z, x, rope, cfg.L_cycles)


WRONG_RECURSIONS = [recursion_graph_then_detach, recursion_one_step, recursion_all_graph, recursion_x_in_answer,
                    recursion_two_recursions_only]


def halting_right(logits, labels, q):
    mask = labels != -100
    right = ((logits.argmax(-1) == labels) | ~mask).all(-1)
    return F.binary_cross_entropy_with_logits(q, right.float(), reduction="sum")


def halting_mean(logits, labels, q):
    # averaged instead of summed over the batch
    return halting_right(logits, labels, q) / len(q)


def halting_ignores_mask(logits, labels, q):
    # ignored (-100) cells counted as wrong
    right = (logits.argmax(-1) == labels).all(-1)
    return F.binary_cross_entropy_with_logits(q, right.float(), reduction="sum")


def halting_double_sigmoid(logits, labels, q):
    # sigmoid applied before a loss that expects logits
    mask = labels != -100
    right = ((logits.argmax(-1) == labels) | ~mask).all(-1)
    return F.binary_cross_entropy_with_logits(torch.sigmoid(q), right.float(), reduction="sum")


def halting_majority_of_cells(logits, labels, q):
    # "right" when most cells are right, not every one
    mask = labels != -100
    frac = (((logits.argmax(-1) == labels) & mask).sum(-1) / mask.sum(-1))
    return F.binary_cross_entropy_with_logits(q, (frac > 0.5).float(), reduction="sum")


WRONG_HALTING = [halting_mean, halting_ignores_mask, halting_double_sigmoid, halting_majority_of_cells]


def last_k_ignores_k(model, y, z, x, k):
    # always the paper's k = 1
    return recursion_right(model, y, z, x)


def last_k_first_k(model, y, z, x, k):
    # the FIRST k recursions hold the graph
    cfg, rope = model.config, model.rotary()
    for _ in range(k):
        y, z = _one(model, y, z, x, rope, cfg.L_cycles)
    with torch.no_grad():
        for _ in range(cfg.H_cycles - k):
            y, z = _one(model, y, z, x, rope, cfg.L_cycles)
    return y, z


def last_k_detached(model, y, z, x, k):
    # right numbers, wrong way: every recursion builds a graph; detach before the last k
    cfg, rope = model.config, model.rotary()
    for _ in range(cfg.H_cycles - k):
        y, z = _one(model, y, z, x, rope, cfg.L_cycles)
    y, z = y.detach(), z.detach()
    for _ in range(k):
        y, z = _one(model, y, z, x, rope, cfg.L_cycles)
    return y, z


WRONG_LAST_K = [last_k_ignores_k, last_k_first_k, last_k_detached]


@pytest.fixture(scope="module")
def trained():
    from recursionlab.train.recipes.reasoning import load_asset, load_puzzles

    asset = load_asset("trm_sudoku6")
    return asset.model, load_puzzles(asset.config).test.subset(range(20))




def test_master_solutions_pass(trained, capsys):
    model, puzzles = trained
    assert g.check_trm_recursion(recursion_right)
    assert g.check_halting_loss(halting_right)
    assert g.check_recursion_last_k(g.recursion_last_k_reference)
    assert g.check_segments_to_plateau(g.reference_segments_to_plateau, model, puzzles, 5)
    right = g.measured_halting_vs_plateau(model, puzzles, 5)
    assert g.check_halting_vs_plateau(lambda: right, model, puzzles, 5)
    assert capsys.readouterr().out.count("\u2705") == 5


@pytest.mark.parametrize("wrong", WRONG_RECURSIONS, ids=lambda f: f.__name__)
def test_wrong_recursions_are_rejected(wrong, capsys):
    assert_rejected(g.check_trm_recursion, wrong)


def test_detach_is_caught_by_the_graph_not_the_numbers(capsys):
    g.check_trm_recursion(recursion_graph_then_detach)
    assert "holding an autograd graph" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", WRONG_HALTING, ids=lambda f: f.__name__)
def test_wrong_halting_losses_are_rejected(wrong, capsys):
    assert_rejected(g.check_halting_loss, wrong)


@pytest.mark.parametrize("wrong", WRONG_LAST_K, ids=lambda f: f.__name__)
def test_wrong_last_k_are_rejected(wrong, capsys):
    assert_rejected(g.check_recursion_last_k, wrong)


def test_wrong_experiment_answers_are_rejected(trained, capsys):
    model, puzzles = trained
    want = g.reference_segments_to_plateau(model, puzzles, 5)
    for wrong in (lambda m, p, s, t: want - 1,  # counted from 0
                  lambda m, p, s, t: s,  # "all of them"
                  lambda m, p, s, t: float(want)):  # not an int
        assert not g.check_segments_to_plateau(wrong, model, puzzles, 5)
    right = g.measured_halting_vs_plateau(model, puzzles, 5)
    for option in g.HALT_OPTIONS + ("never",):
        if option != right:
            assert not g.check_halting_vs_plateau(lambda o=option: o, model, puzzles, 5)
    with grading(), pytest.raises(CheckFailed):
        g.check_segments_to_plateau(lambda m, p, s, t: want + 1, model, puzzles, 5)


def test_unsolved_stubs_say_not_implemented(trained, capsys):
    model, puzzles = trained

    def stub(*args):
        raise NotImplementedError

    for verdict in (g.check_trm_recursion(stub), g.check_halting_loss(stub), g.check_recursion_last_k(stub),
                    g.check_segments_to_plateau(stub, model, puzzles, 5),
                    g.check_halting_vs_plateau(stub, model, puzzles, 5)):
        assert not verdict
    assert capsys.readouterr().out.count("not implemented yet") == 5
