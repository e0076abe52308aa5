pytest = __import__("pytest")
torch = pytest.importorskip("torch")

import json  # noqa: E402

import numpy as np  # noqa: E402

from embedserve.models import ImagePreprocessor, ImageTowerSpec  # noqa: E402
from training.data import (  # noqa: E402
    PixelSpec,
    digits_split,
    encode_png,
    image_folder,
    image_manifest,
    load_images,
    render,
    shapes_split,
)


def test_digits_split_is_the_fixed_stratified_one():
    train, test = digits_split()
    assert (len(train), len(test)) == (1297, 500)
    assert 48 <= np.bincount(test.labels).min() and np.bincount(test.labels).max() <= 51  # stratified
    again, _ = digits_split()
    assert again.images[:5] == train.images[:5] and np.array_equal(again.labels, train.labels)


def test_render_is_the_servers_preprocessing():
    train, _ = digits_split()
    spec = PixelSpec(1, (16, 16), (0.3,), (0.4,), "bilinear")
    ours = render(train.images[:20], spec)  # [0, 1]: normalisation happens later, in the model input
    server = ImagePreprocessor(
        ImageTowerSpec(file=None, channels=1, size=(16, 16), mean=(0.3,), std=(0.4,)),
        max_image_bytes=1 << 20,
        max_image_pixels=1 << 20,
    )
    for i, data in enumerate(train.images[:20]):
        expected = server.preprocess(data, i)
        got = (torch.from_numpy(ours[i]) - torch.tensor(0.3)) / torch.tensor(0.4)
        assert np.array_equal(got.numpy(), expected)


def test_shapes_are_seeded_and_labelled():
    a, _ = shapes_split(n_train=20, n_test=5, seed=3)
    b, _ = shapes_split(n_train=20, n_test=5, seed=3)
    c, _ = shapes_split(n_train=20, n_test=5, seed=4)
    assert a.images == b.images and a.images != c.images
    assert a.channels == 3 and set(a.labels) <= set(range(5))
    pixels = render(a.images, PixelSpec(3, (32, 32), (0, 0, 0), (1, 1, 1)))
    assert pixels.shape == (20, 3, 32, 32) and 0 <= pixels.min() and pixels.max() <= 1


def test_folders_and_manifests(tmp_path):
    png = encode_png(np.full((4, 4), 200, np.uint8))
    for cls in ("cat", "dog"):
        (tmp_path / "labelled" / cls).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "labelled" / cls / f"{i}.png").write_bytes(png)
    labelled = image_folder(tmp_path / "labelled")
    assert labelled.classes == ("cat", "dog") and labelled.labels.tolist() == [0, 0, 1, 1]

    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(png)
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    flat = image_folder(tmp_path / "flat")
    assert len(flat) == 1 and flat.labels is None

    (tmp_path / "list.csv").write_text("path,label\nlabelled/cat/0.png,cat\nflat/a.png,other\n")
    rows = [{"path": "labelled/dog/1.png"}, {"path": str(tmp_path / "flat" / "a.png")}]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    csv_set = image_manifest(tmp_path / "list.csv")
    assert csv_set.classes == ("cat", "other") and csv_set.labels.tolist() == [0, 1]
    jsonl_set = load_images(str(tmp_path / "list.jsonl"))
    assert len(jsonl_set) == 2 and jsonl_set.labels is None
    with pytest.raises(ValueError, match="every image has a label or none"):
        (tmp_path / "mixed.csv").write_text("path,label\nflat/a.png,x\nflat/a.png,\n")
        image_manifest(tmp_path / "mixed.csv")
