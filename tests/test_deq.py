"""DEQ models and recipes (lessons 04-05): the digits loader, the classifier learning, the causal sequence DEQ."""

from __future__ import annotations

import pytest
import torch

from recursionlab.data.digits import digits_batch, load_digits_split
from recursionlab.models.deq import CausalRecurrenceLayer, DEQClassifier, DEQSequenceModel
from recursionlab.solvers import fixed_point_iter
from recursionlab.train.recipes import get_config, run_recipe


def test_digits_split_is_stratified_normalised_and_deterministic():
    split = load_digits_split(test_fraction=0.25, seed=0)
    assert split.x_train.shape[1] == split.x_test.shape[1] == 64
    assert split.x_train.shape[0] + split.x_test.shape[0] == 1797
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    counts = torch.bincount(split.y_test, minlength=10).float() / torch.bincount(split.y_train, minlength=10).float()
    assert torch.allclose(counts, torch.full((10,), 1 / 3), atol=0.02)  # every class split 1:3
    assert split.x_train.mean(dim=0).abs().max() < 1e-5  # normalised with the training statistics
    assert split.images(split.x_test[:2]).shape == (2, 8, 8)
    again = load_digits_split(test_fraction=0.25, seed=0)
    assert torch.equal(split.x_test, again.x_test) and torch.equal(split.y_train, again.y_train)
    x1, y1 = digits_batch(split, 32, 7)
    x2, y2 = digits_batch(split, 32, 7)
    assert x1.shape == (32, 64) and torch.equal(y1, y2) and torch.equal(x1, x2)


def test_digits_loader_rejects_bad_arguments():
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(test_fraction=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        digits_batch(load_digits_split(), 0)


def test_deq_classifier_learns_the_digits():
    result = run_recipe("deq-digits", profile="smoke", overrides={"train.steps": 150})
    assert result.metrics["val_acc"] > 0.90, result.metrics  # held-out images; chance is 0.10
    steps, nfe = result.history.series("nfe")
    assert len(nfe) > 0 and all(1 <= v <= 40 for v in nfe)  # NFE is logged by the engine as a metric
    assert result.metrics["val_residual"] < 1e-3  # the equilibrium really was reached at test time
    assert 0.0 < result.metrics["val_rho"] < 1.0


def test_jacobian_regularisation_is_added_to_the_loss():
    result = run_recipe("deq-digits", profile="smoke", overrides={"train.steps": 12, "jac_weight": 2.0})
    _, jac = result.history.series("jac_loss")
    assert len(jac) > 0 and all(v > 0 for v in jac)
    with pytest.raises(ValueError, match="jac_weight"):
        run_recipe("deq-digits", profile="smoke", overrides={"train.steps": 1, "jac_weight": -1.0})


def test_deq_classifier_gradient_modes_all_train_a_step():
    split = load_digits_split()
    x, y = digits_batch(split, 16, 0)
    for grad in ("ift", "jfb", "phantom", "unrolled"):
        torch.manual_seed(0)
        model = DEQClassifier(hidden=16, grad=grad)
        logits, info = model(x, return_info=True)
        assert logits.shape == (16, 10) and info.grad in (grad, "jfb")
        torch.nn.functional.cross_entropy(logits, y).backward()
        assert model.layer.weight.grad is not None and model.inject.weight.grad.abs().sum() > 0


def test_causal_equilibrium_is_the_rnn_state_sequence():
    # df/dz is strictly block lower triangular, so plain iteration is exact after T + 1 evaluations for *any*
    # weights, and the equilibrium equals running the cell left to right.
    torch.manual_seed(0)
    T, D = 6, 8
    layer = CausalRecurrenceLayer(D, 16, window=2).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(3.0)  # far from a contraction
    u = torch.randn(2, T, D, dtype=torch.float64)
    res = fixed_point_iter(lambda z: layer(z, u), torch.zeros_like(u), max_iter=T + 1, tol=0.0)
    assert float(res.abs_trace[-1].max()) < 1e-12
    z_seq = torch.zeros_like(u)
    for t in range(T):  # sequential: position t sees the final states of earlier positions
        z_seq[:, t] = layer(z_seq, u)[:, t]
    assert torch.allclose(res.solution, z_seq, atol=1e-12)


def test_deq_sequence_model_learns_prefix_sums_and_runs_longer():
    result = run_recipe("deq-prefix-sums", profile="smoke", overrides={"train.steps": 150})
    cfg = get_config("deq-prefix-sums", profile="smoke")
    assert result.metrics["val_acc"] > 0.95, result.metrics  # per-bit accuracy at the training length
    assert result.metrics["long_acc"] > 0.9, result.metrics  # 4x longer strings than in training
    assert result.metrics["long_nfe"] > result.metrics["val_nfe"]  # longer strings take more evaluations
    assert cfg.length * cfg.test_factor + 2 >= result.metrics["long_nfe"]


def test_models_reject_bad_input():
    with pytest.raises(ValueError, match="hidden"):
        DEQClassifier(hidden=0)
    with pytest.raises(ValueError, match=r"\(B, features\)"):
        DEQClassifier(hidden=8)(torch.zeros(2, 8, 8))
    model = DEQSequenceModel(vocab_size=2, dim=8, hidden=8)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 2\)"):
        model(torch.tensor([[0, 1, 5]]))
    with pytest.raises(ValueError, match="integer tokens"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="window"):
        CausalRecurrenceLayer(8, 8, window=0)
