"""Model bundles, preprocessing, ONNX Runtime sessions and dynamic batching.

Modules: ``bundle`` (the manifest, read and written), ``inputs`` (what a model
embeds), ``image`` / ``text`` (preprocessing), ``runtime`` (ORT sessions),
``batcher`` (dynamic batching), ``tower`` (preprocessor + session + batcher for
one modality), ``model`` (a bundle's towers and the embed path), ``registry``
(the loaded models by name).
"""

from embedserve.errors import BundleError
from embedserve.models.batcher import Batcher
from embedserve.models.bundle import ImageTowerSpec, Manifest, TextTowerSpec, discover_bundles, load_manifest
from embedserve.models.image import ImagePreprocessor
from embedserve.models.inputs import ImageInput, ModelInput, TextInput
from embedserve.models.model import Model
from embedserve.models.registry import ModelRegistry
from embedserve.models.runtime import TowerSession, resolve_providers
from embedserve.models.text import TextPreprocessor
from embedserve.models.tower import Tower

__all__ = [
    "Batcher",
    "BundleError",
    "ImageInput",
    "ImagePreprocessor",
    "ImageTowerSpec",
    "Manifest",
    "Model",
    "ModelInput",
    "ModelRegistry",
    "TextInput",
    "TextPreprocessor",
    "TextTowerSpec",
    "Tower",
    "TowerSession",
    "discover_bundles",
    "load_manifest",
    "resolve_providers",
]
