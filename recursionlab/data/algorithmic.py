"""Small algorithmic tasks for the adaptive-computation lessons (lesson 03).

* **Parity of a static vector** (Graves 2016, ACT; Banino et al. 2021, PonderNet): a vector of ``n_elems``
  entries, of which a random number between ``min_nonzero`` and ``max_nonzero`` are set to +1 or -1 and the
  rest are 0. The target is the parity of the number of +1 entries. The number of non-zeros is the knob for
  difficulty: more non-zeros, more work for a network that counts.
* **Prefix sums** (Schwarzschild et al. 2021, Deep Thinking): a bit string of any length; the target at position
  ``i`` is the cumulative XOR (the prefix sum mod 2) of bits ``0..i``. Longer strings are harder instances of the
  same problem, so a network trained on short strings can be tested on long ones.

Every generator draws from an explicit ``torch.Generator`` (or a seed), so a batch is a deterministic function of
its seed: the training engine's ``batch_fn(step)`` seeds with the step.
"""

from __future__ import annotations

import torch

__all__ = [
    "parity_batch",
    "prefix_sums_batch",
    "prefix_sums_dataset",
]


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """Turn a seed (int), a generator or ``None`` (seed 0) into a CPU ``torch.Generator``."""
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, bool) or not isinstance(generator, (int, torch.Generator)):
        raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")
    if isinstance(generator, int):
        return torch.Generator().manual_seed(generator)
    return generator


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def parity_batch(
    batch_size: int,
    n_elems: int = 8,
    min_nonzero: int = 1,
    max_nonzero: int | None = None,
    generator: torch.Generator | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of parity problems on static vectors (the ACT / PonderNet parity task).

    For each example a count ``k`` is drawn uniformly from ``min_nonzero..max_nonzero`` (inclusive), ``k`` distinct
    random positions get a random sign (+1 or -1) and the others stay 0. The label is ``(number of +1 entries) mod 2``.

    Args:
        batch_size: number of examples B.
        n_elems: length of each vector.
        min_nonzero, max_nonzero: range of the number of non-zero entries (``max_nonzero`` defaults to ``n_elems``).
        generator: a ``torch.Generator``, an int seed, or ``None`` (seed 0).

    Returns:
        ``x``: (B, n_elems) float32 with entries in {-1, 0, +1};
        ``y``: (B,) int64 parity labels in {0, 1};
        ``n_nonzero``: (B,) int64, the number of non-zero entries of each example (its difficulty).
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    n_elems = _check_positive_int("n_elems", n_elems)
    if max_nonzero is None:
        max_nonzero = n_elems
    min_nonzero = _check_positive_int("min_nonzero", min_nonzero)
    max_nonzero = _check_positive_int("max_nonzero", max_nonzero)
    if not min_nonzero <= max_nonzero <= n_elems:
        raise ValueError(
            f"need 1 <= min_nonzero <= max_nonzero <= n_elems, got min_nonzero={min_nonzero}, "
            f"max_nonzero={max_nonzero}, n_elems={n_elems}"
        )
    gen = _as_generator(generator)
    n_nonzero = torch.randint(min_nonzero, max_nonzero + 1, (batch_size,), generator=gen)
    # A random permutation per row: the first k positions of the permutation are the non-zero ones.
    ranks = torch.rand(batch_size, n_elems, generator=gen).argsort(dim=1).argsort(dim=1)
    is_nonzero = ranks < n_nonzero[:, None]
    signs = torch.randint(0, 2, (batch_size, n_elems), generator=gen) * 2 - 1
    x = torch.where(is_nonzero, signs, torch.zeros_like(signs)).float()
    y = (x == 1).sum(dim=1) % 2
    return x, y.long(), n_nonzero.long()


def prefix_sums_batch(
    batch_size: int,
    length: int,
    generator: torch.Generator | int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random bit strings and their prefix sums mod 2 (cumulative XOR), the Deep Thinking task.

    Args:
        batch_size: number of strings B.
        length: string length L (any length >= 1; train short, test long).
        generator: a ``torch.Generator``, an int seed, or ``None`` (seed 0).

    Returns:
        ``bits``: (B, L) int64 in {0, 1};  ``targets``: (B, L) int64, ``targets[:, i] = bits[:, :i+1].sum() % 2``.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    length = _check_positive_int("length", length)
    gen = _as_generator(generator)
    bits = torch.randint(0, 2, (batch_size, length), generator=gen)
    return bits, bits.cumsum(dim=1) % 2


def prefix_sums_dataset(n_examples: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed held-out set of prefix-sum problems: :func:`prefix_sums_batch` with its own seed.

    Returns ``bits`` (n_examples, L) int64 and ``targets`` (n_examples, L) int64.
    Use a seed that training never uses (training batches are seeded by the step).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return prefix_sums_batch(n_examples, length, generator=torch.Generator().manual_seed(seed))
