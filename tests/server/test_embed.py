"""EmbedService over a real channel: outputs equal the bundle's math, errors name the item."""

import grpc
import numpy as np
import pytest

from tests.conftest import encode_image, random_images, status_of


def test_embed_images_match_reference(client, bundles):
    from tests.tiny_models import numpy_reference_image

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (5, 8, 8)).astype(np.uint8)
    vectors = client.embed([encode_image(p) for p in pixels], model="tiny-image")
    assert vectors.shape == (5, 16) and vectors.dtype == np.float32
    expected = numpy_reference_image(bundles / "tiny-image", pixels[:, None].astype(np.float32) / 255.0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_default_model_is_used_when_none_given(client):
    images = random_images(2, seed=3)
    np.testing.assert_allclose(client.embed(images), client.embed(images, model="tiny-image"), atol=1e-6)


def test_embed_text_and_mixed_batch_keeps_order(client):
    texts = ["the cat sat", "a dog ran fast", "the cat sat"]
    vecs = client.embed(texts, model="tiny-text")
    assert vecs.shape == (3, 16)
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-6)
    assert not np.allclose(vecs[0], vecs[1])

    image = random_images(1, seed=5)[0]
    rgb = encode_image(np.random.default_rng(2).integers(0, 256, (8, 8, 3)))
    mixed = client.embed(["the cat sat", rgb, "a dog ran fast", image], model="tiny-clip")
    alone_text = client.embed(["the cat sat", "a dog ran fast"], model="tiny-clip")
    alone_image = client.embed([rgb, image], model="tiny-clip")
    np.testing.assert_allclose(mixed[[0, 2]], alone_text, atol=1e-5)
    np.testing.assert_allclose(mixed[[1, 3]], alone_image, atol=1e-5)


def test_empty_batch_returns_zero_rows(client):
    assert client.embed([], model="tiny-image").shape == (0, 16)


def test_list_models_reports_provider_and_towers(client):
    reply = client.list_models()
    by_name = {m.name: m for m in reply.models}
    assert set(by_name) == {"tiny-image", "tiny-text", "tiny-clip"}
    assert reply.default_model == "tiny-image"
    clip = by_name["tiny-clip"]
    assert {t.modality for t in clip.towers} == {"image", "text"}
    for tower in clip.towers:
        assert tower.execution_provider == "CPUExecutionProvider"
        assert tower.max_batch_size == 32
    image_tower = next(t for t in by_name["tiny-image"].towers if t.modality == "image")
    assert list(image_tower.size) == [8, 8] and image_tower.channels == 1
    assert by_name["tiny-image"].dim == 16 and by_name["tiny-image"].metric == "cosine"


@pytest.mark.parametrize(
    "inputs, code, fragment",
    [
        ([b"\x89PNG not really", b"garbage"], grpc.StatusCode.INVALID_ARGUMENT, "item 0"),
        (["fine text", "   "], grpc.StatusCode.INVALID_ARGUMENT, "item 1"),
    ],
)
def test_bad_inputs_name_the_item(client, inputs, code, fragment):
    model = "tiny-image" if isinstance(inputs[0], bytes) else "tiny-text"
    got, details = status_of(lambda: client.embed(inputs, model=model))
    assert got == code and fragment in details


def test_bad_image_among_good_ones_is_named_and_server_keeps_serving(client):
    images = random_images(3, seed=9)
    got, details = status_of(
        lambda: client.embed([images[0], images[1], b"\xff\xd8\xff broken jpeg", images[2]])
    )
    assert got == grpc.StatusCode.INVALID_ARGUMENT
    assert "item 2" in details and "decode" in details
    assert client.embed(images).shape == (3, 16)


def test_wrong_modality_and_unknown_model(client):
    got, details = status_of(lambda: client.embed(["some text"], model="tiny-image"))
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "item 0" in details
    got, details = status_of(lambda: client.embed(["x"], model="no-such-model"))
    assert got == grpc.StatusCode.NOT_FOUND and "no-such-model" in details
