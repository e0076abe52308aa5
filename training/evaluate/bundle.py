"""Embeddings from an exported bundle exactly as the server makes them (no torch).

Encoded images → ``ImagePreprocessor`` (the manifest's channels, size, resize,
interpolation, mean, std) → ONNX Runtime on the bundle's ``image.onnx`` → L2
normalisation if the manifest asks. The same code the server runs, minus gRPC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedserve.metric import l2_normalize
from embedserve.models import ImagePreprocessor, TowerSession, load_manifest


def bundle_embed(
    bundle_dir: Path,
    images: list[bytes],
    batch_size: int = 256,
    threads: int = 2,
    onnx_file: Path | None = None,
) -> np.ndarray:
    """float32 [N, dim] embeddings of encoded ``images``; ``onnx_file`` swaps in a variant graph."""
    manifest = load_manifest(Path(bundle_dir))
    if manifest.image is None:
        raise ValueError(f"{bundle_dir}: bundle has no image tower")
    pre = ImagePreprocessor(manifest.image, max_image_bytes=1 << 30, max_image_pixels=1 << 30)
    session = TowerSession(
        onnx_file or manifest.image.file,
        ["CPUExecutionProvider"],
        intra_op_threads=threads,
        modality="image",
        dim=manifest.dim,
    )
    out = []
    for start in range(0, len(images), batch_size):
        batch = np.stack(
            [pre.preprocess(b, start + i) for i, b in enumerate(images[start : start + batch_size])]
        )
        emb = session.run({session.input_names[0]: batch})
        out.append(l2_normalize(emb) if manifest.normalize else emb)
    return np.concatenate(out).astype(np.float32)
