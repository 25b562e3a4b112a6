"""Memory tasks for recurrent networks (lessons 01 and 02), generated on the fly.

* **Adding problem** (Hochreiter & Schmidhuber 1997; the two-halves variant of Le et al. 2015): a stream of
  random values in [0, 1) with two marked positions, one in each half of the sequence; the target is the sum of
  the two marked values. Before the model can answer it must hold the first value for at least ``T/2`` steps.
  Predicting the mean (1.0) gives an MSE of 1/6, the chance level.
* **Temporal parity**: a stream of bits; the target is their XOR (the parity of the number of ones), either at
  the end or at every step. Every bit matters, however far back.
* **Copy with a delay** (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): ``length`` random symbols, then
  ``delay`` blanks, then a "go" marker; the model must then emit the symbols in order. Each symbol is recalled
  exactly ``length + delay`` steps after it was read. ``length=1`` is plain delayed recall.

Every generator draws from an explicit ``torch.Generator`` (or an int seed), so a batch is a deterministic
function of its seed: the training engine's ``batch_fn(step)`` seeds with the step.
"""

from __future__ import annotations

import torch

from recursionlab.data.algorithmic import _as_generator, _check_positive_int, prefix_sums_batch

__all__ = [
    "ADDING_CHANCE_MSE",
    "IGNORE_INDEX",
    "adding_batch",
    "copy_batch",
    "copy_chance_accuracy",
    "copy_seq_len",
    "temporal_parity_batch",
]

# Predicting E[y] = 1 for y = u1 + u2 with u1, u2 ~ U(0, 1) independent: MSE = Var(y) = 2 * 1/12.
ADDING_CHANCE_MSE: float = 1.0 / 6.0
IGNORE_INDEX: int = -100  # the target at positions that are not graded (matches torch's cross_entropy default)


def adding_batch(
    batch_size: int, seq_len: int, generator: torch.Generator | int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of adding problems.

    Args:
        batch_size: number of sequences B.
        seq_len: sequence length T (>= 2); the first marker lies in ``[0, T//2)``, the second in ``[T//2, T)``.
        generator: a ``torch.Generator``, an int seed, or ``None`` (seed 0).

    Returns:
        ``x``: (B, T, 2) float32, channel 0 the values in [0, 1), channel 1 the markers (exactly two ones per row);
        ``y``: (B,) float32, the sum of the two marked values.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    seq_len = _check_positive_int("seq_len", seq_len)
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 for the adding problem (two markers), got {seq_len}")
    gen = _as_generator(generator)
    half = seq_len // 2
    values = torch.rand(batch_size, seq_len, generator=gen)
    first = torch.randint(0, half, (batch_size,), generator=gen)
    second = torch.randint(half, seq_len, (batch_size,), generator=gen)
    markers = torch.zeros(batch_size, seq_len)
    rows = torch.arange(batch_size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return torch.stack([values, markers], dim=-1), y


def temporal_parity_batch(
    batch_size: int,
    seq_len: int,
    per_step: bool = False,
    generator: torch.Generator | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bit streams and their parity (XOR of all bits so far).

    Args:
        batch_size: number of streams B.
        seq_len: stream length T (>= 1).
        per_step: if True the target is the running parity at every step, else only the final parity.
        generator: a ``torch.Generator``, an int seed, or ``None`` (seed 0).

    Returns:
        ``x``: (B, T, 1) float32 bits in {0, 1};
        ``y``: (B,) int64 final parity, or (B, T) int64 running parity when ``per_step``. Chance accuracy is 1/2.
    """
    bits, running = prefix_sums_batch(batch_size, seq_len, generator=generator)
    return bits.float().unsqueeze(-1), running if per_step else running[:, -1]


def copy_seq_len(length: int, delay: int) -> int:
    """Total length of a copy sequence: ``length`` symbols + ``delay`` blanks + ``length`` recall steps."""
    return 2 * length + delay


def copy_chance_accuracy(n_symbols: int) -> float:
    """Accuracy of guessing a symbol uniformly at random: ``1 / n_symbols``."""
    return 1.0 / _check_positive_int("n_symbols", n_symbols)


def copy_batch(
    batch_size: int,
    length: int,
    delay: int,
    n_symbols: int = 8,
    generator: torch.Generator | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of copy-with-delay problems, as token ids.

    Token ids: ``0`` blank, ``1..n_symbols`` the symbols, ``n_symbols + 1`` the go marker (vocabulary of
    ``n_symbols + 2`` input tokens). With ``T = 2 * length + delay``:

    * inputs: symbols at ``[0, length)``, blanks at ``[length, length + delay)``, the go marker at
      ``length + delay``, blanks after it;
    * targets: :data:`IGNORE_INDEX` before ``length + delay``, then the symbols (as classes ``0..n_symbols-1``)
      at ``[length + delay, T)``. So the symbol read at step ``i`` is due at step ``i + length + delay``.

    Args:
        batch_size: B; length: number of symbols to remember (>= 1); delay: blank steps (>= 0);
        n_symbols: alphabet size (>= 2); generator: a ``torch.Generator``, an int seed, or ``None`` (seed 0).

    Returns:
        ``x``: (B, T) int64 input ids in ``0..n_symbols+1``; ``y``: (B, T) int64 targets in
        ``0..n_symbols-1`` or :data:`IGNORE_INDEX`.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    length = _check_positive_int("length", length)
    if isinstance(delay, bool) or not isinstance(delay, int):
        raise TypeError(f"delay must be an int, got {type(delay).__name__} ({delay!r})")
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")
    n_symbols = _check_positive_int("n_symbols", n_symbols)
    if n_symbols < 2:
        raise ValueError(f"n_symbols must be >= 2 (one symbol needs no memory), got {n_symbols}")
    gen = _as_generator(generator)
    seq_len = copy_seq_len(length, delay)
    symbols = torch.randint(0, n_symbols, (batch_size, length), generator=gen)  # classes 0..n_symbols-1
    x = torch.zeros(batch_size, seq_len, dtype=torch.long)
    x[:, :length] = symbols + 1
    x[:, length + delay] = n_symbols + 1
    y = torch.full((batch_size, seq_len), IGNORE_INDEX, dtype=torch.long)
    y[:, length + delay :] = symbols
    return x, y
