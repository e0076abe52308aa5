"""Losses as pure functions: each says in one place what a method optimises."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    gather: Callable[[Tensor], Tensor] | None = None,
    rank: int = 0,
) -> Tensor:
    """SimCLR's normalised-temperature cross-entropy.

    ``z1``, ``z2``: [B, D] projections of two views of the same B images. Each of the
    2B vectors must pick its partner among the other candidates by cosine / temperature.
    Alone the candidates are the batch's other 2B - 1 vectors. Under DDP, ``gather``
    (``training.distributed.gather_with_grad``) brings every rank's projections, so the
    candidates are the global batch's 2BW - 1, as in single-process training on it;
    this rank's rows are scored and the loss is their mean. DDP then averages the
    ranks' gradients, which makes them exactly those of the mean loss over the global
    batch (the gather passes each rank's share of the gradient back to it).
    """
    a, b = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = a.shape[0]
    all_a, all_b = (gather(a), gather(b)) if gather is not None else (a, b)
    total = all_a.shape[0]  # B x world
    logits = torch.cat([a, b]) @ torch.cat([all_a, all_b]).T / temperature  # [2B, 2BW]
    own = torch.arange(rank * n, (rank + 1) * n, device=a.device)
    rows = torch.arange(2 * n, device=a.device)
    logits[rows, torch.cat([own, own + total])] = float("-inf")  # a vector is not its own candidate
    targets = torch.cat([own + total, own])  # view 1 of image i picks view 2 of it, and back
    return F.cross_entropy(logits, targets)


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression loss 2 - 2 cos(p, z), averaged over the batch; ``z`` gets no gradient."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


def dino_distillation(
    student: list[Tensor], teacher: list[Tensor], center: Tensor, student_temp: float, teacher_temp: float
) -> Tensor:
    """DINO's cross-entropy between sharpened, centred teacher and student distributions.

    ``student``: logits [B, K] per view (global views first); ``teacher``: logits [B, K]
    for the global views; ``center``: [1, K]. Pairs of the same view are skipped.
    """
    targets = [torch.softmax((t.detach() - center) / teacher_temp, dim=-1) for t in teacher]
    log_probs = [torch.log_softmax(s / student_temp, dim=-1) for s in student]
    total, pairs = 0.0, 0
    for ti, target in enumerate(targets):
        for si, log_p in enumerate(log_probs):
            if si == ti:
                continue
            total = total + (-(target * log_p).sum(-1)).mean()
            pairs += 1
    return total / pairs


def masked_patch_mse(pred: Tensor, target: Tensor, mask: Tensor, normalise: bool = True) -> Tensor:
    """MAE's loss: MSE over masked patches only.

    ``pred``, ``target``: [N, P, p*p*C] patch pixels; ``mask``: [N, P], 1 = masked.
    With ``normalise`` each target patch is standardised by its own mean and variance.
    """
    if normalise:
        mean = target.mean(-1, keepdim=True)
        var = target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


def vae_elbo(
    recon_logits: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, beta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Negative ELBO per image: Bernoulli reconstruction (pixels in [0, 1]) + beta * KL(q(z|x) || N(0, I)).

    Returns (loss, reconstruction term, KL term), each averaged over the batch (nats).
    """
    recon = F.binary_cross_entropy_with_logits(recon_logits, target, reduction="sum") / target.shape[0]
    kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp()) / target.shape[0]
    return recon + beta * kl, recon, kl


def std_of_l2_normalized(z: Tensor) -> Tensor:
    """Collapse monitor: mean over dims of the batch std of L2-normalised [B, D] embeddings.

    About 1/sqrt(D) for healthy, spread-out embeddings; 0 when they collapse to one point.
    """
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()


def masked_token_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """BERT's MLM loss: cross-entropy over the chosen positions only.

    ``logits``: [M, V] at the M chosen positions; ``labels``: int64 [M], the original
    tokens there. Returns (mean loss over the chosen tokens, their accuracy).
    """
    if not len(labels):  # no token chosen in this batch: no signal, and no NaN
        return logits.sum() * 0.0, logits.new_zeros(())
    loss = F.cross_entropy(logits, labels)
    return loss, (logits.argmax(-1) == labels).float().mean().detach()


def clip_contrastive(image: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """CLIP's symmetric InfoNCE: image i must pick caption i among the batch's B, and vice versa.

    ``image``, ``text``: [B, D] L2-normalised embeddings of B matching pairs;
    ``logit_scale``: log of the inverse temperature (a scalar, clamped by the caller).
    """
    logits = logit_scale.exp() * image @ text.T  # [B, B]
    targets = torch.arange(len(image), device=image.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
