"""Manifest validation and bundle discovery."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedserve.models import BundleError, discover_bundles, load_manifest
from tests.tiny_models import make_clip_bundle, make_image_bundle, make_text_bundle


def _edit(bundle: Path, change) -> None:
    path = bundle / "embedserve.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_tiny_bundles_load(tmp_path: Path) -> None:
    clip = load_manifest(make_clip_bundle(tmp_path, dim=12, size=(6, 4)))
    assert (clip.name, clip.version, clip.dim, clip.metric, clip.normalize) == (
        "tiny-clip",
        "0.0.1",
        12,
        "cosine",
        True,
    )
    assert clip.modalities == ["image", "text"]
    assert clip.image is not None and clip.text is not None
    assert clip.image.size == (6, 4) and clip.image.channels == 3
    assert clip.image.mean == (0.5, 0.5, 0.5) and clip.image.interpolation == "bilinear"
    assert clip.image.file == tmp_path / "tiny-clip" / "image.onnx"
    assert clip.text.tokenizer.name == "tokenizer.json" and clip.text.pooling == "none"
    assert clip.path == tmp_path / "tiny-clip"
    assert clip.provenance["method"] == "random projection"

    text = load_manifest(make_text_bundle(tmp_path, metric="ip"))
    assert text.image is None and text.modalities == ["text"] and text.metric == "ip"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m.update(metric="dot"), "'metric'"),
        (lambda m: m.update(dim=0), "'dim'"),
        (lambda m: m.update(dim=True), "'dim'"),
        (lambda m: m.pop("name"), "'name'"),
        (lambda m: m.update(version=1), "'version'"),
        (lambda m: m.update(normalize="yes"), "'normalize'"),
        (lambda m: m.update(format_version=2), "'format_version'"),
        (lambda m: m.pop("image"), "'image'"),
        (lambda m: m["image"].update(channels=2), "'image.channels'"),
        (lambda m: m["image"].update(mean=[0.5, 0.5]), "'image.mean'"),
        (lambda m: m["image"].update(std=[0.0]), "'image.std'"),
        (lambda m: m["image"].update(size=[8]), "'image.size'"),
        (lambda m: m["image"].update(interpolation="cubic"), "'image.interpolation'"),
        (lambda m: m["image"].update(resize="stretch"), "'image.resize'"),
        (lambda m: m["image"].update(file="missing.onnx"), "'image.file'"),
    ],
)
def test_invalid_image_manifest(tmp_path: Path, change, field: str) -> None:
    bundle = make_image_bundle(tmp_path)
    _edit(bundle, change)
    with pytest.raises(BundleError, match=field) as info:
        load_manifest(bundle)
    assert "embedserve.json" in str(info.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m["text"].update(max_length=0), "'text.max_length'"),
        (lambda m: m["text"].update(tokenizer="vocab.txt"), "'text.tokenizer'"),
        (lambda m: m["text"].update(pooling="max"), "'text.pooling'"),
    ],
)
def test_invalid_text_manifest(tmp_path: Path, change, field: str) -> None:
    bundle = make_text_bundle(tmp_path)
    _edit(bundle, change)
    with pytest.raises(BundleError, match=field):
        load_manifest(bundle)


def test_unreadable_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="embedserve.json is missing"):
        load_manifest(tmp_path)
    (tmp_path / "embedserve.json").write_text("{not json")
    with pytest.raises(BundleError, match="cannot read manifest"):
        load_manifest(tmp_path)
    (tmp_path / "embedserve.json").write_text("[]")
    with pytest.raises(BundleError, match="JSON object"):
        load_manifest(tmp_path)


def test_format_version_is_optional(tmp_path: Path) -> None:
    bundle = make_image_bundle(tmp_path)
    _edit(bundle, lambda m: m.pop("format_version"))
    assert load_manifest(bundle).name == "tiny-image"


def test_discover_bundles(tmp_path: Path) -> None:
    b = make_text_bundle(tmp_path, "b")
    a = make_image_bundle(tmp_path, "a")
    (tmp_path / "not-a-bundle").mkdir()
    assert discover_bundles(tmp_path) == [a, b]
    assert discover_bundles(a) == [a]
    with pytest.raises(BundleError, match="no model bundle"):
        discover_bundles(tmp_path / "not-a-bundle")
    with pytest.raises(BundleError, match="no such directory"):
        discover_bundles(tmp_path / "missing")
