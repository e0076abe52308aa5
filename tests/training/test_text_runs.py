"""mlm and clip runs end to end: fit → export (parity for every tower) → served over gRPC."""

pytest = __import__("pytest")
torch = pytest.importorskip("torch")

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from tests.training.conftest import run_torchrun  # noqa: E402
from training.backbones import BackboneConfig  # noqa: E402
from training.backbones.text import TextConfig  # noqa: E402
from training.config import FitConfig  # noqa: E402

TINY_TEXT = TextConfig(vocab_size=300, max_length=16, dim=32, depth=1, heads=2)


def _mlm_config(tmp_path: Path, paragraphs: int, **changes) -> FitConfig:
    """A tiny MLM run on the first ``paragraphs`` paragraphs of the pydoc corpus."""
    from training.text.corpus import pydoc_corpus

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(pydoc_corpus()[0][:paragraphs]))
    cfg = FitConfig(
        method="mlm",
        data=str(corpus),
        text=TINY_TEXT,
        epochs=2,
        batch_size=32,
        lr=2e-3,
        warmup_epochs=1,
        eval_every=1,
        threads=2,
    )
    return cfg.with_(**changes)


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory) -> Path:
    """16 captioned shapes with 16 different shape x colour combinations, as PNG files + pairs.csv."""
    from training.data.captions import all_combos, captioned_shapes

    root = tmp_path_factory.mktemp("pairs")
    data = captioned_shapes(16, size=16, combos=tuple(all_combos()[::2][:16]))
    rows = ["path,caption"]
    for i, (image, captions) in enumerate(zip(data.images, data.captions, strict=True)):
        (root / f"{i}.png").write_bytes(image)
        rows.append(f'{i}.png,"{captions[0]}"')
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


@pytest.fixture(scope="module")
def clip_bundle(pairs_csv, tmp_path_factory):
    from training.export import export_bundle
    from training.loop import fit

    root = tmp_path_factory.mktemp("clip")
    cfg = FitConfig(
        method="clip",
        data=str(pairs_csv),
        eval_data=str(pairs_csv),
        size=(16, 16),
        backbone=BackboneConfig(width=8, depths=(1, 1)),
        text=TINY_TEXT,
        method_options={"embed_dim": 16},
        epochs=60,
        batch_size=16,
        lr=3e-3,
        warmup_epochs=2,
        eval_every=30,
        checkpoint_every=60,
        threads=2,
    )
    fit(cfg, root / "run", progress_bar=False)
    manifest = export_bundle(root / "run", root / "tiny-shapes-clip", name="tiny-shapes-clip")
    return root / "tiny-shapes-clip", manifest


def test_clip_pairs_become_mutual_nearest_neighbours(clip_bundle, pairs_csv):
    from training.data.captions import caption_manifest
    from training.evaluate.bundle import bundle_embed
    from training.text.evaluate import bundle_texts

    bundle, manifest = clip_bundle
    pairs = caption_manifest(pairs_csv)
    images = bundle_embed(bundle, pairs.images)
    texts = bundle_texts(bundle, [c[0] for c in pairs.captions])
    sims = images @ texts.T
    assert (sims.argmax(1) == np.arange(16)).all() and (sims.argmax(0) == np.arange(16)).all()
    parity = manifest["provenance"]["parity"]
    for tower in ("image", "text"):
        assert parity[tower]["max_abs_diff"] < 1e-4 and parity[tower]["min_cosine"] > 0.99999
    assert manifest["provenance"]["evaluation"]["eval"]["t2i_r@1"] == 100.0
    assert set(json.loads((bundle / "embedserve.json").read_text())) >= {"image", "text", "provenance"}


def test_clip_bundle_served_text_search_finds_the_image(clip_bundle, pairs_csv, tmp_path):
    from embedserve.client import item
    from tests.conftest import ServerThread, make_config
    from training.data.captions import caption_manifest

    bundle, _ = clip_bundle
    pairs = caption_manifest(pairs_csv)
    srv = ServerThread(make_config(bundle, tmp_path / "data", default_model="tiny-shapes-clip"))
    try:
        with srv.client() as c:
            c.create_collection("shapes")
            c.upsert("shapes", [item(str(i), image=b) for i, b in enumerate(pairs.images)])
            hits = c.search("shapes", [captions[0] for captions in pairs.captions], k=1)
            assert [h[0].id for h in hits] == [str(i) for i in range(16)]
            # zero-shot: the captions as a support set label the images
            results = c.classify(
                pairs.images[:8], support=[(cap[0], str(i)) for i, cap in enumerate(pairs.captions)], k=1
            )
            assert [r.label for r in results] == [str(i) for i in range(8)]
    finally:
        srv.stop()


def test_mlm_run_exports_a_served_text_bundle(tmp_path):
    from embedserve.models.text import TextPreprocessor
    from tests.conftest import ServerThread, make_config
    from training.export import export_bundle
    from training.loop import fit

    cfg = _mlm_config(tmp_path, paragraphs=120)
    fit(cfg, tmp_path / "run", progress_bar=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"masked_accuracy", "unigram", "ratio"} <= set(rows[-1]["eval"])
    assert (tmp_path / "run" / "plot.png").stat().st_size > 0
    manifest = export_bundle(tmp_path / "run", tmp_path / "text-mlm")
    assert manifest["text"]["max_length"] == 16 and "image" not in manifest
    assert manifest["provenance"]["parity"]["text"]["min_cosine"] > 0.99999

    texts = ["The assert statement", "A longer text about the for statement and how it loops " * 3]
    srv = ServerThread(make_config(tmp_path / "text-mlm", tmp_path / "data", default_model="text-mlm"))
    try:
        with srv.client() as c:
            vectors, truncated = c.embed(texts, return_truncated=True)
    finally:
        srv.stop()
    assert truncated == [1]
    from training.text.evaluate import bundle_texts

    np.testing.assert_allclose(vectors, bundle_texts(tmp_path / "text-mlm", texts), atol=1e-5)
    ids, _ = TextPreprocessor(tmp_path / "text-mlm" / "tokenizer.json", 16).tokenize(texts)
    assert len(ids[1]) == 16

    from training.cli import main

    assert main(["eval", str(tmp_path / "run")]) == 0
    assert {"masked_accuracy", "unigram"} <= set(json.loads((tmp_path / "run" / "eval.json").read_text()))


def test_mlm_trains_under_two_process_torchrun_and_resumes_bit_for_bit(tmp_path):
    """DDP (gloo, 2 ranks) keeps the ranks identical; a run stopped after 1 epoch resumes exactly."""
    from training.loop import fit
    from training.run import load_checkpoint

    cfg = _mlm_config(tmp_path, paragraphs=60, batch_size=16, checkpoint_every=1, threads=1)
    run_torchrun(cfg, tmp_path / "ddp")
    rank0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)

    straight = fit(cfg, tmp_path / "straight", progress_bar=False).method.state_dict()
    # the same tokenizer in both runs: learning one twice can differ (see training.text.run)
    (tmp_path / "resumed").mkdir()
    (tmp_path / "resumed" / "tokenizer.json").write_bytes(
        (tmp_path / "straight" / "tokenizer.json").read_bytes()
    )
    fit(cfg, tmp_path / "resumed", progress_bar=False, stop_after=1)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["epoch"] == 1
    resumed = fit(cfg, tmp_path / "resumed", resume=True, progress_bar=False).method.state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_clip_image_tower_starts_from_a_grayscale_simclr_run(digit_folders, pairs_csv, tmp_path):
    """``image_init``: the backbone of an image run (here 1-channel digits) seeds CLIP's RGB tower."""
    from tests.training.conftest import tiny_config
    from training.loop import fit
    from training.run import load_checkpoint, prepare_data
    from training.text.run import build_text_method

    fit(tiny_config(digit_folders, epochs=1), tmp_path / "simclr", progress_bar=False)
    simclr = load_checkpoint(tmp_path / "simclr" / "checkpoints" / "last.pt")["model"]
    cfg = FitConfig(
        method="clip",
        data=str(pairs_csv),
        size=(16, 16),
        backbone=BackboneConfig(width=8, depths=(1, 1)),
        text=TINY_TEXT,
        method_options={"embed_dim": 16},
        image_init=str(tmp_path / "simclr"),
    )
    clip = build_text_method(cfg, prepare_data(cfg, tmp_path / "clip").spec)
    stem = clip.image.backbone.stem[0].weight
    assert torch.allclose(stem, simclr["backbone.stem.0.weight"].repeat(1, 3, 1, 1) / 3)
    grey = torch.rand(2, 1, 16, 16)
    clip.image.backbone.eval()
    assert clip.image.backbone.stem[0](grey.repeat(1, 3, 1, 1)).allclose(
        torch.nn.functional.conv2d(grey, simclr["backbone.stem.0.weight"], padding=1), atol=1e-5
    )
