"""The hand-written Elman cell and BPTT (float64, against autograd), Jacobian norms, the sequence models,
recipes, and a learning test: a gated cell solves the adding problem where a plain RNN of equal size does not."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recursionlab.data.sequences import ADDING_CHANCE_MSE
from recursionlab.models.rnn import (
    CELLS,
    CharRNN,
    RNNClassifier,
    RNNRegressor,
    count_parameters,
    matched_hidden_size,
    model_parameter_count,
    state_gradient_norms,
)
from recursionlab.nn.rnn import (
    ElmanRNN,
    elman_backward,
    elman_forward,
    elman_step,
    jacobian_product_norms,
    matrix_with_spectral_radius,
    run_truncated,
    spectral_radius,
)
from recursionlab.train.recipes import run_recipe

F64 = torch.float64


def _random_problem(seed: int, nonlinearity: str = "tanh"):
    """Random shapes, weights, inputs and upstream gradients for one BPTT check."""
    g = torch.Generator().manual_seed(seed)
    B, T, D, H = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 5), (1, 12), (1, 6), (1, 8)))
    rnn = ElmanRNN(D, H, nonlinearity=nonlinearity).double()
    with torch.no_grad():
        for p in rnn.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.7)
    x = torch.randn(B, T, D, generator=g, dtype=F64)
    h0 = torch.randn(B, H, generator=g, dtype=F64)
    upstream = torch.randn(B, T, H, generator=g, dtype=F64)  # dL/dh_t, a loss on every step
    return rnn, x, h0, upstream


def _autograd_grads(rnn, x, h0, upstream, truncation=None):
    x, h0 = x.clone().requires_grad_(), h0.clone().requires_grad_()
    rnn.zero_grad()
    hs, _ = run_truncated(rnn, x, h0, truncation)
    (hs * upstream).sum().backward()
    zero_h0 = torch.zeros_like(h0)
    return {"W_xh": rnn.W_xh.grad, "W_hh": rnn.W_hh.grad, "b": rnn.b.grad, "x": x.grad,
            "h0": h0.grad if h0.grad is not None else zero_h0}


def _assert_grads_equal(got: dict, want: dict):
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, atol=1e-12, rtol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "linear"])
@pytest.mark.parametrize("seed", range(4))
def test_hand_bptt_equals_autograd(seed, nonlinearity):
    rnn, x, h0, upstream = _random_problem(seed, nonlinearity)
    _, cache = elman_forward(x, h0, rnn.W_xh.detach(), rnn.W_hh.detach(), rnn.b.detach(), nonlinearity)
    _assert_grads_equal(elman_backward(upstream, cache), _autograd_grads(rnn, x, h0, upstream))


@pytest.mark.parametrize("seed", range(6))
def test_truncated_hand_bptt_equals_autograd_with_detach(seed):
    rnn, x, h0, upstream = _random_problem(100 + seed)
    T = x.shape[1]
    truncation = int(torch.randint(1, T + 2, (1,), generator=torch.Generator().manual_seed(seed)))
    _, cache = elman_forward(x, h0, rnn.W_xh.detach(), rnn.W_hh.detach(), rnn.b.detach())
    got = elman_backward(upstream, cache, truncation=truncation)
    _assert_grads_equal(got, _autograd_grads(rnn, x, h0, upstream, truncation))


def test_truncation_changes_the_gradient_but_not_the_forward():
    rnn, x, h0, upstream = _random_problem(7)
    x = torch.randn(2, 9, rnn.input_size, dtype=F64)
    h0, upstream = h0[:1].expand(2, -1), torch.randn(2, 9, rnn.hidden_size, dtype=F64)
    full, _ = run_truncated(rnn, x, h0, None)
    cut, _ = run_truncated(rnn, x, h0, 2)
    torch.testing.assert_close(full, cut)
    g_full = _autograd_grads(rnn, x, h0, upstream)["W_hh"]
    g_cut = _autograd_grads(rnn, x, h0, upstream, 2)["W_hh"]
    assert (g_full - g_cut).abs().max() > 1e-6


def test_total_state_gradients_equal_autograd():
    """``elman_backward(...)["hs"]`` is dL/dh_t through every path: compare with a perturbation leaf per step."""
    rnn, x, h0, upstream = _random_problem(3)
    x, upstream = torch.randn(3, 6, rnn.input_size, dtype=F64), torch.randn(3, 6, rnn.hidden_size, dtype=F64)
    h0 = torch.randn(3, rnn.hidden_size, dtype=F64)
    W_xh, W_hh, b = rnn.W_xh.detach(), rnn.W_hh.detach(), rnn.b.detach()
    bumps = torch.zeros(6, 3, rnn.hidden_size, dtype=F64, requires_grad=True)
    h, states = h0, []
    for t in range(6):
        h = elman_step(x[:, t], h, W_xh, W_hh, b) + bumps[t]  # d loss / d bump_t = total dL/dh_t
        states.append(h)
    (torch.stack(states, 1) * upstream).sum().backward()
    _, cache = elman_forward(x, h0, W_xh, W_hh, b)
    torch.testing.assert_close(elman_backward(upstream, cache)["hs"], bumps.grad.transpose(0, 1))


@pytest.mark.parametrize("truncation", [None, 3])
def test_manual_backward_module_matches_autograd(truncation):
    rnn, x, h0, upstream = _random_problem(11)
    manual = ElmanRNN(rnn.input_size, rnn.hidden_size, manual_backward=True, truncation=truncation).double()
    manual.load_state_dict(rnn.state_dict())
    xm, hm = x.clone().requires_grad_(), h0.clone().requires_grad_()
    hs, h_last = manual(xm, hm)
    torch.testing.assert_close(h_last, hs[:, -1])
    (hs * upstream).sum().backward()
    want = _autograd_grads(rnn, x, h0, upstream, truncation)
    got = {"W_xh": manual.W_xh.grad, "W_hh": manual.W_hh.grad, "b": manual.b.grad, "x": xm.grad, "h0": hm.grad}
    _assert_grads_equal(got, want)


def test_elman_cell_equals_torch_rnn():
    torch.manual_seed(0)
    ours, theirs = ElmanRNN(3, 5).double(), torch.nn.RNN(3, 5, batch_first=True).double()
    with torch.no_grad():
        theirs.weight_ih_l0.copy_(ours.W_xh)
        theirs.weight_hh_l0.copy_(ours.W_hh)
        theirs.bias_ih_l0.copy_(ours.b)
        theirs.bias_hh_l0.zero_()
    x = torch.randn(2, 7, 3, dtype=F64)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])


def test_jacobian_product_norms_equal_autograd_jacobians():
    g = torch.Generator().manual_seed(0)
    H, T = 6, 5
    W_hh = matrix_with_spectral_radius(H, 1.3, g, dtype=F64)
    W_xh, b = torch.randn(H, 2, generator=g, dtype=F64), torch.randn(H, generator=g, dtype=F64) * 0.1
    x, h0 = torch.randn(1, T, 2, generator=g, dtype=F64), torch.randn(1, H, generator=g, dtype=F64)
    hs, _ = elman_forward(x, h0, W_xh, W_hh, b)
    norms = jacobian_product_norms(W_hh, hs)
    assert norms.shape == (1, T + 1) and norms[0, 0].item() == pytest.approx(1.0)
    for k in range(1, T + 1):
        start = T - k  # state h_start (h_0 is the initial state)
        h_start = h0[0] if start == 0 else hs[0, start - 1]

        def final_state(h, start=start):
            return elman_forward(x[:, start:], h[None], W_xh, W_hh, b)[0][0, -1]

        J = torch.autograd.functional.jacobian(final_state, h_start)
        assert norms[0, k].item() == pytest.approx(torch.linalg.matrix_norm(J, ord=2).item(), rel=1e-9)
    torch.testing.assert_close(jacobian_product_norms(W_hh, hs[0]), norms[0])  # unbatched form


@pytest.mark.parametrize("radius", [0.5, 1.0, 1.5])
def test_linear_cell_with_scaled_orthogonal_weights_gives_radius_powers(radius):
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(1), dtype=F64))
    W = radius * Q
    assert spectral_radius(W) == pytest.approx(radius)
    norms = jacobian_product_norms(W, torch.randn(2, 10, 8, dtype=F64), nonlinearity="linear")
    torch.testing.assert_close(norms, (radius ** torch.arange(11, dtype=F64)).expand(2, 11))


def test_spectral_radius_helpers():
    assert spectral_radius(torch.diag(torch.tensor([0.5, -2.0, 1.0]))) == pytest.approx(2.0)
    for r in (0.3, 1.0, 2.5):
        assert spectral_radius(matrix_with_spectral_radius(16, r, torch.Generator().manual_seed(0))) == \
            pytest.approx(r, rel=1e-5)


def test_nn_layer_rejects_bad_input():
    with pytest.raises(ValueError, match="nonlinearity"):
        ElmanRNN(2, 3, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="truncation"):
        run_truncated(ElmanRNN(2, 3), torch.zeros(1, 4, 2), None, 0)
    with pytest.raises(ValueError, match="manual_backward"):
        ElmanRNN(2, 3, truncation=2)
    with pytest.raises(ValueError, match=r"W_hh has shape \(3, 4\)"):
        elman_forward(torch.zeros(1, 2, 2), torch.zeros(1, 3), torch.zeros(3, 2), torch.zeros(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(B, T, 2\)"):
        ElmanRNN(2, 3)(torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match="square"):
        spectral_radius(torch.zeros(2, 3))
    _, cache = elman_forward(torch.zeros(1, 2, 2), torch.zeros(1, 3), torch.zeros(3, 2), torch.zeros(3, 3),
                             torch.zeros(3))
    with pytest.raises(ValueError, match="grad_hs"):
        elman_backward(torch.zeros(1, 3, 3), cache)


@pytest.mark.parametrize("cell", CELLS)
def test_models_shapes_and_parameter_formula(cell):
    reg = RNNRegressor(2, 9, cell=cell)
    assert reg(torch.rand(4, 6, 2)).shape == (4,)
    assert count_parameters(reg) == model_parameter_count(cell, 2, 9, 1)
    clf = RNNClassifier(5, 7, 3, cell=cell, per_step=True, truncation=2)
    assert clf(torch.randint(0, 5, (4, 6))).shape == (4, 6, 3)
    assert count_parameters(clf) == model_parameter_count(cell, 5, 7, 3)
    assert RNNClassifier(5, 7, 3, cell=cell)(torch.randint(0, 5, (4, 6))).shape == (4, 3)


def test_matched_hidden_size_is_the_closest():
    target = model_parameter_count("rnn", 2, 64, 1)
    for cell in ("gru", "lstm", "elman"):
        H = matched_hidden_size(cell, target, 2, 1)
        gaps = {h: abs(model_parameter_count(cell, 2, h, 1) - target) for h in range(1, 200)}
        assert gaps[H] == min(gaps.values())
    assert matched_hidden_size("elman", model_parameter_count("elman", 3, 20, 4), 3, 4) == 20


def test_models_reject_bad_input():
    with pytest.raises(ValueError, match="cell"):
        RNNRegressor(2, 4, cell="transformer")
    with pytest.raises(ValueError, match="token ids"):
        RNNClassifier(5, 4, 2)(torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match=r"\(B, T, 2\)"):
        RNNRegressor(2, 4)(torch.rand(3, 4, 3))
    with pytest.raises(ValueError, match="hidden_size"):
        RNNRegressor(2, 0)
    with pytest.raises(ValueError, match="truncation"):
        RNNClassifier(5, 4, 2, truncation=0)
    with pytest.raises(ValueError, match="cell"):
        state_gradient_norms(torch.nn.Linear(2, 1), torch.rand(1, 3, 2), lambda out: out.sum())
    with pytest.raises(ValueError, match="alignment"):
        RNNClassifier(5, 4, 2, truncation=2, truncation_align="middle")


@pytest.mark.parametrize("align", ["start", "end"])
def test_state_gradient_norms_same_for_hand_bptt_and_autograd(align):
    # the Elman path (hand BPTT) and the torch-cell path (autograd per step) measure the same thing
    torch.manual_seed(0)
    elman = RNNRegressor(2, 6, cell="elman", truncation=3, truncation_align=align).double()
    torch_rnn = RNNRegressor(2, 6, cell="rnn", truncation=3, truncation_align=align).double()
    with torch.no_grad():
        torch_rnn.rnn.weight_ih_l0.copy_(elman.rnn.W_xh)
        torch_rnn.rnn.weight_hh_l0.copy_(elman.rnn.W_hh)
        torch_rnn.rnn.bias_ih_l0.copy_(elman.rnn.b)
        torch_rnn.rnn.bias_hh_l0.zero_()
        torch_rnn.readout.load_state_dict(elman.readout.state_dict())
    x, y = torch.rand(4, 10, 2, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    want = state_gradient_norms(elman, x, lambda out: ((out - y) ** 2).mean())
    got = state_gradient_norms(torch_rnn, x, lambda out: ((out - y) ** 2).mean())
    torch.testing.assert_close(got, want)
    # a loss on the last state only: end-aligned windows let it reach k=3 states back, start-aligned ones (edges at
    # 3, 6, 9 for T=10) only the last state
    assert int((want > 0).sum()) == (3 if align == "end" else 1)


def test_state_gradient_norms_match_autograd():
    torch.manual_seed(0)
    model = RNNRegressor(2, 5, cell="elman").double()
    x, y = torch.rand(4, 8, 2, dtype=F64), torch.rand(4, dtype=F64)
    norms = state_gradient_norms(model, x, lambda out: F.mse_loss(out, y))
    rnn = model.rnn
    bumps = torch.zeros(8, 4, 5, dtype=F64, requires_grad=True)
    h = torch.zeros(4, 5, dtype=F64)
    for t in range(8):
        h = elman_step(x[:, t], h, rnn.W_xh, rnn.W_hh, rnn.b) + bumps[t]
    F.mse_loss(model.readout(h).squeeze(-1), y).backward()
    torch.testing.assert_close(norms, bumps.grad.norm(dim=-1).mean(dim=1))


@pytest.mark.parametrize("cell", ["gru", "elman", "lstm"])
def test_char_rnn_sample_is_seeded_and_in_range(cell):
    torch.manual_seed(0)
    model = CharRNN(11, 8, cell=cell)
    prompt = torch.tensor([1, 2, 3])
    a = model.sample(prompt, 20, temperature=0.8, generator=torch.Generator().manual_seed(5))
    b = model.sample(prompt, 20, temperature=0.8, generator=torch.Generator().manual_seed(5))
    assert a.shape == (23,) and torch.equal(a, b) and torch.equal(a[:3], prompt)
    assert 0 <= int(a.min()) and int(a.max()) < 11
    # stepping with the state equals one pass over the whole sequence
    full, _ = model.forward_with_state(a[None])
    first, state = model.forward_with_state(a[None, :10])
    rest, _ = model.forward_with_state(a[None, 10:], state)
    torch.testing.assert_close(torch.cat([first, rest], 1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(prompt, 3, temperature=0.0)
    with pytest.raises(ValueError, match="prompt"):
        model.sample(torch.tensor([], dtype=torch.long), 3)


def test_hand_cell_learns_delayed_recall_through_the_recipe():
    result = run_recipe("rnn-copy", profile="smoke", overrides={
        "length": 1, "delay": 4, "hidden_size": 24, "train.steps": 250, "train.eval_every": 0})
    assert result.metrics["val_acc"] > 0.9  # chance is 1/8


def test_char_rnn_recipe_runs_and_reports_bits_per_char():
    result = run_recipe("char-rnn", profile="smoke")
    assert 0 < result.metrics["val_bpc"] < 8
    assert result.model.vocab.size == result.model.vocab_size


def test_gated_cell_solves_adding_where_plain_rnn_stays_at_chance():
    """Equal parameter counts, same data and steps, sequence length 50: the GRU learns, the plain RNN does not."""
    budget = model_parameter_count("rnn", 2, 32, 1)
    common = {"seq_len": 50, "param_budget": budget, "batch_size": 64, "n_val": 500,
              "train.steps": 300, "train.lr": 1e-2, "train.eval_every": 0}
    gated = run_recipe("rnn-adding", profile="smoke", overrides={**common, "cell": "gru"})
    plain = run_recipe("rnn-adding", profile="smoke", overrides={**common, "cell": "rnn"})
    assert abs(count_parameters(gated.model) - count_parameters(plain.model)) < 0.05 * budget
    assert gated.metrics["val_mse"] < 0.1 * ADDING_CHANCE_MSE
    assert plain.metrics["val_mse"] > 0.75 * ADDING_CHANCE_MSE
