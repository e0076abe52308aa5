"""Fixtures for embedserve.models tests: tiny real bundles and a registry over them."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from embedserve.config import ServerConfig
from embedserve.models import ModelRegistry
from tests.tiny_models import make_clip_bundle, make_image_bundle, make_text_bundle


@pytest.fixture(scope="session")
def bundle_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundle directories by name, built once per session under one root."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        "tiny-image": make_image_bundle(root),
        "tiny-rgb-raw": make_image_bundle(root, "tiny-rgb-raw", channels=3, size=(6, 10), normalize=False),
        "tiny-text": make_text_bundle(root, max_length=8),
        "tiny-clip": make_clip_bundle(root),
    }


@pytest.fixture
def executors() -> Iterator[tuple[ThreadPoolExecutor, ThreadPoolExecutor]]:
    decode, infer = ThreadPoolExecutor(4, "decode"), ThreadPoolExecutor(2, "infer")
    yield decode, infer
    decode.shutdown()
    infer.shutdown()


@pytest.fixture
def registry(bundle_dirs: dict[str, Path], executors) -> ModelRegistry:
    """A registry with every tiny bundle loaded (not started: start inside the test's loop)."""
    registry = ModelRegistry(ServerConfig(device="cpu", max_delay_ms=2.0), *executors)
    registry.load(list(bundle_dirs.values()))
    return registry
