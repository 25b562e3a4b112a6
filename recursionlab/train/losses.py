"""The losses the training loop offers; they live in :mod:`recursionlab.nn.losses` so that models can use them too."""

from recursionlab.nn.losses import IGNORE_INDEX, softmax_cross_entropy, stablemax, stablemax_cross_entropy

__all__ = ["IGNORE_INDEX", "softmax_cross_entropy", "stablemax", "stablemax_cross_entropy"]
