"""The whole embed path through real ORT sessions on tiny bundles."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from embedserve.config import ServerConfig
from embedserve.errors import DeadlineExceeded, InvalidArgument, NotFound
from embedserve.models import (
    BundleError,
    ImageInput,
    ModelRegistry,
    TextInput,
    TextPreprocessor,
)
from tests.tiny_models import (
    encode_image,
    make_image_bundle,
    make_text_bundle,
    numpy_reference_image,
    numpy_reference_text,
    random_image,
)


def run(registry: ModelRegistry, body) -> None:
    """Run ``body()`` with the registry's batchers started, then drain them."""

    async def main() -> None:
        registry.start()
        try:
            await body()
        finally:
            await registry.stop()

    asyncio.run(main())


def reference_text(bundle: Path, texts: list[str]) -> np.ndarray:
    pre = TextPreprocessor(
        bundle / "tokenizer.json", json.loads((bundle / "embedserve.json").read_text())["text"]["max_length"]
    )
    return numpy_reference_text(bundle, *pre.pad(pre.encode(texts)))


@pytest.mark.parametrize("name", ["tiny-image", "tiny-rgb-raw"])
def test_image_embeddings_match_numpy_reference(registry: ModelRegistry, bundle_dirs, name: str) -> None:
    model = registry.get(name)
    (height, width), channels = model.manifest.image.size, model.manifest.image.channels
    # At the tower's size, so that preprocessing is just mean/std (geometry: see test_image.py).
    pixels = [random_image(seed, height, width, channels) for seed in range(5)]

    async def body() -> None:
        out = await model.embed([ImageInput(encode_image(p)) for p in pixels])
        assert out.shape == (5, model.dim) and out.dtype == np.float32
        chw = np.stack([p.reshape(height, width, channels).transpose(2, 0, 1) for p in pixels]) / 255.0
        np.testing.assert_allclose(out, numpy_reference_image(bundle_dirs[name], chw), rtol=1e-5, atol=1e-6)
        norms = np.linalg.norm(out, axis=1)
        assert np.allclose(norms, 1.0) == model.manifest.normalize

    run(registry, body)


def test_coalesced_texts_of_different_lengths(registry: ModelRegistry, bundle_dirs) -> None:
    model = registry.get("tiny-text")
    texts = ["cat", "a red car on the house", "dog", "the big white bird and the small fish in a tree"]

    async def body() -> None:
        outs = await asyncio.gather(*(model.embed([TextInput(t)]) for t in texts))
        np.testing.assert_allclose(
            np.concatenate(outs), reference_text(bundle_dirs["tiny-text"], texts), atol=1e-6
        )

    run(registry, body)


def test_text_pooled_outside_the_graph(tmp_path: Path, bundle_dirs, executors) -> None:
    pooled = make_text_bundle(tmp_path, "tiny-text-tokens", max_length=8, pooling="mean")
    registry = ModelRegistry(ServerConfig(device="cpu"), *executors)
    registry.load([pooled])
    texts = ["a red car", "dog", "the small white bird in a tree"]

    async def body() -> None:
        out = await registry.get("").embed([TextInput(t) for t in texts])
        np.testing.assert_allclose(out, reference_text(bundle_dirs["tiny-text"], texts), atol=1e-6)

    run(registry, body)


def test_mixed_inputs_keep_their_order(registry: ModelRegistry) -> None:
    model = registry.get("tiny-clip")
    inputs = [
        TextInput("a photo of a cat"),
        ImageInput(encode_image(random_image(1))),
        ImageInput(encode_image(random_image(2), "JPEG")),
        TextInput("dog"),
        ImageInput(encode_image(random_image(3))),
    ]

    async def body() -> None:
        together = await model.embed(inputs)
        alone = np.concatenate([await model.embed([item]) for item in inputs])
        assert together.shape == (5, 16)
        np.testing.assert_allclose(together, alone, atol=1e-6)
        assert (await model.embed([])).shape == (0, 16)

    run(registry, body)


@pytest.mark.parametrize(
    ("model", "inputs", "error", "message"),
    [
        (
            "tiny-image",
            [ImageInput(b"x"), TextInput("cat")],
            InvalidArgument,
            "item 1: model 'tiny-image' has no text tower",
        ),
        (
            "tiny-text",
            [TextInput("cat"), ImageInput(b"x")],
            InvalidArgument,
            "item 1: model 'tiny-text' has no image tower",
        ),
        ("tiny-clip", [TextInput("cat"), TextInput("  ")], InvalidArgument, "item 1: text is empty"),
        (
            "tiny-clip",
            [TextInput("cat"), ImageInput(b"junk"), ImageInput(b"more junk")],
            InvalidArgument,
            "item 1: cannot decode image",
        ),
        ("tiny-clip", ["not an input"], InvalidArgument, "item 0: expected an image or a text"),
    ],
)
def test_errors_name_the_item(registry: ModelRegistry, model: str, inputs, error, message: str) -> None:
    async def body() -> None:
        with pytest.raises(error, match=f"^{message}"):
            await registry.get(model).embed(inputs)

    run(registry, body)


def test_batches_are_reported_and_bad_items_never_computed(bundle_dirs, executors) -> None:
    sizes: dict[tuple[str, str], list[int]] = {}
    registry = ModelRegistry(
        ServerConfig(device="cpu", max_batch_size=4),
        *executors,
        on_batch=lambda model, modality: sizes.setdefault((model, modality), []).append,
    )
    registry.load([bundle_dirs["tiny-clip"]])
    good = encode_image(random_image(0))

    async def body() -> None:
        with pytest.raises(InvalidArgument, match=r"^item 2: "):
            await registry.get("").embed([ImageInput(good), ImageInput(good), ImageInput(b"bad")])
        assert sizes == {("tiny-clip", "image"): [], ("tiny-clip", "text"): []}
        await registry.get("").embed([ImageInput(good)] * 6 + [TextInput("cat")])

    run(registry, body)
    assert sizes == {("tiny-clip", "image"): [4, 2], ("tiny-clip", "text"): [1]}


def test_a_request_alone_is_cut_by_the_token_budget_like_a_queued_one(bundle_dirs, executors) -> None:
    """An idle tower runs a lone request in one call (Tower.embed_alone): its texts still go
    longest first in batches of at most max_batch_tokens padded tokens, and come back in order."""
    sizes: list[int] = []
    registry = ModelRegistry(
        ServerConfig(device="cpu", max_batch_tokens=12),
        *executors,
        on_batch=lambda model, modality: sizes.append,
    )
    registry.load([bundle_dirs["tiny-text"]])
    texts = ["cat", "a red car on the house", "dog", "the big white bird and the small fish", "a b"]

    async def body() -> None:
        out = await registry.get("").embed([TextInput(t) for t in texts])
        np.testing.assert_allclose(out, reference_text(bundle_dirs["tiny-text"], texts), atol=1e-6)

    run(registry, body)
    # longest first, each batch as many as fit rows x its first (longest) length <= 12
    lengths = sorted(
        (len(ids) for ids in registry.get("").towers["text"].preprocessor.encode(texts)), reverse=True
    )
    expected, start = [], 0
    while start < len(lengths):
        expected.append(max(1, 12 // lengths[start]))
        start += expected[-1]
    expected[-1] -= start - len(lengths)
    assert lengths == [8, 6, 2, 1, 1] and sizes == expected == [1, 2, 2]


def test_deadline(registry: ModelRegistry) -> None:
    async def body() -> None:
        with pytest.raises(DeadlineExceeded):
            await registry.get("tiny-text").embed([TextInput("cat")], deadline=time.monotonic() - 0.1)

    run(registry, body)


def test_lookup_and_health(registry: ModelRegistry, bundle_dirs) -> None:
    assert [m.name for m in registry.list()] == list(bundle_dirs)
    assert registry.default_name == "tiny-image"
    assert registry.get("").name == "tiny-image"
    registry.default_name = "tiny-clip"
    assert registry.get("").name == "tiny-clip"
    with pytest.raises(NotFound, match=r"^model 'nope' not found; loaded: tiny-image, tiny-rgb-raw"):
        registry.get("nope")
    tower = registry.get("tiny-clip").towers["image"]
    assert tower.session.execution_provider == "CPUExecutionProvider"
    assert tower.max_batch_size == 32 and tower.modality == "image"
    assert tower.batcher.max_concurrent_batches == 1  # on CPU one ORT call already uses every core
    assert not registry.healthy

    async def body() -> None:
        assert registry.healthy

    run(registry, body)
    assert not registry.healthy


def test_duplicate_names_are_refused(registry: ModelRegistry, bundle_dirs, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="'tiny-image' is already used"):
        registry.load([make_image_bundle(tmp_path)])


def test_graph_that_disagrees_with_manifest(tmp_path: Path, executors) -> None:
    bundle = make_image_bundle(tmp_path, dim=16)
    manifest = json.loads((bundle / "embedserve.json").read_text())
    manifest["dim"] = 32
    (bundle / "embedserve.json").write_text(json.dumps(manifest))
    registry = ModelRegistry(ServerConfig(device="cpu"), *executors)
    with pytest.raises(BundleError, match="warm-up batch of 2 failed"):
        registry.load([bundle])
    assert registry.list() == []


def test_runtime_options_are_checked() -> None:
    with pytest.raises(ValueError, match="device"):
        ServerConfig(device="gpu")
    with pytest.raises(ValueError):
        ServerConfig(max_batch_size=0)


@pytest.mark.gpu
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in onnxruntime.get_available_providers(),
    reason="needs onnxruntime with CUDAExecutionProvider and a GPU",
)
def test_cuda_is_really_used(bundle_dirs, executors) -> None:
    registry = ModelRegistry(ServerConfig(device="cuda"), *executors)
    registry.load([bundle_dirs["tiny-clip"]])
    model = registry.get("tiny-clip")
    for tower in model.towers.values():
        assert tower.session.execution_provider == "CUDAExecutionProvider"
        assert tower.batcher.max_concurrent_batches == 2  # host work of one batch beside another's kernels

    async def body() -> None:
        out = await model.embed([TextInput("cat"), ImageInput(encode_image(random_image(0)))])
        assert out.shape == (2, 16)
        many = [ImageInput(encode_image(random_image(i))) for i in range(100)]
        together = await asyncio.gather(*(model.embed(many[i : i + 10]) for i in range(0, 100, 10)))
        np.testing.assert_allclose(np.concatenate(together), await model.embed(many), atol=1e-4)

    run(registry, body)


def test_batches_at_once_follow_the_threads_each_call_takes() -> None:
    """ORT's default uses every core per call: one batch at a time on CPU; one thread a call: a batch
    per core, within the infer pool; on CUDA two (host work beside kernels)."""
    import dataclasses
    import os

    from embedserve.config import ServerConfig
    from embedserve.models.tower import concurrent_batches

    cores = os.cpu_count() or 1
    base = ServerConfig(device="cpu")
    cpu = "CPUExecutionProvider"
    assert concurrent_batches(cpu, base) == 1
    assert concurrent_batches(cpu, dataclasses.replace(base, intra_op_threads=1)) == min(2, cores)
    assert concurrent_batches(cpu, dataclasses.replace(base, intra_op_threads=1, infer_threads=64)) == cores
    assert concurrent_batches(cpu, dataclasses.replace(base, intra_op_threads=cores)) == 1
    assert concurrent_batches("CUDAExecutionProvider", base) == 2


def test_a_lone_request_takes_every_free_slot_of_a_per_core_tower(bundle_dirs, executors) -> None:
    """With intra_op_threads 1 a CPU tower runs a 1-thread batch per core, and a lone request is
    cut into a contiguous share per free slot, all run at once (Model._split_alone): the rows and
    truncated positions of one run each, and the first bad item by position is named whichever
    share it is in; the slots are free again afterwards."""
    registry = ModelRegistry(ServerConfig(device="cpu", intra_op_threads=1, infer_threads=2), *executors)
    registry.load([bundle_dirs["tiny-clip"]])
    model = registry.get("")
    image, text = model.towers["image"].batcher, model.towers["text"].batcher
    slots = image.max_concurrent_batches  # a batch per core, within infer_threads
    assert slots == min(2, os.cpu_count() or 1) and image.split_alone
    good = [encode_image(random_image(seed)) for seed in range(8)]
    texts = [
        "cat",
        "a red car on the house and " * 4,
        "dog",
        "a b c d e f g h i j " * 2,
        "x",
    ]  # max_length 16

    async def body() -> None:
        singles = np.concatenate([await model.embed([ImageInput(b)]) for b in good])
        single_texts = [await model.encode([TextInput(t)]) for t in texts]
        before = image.stats.batches
        out = await model.embed([ImageInput(b) for b in good])
        assert image.stats.batches - before == slots  # one run per share
        np.testing.assert_allclose(out, singles, atol=1e-5)
        got = await model.encode([TextInput(t) for t in texts])
        np.testing.assert_allclose(got.vectors, np.concatenate([e.vectors for e in single_texts]), atol=1e-5)
        assert got.truncated == [i for i, e in enumerate(single_texts) if e.truncated] == [1, 3]
        for bad, first in (([6], 6), ([6, 2], 2)):
            inputs = [ImageInput(b"not an image" if i in bad else b) for i, b in enumerate(good)]
            with pytest.raises(InvalidArgument, match=rf"^item {first}: "):
                await model.embed(inputs)
        assert image._busy == text._busy == 0  # every slot released
        before = image.stats.batches
        np.testing.assert_allclose(await model.embed([ImageInput(b) for b in good]), singles, atol=1e-5)
        assert image.stats.batches - before == slots

    run(registry, body)
