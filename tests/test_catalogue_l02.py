"""Wrong-solution catalogue for exercise 02 (BPTT): the master solutions pass every check, and every known-wrong
variant is rejected (a falsy verdict in learner mode, ``CheckFailed`` in grading mode)."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from recursionlab.course.checks import assert_rejected, grading
from recursionlab.course.graders import l02_bptt as grader
from recursionlab.nn.rnn import lstm_forward

# ------------------------------------------------------------------------------- (a), (b) BPTT by hand


def _bptt(grad_hs, x, h0, hs, W_xh, W_hh, k=None, carry=True, cut_weights=False, cut_at_zero=False,
          slope_of_previous=False, h_for_W=False, transpose_back=False, h0_is_eps=False):
    grad_W_xh, grad_W_hh = torch.zeros_like(W_xh), torch.zeros_like(W_hh)
    grad_b, grad_x = torch.zeros(W_hh.shape[0], dtype=hs.dtype), torch.zeros_like(x)
    from_later, eps = torch.zeros_like(h0), torch.zeros_like(h0)
    for t in reversed(range(x.shape[1])):
        h_prev = hs[:, t - 1] if t > 0 else h0
        slope = 1 - (h_prev if slope_of_previous else hs[:, t]) ** 2
        cut = k is not None and t % k == 0 and (t > 0 or cut_at_zero)
        delta = grad_hs[:, t] + (from_later if carry else 0)
        eps = delta * slope
        if cut and cut_weights:
            eps = grad_hs[:, t] * slope  # drops the incoming gradient from the weights too
        grad_W_xh += eps.T @ x[:, t]
        grad_W_hh += eps.T @ (hs[:, t] if h_for_W else h_prev)
        grad_b += eps.sum(dim=0)
        grad_x[:, t] = eps @ W_xh
        from_later = eps @ (W_hh.T if transpose_back else W_hh)
        if cut:
            from_later = torch.zeros_like(from_later)
    return {"W_xh": grad_W_xh, "W_hh": grad_W_hh, "b": grad_b, "x": grad_x, "h0": eps if h0_is_eps else from_later}


def bptt(*args):
    return _bptt(*args)


def bptt_no_carry(*args):
    # forgets the gradient arriving from later steps: right for T = 1 only
    return _bptt(*args, carry=False)


def bptt_slope_of_previous_state(*args):
    # tanh'(a_t) computed from h_{t-1} instead of h_t (off by one step)
    return _bptt(*args, slope_of_previous=True)


def bptt_h_t_in_W_hh(*args):
    # dL/dW_hh with h_t instead of h_{t-1}
    return _bptt(*args, h_for_W=True)


def bptt_transposed_back(*args):
    # sends eps @ W_hh.T back (W_hh instead of W_hh^T in the maths): right when W_hh is symmetric
    return _bptt(*args, transpose_back=True)


def bptt_h0_gets_eps(*args):
    # returns eps_1 as dL/dh0 (forgets the last multiplication by W_hh^T)
    return _bptt(*args, h0_is_eps=True)


def truncated(*args):
    *problem, k = args
    return _bptt(*problem, k=k)


def truncated_ignores_k(*args):
    # full BPTT whatever k is: right whenever k >= T
    return _bptt(*args[:-1])


def truncated_cuts_at_zero(*args):
    # also cuts at t = 0, so h0 gets no gradient (the detach in the wrong place)
    *problem, k = args
    return _bptt(*problem, k=k, cut_at_zero=True)


def truncated_cuts_weights(*args):
    # drops the incoming gradient from step t's weight gradients too, not only from what goes back
    *problem, k = args
    return _bptt(*problem, k=k, cut_weights=True)


def truncated_aligned_to_end(*args):
    # windows counted from the end: right for the copy task's loss, not what (b) asks
    *problem, k = args
    grad_hs, x = problem[0], problem[1]
    from recursionlab.course.graders.l02_bptt import _library_bptt  # noqa: F401 (only the shape of the answer)
    from recursionlab.nn.rnn import ElmanCache, elman_backward

    grads = elman_backward(grad_hs, ElmanCache(x, problem[2], problem[3], problem[4], problem[5], "tanh"),
                           truncation=k, align="end")
    return {n: grads[n] for n in grader.GRADIENTS}


# ------------------------------------------------------------------------------- (c) windows aligned to the loss


def _windows(layer, x, h0, k, align="end", carry=True, detach=True, detach_outputs=False):
    T = x.shape[1]
    starts = sorted({0, *range(T - k, 0, -k)}) if align == "end" else list(range(0, T, k))
    state, outputs = h0, []
    for start, stop in zip(starts, [*starts[1:], T]):
        if start > 0:
            state = state.detach() if detach else state
            if not carry:
                state = h0
        out, state = layer(x[:, start:stop], state)
        outputs.append(out.detach() if detach_outputs and start + (stop - start) < T else out)
    return torch.cat(outputs, dim=1), state


def windows(*args):
    return _windows(*args)


def windows_from_start(*args):
    # the classic edges at k, 2k, ...: right only when k divides T
    return _windows(*args, align="start")


def windows_no_carry(*args):
    # forgets the hidden-state carry: every window restarts from h0 (the gradients differ AND the states)
    return _windows(*args, carry=False)


def windows_no_detach(*args):
    # carries the state but never detaches: full BPTT, right forward, wrong gradients
    return _windows(*args, detach=False)


def windows_detach_outputs(*args):
    # detaches the earlier windows' outputs instead of the state between windows (the detach in the wrong place)
    return _windows(*args, detach=False, detach_outputs=True)


# ------------------------------------------------------------------------------- (d) LSTM BPTT by hand


def _lstm_backward(grad_hs, x, h0, c0, W_ih, W_hh, b, cell_path=True, c_now_for_f=False, sigmoid_for_g=False):
    hs, cs, gates = lstm_forward(x, h0, c0, W_ih, W_hh, b)
    H = h0.shape[-1]
    grads = {"W_ih": torch.zeros_like(W_ih), "W_hh": torch.zeros_like(W_hh), "b": torch.zeros_like(b),
             "x": torch.zeros_like(x)}
    dh_later, dc_later = torch.zeros_like(h0), torch.zeros_like(c0)
    for t in reversed(range(x.shape[1])):
        i, f, g, o = gates[:, t].split(H, dim=-1)
        c_prev = cs[:, t - 1] if t > 0 else c0
        h_prev = hs[:, t - 1] if t > 0 else h0
        tanh_c = torch.tanh(cs[:, t])
        dh = grad_hs[:, t] + dh_later
        dc = (dc_later if cell_path else 0) + dh * o * (1 - tanh_c**2)
        g_slope = g * (1 - g) if sigmoid_for_g else 1 - g**2
        d_pre = torch.cat([dc * g * i * (1 - i), dc * (cs[:, t] if c_now_for_f else c_prev) * f * (1 - f),
                           dc * i * g_slope, dh * tanh_c * o * (1 - o)], dim=-1)
        grads["W_ih"] += d_pre.T @ x[:, t]
        grads["W_hh"] += d_pre.T @ h_prev
        grads["b"] += d_pre.sum(dim=0)
        grads["x"][:, t] = d_pre @ W_ih
        dh_later, dc_later = d_pre @ W_hh, dc * f
    grads["h0"], grads["c0"] = dh_later, dc_later
    return grads


def lstm_backward(*args):
    return _lstm_backward(*args)


def lstm_no_cell_path(*args):
    # forgets the gradient along the cell state c (only through h): right for T = 1 except dL/dc0
    return _lstm_backward(*args, cell_path=False)


def lstm_c_t_in_forget(*args):
    # dL/df uses c_t instead of c_{t-1}
    return _lstm_backward(*args, c_now_for_f=True)


def lstm_sigmoid_slope_for_g(*args):
    # uses sigma' for the candidate g, which is a tanh
    return _lstm_backward(*args, sigmoid_for_g=True)


def lstm_with_autograd(grad_hs, x, h0, c0, W_ih, W_hh, b):
    # right numbers the wrong way: asks autograd instead of writing the backward pass
    return grader._autograd_lstm(grad_hs, x, h0, c0, W_ih, W_hh, b)


# ------------------------------------------------------------------------------- (e) experiment


def first_failing_delay():
    delay = 1
    while grader.recall_accuracy(delay) >= grader.PASS_ACCURACY:
        delay += 1
    return delay


def failing_from_theory():
    # the gradient's reach (k - 1 = 3) instead of the measurement
    return grader.EXPERIMENT_TRUNCATION - 1


def last_passing_delay():
    # one too early: the last delay that still passes
    return first_failing_delay() - 1


def failing_as_string():
    return str(first_failing_delay())


def later():
    return "later"


def the_same():
    return "the same"


def not_an_option():
    return "after"


CASES = {
    "bptt_backward": (grader.check_bptt_backward, (bptt,),
                      [(bptt_no_carry,), (bptt_slope_of_previous_state,), (bptt_h_t_in_W_hh,), (bptt_transposed_back,),
                       (bptt_h0_gets_eps,)]),
    "truncated_bptt_backward": (grader.check_truncated_bptt_backward, (truncated,),
                                [(truncated_ignores_k,), (truncated_cuts_at_zero,), (truncated_cuts_weights,),
                                 (truncated_aligned_to_end,)]),
    "run_windows_aligned_to_loss": (grader.check_aligned_truncation, (windows,),
                                    [(windows_from_start,), (windows_no_carry,), (windows_no_detach,),
                                     (windows_detach_outputs,)]),
    "lstm_backward": (grader.check_lstm_backward, (lstm_backward,),
                      [(lstm_no_cell_path,), (lstm_c_t_in_forget,), (lstm_sigmoid_slope_for_g,),
                       (lstm_with_autograd,)]),
    "first_failing_delay": (grader.check_first_failing_delay, (first_failing_delay, later),
                            [(failing_from_theory, later), (last_passing_delay, later), (failing_as_string, later),
                             (first_failing_delay, the_same), (first_failing_delay, not_an_option)]),
}


@pytest.mark.parametrize("exercise", list(CASES))
def test_master_passes_and_every_wrong_variant_is_rejected(exercise):
    check_fn, master, wrong = CASES[exercise]
    with contextlib.redirect_stdout(io.StringIO()):
        assert check_fn(*master), f"{exercise}: the master solution fails its own check"
        with grading():
            check_fn(*master)  # must not raise
    for variant in wrong:
        assert_rejected(check_fn, *variant)  # fails for the learner, raises CheckFailed for the grader


def test_messages_name_the_gradient_the_time_step_and_the_rerun():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        grader.check_bptt_backward(bptt_no_carry)
        grader.check_aligned_truncation(windows_no_detach)
        grader.check_lstm_backward(lstm_with_autograd)
    text = out.getvalue()
    assert "dL/dW_xh" in text and "args = bptt_problem(1)" in text
    assert "the detach is in the wrong place" in text and "window_problem(" in text
    assert "Write the backward pass by hand" in text
