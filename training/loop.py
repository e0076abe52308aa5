"""The training loop: knows batches, steps, schedules, checkpoints and logs, not methods.

Per step: lr from ``warmup_cosine`` → ``loss, logs = method(*batch, progress)``, the
batch being ``data.inputs`` indexed together (pixels; token ids; pixels and captions),
under autocast on CUDA → backward → clip → optimiser step → ``method.after_step``.
Per epoch: a line in metrics.jsonl; every ``eval_every`` epochs the evaluation
(``monitor``: k-NN accuracy for image methods, masked-token accuracy for MLM,
zero-shot accuracy and recall for CLIP); every ``checkpoint_every`` epochs a
checkpoint that resumes bit for bit (data order is a function of (seed, epoch);
torch's RNG state, which drives augmentation and masking, is saved per rank).

``_fit`` reads as the steps of a run: check the resume → prepare data → build the
method, optimiser and AMP (``_Run``) → restore or start → per epoch ``_train_epoch``
then ``_end_epoch`` (record, evaluation, checkpoint) → plot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from training import distributed
from training.config import FitConfig
from training.evaluate.features import embed
from training.evaluate.knn import knn_table
from training.methods import Method
from training.optim import build_optimizer
from training.plot import plot_metrics
from training.run import Data, build_method, checkpoint_path, load_checkpoint, prepare_data, save_checkpoint
from training.schedule import warmup_cosine

log = logging.getLogger("training")


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of the training set for ``epoch``: same on every rank and every resume."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def monitor_knn(method, data: Data, shots=(10, None)) -> dict[str, float] | None:
    """k-NN accuracy (%) on the evaluation set, for the training curve: {"10": mean, "all": acc}."""
    if data.eval_pixels is None or data.train.labels is None:
        return None
    encoder = method.encoder()
    device = next(encoder.parameters()).device
    normalize = method.normalize.to(device)
    train = embed(encoder, normalize, data.train_pixels, channels_last=method.channels_last)
    test = embed(encoder, normalize, data.eval_pixels, channels_last=method.channels_last)
    table = knn_table(train, data.train.labels, test, data.eval.labels, shots=shots)
    return {key: value["mean"] for key, value in table.items()}


def monitor(method, data) -> tuple[str, dict[str, float]] | None:
    """The training curve's evaluation, as (metrics.jsonl key, figures): k-NN accuracy for image
    methods, held-out masked-token accuracy for MLM, zero-shot accuracy and recall for CLIP."""
    from training.text.evaluate import mlm_report, torch_clip_report
    from training.text.run import PairData, TextData

    if isinstance(data, TextData):
        return "eval", mlm_report(method, data)
    if isinstance(data, PairData):
        report = torch_clip_report(method, data)
        return "eval", {f"{name}/{key}": value for name, row in report.items() for key, value in row.items()}
    knn = monitor_knn(method, data)
    return None if knn is None else ("knn", knn)


@dataclass
class FitResult:
    checkpoint: Path  # RUN/checkpoints/last.pt
    method: Method  # this process's trained method (identical on every rank under DDP)


def fit(
    cfg: FitConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    progress_bar: bool = True,
    stop_after: int | None = None,
) -> FitResult:
    """Train ``cfg`` into ``run_dir`` (or continue it with ``resume``).

    ``stop_after`` ends this call after that many epochs in all (the schedule still
    spans ``cfg.epochs``): a time-limited job trains in pieces, each resuming the last.
    """
    run_dir = Path(run_dir)
    ctx = distributed.setup(cfg.device)
    try:
        return _fit(cfg, run_dir, ctx, resume, progress_bar, stop_after)
    finally:
        distributed.cleanup()


@dataclass
class _Run:
    """What one training process carries from step to step and into its checkpoint."""

    method: Method
    model: torch.nn.Module  # the method, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Callable[[], contextlib.AbstractContextManager]
    epoch: int = 0  # epochs done
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0


@dataclass(frozen=True)
class _Steps:
    """The step arithmetic of a run: ``per_step`` examples (all ranks) per optimiser step."""

    per_epoch: int
    per_step: int
    total: int
    warmup: int


def _fit(
    cfg: FitConfig,
    run_dir: Path,
    ctx: distributed.Context,
    resume: bool,
    progress_bar: bool,
    stop_after: int | None,
) -> FitResult:
    if cfg.threads and ctx.device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    ckpt_path = checkpoint_path(run_dir)
    resuming = _check_resume(cfg, run_dir, ckpt_path, resume)
    data = _prepare_in_turn(cfg, run_dir, ctx)
    run = _build(cfg, data, ctx)
    if resuming:
        _restore(run, load_checkpoint(ckpt_path), ctx, run_dir)
    else:
        _start(cfg, run_dir, ctx)
    if ctx.distributed:
        run.model = DistributedDataParallel(
            run.method, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    inputs = [t.to(ctx.device) for t in data.inputs]  # indexed together per batch
    steps = _steps(cfg, len(inputs[0]), ctx)
    bar = _progress(steps.total, run.epoch * steps.per_epoch, progress_bar and ctx.is_main)
    start, end = run.epoch, min(cfg.epochs, stop_after or cfg.epochs)
    for epoch in range(start, end):
        sums, lr = _train_epoch(cfg, ctx, run, inputs, steps, epoch, bar)
        _end_epoch(cfg, run_dir, ctx, run, data, sums, lr, steps, last=epoch + 1 == end, bar=bar)
    bar.close()
    if ctx.is_main:
        if end > start or not (run_dir / "plot.png").exists():
            plot_metrics(run_dir / "metrics.jsonl", run_dir / "plot.png")
        # the final config: epochs may have been raised by a resume
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")
    return FitResult(ckpt_path, run.method)


def _check_resume(cfg: FitConfig, run_dir: Path, ckpt_path: Path, resume: bool) -> bool:
    """True when this call continues a run; refuses a changed config or an accidental overwrite."""
    if resume and ckpt_path.exists():
        saved = FitConfig.load(run_dir / "config.json")
        if saved.with_(epochs=cfg.epochs) != cfg.with_(epochs=cfg.epochs):
            raise ValueError(
                f"{run_dir}: --resume with a different config than config.json (only epochs may change)"
            )
        return True
    if ckpt_path.exists():
        raise FileExistsError(f"{run_dir} already has a checkpoint; pass --resume or use a new directory")
    return False


def _build(cfg: FitConfig, data, ctx: distributed.Context) -> _Run:
    """The method on its device, its optimiser, and mixed precision (CUDA only: bf16 where supported)."""
    method = build_method(cfg, data.spec)
    method.channels_last = (
        cfg.channels_last
        and ctx.device.type == "cpu"
        and cfg.backbone.name == "resnet"
        and isinstance(data, Data)
    )
    method.to(ctx.device)
    if method.channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, method, cfg.lr, cfg.weight_decay)
    use_amp = cfg.amp and ctx.device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()

    return _Run(method, method, optimizer, scaler, autocast)


def _restore(run: _Run, state: dict[str, Any], ctx: distributed.Context, run_dir: Path) -> None:
    """Continue from a checkpoint: weights, optimiser, scaler, clocks and this rank's RNG."""
    run.method.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.train_seconds = state["epoch"], state["train_seconds"]
    run.cpu_seconds = state.get("cpu_seconds", 0.0)
    rng = state["rng"][ctx.rank]
    torch.set_rng_state(rng["torch"])
    if ctx.device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], ctx.device)
    if ctx.is_main:
        _truncate_metrics(run_dir, run.epoch)


def _start(cfg: FitConfig, run_dir: Path, ctx: distributed.Context) -> None:
    """A fresh run: seed this rank's augmentations, write config.json and an empty metrics.jsonl."""
    torch.manual_seed(cfg.seed + 1 + ctx.rank)  # augmentations differ per rank
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.to_json() + "\n")
        (run_dir / "metrics.jsonl").write_text("")


def _steps(cfg: FitConfig, n: int, ctx: distributed.Context) -> _Steps:
    per_step = cfg.batch_size * ctx.world_size
    per_epoch = n // per_step
    if per_epoch < 1:
        raise ValueError(
            f"{n} training examples make no batch of {cfg.batch_size} x {ctx.world_size} processes"
        )
    return _Steps(per_epoch, per_step, cfg.epochs * per_epoch, cfg.warmup_epochs * per_epoch)


def _train_epoch(
    cfg: FitConfig,
    ctx: distributed.Context,
    run: _Run,
    inputs: list[torch.Tensor],
    steps: _Steps,
    epoch: int,
    bar,
) -> tuple[dict[str, float], float]:
    """One epoch of optimiser steps; returns the summed logs and the last learning rate."""
    t0, c0 = time.perf_counter(), time.process_time()
    run.method.train()
    order = epoch_order(len(inputs[0]), cfg.seed, epoch)
    sums: dict[str, float] = {}
    lr = cfg.lr
    for i in range(steps.per_epoch):
        step = epoch * steps.per_epoch + i
        lr = warmup_cosine(step, steps.total, steps.warmup, cfg.lr, cfg.min_lr)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        batch = order[i * steps.per_step : (i + 1) * steps.per_step][ctx.rank :: ctx.world_size].to(
            ctx.device
        )
        with run.autocast():
            loss, logs = run.model(*(t[batch] for t in inputs), step / steps.total)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.clip_grad:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.method.parameters(), cfg.clip_grad)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.method.after_step((step + 1) / steps.total)
        for key, value in {"loss": loss.detach(), **logs}.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.4f}")
    distributed.average_buffers(run.method, ctx)
    run.train_seconds += time.perf_counter() - t0
    run.cpu_seconds += time.process_time() - c0  # all threads; wall time inflates when the CPU is shared
    run.epoch = epoch + 1
    if not torch.isfinite(torch.tensor(sums["loss"])):
        raise FloatingPointError(f"loss is not finite at epoch {epoch + 1}")
    return sums, lr


def _end_epoch(
    cfg: FitConfig,
    run_dir: Path,
    ctx: distributed.Context,
    run: _Run,
    data,
    sums: dict[str, float],
    lr: float,
    steps: _Steps,
    *,
    last: bool,
    bar,
) -> None:
    """The epoch's metrics.jsonl line (with the evaluation when due) and, when due, the checkpoint."""
    done = run.epoch
    record: dict[str, Any] = {"epoch": done, "lr": lr, **{k: v / steps.per_epoch for k, v in sums.items()}}
    record["train_seconds"] = round(run.train_seconds, 2)
    record["cpu_seconds"] = round(run.cpu_seconds, 2)
    if ctx.is_main and ((cfg.eval_every and done % cfg.eval_every == 0) or last):
        evaluated = monitor(run.method, data)
        if evaluated is not None:
            key, figures = evaluated
            record[key] = figures
            bar.write(
                f"epoch {done}: loss {record['loss']:.4f} std {record['embedding_std']:.4f} {key} {figures}"
            )
    rng_states = distributed.gather_objects(_rng_state(ctx), ctx)
    if ctx.is_main:
        with (run_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        if last or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0):
            save_checkpoint(
                checkpoint_path(run_dir),
                {
                    "config": cfg.to_json(),
                    "epoch": done,
                    "model": run.method.state_dict(),
                    "optimizer": run.optimizer.state_dict(),
                    "scaler": run.scaler.state_dict(),
                    "rng": rng_states,
                    "train_seconds": run.train_seconds,
                    "cpu_seconds": run.cpu_seconds,
                },
            )
    distributed.barrier(ctx)


def _prepare_in_turn(cfg: FitConfig, run_dir: Path, ctx: distributed.Context):
    """The run's data; under DDP rank 0 first (a text run learns and saves its tokenizer), then the
    other ranks, which load that file: every rank trains on the same token ids."""
    if ctx.distributed and not ctx.is_main:
        distributed.barrier(ctx)
    data = prepare_data(cfg, run_dir)
    if ctx.distributed and ctx.is_main:
        distributed.barrier(ctx)
    return data


def _rng_state(ctx: distributed.Context) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(ctx.device)
    return state


def _truncate_metrics(run_dir: Path, epoch: int) -> None:
    """Drop metrics lines written after the checkpoint we resume from."""
    path = run_dir / "metrics.jsonl"
    if path.exists():
        keep = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["epoch"] <= epoch
        ]
        path.write_text("".join(line + "\n" for line in keep))


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix(self, **kw) -> None: ...
    def write(self, s: str) -> None:
        log.info(s)

    def close(self) -> None: ...


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=2.0)
