"""Text over gRPC: embedding, truncation, limits, text queries against images, zero-shot Classify."""

import grpc
import numpy as np
import pytest

from embedserve.client import item
from embedserve.v1 import embedserve_pb2 as pb
from tests.conftest import encode_image, status_of
from tests.tiny_models import numpy_reference_text

LONG = " ".join(["the red cat"] * 20)  # 60 words: over tiny bundles' max_length of 16 tokens


def _tokens(bundle, texts):
    from embedserve.models.text import TextPreprocessor

    pre = TextPreprocessor(bundle / "tokenizer.json", 16)
    ids, cut = pre.tokenize(texts)
    return pre.pad(ids), cut


def test_text_embed_matches_reference_and_reports_truncation(client, bundles):
    texts = ["a small red cat", LONG, "two dogs", LONG + " and more"]
    vectors, truncated = client.embed(texts, model="tiny-text", return_truncated=True)
    assert truncated == [1, 3]
    (ids, mask), cut = _tokens(bundles / "tiny-text", texts)
    assert cut == [False, True, False, True] and ids.shape[1] == 16
    np.testing.assert_allclose(vectors, numpy_reference_text(bundles / "tiny-text", ids, mask), atol=1e-5)


def test_texts_of_mixed_lengths_embed_as_alone(client):
    """Texts are grouped by length before batching; every row still matches the text's own vector."""
    rng = np.random.default_rng(0)
    words = "a the cat dog red green blue small big photo of car tree".split()
    texts = [" ".join(rng.choice(words, n)) for n in rng.integers(1, 30, 40)]
    together = client.embed(texts, model="tiny-text")
    alone = np.stack([client.embed([t], model="tiny-text")[0] for t in texts[:8]])
    np.testing.assert_allclose(together[:8], alone, atol=1e-5)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_invalid_and_named(client, text):
    code, details = status_of(lambda: client.embed(["fine", text], model="tiny-text"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == "item 1: text is empty"


def test_text_over_the_size_limit_is_resource_exhausted(client):
    huge = "cat " * 20_000  # 80 kB > max_text_bytes (64 KiB)
    code, details = status_of(lambda: client.embed(["fine", huge], model="tiny-text"))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.startswith("item 1: text is 80000 bytes") and "limit 65536" in details


def test_text_to_a_model_without_text_tower_is_invalid(client):
    client.create_collection("images-only", model="tiny-image")
    client.upsert("images-only", [item("a", image=encode_image(np.zeros((8, 8), np.uint8) + 9))])
    code, details = status_of(lambda: client.search("images-only", ["a cat"], k=1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "query 0: model 'tiny-image' has no text tower"


def test_text_search_over_images_and_truncation_reported(client):
    rng = np.random.default_rng(3)
    images = [encode_image(rng.integers(0, 256, (8, 8, 3))) for _ in range(12)]
    client.create_collection("pictures", model="tiny-clip")
    client.upsert("pictures", [item(f"img{i}", image=b) for i, b in enumerate(images)])
    image_vecs = client.embed(images, model="tiny-clip")
    queries = ["a red car", LONG]
    text_vecs = client.embed(queries, model="tiny-clip")
    request = pb.SearchRequest(collection="pictures", queries=[pb.Query(text=q) for q in queries], k=5)
    reply = client.searcher.Search(request)
    assert list(reply.truncated) == [1]
    for q, result in enumerate(reply.results):
        expected = np.argsort(-(image_vecs @ text_vecs[q]), kind="stable")[:5]
        assert [h.id for h in result.hits] == [f"img{i}" for i in expected]


def test_upsert_reports_truncated_items(client):
    client.create_collection("notes", model="tiny-text")
    reply = client.upsert("notes", [item("short", text="a cat"), item("long", text=LONG)])
    assert reply.truncated == 1 and list(reply.truncated_ids) == ["long"]


def test_zero_shot_classify_with_text_prompts(client):
    """A support set of texts classifies images: each image takes its nearest prompt's label (k = 1)."""
    rng = np.random.default_rng(4)
    images = [encode_image(rng.integers(0, 256, (8, 8, 3))) for _ in range(10)]
    prompts = {
        "cat": "a photo of a cat",
        "dog": "a photo of a dog",
        "car": "a red car",
        "tree": "a green tree",
    }
    results = client.classify(
        images, support=[(p, label) for label, p in prompts.items()], model="tiny-clip", k=1
    )
    image_vecs = client.embed(images, model="tiny-clip")
    prompt_vecs = client.embed(list(prompts.values()), model="tiny-clip")
    expected = [list(prompts)[j] for j in np.argmax(image_vecs @ prompt_vecs.T, axis=1)]
    assert [r.label for r in results] == expected
    assert all(r.confidence == pytest.approx(1.0) for r in results)

    support = [pb.LabelledExample(example=pb.Query(text=p), label=label) for label, p in prompts.items()]
    support.append(pb.LabelledExample(example=pb.Query(text=LONG), label="cat"))
    request = pb.ClassifyRequest(
        support=support, model="tiny-clip", queries=[pb.Query(image=images[0]), pb.Query(text=LONG)], k=1
    )
    reply = client.searcher.Classify(request)
    assert list(reply.truncated) == [1] and list(reply.truncated_support) == [4]


def test_list_models_reports_the_tokenizer(client):
    towers = {m.name: {t.modality: t for t in m.towers} for m in client.list_models().models}
    text = towers["tiny-text"]["text"]
    assert text.max_length == 16 and text.vocab_size > 40
    assert towers["tiny-image"]["image"].vocab_size == 0
