"""scikit-learn's handwritten digits as 8-bit grayscale PNGs, with the fixed split.

``load_digits`` has 1,797 images of 8x8 with values 0..16 (counts of set pixels in
4x4 blocks of 32x32 bitmaps). A client sends them as 8-bit PNGs, so here each value
v becomes round(v * 255 / 16). The split is scikit-learn's ``train_test_split``
with test_size=500, random_state=0, stratified: 1,297 train and 500 test images.
"""

from __future__ import annotations

import numpy as np

from training.data.images import ImageSet, encode_png

TEST_SIZE = 500
SPLIT_SEED = 0


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: (uint8 [N, 8, 8], int64 labels [N])."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return pixels, bunch.target.astype(np.int64)


def digits_split() -> tuple[ImageSet, ImageSet]:
    """(train: 1,297 images, test: 500 images) as PNG-encoded ``ImageSet``s with labels 0..9."""
    from sklearn.model_selection import train_test_split

    pixels, labels = digits_uint8()
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=labels
    )
    classes = tuple(str(c) for c in range(10))

    def make(idx: np.ndarray) -> ImageSet:
        return ImageSet([encode_png(pixels[i]) for i in idx], labels[idx], classes, channels=1)

    return make(idx_train), make(idx_test)
