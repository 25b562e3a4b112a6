"""Deep Thinking networks (recall + progressive loss): shapes, the loss, and extrapolation by thinking longer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recursionlab.data.algorithmic import prefix_sums_batch, prefix_sums_dataset
from recursionlab.models.deep_thinking import (
    DeepThinking1d,
    accuracy_per_iteration,
    progressive_loss,
    sample_progressive_iters,
)
from recursionlab.train.recipes import run_recipe


@pytest.mark.parametrize("recall,in_channels", [(True, 2), (False, 2), (True, 1)])
def test_shapes_and_recall_wiring(recall, in_channels):
    torch.manual_seed(0)
    model = DeepThinking1d(width=8, n_blocks=2, recall=recall, in_channels=in_channels)
    bits, _ = prefix_sums_batch(3, 11, generator=0)
    out = model(bits, 5, return_all=True)
    assert out.logits.shape == (3, 11, 2)
    assert out.state.shape == (3, 8, 11)
    assert out.all_logits.shape == (3, 5, 11, 2)
    assert torch.equal(out.all_logits[:, -1], out.logits)
    first = model.recurrent_block[0]
    # with recall the first conv of the recurrent block reads [phi, x]: width + input channels
    expected_in = 8 + in_channels if recall else 8
    assert (first.in_channels if hasattr(first, "in_channels") else first.conv1.in_channels) == expected_in
    assert model(bits, 5).all_logits is None


def test_recall_uses_the_input_at_every_iteration():
    torch.manual_seed(1)
    bits, _ = prefix_sums_batch(2, 9, generator=1)
    other = 1 - bits
    for recall in (True, False):
        model = DeepThinking1d(width=8, recall=recall)
        state = torch.rand(2, 8, 9)  # the same state, two different inputs
        a = model(bits, 1, initial_state=state).state
        b = model(other, 1, initial_state=state).state
        assert (not torch.allclose(a, b)) == recall


def test_iterations_compose_and_one_hot_input():
    torch.manual_seed(2)
    model = DeepThinking1d(width=8)
    bits, _ = prefix_sums_batch(4, 10, generator=2)
    whole = model(bits, 7)
    part = model(bits, 3)
    rest = model(bits, 4, initial_state=part.state)
    assert torch.allclose(whole.logits, rest.logits, atol=1e-6)
    one_hot = F.one_hot(bits, 2).transpose(1, 2).float()
    assert torch.allclose(model(one_hot, 7).logits, whole.logits)
    with pytest.raises(ValueError):
        model(bits, 0)
    with pytest.raises(ValueError):
        model(bits + 2, 3)


def test_sample_progressive_iters_ranges():
    gen = torch.Generator().manual_seed(0)
    draws = [sample_progressive_iters(6, gen) for _ in range(2000)]
    assert all(0 <= n < 6 and 1 <= k <= 6 - n for n, k in draws)
    assert {n for n, _ in draws} == set(range(6)) and {k for _, k in draws} == set(range(1, 7))


def test_progressive_loss_parts():
    torch.manual_seed(3)
    model = DeepThinking1d(width=8)
    bits, targets = prefix_sums_batch(5, 12, generator=3)

    def ce(logits):
        return F.cross_entropy(logits.reshape(-1, 2), targets.reshape(-1))

    full, _ = progressive_loss(model, bits, targets, max_iters=6, alpha=0.0, n=2, k=3)
    assert torch.allclose(full, ce(model(bits, 6).logits))
    prog, logits = progressive_loss(model, bits, targets, max_iters=6, alpha=1.0, n=2, k=3)
    assert logits.shape == (5, 12, 2)
    assert torch.allclose(prog, ce(model(bits, 5).logits), atol=1e-6)  # n + k iterations, same forward value
    mixed, _ = progressive_loss(model, bits, targets, max_iters=6, alpha=0.3, n=2, k=3)
    assert torch.allclose(mixed, 0.7 * full + 0.3 * prog, atol=1e-6)
    with pytest.raises(ValueError):
        progressive_loss(model, bits, targets, max_iters=6, alpha=1.0, n=4, k=3)


def test_progressive_loss_detaches_the_warm_start():
    torch.manual_seed(4)
    model = DeepThinking1d(width=8)
    bits, targets = prefix_sums_batch(5, 12, generator=4)
    loss, _ = progressive_loss(model, bits, targets, max_iters=6, alpha=1.0, n=3, k=2)
    loss.backward()
    # The projection phi_0 = conv(x) only feeds the n detached warm-up iterations: no gradient reaches it.
    assert model.projection.weight.grad is None or torch.count_nonzero(model.projection.weight.grad) == 0
    assert torch.count_nonzero(model.recurrent_block[0].weight.grad) > 0
    model.zero_grad(set_to_none=True)
    loss, _ = progressive_loss(model, bits, targets, max_iters=6, alpha=1.0, n=0, k=2)
    loss.backward()
    assert torch.count_nonzero(model.projection.weight.grad) > 0  # n = 0: phi_0 is in the graph


def test_accuracy_per_iteration_matches_a_direct_count():
    torch.manual_seed(5)
    model = DeepThinking1d(width=8)
    bits, targets = prefix_sums_batch(7, 9, generator=5)
    seq, pos = accuracy_per_iteration(model, bits, targets, 4, batch_size=3)
    assert seq.shape == pos.shape == (4,)
    for i in range(4):
        pred = model(bits, i + 1).logits.argmax(-1)
        assert torch.isclose(seq[i], (pred == targets).all(-1).float().mean())
        assert torch.isclose(pos[i], (pred == targets).float().mean())


TRAIN_ITERS, TRAIN_LENGTH, TEST_LENGTH = 10, 12, 32


def _train_small(seed: int):
    return run_recipe(
        "deep-thinking-prefix-sums",
        "smoke",
        overrides={"width": 32, "train_length": TRAIN_LENGTH, "max_iters": TRAIN_ITERS, "batch_size": 64,
                   "train.steps": 400, "train.lr": 2e-3, "train.warmup_steps": 10, "test_length": TEST_LENGTH,
                   "test_iters": 2 * TRAIN_ITERS, "n_val": 32, "seed": seed},
    ).model


def test_deep_thinking_extrapolates_to_longer_strings_by_thinking_longer():
    """Trained on 12-bit strings at M = 10 iterations; on 32-bit strings (never seen) more iterations solve more.

    At this tiny budget (400 steps, width 32, ~15 s) whether training leaves the chance plateau depends on the seed
    (seed 0 does on CPU; some seeds need more steps), so a seed that did not learn the *training* task is replaced
    by the next one: the assertion is about extrapolation of a network that learned, not about optimisation luck.
    """
    torch.set_flush_denormal(True)
    short, short_targets = prefix_sums_dataset(300, TRAIN_LENGTH, seed=31338)
    for seed in range(3):
        model = _train_small(seed)
        if float(accuracy_per_iteration(model, short, short_targets, TRAIN_ITERS)[0][-1]) > 0.9:
            break
    else:
        pytest.fail("no seed learned 12-bit prefix sums at 10 iterations")
    bits, targets = prefix_sums_dataset(300, TEST_LENGTH, seed=31337)
    seq, _ = accuracy_per_iteration(model, bits, targets, 3 * TRAIN_ITERS)
    at_train_depth = float(seq[TRAIN_ITERS - 1])
    thinking_longer = float(seq[TRAIN_ITERS:].max())
    assert thinking_longer > 0.8, f"{TEST_LENGTH}-bit accuracy with more iterations only {thinking_longer:.3f}"
    assert thinking_longer > at_train_depth + 0.2, (at_train_depth, thinking_longer)
