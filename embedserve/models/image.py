"""Image decoding and preprocessing for an image tower, as the manifest prescribes.

``ImagePreprocessor.preprocess`` is called from a thread pool: it touches no Pillow
globals and its only mutable state is a running estimate of what an image costs (a float,
replaced whole), so any number of threads may share one.
"""

from __future__ import annotations

import io
import math
import time
from concurrent.futures import Executor

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from embedserve.errors import EmbedServeError, InvalidArgument, ResourceExhausted, item_error
from embedserve.models.bundle import ImageTowerSpec

# Only the formats the API promises; Pillow would otherwise also try exotic decoders.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
# A downscale by more than this factor first averages whole blocks of pixels (Image.reduce), then
# resamples: at 3 Pillow documents the result as indistinguishable from resampling in one step.
REDUCING_GAP = 3.0
_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
IMAGES_PER_PART = 8  # images per decode task of a queued request
# A lone request's images are split over threads when this preprocessor's images have recently
# cost at least this much each. Measured, 32 images on 2 threads against 1 (2-core machine):
# 64x64 PNGs for a 64x64 tower (0.12 ms each) 5.5 against 3.8 ms, the part of each image that
# holds the GIL dominating; 128x128 PNGs for 64x64 (0.5 ms) 11.3 against 16.9 ms; 256x256 JPEGs
# for 224x224 (1.9 ms) 35 against 61 ms; 640x480 JPEGs 43 against 93 ms.
SPLIT_MIN_IMAGE_S = 0.3e-3
_COST_WEIGHT = 0.2  # of the newest run in the running estimate of seconds per image


class ImagePreprocessor:
    """Encoded image bytes → float32 [C, H, W], normalised as the tower expects.

    Steps: guard size → decode (first frame) → EXIF orientation → "L" or "RGB"
    (alpha composited onto white, 16-bit scaled to 8-bit) → resize so the image
    covers HxW (aspect kept) → centre crop → [0, 1] → ``(x - mean) / std``.

    Large images cost little more than small ones: a JPEG is decoded at the coarsest
    DCT scale (1/2, 1/4 or 1/8, Pillow's draft mode) that still covers HxW, and a
    large downscale first averages blocks of pixels (``REDUCING_GAP``). A 4032x3024
    photo for a 224x224 tower decodes 8 times smaller in each direction.
    """

    def __init__(self, spec: ImageTowerSpec, *, max_image_bytes: int, max_image_pixels: int) -> None:
        self.spec = spec
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self._mode = "L" if spec.channels == 1 else "RGB"
        self._resample = _RESAMPLE[spec.interpolation]
        self._mean = np.asarray(spec.mean, dtype=np.float32).reshape(-1, 1, 1)
        self._std = np.asarray(spec.std, dtype=np.float32).reshape(-1, 1, 1)
        self.image_s: float | None = None  # recent seconds per image (preprocess_many), None: none yet

    def preprocess(self, data: bytes, index: int) -> np.ndarray:
        """Decode and normalise one image; returns float32 [C, H, W].

        Raises ResourceExhausted (too many bytes or pixels) or InvalidArgument
        (not a decodable JPEG/PNG/WebP/BMP/GIF), both naming item ``index``.
        """
        if len(data) > self.max_image_bytes:
            raise item_error(
                ResourceExhausted, index, f"image is {len(data)} bytes, limit {self.max_image_bytes}"
            )
        if not data:
            raise item_error(InvalidArgument, index, "cannot decode image: no data")
        try:
            image = self._decode(data, index)
            pixels = self._to_array(self._fit(image))
        except EmbedServeError:
            raise
        except Image.DecompressionBombError:  # Pillow's own threshold, met before our header check could run
            raise item_error(
                ResourceExhausted, index, f"image has more pixels than the limit {self.max_image_pixels}"
            ) from None
        except MemoryError:
            raise item_error(ResourceExhausted, index, "image too large to decode") from None
        except UnidentifiedImageError:
            raise item_error(
                InvalidArgument, index, "cannot decode image: not a JPEG, PNG, WebP, BMP or GIF image"
            ) from None
        except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, EOFError, ...
            raise item_error(InvalidArgument, index, f"cannot decode image: {e}") from None
        return pixels

    def preprocess_many(
        self, datas: list[bytes], indices: list[int]
    ) -> tuple[list[np.ndarray], tuple[int, EmbedServeError] | None]:
        """``preprocess`` each in order, stopping at the first bad one: (arrays, None), or
        ([], (its index, its error))."""
        out = []
        started = time.perf_counter()
        for data, i in zip(datas, indices, strict=True):
            try:
                out.append(self.preprocess(data, i))
            except EmbedServeError as err:
                return [], (i, err)
        if out:
            each = (time.perf_counter() - started) / len(out)
            known = self.image_s
            self.image_s = each if known is None else known + _COST_WEIGHT * (each - known)
        return out, None

    def preprocess_all(
        self, datas: list[bytes], indices: list[int], pool: Executor | None = None, workers: int = 1
    ) -> list[np.ndarray]:
        """Every image preprocessed, in order; the first bad one (by index) raises its item
        error. With a ``pool``, when this preprocessor's images have recently cost at least
        ``SPLIT_MIN_IMAGE_S`` each, they are split into up to ``workers`` runs: this thread
        decodes the first while the pool decodes the others (Pillow and numpy release the GIL
        for the bulk of the work; for cheap images the part that holds it dominates, and
        threads would only contend)."""
        costly = self.image_s is not None and self.image_s >= SPLIT_MIN_IMAGE_S
        parts = min(workers, len(datas)) if pool is not None and costly else 1
        if parts <= 1:
            results = [self.preprocess_many(datas, indices)]
        else:
            bounds = [len(datas) * p // parts for p in range(parts + 1)]
            runs = list(zip(bounds, bounds[1:], strict=False))
            assert pool is not None
            others = [pool.submit(self.preprocess_many, datas[a:b], indices[a:b]) for a, b in runs[1:]]
            first = runs[0][1]
            results = [self.preprocess_many(datas[:first], indices[:first])]
            results += [f.result() for f in others]
        for _, error in results:  # runs in index order: the first error is the first bad image
            if error is not None:
                raise error[1]
        return [a for arrays, _ in results for a in arrays]

    def _decode(self, data: bytes, index: int) -> Image.Image:
        """Open lazily, check the pixel count from the header, then decode the first frame."""
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height > self.max_image_pixels:
            raise item_error(
                ResourceExhausted,
                index,
                f"image is {width}x{height} = {width * height} pixels, limit {self.max_image_pixels}",
            )
        if width < 1 or height < 1:
            raise item_error(InvalidArgument, index, f"cannot decode image: size {width}x{height}")
        orientation = None
        if image.format == "JPEG":  # its EXIF is read with the header (a PNG's may follow the pixels)
            orientation = _orientation(image)
            image.draft(image.mode, self._draft_size(image.size, orientation))
        image.load()  # decodes here; truncated data raises OSError
        if orientation is None:
            orientation = _orientation(image)
        if orientation == 1:
            return self._convert(image)  # upright: exif_transpose would only copy it
        return self._convert(ImageOps.exif_transpose(image))

    def _draft_size(self, size: tuple[int, int], orientation: int) -> tuple[int, int]:
        """The smallest size, in the file's own orientation (``size`` (W, H), EXIF
        ``orientation``), whose turned image still covers the tower's HxW: a JPEG decodes at the
        coarsest DCT scale that gives at least this (Pillow's ``draft``), leaving the last step
        to the resize."""
        height, width = self.spec.size
        w, h = size
        if orientation in _QUARTER_TURNS:
            width, height = height, width  # the tower's width will come from the file's height
        scale = max(width / w, height / h)
        return math.ceil(w * scale), math.ceil(h * scale)

    def _convert(self, image: Image.Image) -> Image.Image:
        """Any decoded mode → self._mode ("L" or "RGB")."""
        mode = image.mode
        if mode.startswith("I;16") or mode == "I":
            # Pillow's convert("L") clips 16-bit values at 255; keep the high byte instead.
            high = np.clip(np.asarray(image, dtype=np.int64) >> 8, 0, 255).astype(np.uint8)
            image = Image.fromarray(high, "L")
        elif mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba).convert("RGB")
        return image if image.mode == self._mode else image.convert(self._mode)

    def _fit(self, image: Image.Image) -> Image.Image:
        """Resize so the image covers (H, W) keeping its aspect ratio, then centre crop."""
        height, width = self.spec.size
        w, h = image.size
        if (w, h) != (width, height):
            scale = max(width / w, height / h)
            new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
            if (new_w, new_h) != (w, h):
                image = image.resize((new_w, new_h), self._resample, reducing_gap=REDUCING_GAP)
            left, top = round((new_w - width) / 2), round((new_h - height) / 2)
            image = image.crop((left, top, left + width, top + height))
        return image

    def _to_array(self, image: Image.Image) -> np.ndarray:
        """ "L"/"RGB" image of (H, W) → normalised float32 [C, H, W]."""
        # Divisions (not reciprocal products) to match torchvision's ToTensor + Normalize bit for bit.
        # The uint8 pixels are put in CHW order first, then each step runs in place over one
        # contiguous float32 array (on a transposed view the same steps cost 3x).
        pixels = np.asarray(image)
        chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        out = chw.astype(np.float32, order="C")
        out /= np.float32(255.0)
        out -= self._mean
        out /= self._std
        return out


def _orientation(image: Image.Image) -> int:
    """The image's EXIF orientation (1: upright)."""
    return int(image.getexif().get(ExifTags.Base.Orientation, 1))
