"""Memory tasks: every label checked by brute force on small cases; seeds; clear errors."""

from __future__ import annotations

import pytest
import torch

from recursionlab.data.sequences import (
    ADDING_CHANCE_MSE,
    IGNORE_INDEX,
    adding_batch,
    copy_batch,
    copy_chance_accuracy,
    copy_seq_len,
    temporal_parity_batch,
)


@pytest.mark.parametrize("seq_len", [2, 3, 9, 20])
def test_adding_labels_by_brute_force(seq_len):
    x, y = adding_batch(50, seq_len, generator=seq_len)
    assert x.shape == (50, seq_len, 2) and y.shape == (50,)
    assert x.dtype == y.dtype == torch.float32
    half = seq_len // 2
    for b in range(50):
        values, markers = x[b, :, 0].tolist(), x[b, :, 1].tolist()
        marked = [t for t in range(seq_len) if markers[t] == 1.0]
        assert len(marked) == 2 and sum(markers) == 2.0
        assert marked[0] < half <= marked[1]
        assert all(0.0 <= v < 1.0 for v in values)
        assert y[b].item() == pytest.approx(values[marked[0]] + values[marked[1]], abs=1e-6)


def test_adding_is_seeded_and_chance_mse_is_one_sixth():
    a = adding_batch(8, 10, generator=3)
    b = adding_batch(8, 10, generator=torch.Generator().manual_seed(3))
    c = adding_batch(8, 10, generator=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    _, y = adding_batch(100_000, 4, generator=0)
    assert ((y - 1.0) ** 2).mean().item() == pytest.approx(ADDING_CHANCE_MSE, abs=0.005)


@pytest.mark.parametrize("bad, err", [(1, ValueError), (0, ValueError), (2.5, TypeError), (True, TypeError)])
def test_adding_rejects_bad_lengths(bad, err):
    with pytest.raises(err, match="seq_len"):
        adding_batch(4, bad)


def test_temporal_parity_by_brute_force():
    x, y_final = temporal_parity_batch(40, 7, generator=1)
    _, y_steps = temporal_parity_batch(40, 7, per_step=True, generator=1)
    assert x.shape == (40, 7, 1) and y_final.shape == (40,) and y_steps.shape == (40, 7)
    for b in range(40):
        bits = [int(v) for v in x[b, :, 0].tolist()]
        assert set(bits) <= {0, 1}
        running = 0
        for t, bit in enumerate(bits):
            running ^= bit
            assert y_steps[b, t].item() == running
        assert y_final[b].item() == running
    with pytest.raises(ValueError, match="length"):
        temporal_parity_batch(4, 0)


@pytest.mark.parametrize("length, delay", [(1, 0), (1, 5), (3, 2), (4, 0)])
def test_copy_labels_by_brute_force(length, delay):
    n_symbols = 5
    x, y = copy_batch(30, length, delay, n_symbols, generator=7)
    T = copy_seq_len(length, delay)
    assert T == 2 * length + delay and x.shape == y.shape == (30, T)
    go = n_symbols + 1
    for b in range(30):
        xs, ys = x[b].tolist(), y[b].tolist()
        assert all(1 <= s <= n_symbols for s in xs[:length])
        assert xs[length:length + delay] == [0] * delay
        assert xs[length + delay] == go and xs[length + delay + 1:] == [0] * (length - 1)
        assert ys[:length + delay] == [IGNORE_INDEX] * (length + delay)
        for i in range(length):  # symbol read at step i is due at step i + length + delay, as a class id
            assert ys[i + length + delay] == xs[i] - 1


def test_copy_rejects_bad_knobs_and_reports_chance():
    with pytest.raises(ValueError, match="delay"):
        copy_batch(4, 2, -1)
    with pytest.raises(ValueError, match="length"):
        copy_batch(4, 0, 3)
    with pytest.raises(ValueError, match="n_symbols"):
        copy_batch(4, 2, 3, n_symbols=1)
    with pytest.raises(TypeError, match="delay"):
        copy_batch(4, 2, 1.5)
    assert copy_chance_accuracy(8) == 0.125
