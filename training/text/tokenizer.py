"""A BERT-style WordPiece tokenizer, trained with the ``tokenizers`` library.

The trained tokenizer is saved as the bundle's ``tokenizer.json`` and the server
tokenizes with exactly that file (``embedserve.models.text.TextPreprocessor``);
training tokenizes through the same library and settings (``encode``), so the
ids a model was trained on are the ids it is served.

Normalisation: Unicode NFD, accents stripped, lowercase (``BertNormalizer``);
pre-tokenisation on whitespace and punctuation; each text is wrapped as
``[CLS] ... [SEP]``; padding id 0 (``[PAD]``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # ids 0..4, in this order


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4000, min_frequency: int = 2) -> Tokenizer:
    """A WordPiece tokenizer learnt from ``texts`` (at most ``vocab_size`` tokens, specials included)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS)
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in (CLS, SEP)],
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(PAD), pad_token=PAD)
    return tokenizer


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def encode(tokenizer: Tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Token ids int64 [N, T]: each text as the server tokenizes it (truncated to ``max_length``),
    padded with ``[PAD]`` to the longest; the attention mask is ``ids != pad id``."""
    pad_id = tokenizer.token_to_id(PAD)
    tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's settings stay as they are
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    rows = [e.ids for e in tokenizer.encode_batch(texts)]
    out = np.full((len(rows), max((len(r) for r in rows), default=1)), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out
