"""The exercise pipeline: exercises/ is generated from solutions/ and must not drift; checks grade kindly."""

import nbformat
import pytest
import torch

from recursionlab.course.checks import check, compare_outputs
from recursionlab.course.exercises import MarkerError, stale_exercises, strip_solutions


def test_exercises_are_in_sync_with_solutions():
    problems = stale_exercises()
    assert not problems, "exercises/ is out of date; run `make exercises`:\n" + "\n".join(problems)


def test_every_solution_has_a_solution_block_and_a_check():
    from recursionlab.course.exercises import ROOT

    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "### BEGIN SOLUTION" in code, f"{path.name} has no exercise"
        assert "check(" in code, f"{path.name} has no check cell"


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
    assert "does not match" in capsys.readouterr().out
    assert not check("tanh", lambda x: x.reshape(2, 2), reference, inputs)
    assert "shape (2, 2), expected (4,)" in capsys.readouterr().out
    assert not check("tanh", lambda x: 1 / 0, reference, inputs)
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_compare_outputs_nested():
    ok, _ = compare_outputs({"a": (torch.ones(2), 3)}, {"a": (torch.ones(2), 3)})
    assert ok
    ok, msg = compare_outputs({"a": (torch.ones(2), 3)}, {"a": (torch.ones(2), 4)})
    assert not ok and "['a'][1]" in msg
