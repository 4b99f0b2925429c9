"""Training: one recipe (``TrainConfig``) and one loop (``train_model``) that reads top to bottom.

The loop, like nanoGPT's ``train.py``: a learning-rate function (linear warm-up, then cosine
decay to ``min_lr``, per step), the step (:class:`TrainStep`: bf16 autocast on CUDA,
label-smoothed cross-entropy, global-norm clipping, AdamW; ``harness bench`` times it), the
evaluation (validation every epoch, every test resolution at the end) and the checkpoint
dictionary (written atomically after every epoch; a run restarted with the same checkpoint
continues from the next epoch and ends with the same metrics; ``harness.training.checkpoint`` writes it
and checks every field before resuming). The step and its parts are :mod:`harness.training.step`,
the evaluation :mod:`harness.training.evaluation`; this module re-exports their names (their
home before the split).

The data stay on the device: the train and validation splits are fetched once, shuffled with
``randperm`` and sliced into batches (the last partial batch of an epoch is dropped), and the
augmentation runs on the device, in batch. One ``torch.Generator`` seeded from ``seed`` drives
the shuffling, the augmentation and the encoding's own random draws in training (``pe.generator``:
``rope_dinov3``'s coordinate augmentation), so two runs with the same seed on the CPU give bitwise
identical metrics.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from harness.config import TrainConfig, TrainConfigError
from harness.schema import LR, TRAIN_LOSS, VAL_ACC, VAL_LOSS
from harness.training.checkpoint import OutputWriteError, load_checkpoint, save_atomic
from harness.errors import TrialFailed  # TrialFailed lives in errors: the model raises it too
from harness.training.evaluation import (  # their home before the split
    HALVES_SEED,
    as_trained,
    evaluate,
    evaluate_variants,
    split_in_halves,
)
from harness.training.progress import format_duration
from harness.training.step import (  # their home before the split
    TrainStep,
    autocast,
    flip_crop,
    lr_at,
    param_groups,
    prepare_device,
    resolve_device,
)
from harness.training.stopwatch import Stopwatch
from harness.wording import count

__all__ = [
    "TrainConfig",
    "OutputWriteError",
    "TrainConfigError",
    "TrainResult",
    "TrainStep",
    "TrialFailed",
    "as_trained",
    "autocast",
    "evaluate",
    "evaluate_variants",
    "flip_crop",
    "lr_at",
    "param_groups",
    "prepare_device",
    "resolve_device",
    "split_in_halves",
    "train_model",
]


@dataclass
class TrainResult:
    history: list[dict[str, float]]  # per epoch: {"epoch", "train/loss", "val/acc", "val/loss", "lr"}
    test: dict[int, dict[str, float]]  # test resolution -> {"acc", "loss"}
    images_per_s: float  # training throughput over the training steps only (no evaluation)
    params: int  # trainable parameters
    resumed_from_epoch: int  # 0 when trained from scratch
    device: str
    val_images: int = 0  # the validation split's size: each epoch's val/acc is a proportion of it


# ---------------------------------------------------------------------------- the loop
def train_model(
    model: nn.Module,
    data: Any,
    cfg: TrainConfig,
    *,
    train_resolution: int,
    test_resolutions: Sequence[int],
    seed: int,
    checkpoint: Path | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool | None = None,
    label: str | None = None,
    stopwatch: Stopwatch | None = None,
    note: str = "",
) -> TrainResult:
    """Train ``model`` on ``data`` at ``train_resolution``; evaluate it at every test resolution.

    ``data`` has ``split(which, resolution, device) -> Split(images, labels)``. Epochs count
    from 1. After every epoch: validation at ``train_resolution``, the checkpoint (when
    given), then ``on_epoch(epoch, metrics)``, which may raise (e.g. ``optuna.TrialPruned``) to
    stop training; that exception propagates. A non-finite loss raises ``TrialFailed``.
    ``progress``: True: bars for epochs and steps; False: nothing; None: the bars when stderr is
    a terminal, else (nohup, SLURM, CI) plain lines on stderr: one when training starts, one per
    epoch at most every 30 s, one when it ends (elapsed time, final validation accuracy).
    ``label`` names the training in the bars and lines (e.g. ``cell 3/42 rope_axial r32 seed 1``);
    ``note`` (e.g. how far the study is: ``study: 2 done, 40 left, about 20m10s to go``) ends the
    start line and the epoch bar's title.
    ``stopwatch`` (a :class:`~harness.training.stopwatch.Stopwatch`) times the phases: data, train steps,
    validation, checkpoints, and the ``on_epoch`` callback as tracking.
    """
    sw = stopwatch or Stopwatch()
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    amp_dtype = prepare_device(device, cfg.threads)
    image_size = getattr(getattr(model, "cfg", None), "image_size", train_resolution)
    if image_size != train_resolution:
        raise TrainConfigError(
            f"train resolution {train_resolution} differs from the model's image_size {image_size} "
            "(the model's training grid)"
        )

    # seeds for everything; one generator drives the shuffling and the augmentation
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    pe = getattr(model, "pe", None)
    if pe is not None and hasattr(pe, "generator"):
        pe.generator = gen  # an encoding's random draws in training (rope_dinov3) follow the seed too

    model.to(device)
    train_step = TrainStep(model, cfg, device, amp_dtype, gen)
    optimizer = train_step.optimizer  # the checkpoint saves and restores its state
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    # the data, on the device, fetched once
    with sw.phase("data"):
        train = data.split("train", train_resolution, device=device)
        val = data.split("val", train_resolution, device=device)
    n = len(train.labels)
    steps_per_epoch = n // cfg.batch_size  # the last partial batch is dropped
    if steps_per_epoch == 0:
        raise TrainConfigError(f"train.batch_size {cfg.batch_size} is larger than the {n} training images")
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)

    # resume from the checkpoint when there is one; a damaged one is set aside (None): from scratch
    start_epoch, history, train_seconds, train_images = 0, [], 0.0, 0
    if checkpoint is not None and Path(checkpoint).exists():
        ck = load_checkpoint(Path(checkpoint), model, optimizer, cfg, seed, train_resolution,
                              steps_per_epoch=steps_per_epoch, generator=gen, cuda=cuda)
        if ck is not None:  # every field checked: these cannot fail
            start_epoch, history = ck["epoch"], ck["history"]
            train_seconds, train_images = ck["train_seconds"], ck["train_images"]
            torch.set_rng_state(ck["rng"]["torch"])
            gen.set_state(ck["rng"]["generator"])
            if cuda and ck["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state_all(ck["rng"]["cuda"])

    if cfg.compile and start_epoch < cfg.epochs:
        # the model checks its encoding's hooks eagerly, never inside the compiled graph: one eager
        # forward (eval mode: no random draws) checks them before a broken hook fails in compiled code
        with torch.no_grad(), autocast(device, amp_dtype):
            model.eval()
            model(train.images[:2])
            model.train()

    show = sys.stderr.isatty() if progress is None else progress
    lines = _Lines(label, cfg.epochs) if progress is None and not show else None  # piped: plain lines
    if lines is not None:
        lines.start(train_resolution, steps_per_epoch, device, start_epoch, note)
    with tqdm(total=cfg.epochs, initial=start_epoch, desc=f"{label or 'epochs'}{f' ({note})' if note else ''}",
              unit="epoch",
              disable=not show) as epoch_bar:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            # ---- one epoch of training steps
            model.train()
            perm = torch.randperm(n, generator=gen, device=device)
            losses: list[torch.Tensor] = []
            with sw.phase("train_steps"):
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for i in tqdm(range(steps_per_epoch), desc=f"{label} epoch {epoch}" if label else f"epoch {epoch}",
                              unit="step", leave=False, disable=not show):
                    step = (epoch - 1) * steps_per_epoch + i  # global, from 0
                    lr = lr_at(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=warmup_steps,
                               total_steps=total_steps)
                    idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                    loss = train_step(train.images[idx], train.labels[idx], lr)
                    losses.append(loss.detach())
                    if (i + 1) % 100 == 0 or i + 1 == steps_per_epoch:  # check now and then: each check syncs
                        _check_finite(losses, epoch)
                if cuda:
                    torch.cuda.synchronize()
            train_seconds += time.perf_counter() - t0
            train_images += steps_per_epoch * cfg.batch_size

            # ---- evaluation on the validation split
            with sw.phase("validation"):
                v = evaluate(model, val, cfg.eval_batch_size, device, amp_dtype)
            metrics = {
                "epoch": epoch,
                TRAIN_LOSS: torch.stack(losses).mean().item(),
                VAL_ACC: v["acc"],
                VAL_LOSS: v["loss"],
                LR: lr,  # of the epoch's last step
            }
            history.append(metrics)

            # ---- the checkpoint dictionary, written atomically
            if checkpoint is not None:
                ck = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "step": epoch * steps_per_epoch,
                    "history": history,
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "generator": gen.get_state(),
                        "cuda": torch.cuda.get_rng_state_all() if cuda else None,
                    },
                    "config": dataclasses.asdict(cfg),
                    "seed": seed,
                    "train_resolution": train_resolution,
                    "train_seconds": train_seconds,
                    "train_images": train_images,
                }
                with sw.phase("checkpoints"):
                    save_atomic(ck, Path(checkpoint))

            epoch_bar.set_postfix(loss=f"{metrics[TRAIN_LOSS]:.3f}", val_acc=f"{v['acc']:.3f}")
            epoch_bar.update(1)
            if lines is not None:
                lines.epoch(epoch, metrics[TRAIN_LOSS], v["acc"])
            if on_epoch is not None:
                with sw.phase("tracking"):
                    on_epoch(epoch, dict(metrics))  # may raise to stop (pruning): let it propagate

    # ---- the test splits, one resolution at a time
    test = {}
    for r in test_resolutions:
        with sw.phase("data"):
            split = data.split("test", r, device=device)
        with sw.phase("test_eval_zoom"):
            test[int(r)] = evaluate(model, split, cfg.eval_batch_size, device, amp_dtype)
        del split
    if lines is not None:
        lines.end(history[-1][VAL_ACC] if history else float("nan"))
    return TrainResult(
        history=history,
        test=test,
        images_per_s=train_images / train_seconds if train_seconds > 0 else 0.0,
        params=params,
        resumed_from_epoch=start_epoch,
        device=str(device),
        val_images=len(val.labels),
    )


# ---------------------------------------------------------------------------- helpers
#: seconds between two per-epoch progress lines when stderr is not a terminal
LINE_INTERVAL_S = 30.0


class _Lines:
    """Progress as plain lines on stderr, for logs that are not a terminal (nohup, SLURM, CI)."""

    def __init__(self, label: str | None, epochs: int) -> None:
        self.label, self.epochs = label, epochs
        self.t0 = self.last = time.monotonic()

    def say(self, text: str) -> None:
        print(f"{self.label}: {text}" if self.label else text, file=sys.stderr, flush=True)

    def start(self, resolution: int, steps: int, device: torch.device, start_epoch: int, note: str = "") -> None:
        resumed = f", resuming after epoch {start_epoch}" if start_epoch else ""
        self.say(f"training started: {count(self.epochs, 'epoch')} of {count(steps, 'step')} at r{resolution} "
                 f"on {device}{resumed}"
                 f"{f'; {note}' if note else ''}")

    def epoch(self, epoch: int, loss: float, val_acc: float) -> None:
        now = time.monotonic()
        if now - self.last >= LINE_INTERVAL_S and epoch < self.epochs:  # the last epoch: the end line says it
            self.last = now
            self.say(f"epoch {epoch}/{self.epochs} loss {loss:.4f} val acc {val_acc:.4f} "
                     f"({format_duration(now - self.t0)})")

    def end(self, val_acc: float) -> None:
        self.say(f"training done in {format_duration(time.monotonic() - self.t0)}, val acc {val_acc:.4f}")


def _check_finite(losses: list[torch.Tensor], epoch: int) -> None:
    """Raise ``TrialFailed`` naming the first non-finite loss of the epoch (steps count from 1)."""
    bad = ~torch.isfinite(torch.stack(losses))
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise TrialFailed(f"non-finite loss ({losses[i].item()}) at epoch {epoch} step {i + 1}")
