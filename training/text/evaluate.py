"""How text runs are scored, the same way during training (PyTorch) and on exported bundles (as served).

MLM: masked-token accuracy on the held-out text (fixed masks, seed 0) beside the
unigram baseline, which always answers the most frequent training token.

CLIP: zero-shot classification of images by text prompts ("a {colour} {shape}"
over all 30 shape x colour combinations, the nearest prompt wins), on test
images of combinations seen in training and of the held-out ones; and recall@K
both ways (image → text, text → image) between each test image and its first
caption. A caption such as "a small red circle at the top left" truly describes
every test image with those attributes, not only the one it was written for, so
recall counts a hit when one of the K nearest is a right answer — an image the
caption describes, or a caption describing the image (``r@K``) — and, stricter,
only when it is the query's own partner (``own_r@K``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from training.data.captions import all_combos, combo_name
from training.text.run import PairData, PairSet, TextData

RECALL_AT = (1, 5)


def prompts() -> list[str]:
    """The zero-shot prompt of each shape x colour combination, in combo-id order."""
    return [f"a {combo_name(s, c)}" for s, c in all_combos()]


def recall(
    queries: np.ndarray, targets: np.ndarray, right: np.ndarray, ks: tuple[int, ...] = RECALL_AT
) -> dict[str, float]:
    """Recall@k of queries [N, D] against targets [N, D] (L2-normalised; target i is query i's partner).

    ``right``: bool [N, N], True where target j is a right answer for query i (the diagonal at
    least). ``r@k``: % of queries with a right answer among their k nearest targets; ``own_r@k``:
    % whose own partner is among them (ties with the partner counted in its favour).
    """
    sims = queries @ targets.T
    order = np.argsort(-sims, axis=1, kind="stable")
    own_rank = (sims > np.diag(sims)[:, None]).sum(axis=1)  # targets strictly closer than the partner
    first_right = np.argmax(np.take_along_axis(right, order, axis=1), axis=1)  # rank of the best right answer
    out = {}
    for k in ks:
        out[f"r@{k}"] = round(100.0 * float((first_right < k).mean()), 2)
        out[f"own_r@{k}"] = round(100.0 * float((own_rank < k).mean()), 2)
    return out


def zero_shot(image_vecs: np.ndarray, combos: np.ndarray, prompt_vecs: np.ndarray) -> float:
    """% of images whose nearest prompt is their own combination's."""
    return round(100.0 * float(((image_vecs @ prompt_vecs.T).argmax(axis=1) == combos).mean()), 2)


def clip_report(
    embed_images: Callable[[PairSet], np.ndarray],
    embed_texts: Callable[[list[str]], np.ndarray],
    data: PairData,
) -> dict[str, dict[str, float]]:
    """Per evaluation set: zero-shot accuracy (when its combinations are known) and recall both ways."""
    report: dict[str, dict[str, float]] = {}
    prompt_vecs: np.ndarray | None = None
    for name, pairs in data.evals.items():
        images = embed_images(pairs)
        texts = [c[0] for c in pairs.images.captions]
        captions = embed_texts(texts)
        keys = np.unique(texts, return_inverse=True)[1]
        right = keys[:, None] == keys[None, :]  # caption i describes image j as well as its own
        row: dict[str, float] = {}
        if (pairs.images.combos >= 0).all():  # captioned shapes: the combinations are known
            prompt_vecs = embed_texts(prompts()) if prompt_vecs is None else prompt_vecs
            row["zero_shot"] = zero_shot(images, pairs.images.combos, prompt_vecs)
        row |= {f"i2t_{k}": v for k, v in recall(images, captions, right).items()}
        row |= {f"t2i_{k}": v for k, v in recall(captions, images, right).items()}
        report[name] = row
    return report


@torch.no_grad()
def torch_clip_report(method, data: PairData) -> dict[str, dict[str, float]]:
    """``clip_report`` of a CLIP method in PyTorch (the training curve)."""
    from training.text.tokenizer import encode, load_tokenizer

    method.eval()
    tokenizer = load_tokenizer(data.spec.text.tokenizer_path)
    device = next(method.parameters()).device

    def images(pairs: PairSet) -> np.ndarray:
        x = method.normalize(pairs.pixels.to(device))
        return torch.nn.functional.normalize(method.image(x), dim=-1).cpu().numpy()

    def texts(batch: list[str]) -> np.ndarray:
        ids = torch.from_numpy(encode(tokenizer, batch, data.spec.text.max_length)).to(device)
        return method.text(ids, (ids != data.spec.text.pad_id).long()).cpu().numpy()

    try:
        return clip_report(images, texts, data)
    finally:
        method.train()


def unigram_accuracy(data: TextData, seed: int = 0) -> float:
    """% of held-out masked positions (the masks ``MLM.masked_accuracy`` scores) whose original token
    is the most frequent real token of the training text."""
    from training.methods.mlm import IGNORE, MLMOptions, bert_masking

    ids = data.train_ids
    counts = torch.bincount(ids[ids > data.spec.mask_id].flatten(), minlength=data.spec.vocab_size)
    top = int(counts.argmax())
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        hits = total = 0
        for start in range(0, len(data.eval_ids), 256):
            batch = data.eval_ids[start : start + 256]
            _, labels = bert_masking(batch, MLMOptions(), data.spec.vocab_size, data.spec.mask_id)
            chosen = labels != IGNORE
            hits += int((labels[chosen] == top).sum())
            total += int(chosen.sum())
    finally:
        torch.set_rng_state(state)
    return round(100.0 * hits / max(total, 1), 2)


def mlm_report(method, data: TextData) -> dict[str, float]:
    """Held-out masked-token accuracy (%), the unigram baseline, and their ratio."""
    accuracy = method.masked_accuracy(data.eval_ids.to(next(method.parameters()).device))
    method.train()
    baseline = unigram_accuracy(data)
    return {
        "masked_accuracy": accuracy,
        "unigram": baseline,
        "ratio": round(accuracy / max(baseline, 1e-9), 2),
    }


def bundle_texts(bundle_dir: Path, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """float32 [N, D] of ``texts`` through a bundle's text tower exactly as the server runs it."""
    from embedserve.models import TowerSession, load_manifest
    from embedserve.models.text import TextPreprocessor

    manifest = load_manifest(Path(bundle_dir))
    if manifest.text is None:
        raise ValueError(f"{bundle_dir}: bundle has no text tower")
    pre = TextPreprocessor(manifest.text.tokenizer, manifest.text.max_length)
    session = TowerSession(manifest.text.file, ["CPUExecutionProvider"], modality="text", dim=manifest.dim)
    out = []
    for start in range(0, len(texts), batch_size):
        ids, _ = pre.tokenize(texts[start : start + batch_size])
        input_ids, attention_mask = pre.pad(ids)
        feeds = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        out.append(session.run({k: feeds[k] for k in session.input_names}))  # as Tower.run_batch feeds it
    return np.concatenate(out).astype(np.float32)


def evaluate_text_run(run_dir: Path) -> dict:
    """``embedserve-train eval`` of an mlm or clip run (in PyTorch); also written to RUN/eval.json."""
    import json

    from training.run import load_run

    cfg, data, method, _ = load_run(Path(run_dir))
    result = mlm_report(method, data) if cfg.method == "mlm" else torch_clip_report(method, data)
    (Path(run_dir) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
