"""Model bundles: a directory with ``embedserve.json`` plus ONNX towers and a tokenizer.

The manifest is the contract between ``training/`` (which writes bundles) and the
server (which only reads them); see DESIGN.md. Everything the server needs to
preprocess inputs lives here, so no training code is ever imported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedserve.errors import BundleError
from embedserve.metric import Metric

log = logging.getLogger("embedserve.models")

MANIFEST_NAME = "embedserve.json"
FORMAT_VERSION = 1
RESIZE_MODES = ("shorter_side",)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
POOLINGS = ("none", "mean", "cls")

_TOP_KEYS = {"format_version", "name", "version", "dim", "metric", "normalize", "image", "text", "provenance"}
_IMAGE_KEYS = {"file", "channels", "size", "resize", "mean", "std", "interpolation"}
_TEXT_KEYS = {"file", "tokenizer", "max_length", "pooling"}


@dataclass(frozen=True)
class ImageTowerSpec:
    """Image tower: ONNX input float32 [N, C, H, W], output [N, D].

    Preprocessing: decode → ``channels`` (1 = "L", 3 = "RGB") → resize so the image
    covers ``size`` = (H, W) → centre crop → scale to [0, 1] → ``(x - mean) / std``.
    """

    file: Path  # absolute path of the .onnx file
    channels: int
    size: tuple[int, int]  # (H, W) in pixels
    mean: tuple[float, ...]  # one per channel, in [0, 1] pixel units
    std: tuple[float, ...]
    resize: str = "shorter_side"
    interpolation: str = "bilinear"

    def to_json(self, bundle_dir: Path) -> dict[str, Any]:
        """The manifest's ``image`` object, with ``file`` relative to ``bundle_dir``."""
        return {
            "file": _relative(self.file, bundle_dir),
            "channels": self.channels,
            "size": list(self.size),
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }


@dataclass(frozen=True)
class TextTowerSpec:
    """Text tower: ONNX inputs int64 input_ids / attention_mask [N, T].

    Output [N, D] when ``pooling`` is "none" (pooled inside the graph, preferred),
    else token states [N, T, D] pooled by the server ("mean" over the mask, or "cls").
    """

    file: Path  # absolute path of the .onnx file
    tokenizer: Path  # absolute path of the tokenizers ``tokenizer.json``
    max_length: int  # tokens, special tokens included
    pooling: str = "none"

    def to_json(self, bundle_dir: Path) -> dict[str, Any]:
        """The manifest's ``text`` object, with file names relative to ``bundle_dir``."""
        return {
            "file": _relative(self.file, bundle_dir),
            "tokenizer": _relative(self.tokenizer, bundle_dir),
            "max_length": self.max_length,
            "pooling": self.pooling,
        }


@dataclass(frozen=True)
class Manifest:
    """A bundle's ``embedserve.json``: read and validated by :meth:`load`, written by :meth:`write`.

    ``path`` is the bundle directory; tower files are absolute paths inside it.
    """

    name: str
    version: str
    dim: int
    metric: Metric
    normalize: bool
    image: ImageTowerSpec | None
    text: TextTowerSpec | None
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path = Path(".")

    @property
    def modalities(self) -> list[str]:
        """The towers this bundle has: a subset of ["image", "text"], in that order."""
        return [m for m, spec in (("image", self.image), ("text", self.text)) if spec]

    @classmethod
    def load(cls, bundle_dir: Path) -> Manifest:
        """Read and validate ``bundle_dir/embedserve.json``; raises BundleError."""
        return load_manifest(bundle_dir)

    def to_json(self) -> dict[str, Any]:
        """The manifest document, file names relative to ``path``."""
        doc: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "dim": self.dim,
            "metric": self.metric.value,
            "normalize": self.normalize,
        }
        if self.image is not None:
            doc["image"] = self.image.to_json(self.path)
        if self.text is not None:
            doc["text"] = self.text.to_json(self.path)
        doc["provenance"] = self.provenance
        return doc

    def write(self) -> Path:
        """Write ``path/embedserve.json`` (the towers' files must already be in ``path``)."""
        target = self.path / MANIFEST_NAME
        target.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return target


def _relative(file: Path, bundle_dir: Path) -> str:
    """``file`` as the manifest names it: a path relative to the bundle directory."""
    try:
        return Path(file).resolve().relative_to(Path(bundle_dir).resolve()).as_posix()
    except ValueError:
        raise BundleError(f"{file} is not inside the bundle directory {bundle_dir}") from None


class _Fields:
    """Typed access to one JSON object, with errors naming the file and the field."""

    def __init__(self, source: Path, obj: Any, prefix: str = "") -> None:
        self.source, self.prefix = source, prefix
        if not isinstance(obj, dict):
            raise self.error("", f"must be a JSON object, got {type(obj).__name__}")
        self.obj: dict[str, Any] = obj

    def error(self, key: str, message: str) -> BundleError:
        where = f"{self.prefix}{key}" or "top level"
        return BundleError(f"{self.source}: field '{where}' {message}")

    def warn_unknown(self, known: set[str]) -> None:
        for key in sorted(set(self.obj) - known):
            log.warning("%s: ignoring unknown field '%s%s'", self.source, self.prefix, key)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.obj or self.obj[key] is None:
            if default is ...:
                raise self.error(key, "is missing")
            return default
        value = self.obj[key]
        # bool is an int in Python; a manifest saying "dim": true is a mistake.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            names = "/".join(k.__name__ for k in _tuple(kind))
            raise self.error(key, f"must be {names}, got {json.dumps(value)}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value not in options:
            raise self.error(key, f"must be one of {', '.join(options)}; got '{value}'")
        return value

    def positive_int(self, key: str) -> int:
        value = self.get(key, int)
        if value < 1:
            raise self.error(key, f"must be >= 1, got {value}")
        return value

    def file(self, key: str, bundle_dir: Path) -> Path:
        rel = self.get(key, str)
        path = (bundle_dir / rel).resolve()
        if not path.is_file():
            raise self.error(key, f"names '{rel}', which is not a file in {bundle_dir}")
        return path

    def floats(self, key: str, length: int) -> tuple[float, ...]:
        values = self.get(key, list)
        if len(values) != length or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        ):
            raise self.error(key, f"must be a list of {length} numbers (one per channel), got {values}")
        return tuple(float(v) for v in values)


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _image_spec(source: Path, obj: Any, bundle_dir: Path) -> ImageTowerSpec:
    f = _Fields(source, obj, "image.")
    f.warn_unknown(_IMAGE_KEYS)
    channels = f.get("channels", int)
    if channels not in (1, 3):
        raise f.error("channels", f"must be 1 or 3, got {channels}")
    size = f.get("size", list)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise f.error("size", f"must be [H, W] with positive integers, got {size}")
    std = f.floats("std", channels)
    if any(s <= 0 for s in std):
        raise f.error("std", f"must be positive, got {list(std)}")
    return ImageTowerSpec(
        file=f.file("file", bundle_dir),
        channels=channels,
        size=(size[0], size[1]),
        mean=f.floats("mean", channels),
        std=std,
        resize=f.choice("resize", RESIZE_MODES, "shorter_side"),
        interpolation=f.choice("interpolation", INTERPOLATIONS, "bilinear"),
    )


def _text_spec(source: Path, obj: Any, bundle_dir: Path) -> TextTowerSpec:
    f = _Fields(source, obj, "text.")
    f.warn_unknown(_TEXT_KEYS)
    return TextTowerSpec(
        file=f.file("file", bundle_dir),
        tokenizer=f.file("tokenizer", bundle_dir),
        max_length=f.positive_int("max_length"),
        pooling=f.choice("pooling", POOLINGS, "none"),
    )


def load_manifest(bundle_dir: Path) -> Manifest:
    """Read and validate ``bundle_dir/embedserve.json``; raises BundleError."""
    bundle_dir = Path(bundle_dir).resolve()
    source = bundle_dir / MANIFEST_NAME
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir}: not a model bundle, {MANIFEST_NAME} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{source}: cannot read manifest: {e}") from None

    f = _Fields(source, raw)
    f.warn_unknown(_TOP_KEYS)
    fmt = f.get("format_version", int, FORMAT_VERSION)
    if fmt != FORMAT_VERSION:
        raise f.error("format_version", f"is {fmt}; this server reads format {FORMAT_VERSION}")
    name = f.get("name", str)
    if not name.strip() or name != name.strip():
        raise f.error("name", f"must be non-empty without surrounding spaces, got '{name}'")
    version = f.get("version", str)
    dim = f.positive_int("dim")
    metric = Metric(f.choice("metric", tuple(Metric)))
    normalize = f.get("normalize", bool)
    image = _image_spec(source, raw["image"], bundle_dir) if raw.get("image") is not None else None
    text = _text_spec(source, raw["text"], bundle_dir) if raw.get("text") is not None else None
    if image is None and text is None:
        raise f.error("image", "and 'text' are both missing: a bundle needs at least one tower")
    provenance = f.get("provenance", dict, {})
    return Manifest(name, version, dim, metric, normalize, image, text, provenance, bundle_dir)


def discover_bundles(path: Path) -> list[Path]:
    """Bundle directories under ``path``: itself if it has a manifest, else its
    immediate subdirectories that do (sorted). Raises BundleError if there are none."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such directory")
    if (path / MANIFEST_NAME).is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file())
    if not found:
        raise BundleError(f"{path}: no model bundle: neither {MANIFEST_NAME} nor */{MANIFEST_NAME}")
    return found
