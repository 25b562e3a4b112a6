"""The offline character corpus: deterministic, ASCII-clean, lossless vocabulary, correct LM batches."""

from __future__ import annotations

import pytest
import torch

from recursionlab.data.text import CharVocab, clean_text, encode_corpus, lm_batch, load_corpus


def test_corpus_is_large_deterministic_and_printable_ascii():
    text = load_corpus()
    assert len(text) > 400_000
    assert all(c == "\n" or 32 <= ord(c) < 127 for c in set(text))
    from pydoc_data.topics import topics

    first = sorted(topics)[0]
    assert text.startswith(clean_text(topics[first]))  # topics joined in sorted key order
    load_corpus.cache_clear()
    assert load_corpus() == text


def test_clean_text_maps_typographic_characters_and_drops_the_rest():
    assert clean_text("a\u2019b \u201cq\u201d\u2014x\u2026\tz\u00e9\n") == "a'b \"q\"--x...z\n"


def test_vocab_round_trip_and_sorted_ids():
    text = load_corpus()
    vocab = CharVocab.from_text(text)
    assert vocab.size == len(set(text)) == len(vocab)
    assert list(vocab.chars) == sorted(vocab.chars)
    piece = text[1000:3000]
    ids = vocab.encode(piece)
    assert ids.dtype == torch.int64 and ids.shape == (len(piece),)
    assert vocab.decode(ids) == piece
    assert vocab.decode(ids.tolist()) == piece
    assert int(ids.max()) < vocab.size


def test_vocab_rejects_bad_input():
    vocab = CharVocab.from_text("abc")
    with pytest.raises(ValueError, match="'z'"):
        vocab.encode("abz")
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([0, 3])
    with pytest.raises(ValueError, match="1-D"):
        vocab.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError):
        vocab.encode(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distinct"):
        CharVocab(("a", "a"))
    with pytest.raises(ValueError, match="empty"):
        CharVocab(())


def test_encode_corpus_splits_by_position():
    text = load_corpus()[:10_000]
    vocab = CharVocab.from_text(text)
    train_ids, val_ids = encode_corpus(vocab, text, val_fraction=0.1)
    assert len(val_ids) == 1000 and len(train_ids) == 9000
    assert torch.equal(torch.cat([train_ids, val_ids]), vocab.encode(text))
    for bad in (0.0, 1.0, -0.5, 2):
        with pytest.raises(ValueError, match="val_fraction"):
            encode_corpus(vocab, text, val_fraction=bad)


def test_lm_batch_gives_contiguous_windows_and_shifted_targets():
    ids = torch.arange(100)  # id == position, so a window is a run of consecutive integers
    x, y = lm_batch(ids, batch_size=16, context=10, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 10) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)
    assert torch.equal(x - x[:, :1], torch.arange(10).expand(16, 10))
    assert int(x.min()) >= 0 and int(y.max()) <= 99
    x2, _ = lm_batch(ids, 16, 10, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    # the last possible window (start 89) is reachable, none beyond it
    starts = lm_batch(ids, 4000, 10, torch.Generator().manual_seed(1))[0][:, 0]
    assert int(starts.max()) == 89


def test_lm_batch_rejects_bad_arguments():
    ids = torch.arange(20)
    with pytest.raises(ValueError, match="context=20"):
        lm_batch(ids, 2, 20)
    with pytest.raises(ValueError, match="batch_size"):
        lm_batch(ids, 0, 5)
    with pytest.raises(ValueError, match="1-D"):
        lm_batch(ids.view(4, 5), 2, 2)
