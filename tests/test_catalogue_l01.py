"""Wrong-solution catalogue for exercise 01 (RNNs from scratch): the master solutions pass every check, and every
known-wrong variant is rejected (a falsy verdict in learner mode, ``CheckFailed`` in grading mode)."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from recursionlab.course.checks import assert_rejected, grading
from recursionlab.course.graders import l01_rnn as grader
from recursionlab.nn.rnn import elman_forward

# ------------------------------------------------------------------------------------------- (a) rnn_forward


def rnn_forward(x, h0, W_xh, W_hh, b):
    h, states = h0, []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ W_xh.T + h @ W_hh.T + b)
        states.append(h)
    return torch.stack(states, dim=1)


def rnn_no_carry(x, h0, W_xh, W_hh, b):
    # forgets to carry the state: every step starts from h0 (right for T = 1 only)
    return torch.stack([torch.tanh(x[:, t] @ W_xh.T + h0 @ W_hh.T + b) for t in range(x.shape[1])], dim=1)


def rnn_untransposed(x, h0, W_xh, W_hh, b):
    # h @ W_hh instead of h @ W_hh.T: the recurrent weights read backwards (right whenever W_hh is symmetric)
    h, states = h0, []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ W_xh.T + h @ W_hh + b)
        states.append(h)
    return torch.stack(states, dim=1)


def rnn_shifted(x, h0, W_xh, W_hh, b):
    # returns h_0 .. h_{T-1} instead of h_1 .. h_T (the right shape, one step late)
    hs = rnn_forward(x, h0, W_xh, W_hh, b)
    return torch.cat([h0[:, None], hs[:, :-1]], dim=1)


def rnn_no_bias(x, h0, W_xh, W_hh, b):
    # forgets the bias
    return rnn_forward(x, h0, W_xh, W_hh, torch.zeros_like(b))


def rnn_float32(x, h0, W_xh, W_hh, b):
    # computes in float32: right to rounding only (the check uses float64 and says so)
    return rnn_forward(*(t.float() for t in (x, h0, W_xh, W_hh, b))).double()


# ------------------------------------------------------------------------------------------- (b) gru_forward


def _gru(x, h0, W_ih, W_hh, b_ih, b_hh, order=(0, 1, 2), reset_before=False, swap_z=False, hidden_bias_n=True):
    H = h0.shape[-1]
    h, states = h0, []
    for t in range(x.shape[1]):
        ins = (x[:, t] @ W_ih.T + b_ih).split(H, dim=-1)
        hid = (h @ W_hh.T + b_hh).split(H, dim=-1)
        ir, iz, i_n = (ins[i] for i in order)
        hr, hz, hn = (hid[i] for i in order)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        if reset_before:
            W_hn = W_hh[order[2] * H : (order[2] + 1) * H]
            hn = (r * h) @ W_hn.T + b_hh[order[2] * H : (order[2] + 1) * H]
            n = torch.tanh(i_n + hn)
        else:
            bias_n = b_hh[order[2] * H : (order[2] + 1) * H]
            n = torch.tanh(i_n + r * (hn if hidden_bias_n else hn - bias_n))
        h = z * n + (1 - z) * h if swap_z else (1 - z) * n + z * h
        states.append(h)
    return torch.stack(states, dim=1)


def gru_forward(*args):
    return _gru(*args)


def gru_zrn_order(*args):
    # reads the blocks as z, r, n (the order of some textbooks) instead of PyTorch's r, z, n
    return _gru(*args, order=(1, 0, 2))


def gru_reset_before_product(*args):
    # the original paper's candidate, W_hn (r * h): right numbers for another layout, not torch.nn.GRU's
    return _gru(*args, reset_before=True)


def gru_swapped_update(*args):
    # h = z * n + (1 - z) * h: the paper's convention for z, the opposite of PyTorch's
    return _gru(*args, swap_z=True)


def gru_hidden_bias_outside(*args):
    # b_hn added outside the reset gate (b_in + b_hn summed as one bias)
    x, h0, W_ih, W_hh, b_ih, b_hh = args
    H = h0.shape[-1]
    b_ih = b_ih.clone()
    b_ih[2 * H :] += b_hh[2 * H :]
    return _gru(x, h0, W_ih, W_hh, b_ih, b_hh, hidden_bias_n=False)


# ------------------------------------------------------------------------------------------- (c) experiment


def first_input_influence(radius, T):
    x, x_changed, h0, W_xh, W_hh, b = grader.forgetting_problem(radius, T)
    return float((elman_forward(x, h0, W_xh, W_hh, b)[0][:, -1]
                  - elman_forward(x_changed, h0, W_xh, W_hh, b)[0][:, -1]).norm(dim=-1).mean())


def influence_norm_of_mean(radius, T):
    # norm of the mean difference instead of the mean of the per-sequence norms
    x, x_changed, h0, W_xh, W_hh, b = grader.forgetting_problem(radius, T)
    return float((elman_forward(x, h0, W_xh, W_hh, b)[0][:, -1]
                  - elman_forward(x_changed, h0, W_xh, W_hh, b)[0][:, -1]).mean(dim=0).norm())


def influence_first_state(radius, T):
    # compares h_1 instead of h_T: no forgetting at all
    return first_input_influence(radius, 1)


def influence_off_by_one(radius, T):
    # measures h_{T-1}
    return first_input_influence(radius, max(T - 1, 1))


def memory_lengths():
    return {r: grader.memory_length(r) for r in grader.FORGETTING_RADII}


def memory_lengths_last_above():
    # the last T still above the threshold (one step short)
    return {r: grader.memory_length(r) - 1 for r in grader.FORGETTING_RADII}


def memory_lengths_list():
    # a list instead of {radius: T}
    return [grader.memory_length(r) for r in grader.FORGETTING_RADII]


def memory_lengths_guessed():
    # guessed from "memory ~ 1 / (1 - radius)" without measuring
    return {0.5: 2, 0.9: 10, 1.5: 61}


def longest_memory():
    lengths = memory_lengths()
    return max(lengths, key=lengths.get)


def longest_memory_shortest():
    # picks the radius "closest to 1" (the linear intuition), not what was measured
    return 0.9


# ------------------------------------------------------------------------------------------- the catalogue

CASES = {
    "rnn_forward": (grader.check_rnn_forward, (rnn_forward,),
                    [(rnn_no_carry,), (rnn_untransposed,), (rnn_shifted,), (rnn_no_bias,), (rnn_float32,)]),
    "gru_forward": (grader.check_gru_forward, (gru_forward,),
                    [(gru_zrn_order,), (gru_reset_before_product,), (gru_swapped_update,), (gru_hidden_bias_outside,)]),
    "first_input_influence": (grader.check_first_input_influence, (first_input_influence,),
                              [(influence_norm_of_mean,), (influence_first_state,), (influence_off_by_one,)]),
    "longest_memory": (grader.check_longest_memory, (memory_lengths, longest_memory),
                       [(memory_lengths_last_above, longest_memory), (memory_lengths_list, longest_memory),
                        (memory_lengths_guessed, longest_memory), (memory_lengths, longest_memory_shortest)]),
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


def test_messages_name_outputs_time_step_and_rerun():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        grader.check_rnn_forward(rnn_no_carry)
        grader.check_gru_forward(gru_swapped_update)
    text = out.getvalue()
    assert "the first time step that differs is t=1" in text  # no carry: t = 0 is right, t = 1 is not
    assert "args = rnn_problem(1)" in text and "args = gru_problem(" in text
    assert "far above rounding" in text
