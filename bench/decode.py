"""Image preprocessing cost: embedserve's ImagePreprocessor against raw Pillow on photo-sized inputs.

    python bench/decode.py [--rounds 5] [--n 20] [--size 224]

For each input (generated photo-like JPEGs of 640x480, 1024x768 and 4032x3024, and a 1024x768
PNG), CPU time per image in this process, one thread, interleaved rounds, medians, of:

* raw Pillow, full decode: ``Image.open`` + ``load`` + ``convert("RGB")`` + one resize so the
  image covers the tower's input + centre crop + float32 CHW (what a plain pipeline does);
* raw Pillow at its best: the same with ``draft`` (JPEG decoded at the coarsest DCT scale that
  still covers the input) and ``reducing_gap=3`` on the resize (the way ``Image.thumbnail``
  shrinks): the least Pillow can do for the same tensor;
* embedserve's ``ImagePreprocessor.preprocess`` (size checks, EXIF orientation, mode handling
  and normalisation included).

Ratios are raw-best / embedserve (below 1: embedserve costs more). Quality: the mean and the
largest absolute difference, in 8-bit levels, between embedserve's tensor and the full decode's.

Then a lone request's 32 images, wall time: raw Pillow at its best on a thread per core (one
contiguous run of images each) against ``ImagePreprocessor.preprocess_all`` with the server's
decode pool (it splits images of 16 KB or more on average over the cores, and decodes smaller
ones on one thread, where threads would only contend for the GIL).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedserve.models import ImagePreprocessor, ImageTowerSpec  # noqa: E402


def photo(width: int, height: int, seed: int) -> np.ndarray:
    """uint8 [height, width, 3]: smooth shading, edges and fine texture, like a photo."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 64 + 2, width // 64 + 2, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), np.float32)
    y, x = np.mgrid[0:height, 0:width]
    edges = 60.0 * (((x // 97) + (y // 61)) % 2)[..., None]
    grain = rng.normal(0, 6, (height, width, 1))
    return np.clip(base * 0.8 + edges + grain, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def raw_pillow(data: bytes, size: int, best: bool) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    w, h = image.size
    scale = max(size / w, size / h)
    if best and image.format == "JPEG":
        image.draft("RGB", (int(np.ceil(w * scale)), int(np.ceil(h * scale))))
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    scale = max(size / w, size / h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    image = image.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0 if best else None)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    image = image.crop((left, top, left + size, top + size))
    out = np.asarray(image).transpose(2, 0, 1).astype(np.float32, order="C")  # CHW, then in place
    out /= np.float32(255.0)
    return out


def cpu_per_image(fn, data: bytes, n: int) -> float:
    t = time.process_time()
    for _ in range(n):
        fn(data)
    return (time.process_time() - t) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n", type=int, default=20, help="images per measurement")
    p.add_argument("--size", type=int, default=224, help="the tower's input side")
    args = p.parse_args()
    spec = ImageTowerSpec(Path("unused.onnx"), 3, (args.size, args.size), mean=(0.0,) * 3, std=(1.0,) * 3)
    pre = ImagePreprocessor(spec, max_image_bytes=64 << 20, max_image_pixels=1 << 26)
    inputs = [
        ("JPEG 640x480", encode(photo(640, 480, 1), "JPEG")),
        ("JPEG 1024x768", encode(photo(1024, 768, 2), "JPEG")),
        ("JPEG 4032x3024", encode(photo(4032, 3024, 3), "JPEG")),
        ("PNG 1024x768", encode(photo(1024, 768, 4), "PNG")),
        ("PNG 64x64", encode(photo(64, 64, 5), "PNG")),
    ]
    ways = {
        "raw Pillow, full decode": lambda d: raw_pillow(d, args.size, best=False),
        "raw Pillow, draft + reducing_gap": lambda d: raw_pillow(d, args.size, best=True),
        "embedserve preprocess": lambda d: pre.preprocess(d, 0),
    }
    print(
        f"{args.rounds} interleaved rounds of {args.n} images, CPU ms per image (median), to {args.size}x{args.size}"
    )
    print(
        f"| input | {' | '.join(ways)} | embedserve vs raw best | vs full decode | mean / max diff (8-bit) |"
    )
    print("|---|" + "---|" * (len(ways) + 3))
    for name, data in inputs:
        n = max(2, args.n // 8) if "4032" in name else args.n
        times: dict[str, list[float]] = {w: [] for w in ways}
        for _ in range(args.rounds):
            for way, fn in ways.items():
                times[way].append(cpu_per_image(fn, data, n))
        ms = {w: statistics.median(t) * 1e3 for w, t in times.items()}
        diff = np.abs(pre.preprocess(data, 0) - raw_pillow(data, args.size, best=False)) * 255
        ours = ms["embedserve preprocess"]
        print(
            f"| {name} | {' | '.join(f'{v:.2f}' for v in ms.values())} | "
            f"{ms['raw Pillow, draft + reducing_gap'] / ours:.2f} | "
            f"{ms['raw Pillow, full decode'] / ours:.1f}x faster | {diff.mean():.2f} / {diff.max():.0f} |"
        )
    cores = os.cpu_count() or 1
    print(f"\n32 images in one request, wall ms (median), {cores} threads")
    print("| input | raw Pillow best, a thread per core | embedserve preprocess_all | raw / embedserve |")
    print("|---|---|---|---|")
    with ThreadPoolExecutor(cores) as pool:

        def raw_parallel(datas: list[bytes]) -> None:
            runs = [datas[len(datas) * p // cores : len(datas) * (p + 1) // cores] for p in range(cores)]
            list(pool.map(lambda run: [raw_pillow(d, args.size, best=True) for d in run], runs))

        for name, data in inputs:
            if "4032" in name:
                continue
            datas, index = [data] * 32, list(range(32))
            raw_ms, ours_ms = [], []
            for _ in range(args.rounds):
                t = time.perf_counter()
                raw_parallel(datas)
                raw_ms.append(time.perf_counter() - t)
                t = time.perf_counter()
                pre.preprocess_all(datas, index, pool, cores)
                ours_ms.append(time.perf_counter() - t)
            raw_t, ours_t = statistics.median(raw_ms) * 1e3, statistics.median(ours_ms) * 1e3
            print(f"| {name} | {raw_t:.1f} | {ours_t:.1f} | {raw_t / ours_t:.2f} |")


if __name__ == "__main__":
    main()
