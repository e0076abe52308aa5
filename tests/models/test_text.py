"""Tokenization, truncation, padding and pooling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.errors import InvalidArgument
from embedserve.models.text import TextPreprocessor, pool_tokens


@pytest.fixture
def text(bundle_dirs: dict[str, Path]) -> TextPreprocessor:
    return TextPreprocessor(bundle_dirs["tiny-text"] / "tokenizer.json", max_length=4)


def test_encode_lowercases_and_maps_unknown_words(text: TextPreprocessor) -> None:
    (ids,) = text.encode(["A Cat zebra"])
    vocab = text.tokenizer.get_vocab()
    assert ids.dtype == np.int64
    assert ids.tolist() == [vocab["a"], vocab["cat"], vocab["[UNK]"]]


def test_truncates_to_max_length(text: TextPreprocessor) -> None:
    short, long = text.encode(["a cat", "the big red dog on a small blue car"])
    assert len(short) == 2 and len(long) == 4


def test_pad_to_longest(text: TextPreprocessor) -> None:
    rows = text.encode(["cat", "a red car", "dog dog"])
    input_ids, attention_mask = text.pad(rows)
    assert input_ids.shape == attention_mask.shape == (3, 3)
    assert input_ids.dtype == attention_mask.dtype == np.int64
    assert text.pad_id == 0
    assert input_ids[0].tolist()[1:] == [0, 0]
    assert attention_mask.tolist() == [[1, 0, 0], [1, 1, 1], [1, 1, 0]]


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_text_names_the_item(text: TextPreprocessor, bad: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^item 6: text is empty$"):
        text.encode(["cat", bad], first_index=5)
    with pytest.raises(InvalidArgument, match=r"^item 9: text is empty$"):
        text.encode(["cat", bad], indices=[3, 9])


def test_pooling() -> None:
    states = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_allclose(pool_tokens(states, mask, "mean"), [[1, 2], [6, 7]])
    np.testing.assert_allclose(pool_tokens(states, mask, "cls"), [[0, 1], [6, 7]])
