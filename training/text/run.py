"""Data and methods of the text runs: ``mlm`` (a text corpus) and ``clip`` (captioned images).

What the loop sees is the same as for images: ``data.inputs``, a tuple of tensors
indexed together per batch (MLM: token ids [N, T]; CLIP: pixels [N, C, H, W] and
caption ids [N, P, T]), and ``data.spec``, what ``build_method`` needs.

The tokenizer is learnt once per run and saved as ``RUN/tokenizer.json`` (a
resume or an export reads it back, never relearns it; under DDP rank 0 learns it
and the others load it); a CLIP run whose text tower starts from an MLM run
(``text_init``) uses that run's tokenizer. A run directory that already holds a
``tokenizer.json`` uses it as it is: the ``tokenizers`` trainer breaks ties in
hash-map order (huggingface/tokenizers#1794), so two learnings from the same
text can differ slightly; copy a run's tokenizer.json into a new run directory
to repeat that run exactly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from training.augment import Normalize, preset
from training.backbones import build_backbone
from training.config import FitConfig
from training.data import PixelSpec, channel_stats, render
from training.data.captions import CaptionedImages, all_combos, caption_manifest, captioned_split, combo_name
from training.methods.base import parse_options
from training.methods.clip import CLIP, CLIPOptions
from training.methods.mlm import MLM, MLMOptions
from training.text.corpus import load_corpus
from training.text.tokenizer import MASK, PAD, encode, load_tokenizer, train_tokenizer

log = logging.getLogger("training")

TEXT_METHODS = ("mlm", "clip")
TOKENIZER_FILE = "tokenizer.json"
CHUNK_WORDS = 40  # MLM: paragraphs are cut into pieces of this many words (about 50-60 tokens)
CAPTIONED_SHAPES = "captioned-shapes"


@dataclass(frozen=True)
class TextSpec:
    """What a text tower is built for: its tokenizer file and the ids that matter."""

    tokenizer_path: Path
    vocab_size: int
    max_length: int
    pad_id: int
    mask_id: int


@dataclass(frozen=True)
class PairSpec:
    pixels: PixelSpec
    text: TextSpec


@dataclass
class TextData:
    """MLM: training and held-out token ids int64 [N, T] (padding = ``spec.pad_id``)."""

    spec: TextSpec
    train_ids: torch.Tensor
    eval_ids: torch.Tensor

    @property
    def inputs(self) -> tuple[torch.Tensor, ...]:
        return (self.train_ids,)


@dataclass
class PairSet:
    """Captioned images ready for a model: pixels in [0, 1] and caption ids [N, P, T]."""

    images: CaptionedImages
    pixels: torch.Tensor
    captions: torch.Tensor


@dataclass
class PairData:
    """CLIP: the training pairs, and evaluation sets by name (captioned shapes: "seen", "held_out")."""

    spec: PairSpec
    train: PairSet
    evals: dict[str, PairSet]

    @property
    def inputs(self) -> tuple[torch.Tensor, ...]:
        return (self.train.pixels, self.train.captions)


def _text_spec(tokenizer: Tokenizer, path: Path, max_length: int) -> TextSpec:
    return TextSpec(
        path, tokenizer.get_vocab_size(), max_length, tokenizer.token_to_id(PAD), tokenizer.token_to_id(MASK)
    )


def _tokenizer(cfg: FitConfig, run_dir: Path, texts: list[str], min_frequency: int) -> tuple[Tokenizer, Path]:
    """The run's tokenizer: saved in ``run_dir``, else ``text_init``'s, else learnt from ``texts`` and saved."""
    path = run_dir / TOKENIZER_FILE
    if not path.exists():
        if cfg.text_init:
            content = (Path(cfg.text_init) / TOKENIZER_FILE).read_text(encoding="utf-8")
        else:
            content = train_tokenizer(texts, cfg.text.vocab_size, min_frequency).to_str(pretty=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # written whole, then renamed into place
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, path)
    return load_tokenizer(path), path


def chunks(paragraphs: list[str], words: int = CHUNK_WORDS) -> list[str]:
    """Paragraphs cut into pieces of at most ``words`` words (so little text is lost to truncation)."""
    out = []
    for paragraph in paragraphs:
        tokens = paragraph.split()
        out.extend(" ".join(tokens[i : i + words]) for i in range(0, len(tokens), words))
    return out


def prepare_mlm(cfg: FitConfig, run_dir: Path) -> TextData:
    train, held_out = load_corpus(cfg.data)
    train, held_out = chunks(train), chunks(held_out)
    tokenizer, path = _tokenizer(cfg, run_dir, train, min_frequency=2)
    spec = _text_spec(tokenizer, path, cfg.text.max_length)
    ids = torch.from_numpy(encode(tokenizer, train, spec.max_length))
    eval_ids = torch.from_numpy(encode(tokenizer, held_out, spec.max_length))
    return TextData(spec, ids, eval_ids)


def _caption_ids(tokenizer: Tokenizer, images: CaptionedImages, max_length: int) -> torch.Tensor:
    flat = [c for captions in images.captions for c in captions]
    ids = encode(tokenizer, flat, max_length)
    return torch.from_numpy(ids).reshape(len(images), len(images.captions[0]), -1)


def prepare_clip(cfg: FitConfig, run_dir: Path) -> PairData:
    if cfg.data == CAPTIONED_SHAPES:
        train, seen, held_out = captioned_split(size=cfg.size[0])
        evals = {"seen": seen, "held_out": held_out}
        extra_texts = [f"a {combo_name(s, c)}" for s, c in all_combos()]  # so prompts tokenize as words
    else:
        train = caption_manifest(Path(cfg.data))
        evals = {"eval": caption_manifest(Path(cfg.eval_data))} if cfg.eval_data else {}
        extra_texts = []
    texts = [c for captions in train.captions for c in captions] + extra_texts
    tokenizer, path = _tokenizer(cfg, run_dir, texts, min_frequency=1)
    unit = PixelSpec(3, tuple(cfg.size), (0.0,) * 3, (1.0,) * 3, cfg.interpolation)
    pixels = render(train.images, unit)
    mean, std = channel_stats(pixels)
    pixel_spec = PixelSpec(
        3, tuple(cfg.size), tuple(cfg.mean or mean), tuple(cfg.std or std), cfg.interpolation
    )
    spec = PairSpec(pixel_spec, _text_spec(tokenizer, path, cfg.text.max_length))

    def pair_set(images: CaptionedImages, pixels: np.ndarray) -> PairSet:
        return PairSet(
            images, torch.from_numpy(pixels), _caption_ids(tokenizer, images, spec.text.max_length)
        )

    return PairData(
        spec,
        pair_set(train, pixels),
        {name: pair_set(images, render(images.images, unit)) for name, images in evals.items()},
    )


def prepare_text_data(cfg: FitConfig, run_dir: Path) -> TextData | PairData:
    """The data of an ``mlm`` or ``clip`` run (its tokenizer saved in ``run_dir``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return prepare_mlm(cfg, run_dir) if cfg.method == "mlm" else prepare_clip(cfg, run_dir)


def _to_channels(
    weights: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Image-backbone weights fitted to ``target``'s input channels: a grayscale stem (1 channel, e.g.
    the digits SimCLR run) is spread over RGB as its weights / 3 per channel, which computes the
    same features from a grey image; anything else must match as it is."""
    out = dict(weights)
    for key, value in weights.items():
        want = target.get(key)
        if want is not None and value.dim() == 4 and value.shape[1] == 1 and want.shape[1] == 3:
            if value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
                out[key] = value.repeat(1, 3, 1, 1) / 3
    return out


def build_text_method(cfg: FitConfig, spec: TextSpec | PairSpec) -> MLM | CLIP:
    """A freshly initialised ``mlm`` or ``clip`` method (seeded by ``cfg.seed``), on the CPU.

    CLIP's towers start from other runs when asked: ``text_init`` (an MLM run: its
    Transformer) and ``image_init`` (an image run of any method: its backbone).
    """
    from training.run import checkpoint_path, load_checkpoint

    torch.manual_seed(cfg.seed)
    text_spec = spec.text if isinstance(spec, PairSpec) else spec
    transformer = cfg.text.build(text_spec.vocab_size)
    if cfg.method == "mlm":
        return MLM(
            transformer, parse_options(MLMOptions, cfg.method_options), text_spec.pad_id, text_spec.mask_id
        )
    assert isinstance(spec, PairSpec)
    backbone = build_backbone(cfg.backbone, spec.pixels.channels, spec.pixels.size)
    if cfg.text_init:
        state = load_checkpoint(checkpoint_path(Path(cfg.text_init)))["model"]
        transformer.load_state_dict(
            {k[len("transformer.") :]: v for k, v in state.items() if k.startswith("transformer.")}
        )
    if cfg.image_init:
        state = load_checkpoint(checkpoint_path(Path(cfg.image_init)))["model"]
        weights = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        backbone.load_state_dict(_to_channels(weights, backbone.state_dict()))
    return CLIP(
        backbone,
        Normalize(spec.pixels.mean, spec.pixels.std),
        preset(cfg.augment or "natural", **cfg.augment_overrides),
        transformer,
        parse_options(CLIPOptions, cfg.method_options),
        text_spec.pad_id,
    )
