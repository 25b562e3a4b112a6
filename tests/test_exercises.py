"""The exercise pipeline: exercises/ is generated from solutions/ and must not drift; checks grade kindly."""

import re

import nbformat
import pytest
import torch

from recursionlab.course.checks import (
    CheckFailed,
    check,
    check_choice,
    check_value,
    compare_outputs,
    grading,
    graph_calls,
    saved_tensor_count,
)
from recursionlab.course.exercises import MarkerError, stale_exercises, stale_masters, strip_solutions


def test_exercises_are_in_sync_with_solutions():
    problems = stale_masters() + stale_exercises()
    assert not problems, "solutions/ tags or exercises/ out of date; run `make exercises`:\n" + "\n".join(problems)


def test_every_solution_has_a_solution_block_and_a_check():
    from recursionlab.course.exercises import ROOT

    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "### BEGIN SOLUTION" in code, f"{path.name} has no exercise"
        assert re.search(r"\bcheck(_\w+)?\(", code), f"{path.name} has no check cell"


def test_strip_solutions_keeps_indentation_and_removes_hidden_tests():
    source = "def f(x):\n    # hint stays\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n" \
             "### BEGIN HIDDEN TESTS\nassert f(1) == 2\n### END HIDDEN TESTS\nprint('done')"
    out = strip_solutions(source)
    assert "return 2 * x" not in out and "assert f(1)" not in out
    assert "    # YOUR CODE HERE\n    raise NotImplementedError(" in out
    assert out.startswith("def f(x):\n    # hint stays") and out.endswith("print('done')")
    namespace = {}
    exec(out, namespace)  # the stub is valid Python and defining it does not raise
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


def test_unbalanced_markers_are_errors():
    with pytest.raises(MarkerError, match="never closed"):
        strip_solutions("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(MarkerError, match="without a matching BEGIN"):
        strip_solutions("x = 1\n### END SOLUTION")


def test_check_verdicts(capsys):
    def reference(x):
        return torch.tanh(x)

    def inputs(seed):
        return (torch.randn(4, generator=torch.Generator().manual_seed(seed)),)

    def todo(x):
        raise NotImplementedError

    assert check("tanh", torch.tanh, reference, inputs)
    assert "all 5 test cases match" in capsys.readouterr().out
    assert not check("tanh", todo, reference, inputs)
    assert "not implemented yet" in capsys.readouterr().out
    assert not check("tanh", torch.sigmoid, reference, inputs)
    out = capsys.readouterr().out
    assert "max abs difference" in out and "args = inputs(0)" in out and "far above rounding" in out
    assert not check("tanh", lambda x: x.reshape(2, 2), reference, inputs)
    assert "shape (2, 2), expected (4,)" in capsys.readouterr().out
    assert not check("tanh", lambda x: 1 / 0, reference, inputs)
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_compare_outputs_nested():
    ok, _ = compare_outputs({"a": (torch.ones(2), 3)}, {"a": (torch.ones(2), 3)})
    assert ok
    ok, msg = compare_outputs({"a": (torch.ones(2), 3)}, {"a": (torch.ones(2), 4)})
    assert not ok and "['a'][1]" in msg


def test_grading_mode_raises_with_the_same_message(capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("RECURSIONLAB_GRADING", raising=False)

    def inputs(seed):
        return (torch.randn(3, generator=torch.Generator().manual_seed(seed)),)

    def todo(x):
        raise NotImplementedError

    with grading():
        assert check("tanh", torch.tanh, torch.tanh, inputs)  # a pass never raises
        with pytest.raises(CheckFailed, match="max abs difference"):
            check("tanh", torch.sigmoid, torch.tanh, inputs)
        with pytest.raises(CheckFailed, match="not implemented yet"):
            check("tanh", todo, torch.tanh, inputs)
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # what nbgrader's autograder sets
    with pytest.raises(AssertionError):
        check_choice("pick", "a", "b", ["a", "b"])
    with grading(False):  # an explicit "learner mode" wins over the environment
        assert not check_choice("pick", "a", "b", ["a", "b"])


def test_sequence_mismatch_names_first_time_step_and_rounding(capsys):
    want = torch.zeros(2, 6, 3, dtype=torch.float64)
    got = want.clone()
    got[:, 4:] += 0.5
    v = check("seq", lambda x: got, lambda x: want, lambda s: (s,), trials=1, time_dim=1)
    assert not v and "first time step that differs is t=4" in capsys.readouterr().out
    near = torch.ones(5, dtype=torch.float64) + 1e-9
    ok, msg = compare_outputs(near, torch.ones(5, dtype=torch.float64), atol=1e-12, rtol=0)
    assert not ok and "rounding-level" in msg


def test_named_outputs_in_messages(capsys):
    a, b = torch.ones(2), torch.zeros(2)
    v = check("pair", lambda s: (a, a), lambda s: (a, b), lambda s: (s,), trials=1, output_names=("z_H", "z_L"))
    assert not v and "z_L: max abs difference" in capsys.readouterr().out


def test_check_value_and_choice(capsys):
    assert check_value("rate", 0.52, 0.5, rtol=0.1)
    assert not check_value("rate", 0.8, 0.5, rtol=0.1)
    assert "grader measures 0.5" in capsys.readouterr().out
    assert not check_value("rate", float("nan"), 0.5)
    assert not check_value("rate", ..., 0.5) and "not implemented" in capsys.readouterr().out
    assert not check_choice("lr", 3.0, 1.0, [0.1, 1.0]) and "not one of the allowed" in capsys.readouterr().out
    assert check_choice("lr", 1.0, 1.0, [0.1, 1.0])


def test_verdict_shows_no_stray_bool():
    v = check_choice("x", 1, 1, [1], quiet=True)
    assert v and hasattr(v, "_ipython_display_") and v._ipython_display_() is None


def test_saved_tensors_and_graph_calls_tell_detach_from_no_grad():
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)

    def no_grad_then_last():
        h = x
        with torch.no_grad():
            for _ in range(3):
                h = torch.tanh(lin(h))
        return torch.tanh(lin(h))

    def graph_then_detach():
        h = x
        for _ in range(3):
            h = torch.tanh(lin(h))
        return torch.tanh(lin(h.detach()))

    (_, n_good), (_, n_bad) = saved_tensor_count(no_grad_then_last), saved_tensor_count(graph_then_detach)
    assert n_bad > n_good > 0
    _, flags_good = graph_calls(lin, no_grad_then_last)
    _, flags_bad = graph_calls(lin, graph_then_detach)
    assert flags_good == [False, False, False, True] and flags_bad == [True] * 4


def test_assert_rejected_fails_for_a_right_answer_and_passes_for_a_wrong_one():
    from recursionlab.course.checks import assert_rejected

    def checker(answer):
        return check_choice("pick", answer, "b", ["a", "b"], quiet=False)

    assert "not what the measurement shows" in assert_rejected(checker, "a")
    with pytest.raises(AssertionError, match="passed"):
        assert_rejected(checker, "b")
