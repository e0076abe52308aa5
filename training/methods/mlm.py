"""MLM: BERT's masked-language modelling on a Transformer text encoder (Devlin et al., 2019).

Per sequence, 15 % of the real tokens (never [PAD], [CLS], [SEP]) are chosen; of
those 80 % become [MASK], 10 % a random token, 10 % stay as they are. The model
predicts the original token at the chosen positions only, through a head whose
output matrix is the input embedding matrix (tied weights). The exported encoder
is the Transformer pooled as ``pooling`` says and L2-normalised (``TextEmbedder``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.backbones.text import TextEmbedder, TextTransformer, pool
from training.losses import masked_token_loss, std_of_l2_normalized
from training.text.tokenizer import SPECIAL_TOKENS

IGNORE = -100  # label of positions that are not predicted (PyTorch's cross-entropy default)


@dataclass(frozen=True)
class MLMOptions:
    mask_prob: float = 0.15  # share of real tokens chosen for prediction
    mask_token: float = 0.8  # of the chosen: replaced by [MASK]
    random_token: float = 0.1  # of the chosen: replaced by a random token (the rest stay unchanged)
    pooling: str = "mean"  # the exported vector: "mean" over tokens or the [CLS] token


def bert_masking(
    ids: Tensor, options: MLMOptions, vocab_size: int, mask_id: int, n_special: int = len(SPECIAL_TOKENS)
) -> tuple[Tensor, Tensor]:
    """(inputs, labels) for MLM from token ids int64 [N, T] (special tokens have ids < ``n_special``).

    Uses torch's global generator. ``labels`` holds the original id at chosen positions, IGNORE elsewhere.
    """
    candidates = ids >= n_special
    chosen = (torch.rand(ids.shape, device=ids.device) < options.mask_prob) & candidates
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    draw = torch.rand(ids.shape, device=ids.device)
    to_mask = chosen & (draw < options.mask_token)
    to_random = chosen & (draw >= options.mask_token) & (draw < options.mask_token + options.random_token)
    random_ids = torch.randint(n_special, vocab_size, ids.shape, device=ids.device)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


class MLMHead(nn.Module):
    """Token states [..., D] → vocabulary logits [..., V] through the (tied) embedding matrix."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        dim = embedding.embedding_dim
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.embedding = embedding  # shared with the encoder's input: tied weights
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings))

    def forward(self, states: Tensor) -> Tensor:
        return self.transform(states) @ self.embedding.weight.T + self.bias


class MLM(nn.Module):
    """Loss: ``masked_token_loss(head(transformer(bert_masking(ids))), labels)``.

    The loop calls ``method(ids, progress)`` with token ids int64 [B, T] (padding id 0).
    """

    name = "mlm"
    Options = MLMOptions
    modality = "text"

    def __init__(self, transformer: TextTransformer, options: MLMOptions, pad_id: int, mask_id: int) -> None:
        super().__init__()
        self.transformer, self.options = transformer, options
        self.pad_id, self.mask_id = pad_id, mask_id
        self.head = MLMHead(transformer.token)
        self.channels_last = False

    def forward(self, ids: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        inputs, labels = bert_masking(ids, self.options, self.transformer.vocab_size, self.mask_id)
        mask = (ids != self.pad_id).long()
        states = self.transformer(inputs, mask)
        chosen = labels != IGNORE  # the vocabulary projection only where a prediction is scored
        loss, accuracy = masked_token_loss(self.head(states[chosen]), labels[chosen])
        pooled = pool(states.detach(), mask, self.options.pooling)
        return loss, {"masked_accuracy": accuracy, "embedding_std": std_of_l2_normalized(pooled)}

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        pass

    def encoder(self) -> TextEmbedder:
        """ids [N, T], mask [N, T] → L2-normalised [N, dim]: what export writes as text.onnx."""
        return TextEmbedder(self.transformer, self.options.pooling)

    @torch.no_grad()
    def masked_accuracy(self, ids: Tensor, seed: int = 0, batch_size: int = 256) -> float:
        """Held-out masked-token accuracy (%), with a fixed seed so evaluations compare."""
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.eval()
            hits = total = 0
            for start in range(0, len(ids), batch_size):
                batch = ids[start : start + batch_size]
                inputs, labels = bert_masking(batch, self.options, self.transformer.vocab_size, self.mask_id)
                states = self.transformer(inputs, (batch != self.pad_id).long())
                chosen = labels != IGNORE
                hits += int((self.head(states[chosen]).argmax(-1) == labels[chosen]).sum())
                total += int(chosen.sum())
            return round(100.0 * hits / max(total, 1), 2)
        finally:
            torch.set_rng_state(state)
