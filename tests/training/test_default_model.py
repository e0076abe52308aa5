"""The shipped bundles (models/): the server serves both with no --models; digits-simclr stays the
default and classifies digits; shapes-clip finds images from text and classifies them zero-shot.

Needs scikit-learn for the digits (the ``train`` extra), not torch.
"""

pytest = __import__("pytest")
pytest.importorskip("sklearn")

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402

from embedserve.config import default_models_dir  # noqa: E402
from embedserve.models import discover_bundles, load_manifest  # noqa: E402
from tests.conftest import ServerThread, make_config  # noqa: E402
from training.data import digits_split  # noqa: E402
from training.evaluate.knn import draw_labelled  # noqa: E402


def _shipped(name):
    (bundle,) = [b for b in discover_bundles(default_models_dir()) if b.name == name]
    return bundle


def test_default_bundle_is_small_and_records_its_quality():
    bundle = _shipped("digits-simclr")
    manifest = load_manifest(bundle)
    assert manifest.image.channels == 1 and manifest.metric == "cosine"
    assert sum(f.stat().st_size for f in bundle.iterdir()) < 5 << 20
    prov = manifest.provenance
    knn = prov["evaluation"]["knn"]
    assert knn["1"]["mean"] >= 75 and knn["5"]["mean"] >= 91 and knn["10"]["mean"] >= 94
    assert prov["parity"]["max_abs_diff"] <= 1e-4 and prov["parity"]["min_cosine"] >= 0.99999
    assert prov["built_by"] == "python models/build_default.py"


def test_server_with_no_models_flag_classifies_digits_with_ten_labels(tmp_path):
    train, test = digits_split()
    config = dataclasses.replace(make_config(tmp_path, tmp_path / "data"), models=(), default_model="")
    server = ServerThread(config)
    try:
        with server.client() as client:
            support_idx = draw_labelled(train.labels, 10, seed=0)
            support = [(train.images[i], str(train.labels[i])) for i in support_idx]
            results = client.classify(test.images[:200], support=support)
            predicted = np.array([int(r.label) for r in results])
            assert (predicted == test.labels[:200]).mean() >= 0.9
            models = client.list_models()
            assert models.default_model == "digits-simclr"
            assert {m.name for m in models.models} == {"digits-simclr", "shapes-clip"}
    finally:
        server.stop()


def test_shapes_clip_bundle_records_its_quality():
    manifest = load_manifest(_shipped("shapes-clip"))
    assert manifest.image is not None and manifest.text is not None and manifest.metric == "cosine"
    assert sum(f.stat().st_size for f in manifest.path.iterdir()) < 5 << 20
    evaluation = manifest.provenance["evaluation"]
    assert evaluation["seen"]["zero_shot"] >= 90 and evaluation["held_out"]["zero_shot"] >= 60
    assert evaluation["seen"]["t2i_r@5"] >= 90
    for tower in ("image", "text"):
        assert manifest.provenance["parity"][tower]["min_cosine"] >= 0.99999
    assert manifest.provenance["training_seconds"] <= 15 * 60


def test_shapes_clip_served_finds_images_from_text_and_classifies_zero_shot(tmp_path):
    from embedserve.client import item
    from training.data.captions import HELD_OUT, captioned_shapes, combo_name
    from training.data.shapes import COLOUR_NAMES

    config = dataclasses.replace(make_config(tmp_path, tmp_path / "data"), models=(), default_model="")
    server = ServerThread(config)
    combos = ((0, 0), (1, 2), (2, 3), (3, 5), (4, 1), *HELD_OUT)  # five seen, five never trained on
    shapes = captioned_shapes(60, seed=7, combos=combos)
    try:
        with server.client() as client:
            client.create_collection("shapes", model="shapes-clip")
            client.upsert("shapes", [item(str(i), image=b) for i, b in enumerate(shapes.images)])
            queries = [f"a {combo_name(shape, colour)}" for shape, colour in combos]
            right = [
                shapes.combos[int(h.id)] == shape * len(COLOUR_NAMES) + colour
                for (shape, colour), hits in zip(combos, client.search("shapes", queries, k=3))
                for h in hits
            ]
            assert np.mean(right) >= 0.8  # precision@3 of "a green triangle" etc. over 10 combinations
            prompts = [(f"a {combo_name(s, c)}", str(s * len(COLOUR_NAMES) + c)) for s, c in combos]
            results = client.classify(shapes.images, support=prompts, model="shapes-clip", k=1)
            accuracy = np.mean([int(r.label) == combo for r, combo in zip(results, shapes.combos)])
            assert accuracy >= 0.8
    finally:
        server.stop()
