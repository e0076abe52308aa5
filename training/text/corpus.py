"""Text corpora for masked-language modelling, with a fixed held-out split and no download.

Built in: ``pydoc`` — the help topics that ship with Python (``pydoc_data.topics``:
79 topics, ~465k characters of English prose about the language). Paragraphs
(blank-line separated, whitespace collapsed, at least ``MIN_WORDS`` words) are
the documents, taken topic by topic in sorted order; every 10th is held out.

Or any text file or folder (``*.txt``, ``*.md``, ``*.rst``): paragraphs as above,
every 10th held out.
"""

from __future__ import annotations

import re
from pathlib import Path

MIN_WORDS = 5
TEXT_SUFFIXES = (".txt", ".md", ".rst")


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs with whitespace collapsed, those of ``MIN_WORDS``+ words."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        words = block.split()
        if len(words) >= MIN_WORDS:
            out.append(" ".join(words))
    return out


def pydoc_corpus() -> tuple[list[str], list[str]]:
    """(train, held-out) paragraphs of Python's help topics; every 10th paragraph is held out."""
    from pydoc_data.topics import topics

    return split([p for name in sorted(topics) for p in paragraphs(topics[name])])


def file_corpus(source: Path) -> tuple[list[str], list[str]]:
    """(train, held-out) paragraphs of a text file or of every text file under a folder."""
    files = sorted(p for p in source.rglob("*") if p.suffix in TEXT_SUFFIXES) if source.is_dir() else [source]
    docs = [p for f in files for p in paragraphs(f.read_text(encoding="utf-8", errors="replace"))]
    if not docs:
        raise ValueError(f"{source}: no paragraphs of {MIN_WORDS}+ words found")
    return split(docs)


def split(docs: list[str]) -> tuple[list[str], list[str]]:
    """(train, held-out): repeats dropped, then every 10th document held out; fixed, seed-free.

    Dropping repeats first (help topics repeat grammar lines and notes) keeps held-out
    text out of the training set.
    """
    unique = list(dict.fromkeys(docs))
    return [d for i, d in enumerate(unique) if i % 10 != 9], [d for i, d in enumerate(unique) if i % 10 == 9]


def load_corpus(source: str) -> tuple[list[str], list[str]]:
    """``"pydoc"`` or a path → (train, held-out) paragraphs."""
    if source == "pydoc":
        return pydoc_corpus()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{source}: neither the built-in corpus 'pydoc' nor a text file or folder")
    return file_corpus(path)
