"""The shipped default bundle (models/): the server serves it with no --models, and it classifies digits.

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


def test_default_bundle_is_small_and_records_its_quality():
    (bundle,) = discover_bundles(default_models_dir())
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
    finally:
        server.stop()
