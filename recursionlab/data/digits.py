"""The handwritten digits that scikit-learn ships (offline): 1797 grey-scale 8x8 images of the digits 0-9.

Used by the deep-equilibrium lessons (04, 05) as small *real* data: a classifier learns it in seconds.
``load_digits_split`` returns a fixed, stratified train/test split as float tensors normalised with the
training set's statistics (pixels are 0..16 in the raw data), and ``digits_batch`` draws a training batch as
a deterministic function of a seed (the training engine seeds it with the step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DigitsSplit", "load_digits_split", "digits_batch", "N_CLASSES", "N_FEATURES"]

N_CLASSES: int = 10
N_FEATURES: int = 64  # 8 x 8 pixels


@dataclass
class DigitsSplit:
    """A train/test split of the scikit-learn digits.

    x_train: (N_train, 64) float32, normalised per pixel with the training mean / std.
    y_train: (N_train,) int64 labels 0..9.
    x_test:  (N_test, 64) float32, normalised with the *training* statistics.
    y_test:  (N_test,) int64.
    mean, std: (64,) the statistics used (std floored so constant pixels stay finite).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation for display: (N, 64) -> (N, 8, 8) raw pixel values 0..16."""
        return (x * self.std + self.mean).reshape(-1, 8, 8)


def load_digits_split(test_fraction: float = 0.25, seed: int = 0) -> DigitsSplit:
    """Load the digits and split them, stratified by class, with a fixed seed.

    Args:
        test_fraction: share of the 1797 images held out, in (0, 1).
        seed: seed of the split (the same seed gives the same split on every machine).
    Returns:
        :class:`DigitsSplit` with float32 inputs (N, 64) and int64 labels (N,).
    """
    if not (0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    from sklearn.datasets import load_digits  # imported here: only this loader needs scikit-learn

    raw = load_digits()
    x = torch.as_tensor(raw.data, dtype=torch.float32)
    y = torch.as_tensor(raw.target, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    test_idx, train_idx = [], []
    for c in range(N_CLASSES):  # stratified: the same share of every class goes to the test set
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_test = round(test_fraction * idx.numel())
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train = torch.cat(train_idx)
    test = torch.cat(test_idx)
    train = train[torch.randperm(train.numel(), generator=gen)]
    test = test.sort().values
    mean = x[train].mean(dim=0)
    std = x[train].std(dim=0).clamp_min(1.0)  # some border pixels are (almost) always 0
    norm = (x - mean) / std
    return DigitsSplit(norm[train], y[train], norm[test], y[test], mean, std)


def digits_batch(
    split: DigitsSplit, batch_size: int, generator: torch.Generator | int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random training batch (sampled with replacement across calls, without within one).

    Args:
        split: from :func:`load_digits_split`; batch_size: B (<= number of training images).
        generator: torch.Generator or int seed (None: seed 0).
    Returns:
        x (B, 64) float32, y (B,) int64.
    """
    n = split.x_train.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an int in [1, {n}], got {batch_size!r}")
    if generator is None or isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator or 0)
    idx = torch.randperm(n, generator=generator)[:batch_size]
    return split.x_train[idx], split.y_train[idx]
