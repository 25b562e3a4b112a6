"""An offline character-level text corpus for the language-model lessons.

The corpus is the documentation that every CPython install carries in ``pydoc_data.topics`` (the text behind
``help("assert")`` and friends): about 465k characters of English prose and code. Nothing is downloaded.
The topics are joined in sorted key order so the corpus is the same string on every run, and cleaned to
printable ASCII plus newline (a few typographic characters are first mapped to their ASCII look-alikes).

>>> text = load_corpus()
>>> vocab = CharVocab.from_text(text)
>>> train_ids, val_ids = encode_corpus(vocab, text, val_fraction=0.1)
>>> x, y = lm_batch(train_ids, batch_size=4, context=32, generator=torch.Generator().manual_seed(0))
>>> x.shape, y.shape
(torch.Size([4, 32]), torch.Size([4, 32]))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import torch

__all__ = ["CharVocab", "encode_corpus", "lm_batch", "load_corpus"]

# Typographic characters that occur in the topics, mapped to ASCII so that their words survive the cleaning.
_ASCII_LOOKALIKES = str.maketrans(
    {
        "\u2013": "-",  # en dash
        "\u2014": "--",  # em dash
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2026": "...",
        "\u00df": "ss",
        "\u00b0": " degrees",
    }
)


def _is_kept(char: str) -> bool:
    return char == "\n" or 32 <= ord(char) < 127


def clean_text(text: str) -> str:
    """Map typographic characters to ASCII, then keep only printable ASCII (codes 32..126) and newlines."""
    return "".join(c for c in text.translate(_ASCII_LOOKALIKES) if _is_kept(c))


@lru_cache(maxsize=1)
def load_corpus() -> str:
    """The course's text corpus: ``pydoc_data.topics`` joined by sorted key, ASCII-cleaned (~465k chars).

    Deterministic: the same Python version gives the same string on every machine.
    """
    from pydoc_data.topics import topics

    return clean_text("".join(topics[key] for key in sorted(topics)))


@dataclass(frozen=True)
class CharVocab:
    """A character vocabulary: each distinct character gets an id in ``0..size-1`` (sorted by code point)."""

    chars: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.chars) == 0:
            raise ValueError("CharVocab needs at least one character, got an empty list")
        bad = [c for c in self.chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"CharVocab chars must be single characters, got {bad[:5]!r}")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("CharVocab chars must be distinct")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.chars)})

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The vocabulary of every distinct character of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(tuple(sorted(set(text))))

    @property
    def size(self) -> int:
        """Number of distinct characters V."""
        return len(self.chars)

    def __len__(self) -> int:
        return self.size

    def encode(self, text: str) -> torch.Tensor:
        """``text`` -> ids, a LongTensor of shape (len(text),). Unknown characters raise ValueError."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        try:
            return torch.tensor([self._index[c] for c in text], dtype=torch.long)
        except KeyError as err:
            raise ValueError(
                f"character {err.args[0]!r} is not in the vocabulary ({self.size} characters); "
                "clean the text with clean_text() or build the vocabulary from it"
            ) from None

    def decode(self, ids: torch.Tensor | Iterable[int]) -> str:
        """ids (any 1-D tensor or iterable of ints in ``0..size-1``) -> the string."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode expects a 1-D sequence of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= int(i) < self.size:
                raise ValueError(f"id {i} is out of range for a vocabulary of size {self.size}")
            out.append(self.chars[int(i)])
        return "".join(out)


def encode_corpus(
    vocab: CharVocab, text: str, val_fraction: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode ``text`` and split it by position: the last ``val_fraction`` of the characters is validation.

    Returns ``(train_ids, val_ids)``, LongTensors of shapes (N_train,) and (N_val,).
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
    ids = vocab.encode(text)
    n_val = int(round(len(ids) * float(val_fraction)))
    if n_val < 2 or len(ids) - n_val < 2:
        raise ValueError(
            f"text of {len(ids)} characters is too short to split with val_fraction={val_fraction}"
        )
    return ids[:-n_val], ids[-n_val:]


def lm_batch(
    ids: torch.Tensor, batch_size: int, context: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of ``ids`` for next-character prediction.

    Args:
        ids: (N,) int64 token ids.
        batch_size: number of windows B.
        context: window length T; needs ``N >= T + 1``.
        generator: a CPU ``torch.Generator`` for the window starts (``None``: torch's global RNG).

    Returns:
        ``x``: (B, T) int64 inputs ``ids[s : s+T]``; ``y``: (B, T) int64 targets ``ids[s+1 : s+T+1]``.
    """
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else None
        raise ValueError(f"ids must be a 1-D LongTensor, got {type(ids).__name__} of shape {shape}")
    for name, value in (("batch_size", batch_size), ("context", context)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if len(ids) < context + 1:
        raise ValueError(f"context={context} needs at least {context + 1} ids, got {len(ids)}")
    starts = torch.randint(0, len(ids) - context, (batch_size,), generator=generator)
    offsets = torch.arange(context + 1)
    windows = ids[starts[:, None] + offsets[None, :]]  # (B, T+1)
    return windows[:, :-1], windows[:, 1:]
