"""Image decoding, conversion, geometry and the guards against hostile inputs."""

from __future__ import annotations

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedserve.errors import InvalidArgument, ResourceExhausted
from embedserve.models import ImagePreprocessor, ImageTowerSpec
from tests.tiny_models import encode_image, random_image


def preprocessor(
    channels: int = 3,
    size: tuple[int, int] = (8, 8),
    interpolation: str = "bilinear",
    *,
    max_image_bytes: int = 1 << 20,
    max_image_pixels: int = 1 << 20,
) -> ImagePreprocessor:
    """Identity normalisation (mean 0, std 1), so outputs are pixel values in [0, 1]."""
    spec = ImageTowerSpec(
        file=Path("unused.onnx"),
        channels=channels,
        size=size,
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
        interpolation=interpolation,
    )
    return ImagePreprocessor(spec, max_image_bytes=max_image_bytes, max_image_pixels=max_image_pixels)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims widthxheight in its header, with a few bytes of (bogus) pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"\x00" * 16) + chunk(b"IEND", b"")


def test_normalisation_uses_manifest_mean_and_std() -> None:
    spec = ImageTowerSpec(Path("x"), 3, (4, 4), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    pre = ImagePreprocessor(spec, max_image_bytes=1 << 20, max_image_pixels=1 << 20)
    out = pre.preprocess(encode_image(np.full((4, 4, 3), 255, np.uint8)), 0)
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 3.0, 0.5])


@pytest.mark.parametrize(
    ("fmt", "tolerance"), [("PNG", 0), ("BMP", 0), ("JPEG", 0.08), ("WEBP", 0.08), ("GIF", 0.1)]
)
def test_formats_decode(fmt: str, tolerance: float) -> None:
    # A smooth image, so lossy formats stay close to the lossless reference.
    y, x = np.mgrid[0:16, 0:24]
    pixels = np.stack([x * 10, y * 15, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    pre = preprocessor()
    reference = pre.preprocess(encode_image(pixels, "PNG"), 0)
    out = pre.preprocess(encode_image(pixels, fmt), 0)
    assert out.shape == (3, 8, 8)
    assert np.abs(out - reference).max() <= tolerance + 1e-7


def test_gif_first_frame_is_used() -> None:
    frames = [Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    out = preprocessor(channels=1).preprocess(buffer.getvalue(), 0)
    assert out.max() == 0.0


def test_exif_orientation_is_applied() -> None:
    # Stored 40 wide x 20 high: left half black, right half white.
    # Orientation 6 = "rotate 90° clockwise to display": displayed 20 x 40, black on top.
    stored = np.zeros((20, 40), np.uint8)
    stored[:, 20:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    pre = preprocessor(channels=1, size=(8, 8))

    plain = pre.preprocess(encode_image(stored, "JPEG", quality=95), 0)[0]
    assert plain[:, :3].mean() < 0.1 and plain[:, 5:].mean() > 0.9  # left/right, no tag

    rotated = pre.preprocess(encode_image(stored, "JPEG", quality=95, exif=exif.tobytes()), 0)[0]
    assert rotated[:3].mean() < 0.1 and rotated[5:].mean() > 0.9  # top/bottom with tag


def test_grey_to_rgb_and_rgb_to_grey() -> None:
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    grey = preprocessor(channels=1).preprocess(encode_image(red), 0)
    assert grey.shape == (1, 8, 8)
    np.testing.assert_allclose(grey, 76 / 255, atol=1 / 255)  # ITU-R 601 luma of pure red

    rgb = preprocessor(channels=3).preprocess(encode_image(np.full((8, 8), 200, np.uint8)), 0)
    assert rgb.shape == (3, 8, 8)
    np.testing.assert_allclose(rgb, 200 / 255)


def test_alpha_is_composited_onto_white() -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    rgba[:4, :, 3] = 255  # top half opaque black
    out = preprocessor(channels=1).preprocess(encode_image(rgba), 0)[0]
    np.testing.assert_allclose(out[:4], 0.0)
    np.testing.assert_allclose(out[4:], 1.0)


def test_sixteen_bit_png_keeps_its_range() -> None:
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    out = preprocessor(channels=1).preprocess(encode_image(ramp), 0)[0]
    np.testing.assert_allclose(out, (ramp >> 8) / 255, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "size", "axis"),
    [
        ((10, 30), (5, 5), 1),  # wide image, square target: the middle third of the columns
        ((30, 10), (5, 5), 0),  # tall image: the middle third of the rows
        ((16, 16), (4, 8), 0),  # square image, wide target: the middle half of the rows
    ],
)
def test_resize_covers_then_centre_crops(shape: tuple[int, int], size: tuple[int, int], axis: int) -> None:
    pixels = np.zeros(shape, np.uint8)
    n = shape[axis]
    band = [slice(None), slice(None)]
    band[axis] = slice(n // 4, n - n // 4) if size == (4, 8) else slice(n // 3, n - n // 3)
    pixels[tuple(band)] = 255
    out = preprocessor(channels=1, size=size, interpolation="nearest").preprocess(encode_image(pixels), 0)
    assert out.shape == (1, *size)
    np.testing.assert_array_equal(out, 1.0)  # only the white middle band is left


def test_crop_keeps_the_centre_of_a_marker() -> None:
    pixels = np.zeros((40, 80), np.uint8)
    pixels[16:24, 36:44] = 255  # an 8x8 white square in the centre
    out = preprocessor(channels=1, size=(20, 20), interpolation="nearest").preprocess(
        encode_image(pixels), 0
    )[0]
    # resized to 40x20 (WxH), cropped to columns 10..30: the square lands at rows 8..12, cols 8..12
    assert out[8:12, 8:12].min() == 1.0
    assert out.sum() == 16


def test_oversized_bytes() -> None:
    data = encode_image(random_image(0))
    with pytest.raises(ResourceExhausted, match=rf"^item 4: image is {len(data)} bytes, limit 100$"):
        preprocessor(max_image_bytes=100).preprocess(data, 4)


def test_too_many_pixels_is_refused_before_decoding() -> None:
    # The header alone claims 64 M pixels; there is no pixel data, so decoding would fail differently.
    with pytest.raises(ResourceExhausted, match=r"^item 1: image is 8000x8000 = 64000000 pixels"):
        preprocessor(max_image_pixels=40_000_000).preprocess(png_header(8000, 8000), 1)
    # Beyond Pillow's own bomb limit: the message names the server's limit, not Pillow's 178,956,970.
    with pytest.raises(ResourceExhausted, match=r"^item 1: image has more pixels than the limit 40000000$"):
        preprocessor(max_image_pixels=40_000_000).preprocess(png_header(100_000, 100_000), 1)
    with pytest.raises(ResourceExhausted, match="limit 5000"):
        preprocessor(max_image_pixels=5000).preprocess(encode_image(random_image(0, 100, 100)), 0)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage, not an image",
        encode_image(random_image(0))[:60],  # truncated PNG
        png_header(8, 8),  # header without pixel data
        b"GIF89a" + b"\x00" * 20,
    ],
)
def test_undecodable_is_invalid_argument(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match=r"^item 2: cannot decode image: "):
        preprocessor().preprocess(data, 2)


def test_thread_safe() -> None:
    pre = preprocessor()
    images = [encode_image(random_image(seed, 10 + seed, 30 - seed)) for seed in range(16)]
    expected = [pre.preprocess(data, i) for i, data in enumerate(images)]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(4):
            got = list(pool.map(pre.preprocess, images, range(16)))
            for a, b in zip(got, expected, strict=True):
                np.testing.assert_array_equal(a, b)


def _decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The size each JPEG decode produces (recorded from Pillow's loader)."""
    from PIL import JpegImagePlugin

    sizes: list[tuple[int, int]] = []
    load = JpegImagePlugin.JpegImageFile.load

    def recording(self):
        out = load(self)
        sizes.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", recording)
    return sizes


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_large_jpeg_decodes_at_the_coarsest_scale_that_covers_the_tower(monkeypatch, orientation) -> None:
    """A 1600x400 JPEG for a 32x128 (HxW) tower decodes at a reduced DCT scale, never below what
    covers the tower once its EXIF turn is applied, and matches the full decode closely."""
    y, x = np.mgrid[0:400, 0:1600]
    pixels = np.stack(
        [128 + 100 * np.sin(x / 37.0), 128 + 100 * np.cos(y / 23.0), (x + y) % 256], axis=-1
    ).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    jpeg = encode_image(pixels, "JPEG", quality=95, exif=exif.tobytes())
    full = Image.open(io.BytesIO(jpeg))
    full.load()  # the whole image, no draft
    reference_png = encode_image(np.asarray(full), "PNG")
    pre = preprocessor(size=(32, 128), interpolation="bicubic")
    sizes = _decoded_sizes(monkeypatch)
    out = pre.preprocess(jpeg, 0)
    assert out.shape == (3, 32, 128)
    # upright, the tower's 128 columns come from 1600 (1/8 leaves 200); turned, from 400 (1/2: 200)
    assert set(sizes) == {(200, 50) if orientation == 1 else (800, 200)}
    exif_png = Image.Exif()
    exif_png[0x0112] = orientation
    buffer = io.BytesIO()
    Image.open(io.BytesIO(reference_png)).save(buffer, "PNG", exif=exif_png.tobytes())
    reference = pre.preprocess(buffer.getvalue(), 0)  # PNG: decoded whole, then resized
    assert np.abs(out - reference).mean() < 0.01 and np.abs(out - reference).max() < 0.1


def test_preprocess_all_splits_costly_images_over_a_pool_keeps_order_and_raises_the_first_bad_one() -> None:
    import threading

    from embedserve.models.image import SPLIT_MIN_IMAGE_S

    pre = preprocessor()
    images = [encode_image(random_image(i)) for i in range(12)]
    threads: list[str] = []
    many = pre.preprocess_many

    def recording(datas, indices):
        threads.append(threading.current_thread().name)
        return many(datas, indices)

    pre.preprocess_many = recording  # type: ignore[method-assign]
    with ThreadPoolExecutor(2, thread_name_prefix="decode-test") as pool:
        alone = pre.preprocess_all(images, list(range(12)), pool, workers=3)  # no estimate yet
        assert len(threads) == 1 and not threads[0].startswith("decode-test")
        assert pre.image_s is not None and 0 < pre.image_s < SPLIT_MIN_IMAGE_S  # 12x20 PNGs are cheap
        assert len(pre.preprocess_all(images, list(range(12)), pool, workers=3)) == 12
        assert len(threads) == 2 and not threads[1].startswith("decode-test")  # still one thread
        pre.image_s = SPLIT_MIN_IMAGE_S  # as if the last images had been costly
        threads.clear()
        out = pre.preprocess_all(images, list(range(12)), pool, workers=3)
        assert len(threads) == 3 and sum(t.startswith("decode-test") for t in threads) == 2
        assert all(np.array_equal(a, b) for a, b in zip(out, alone, strict=True))
        broken = list(images)
        broken[10], broken[5] = b"not an image", b"\x89PNG broken"
        pre.image_s = SPLIT_MIN_IMAGE_S
        with pytest.raises(InvalidArgument, match="item 5"):
            pre.preprocess_all(broken, list(range(12)), pool, workers=3)
