"""Each method's export: parity with PyTorch, a manifest the server accepts, embeddings over gRPC."""

pytest = __import__("pytest")
torch = pytest.importorskip("torch")

import json  # noqa: E402

import numpy as np  # noqa: E402

from embedserve.models import load_manifest  # noqa: E402
from tests.conftest import ServerThread, make_config  # noqa: E402
from tests.training.conftest import tiny_config  # noqa: E402
from training.backbones import BackboneConfig  # noqa: E402
from training.data import image_folder  # noqa: E402
from training.evaluate.bundle import bundle_embed  # noqa: E402
from training.export import MAX_ABS_DIFF, MIN_COSINE, export_bundle  # noqa: E402
from training.loop import fit  # noqa: E402

METHOD_CONFIG = {
    "simclr": {},
    "byol": {"method_options": {"hidden": 32, "out_dim": 16}},
    "dino": {"method_options": {"hidden": 32, "bottleneck": 16, "prototypes": 32}},
    "mae": {
        "method_options": {"decoder_dim": 16, "decoder_depth": 1},
        "backbone": BackboneConfig(name="vit", patch_size=4, dim=16, depth=1, heads=2),
    },
    "vae": {"method_options": {"latent": 8, "decoder_width": 8}},
}


@pytest.fixture(scope="module")
def exported(digit_folders, tmp_path_factory):
    """One tiny trained-and-exported bundle per method, all in one models directory."""
    root = tmp_path_factory.mktemp("export")
    models = root / "models"
    manifests = {}
    for name, changes in METHOD_CONFIG.items():
        cfg = tiny_config(digit_folders, method=name, epochs=1, eval_every=0, **changes)
        fit(cfg, root / name, progress_bar=False)
        variants = ("fp16", "int8") if name == "simclr" else ()
        manifests[name] = export_bundle(
            root / name, models / f"tiny-{name}", name=f"tiny-{name}", variants=variants, command="test"
        )
    return models, manifests


def test_parity_and_manifest(exported):
    models, manifests = exported
    for name, manifest in manifests.items():
        parity = manifest["provenance"]["parity"]
        assert parity["max_abs_diff"] <= MAX_ABS_DIFF and parity["min_cosine"] >= MIN_COSINE, name
        loaded = load_manifest(models / f"tiny-{name}")  # the server's own validation
        assert loaded.dim == manifest["dim"] and loaded.image.size == (8, 8) and loaded.image.channels == 1
        prov = loaded.provenance
        assert (
            prov["method"] == name
            and prov["epochs"] == 1
            and set(prov["evaluation"]["knn"]) == {"1", "5", "10", "all"}
        )
        assert 0 <= prov["evaluation"]["linear_probe"] <= 100


def test_onnx_graph_is_clean_and_only_the_batch_is_dynamic(exported):
    import onnx

    models, _ = exported
    model = onnx.load(str(models / "tiny-simclr" / "image.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["N", 1, 8, 8] and out_dims[0] == "N" and isinstance(out_dims[1], int)


def test_variants_record_their_accuracy_change(exported):
    models, manifests = exported
    variants = manifests["simclr"]["provenance"]["variants"]
    for name in ("fp16", "int8"):
        assert (models / "tiny-simclr" / variants[name]["file"]).is_file()
        assert set(variants[name]["knn_delta"]) == {"1", "5", "10", "all"}
    assert abs(variants["fp16"]["knn_delta"]["all"]) <= 5.0


def test_bundles_load_in_the_server_and_embed_over_grpc(exported, digit_folders, tmp_path):
    models, manifests = exported
    images = image_folder(digit_folders[1], channels=1).images[:6]
    server = ServerThread(make_config(models, tmp_path / "data", default_model="tiny-simclr"))
    try:
        with server.client() as client:
            served = {m.name for m in client.list_models().models}
            assert served == {f"tiny-{name}" for name in manifests}
            for name, manifest in manifests.items():
                vectors = client.embed(images, model=f"tiny-{name}")
                assert vectors.shape == (6, manifest["dim"])
                expected = bundle_embed(models / f"tiny-{name}", images)
                np.testing.assert_allclose(vectors, expected, atol=1e-5)
    finally:
        server.stop()
    assert json.loads((models / "tiny-vae" / "embedserve.json").read_text())["dim"] == 8  # mu_z
