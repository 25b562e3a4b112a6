"""Exercise checks: grade a learner's function against the library's and print a friendly verdict.

An unsolved exercise (its body still raises ``NotImplementedError``) prints "not implemented yet" and returns
``False``: the notebook keeps running. Any other error is reported with its type and message, never raised.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

PASS, FAIL, TODO = "\u2705", "\u274c", "\u23f3"


def compare_outputs(
    got: Any, want: Any, atol: float = 1e-6, rtol: float = 1e-5, where: str = "output"
) -> tuple[bool, str]:
    """Recursively compare tensors / arrays / numbers / sequences / dicts; returns ``(ok, message)``."""
    if isinstance(want, (torch.Tensor, np.ndarray)):
        if not isinstance(got, (torch.Tensor, np.ndarray)):
            return False, f"{where}: expected a {type(want).__name__}, got {type(got).__name__}"
        g = torch.as_tensor(np.asarray(got) if isinstance(got, np.ndarray) else got).detach().cpu()
        w = torch.as_tensor(np.asarray(want) if isinstance(want, np.ndarray) else want).detach().cpu()
        if tuple(g.shape) != tuple(w.shape):
            return False, f"{where}: shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        if w.dtype == torch.bool or not (w.is_floating_point() or w.is_complex()):
            same = torch.equal(g.to(w.dtype), w)
            n_diff = int((g.to(w.dtype) != w).sum())
            return same, "" if same else f"{where}: values differ ({n_diff} entries; an exact match is expected)"
        g, w = g.double(), w.double()
        if torch.isnan(g).any() and not torch.isnan(w).any():
            return False, f"{where}: contains NaN"
        if not torch.allclose(g, w, atol=atol, rtol=rtol, equal_nan=True):
            diff = (g - w).abs().max().item()
            return False, f"{where}: max abs difference {diff:.3g} (tolerance atol={atol:g}, rtol={rtol:g})"
        return True, ""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return False, f"{where}: expected a dict, got {type(got).__name__}"
        if set(got) != set(want):
            return False, f"{where}: keys {sorted(got)}, expected {sorted(want)}"
        for k in want:
            ok, msg = compare_outputs(got[k], want[k], atol, rtol, f"{where}[{k!r}]")
            if not ok:
                return ok, msg
        return True, ""
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            n = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
            return False, f"{where}: expected a sequence of {len(want)} items, got {n}"
        for i, (a, b) in enumerate(zip(got, want)):
            ok, msg = compare_outputs(a, b, atol, rtol, f"{where}[{i}]")
            if not ok:
                return ok, msg
        return True, ""
    if isinstance(want, float):
        try:
            ok = bool(np.isclose(float(got), want, atol=atol, rtol=rtol))
        except (TypeError, ValueError):
            return False, f"{where}: expected a number, got {type(got).__name__}"
        return ok, "" if ok else f"{where}: {float(got):.6g}, expected {want:.6g}"
    ok = got == want
    return bool(ok), "" if ok else f"{where}: {got!r}, expected {want!r}"


def check(
    name: str,
    learner_fn: Callable,
    reference_fn: Callable,
    inputs: Callable[[int], tuple],
    trials: int = 5,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    compare: Callable[[Any, Any], tuple[bool, str]] | None = None,
) -> bool:
    """Grade ``learner_fn`` against ``reference_fn`` on ``inputs(seed)`` for ``seed in range(trials)``.

    Args:
        name: the exercise's name, printed in the verdict.
        learner_fn, reference_fn: called as ``fn(*inputs(seed))`` (each on its own deep copy of the inputs).
        inputs: ``seed -> tuple of arguments``.
        compare: optional ``(learner_out, reference_out) -> (ok, message)``; default :func:`compare_outputs`.
    Returns:
        ``True`` when every trial matches. Never raises for the learner's mistakes.
    """
    for seed in range(trials):
        args = inputs(seed)
        if not isinstance(args, tuple):
            args = (args,)
        want = reference_fn(*copy.deepcopy(args))
        try:
            got = learner_fn(*copy.deepcopy(args))
        except NotImplementedError:
            print(f"{TODO} {name}: not implemented yet. Replace the `raise NotImplementedError` line with your "
                  "code, run the cell, then run this check again.")
            return False
        except Exception as err:  # the learner's bug, reported rather than raised
            frame = traceback.extract_tb(err.__traceback__)[-1]
            code = (frame.line or "").strip()
            at = f" (line {frame.lineno}: `{code}`)" if code else f" (line {frame.lineno})"
            print(f"{FAIL} {name}: your function raised {type(err).__name__}: {err}{at} on test case {seed + 1}.")
            return False
        ok, message = (compare or (lambda g, w: compare_outputs(g, w, atol, rtol)))(got, want)
        if not ok:
            print(f"{FAIL} {name}: test case {seed + 1} of {trials} does not match the library: {message}")
            return False
    print(f"{PASS} {name}: all {trials} test cases match the library. Well done!")
    return True
