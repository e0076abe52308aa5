"""Model bundles, preprocessing, ONNX Runtime sessions and dynamic batching.

``ModelRegistry.load`` reads bundles (``bundle.py``) and builds per tower an
``ImagePreprocessor`` / ``TextPreprocessor``, a ``TowerSession`` and a ``Batcher``;
``Model.embed`` is the whole request path from raw inputs to [N, dim] embeddings.
"""

from embedserve.models.batcher import Batcher
from embedserve.models.bundle import (
    BundleError,
    ImageTowerSpec,
    Manifest,
    TextTowerSpec,
    discover_bundles,
    load_manifest,
)
from embedserve.models.image import ImagePreprocessor
from embedserve.models.registry import (
    ImageInput,
    Model,
    ModelRegistry,
    RuntimeOptions,
    TextInput,
    Tower,
    l2_normalize,
)
from embedserve.models.runtime import TowerSession, resolve_providers
from embedserve.models.text import TextPreprocessor

__all__ = [
    "Batcher",
    "BundleError",
    "ImageInput",
    "ImagePreprocessor",
    "ImageTowerSpec",
    "Manifest",
    "Model",
    "ModelRegistry",
    "RuntimeOptions",
    "TextInput",
    "TextPreprocessor",
    "TextTowerSpec",
    "Tower",
    "TowerSession",
    "discover_bundles",
    "l2_normalize",
    "load_manifest",
    "resolve_providers",
]
