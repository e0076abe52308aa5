"""Tokenization, padding and (optional) out-of-graph pooling for a text tower."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from embedserve.errors import BundleError, InvalidArgument, ResourceExhausted, item_error

_PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>")


class TextPreprocessor:
    """Texts → per-text int64 token ids (truncated to ``max_length``) → padded batches.

    Thread-safe after construction: ``encode`` only reads the tokenizer, and
    ``Tokenizer.encode_batch`` runs in Rust without the GIL.
    """

    def __init__(self, tokenizer_path: Path, max_length: int, max_text_bytes: int = 64 << 10) -> None:
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise BundleError(f"{tokenizer_path}: cannot load tokenizer: {e}") from None
        padding = tokenizer.padding
        if padding is not None:
            self.pad_id = int(padding["pad_id"])
        else:
            found = (tokenizer.token_to_id(t) for t in _PAD_TOKENS)
            self.pad_id = next((i for i in found if i is not None), 0)
        # We pad per coalesced batch ourselves, so each text keeps its true length.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_text_bytes = max_text_bytes
        self.vocab_size = tokenizer.get_vocab_size()

    def check(self, text: str, index: int) -> None:
        """The rule for a text before any work: not empty or blank, at most ``max_text_bytes`` in UTF-8."""
        if not text.strip():
            raise item_error(InvalidArgument, index, "text is empty")
        # a str of n characters is at most 4n bytes in UTF-8: encode only texts that might be over
        if 4 * len(text) > self.max_text_bytes:
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > self.max_text_bytes:
                raise item_error(
                    ResourceExhausted, index, f"text is {size} bytes of UTF-8, limit {self.max_text_bytes}"
                )

    def encode(
        self, texts: list[str], first_index: int = 0, *, indices: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """One int64 [T_i] id array per text, T_i <= max_length (special tokens included).

        Item k is reported as ``indices[k]`` if given, else ``first_index + k``;
        empty or whitespace-only text, or text without tokens, is InvalidArgument.
        """
        where = list(indices) if indices is not None else range(first_index, first_index + len(texts))
        for k, text in enumerate(texts):
            self.check(text, where[k])
        ids, _ = self.tokenize(texts)
        for k, row in enumerate(ids):
            if row.size == 0:
                raise item_error(InvalidArgument, where[k], "text has no tokens")
        return ids

    def tokenize(self, texts: list[str]) -> tuple[list[np.ndarray], list[bool]]:
        """One int64 [T_i] id array per text (truncated, unchecked: T_i may be 0), and per text
        whether tokens past ``max_length`` were cut off. One batched call into the tokenizers library."""
        encodings = self.tokenizer.encode_batch(texts)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        return ids, [bool(e.overflowing) for e in encodings]

    def pad(self, batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Pad to the longest: (input_ids [N, T], attention_mask [N, T]), both int64."""
        longest = max((len(row) for row in batch), default=1)
        input_ids = np.full((len(batch), longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(batch), longest), dtype=np.int64)
        for i, row in enumerate(batch):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        return input_ids, attention_mask


def pool_tokens(states: np.ndarray, attention_mask: np.ndarray, pooling: str) -> np.ndarray:
    """Token states [N, T, D] → [N, D]: "mean" over unmasked tokens, or "cls" (first token)."""
    if pooling == "cls":
        return states[:, 0, :]
    if pooling == "mean":
        mask = attention_mask[:, :, None].astype(states.dtype)
        counts = np.maximum(mask.sum(axis=1), 1.0)
        return (states * mask).sum(axis=1) / counts
    raise ValueError(f"unknown pooling '{pooling}'")
