"""Text training parts: tokenizer, BERT masking, the MLM and CLIP losses (small, seconds each)."""

pytest = __import__("pytest")
torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402

from training.backbones import BackboneConfig, build_backbone  # noqa: E402
from training.backbones.text import TextEmbedder, TextTransformer  # noqa: E402
from training.losses import clip_contrastive  # noqa: E402
from training.methods.mlm import IGNORE, MLM, MLMOptions, bert_masking  # noqa: E402
from training.text.corpus import pydoc_corpus  # noqa: E402
from training.text.tokenizer import CLS, MASK, SEP, SPECIAL_TOKENS, encode, train_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    train, held_out = pydoc_corpus()
    return train[:300], held_out[:40]


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_tokenizer(corpus[0], vocab_size=800)


def test_corpus_split_is_fixed_and_disjoint():
    train, held_out = pydoc_corpus()
    again = pydoc_corpus()
    assert (train, held_out) == again
    assert len(held_out) > 100 and len(train) > 9 * len(held_out) - 10
    assert not set(train) & set(held_out)


def test_tokenizer_round_trip_and_specials(tokenizer, tmp_path):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    text = "The assert statement raises AssertionError when the expression is false."
    enc = tokenizer.encode(text)
    assert enc.tokens[0] == CLS and enc.tokens[-1] == SEP
    assert tokenizer.decode(enc.ids) == text.lower()
    # the file the bundle carries tokenizes exactly like the training-side helper
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    from embedserve.models.text import TextPreprocessor

    served, cut = TextPreprocessor(path, 12).tokenize([text, "short one"])
    ids = encode(tokenizer, [text, "short one"], 12)
    assert cut == [True, False]
    assert ids[0].tolist() == served[0].tolist()
    assert ids[1, : len(served[1])].tolist() == served[1].tolist() and (ids[1, len(served[1]) :] == 0).all()


def test_bert_masking_statistics():
    torch.manual_seed(0)
    vocab, n_special = 1000, len(SPECIAL_TOKENS)
    ids = torch.randint(n_special, vocab, (400, 64))
    ids[:, 0], ids[:, -8:] = 2, 0  # [CLS] and padding are never chosen
    inputs, labels = bert_masking(ids, MLMOptions(), vocab, mask_id=4)
    chosen = labels != IGNORE
    real = ids >= n_special
    assert not chosen[~real].any()
    assert abs(chosen.sum().item() / real.sum().item() - 0.15) < 0.01
    n = chosen.sum().item()
    masked = (inputs == 4) & chosen
    unchanged = (inputs == ids) & chosen
    randomised = chosen & ~masked & ~unchanged
    assert abs(masked.sum().item() / n - 0.8) < 0.02
    assert abs(unchanged.sum().item() / n - 0.1) < 0.02  # (+ the random draws that hit the same id: 1/995)
    assert abs(randomised.sum().item() / n - 0.1) < 0.02
    assert (labels[chosen] == ids[chosen]).all() and (inputs[~chosen] == ids[~chosen]).all()


def test_mlm_loss_falls_and_head_is_tied(corpus, tokenizer):
    torch.manual_seed(0)
    ids = torch.from_numpy(encode(tokenizer, corpus[0][:64], 32))
    model = MLM(
        TextTransformer(tokenizer.get_vocab_size(), 32, 32, 1, 2),
        MLMOptions(),
        0,
        tokenizer.token_to_id(MASK),
    )
    assert model.head.embedding.weight is model.transformer.token.weight
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    losses = []
    for _ in range(40):
        torch.manual_seed(1)  # the same masks every step: the loss on them must fall
        loss, _ = model(ids, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_clip_loss_is_symmetric_and_falls():
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    text = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    scale = torch.tensor(np.log(1 / 0.07), dtype=torch.float32)
    assert torch.allclose(clip_contrastive(image, text, scale), clip_contrastive(text, image, scale))
    assert float(clip_contrastive(image, image, scale)) < 0.01  # matching pairs: near-zero loss

    from training.augment import Normalize, preset
    from training.data import PixelSpec, render
    from training.data.captions import TEMPLATES, captioned_shapes
    from training.methods.clip import CLIP, CLIPOptions

    data = captioned_shapes(32, size=16)
    pixels = torch.from_numpy(render(data.images, PixelSpec(3, (16, 16), (0, 0, 0), (1, 1, 1))))
    tok = train_tokenizer([c for cs in data.captions for c in cs], vocab_size=100, min_frequency=1)
    caps = torch.from_numpy(encode(tok, [c for cs in data.captions for c in cs], 16)).reshape(
        32, len(TEMPLATES), -1
    )
    backbone = build_backbone(BackboneConfig(width=8, depths=(1,)), 3, (16, 16))
    model = CLIP(
        backbone,
        Normalize((0.2,) * 3, (0.3,) * 3),
        preset("natural"),
        TextTransformer(tok.get_vocab_size(), 16, 16, 1, 2),
        CLIPOptions(embed_dim=16),
        0,
    )
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    losses = []
    for _ in range(30):
        torch.manual_seed(1)  # the same caption picks every step
        loss, _ = model(pixels, caps, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_step(0.0)
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    assert model.logit_scale.item() <= np.log(100) + 1e-6


def test_text_embedder_ignores_padding():
    torch.manual_seed(0)
    embedder = TextEmbedder(TextTransformer(50, 16, 16, 2, 2), "mean").eval()
    ids = torch.tensor([[2, 7, 9, 3]])
    padded = torch.tensor([[2, 7, 9, 3, 0, 0, 0]])
    a = embedder(ids, torch.ones_like(ids))
    b = embedder(padded, (padded != 0).long())
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a.norm(dim=1), torch.ones(1))
