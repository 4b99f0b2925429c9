"""Training: one recipe (``TrainConfig``) and one loop (``train_model``) that reads top to bottom.

The loop, like nanoGPT's ``train.py``: a learning-rate function (linear warm-up, then cosine
decay to ``min_lr``, per step), the step (:class:`TrainStep`: bf16 autocast on CUDA,
label-smoothed cross-entropy, global-norm clipping, AdamW; ``harness bench`` times it), the
evaluation (validation every epoch, every test resolution at the end) and the checkpoint
dictionary (written atomically after every epoch; a run restarted with the same checkpoint
continues from the next epoch and ends with the same metrics; ``harness.training.checkpoint`` writes it
and checks every field before resuming).

The data stay on the device: the train and validation splits are fetched once, shuffled with
``randperm`` and sliced into batches (the last partial batch of an epoch is dropped), and the
augmentation runs on the device, in batch. One ``torch.Generator`` seeded from ``seed`` drives
the shuffling, the augmentation and the encoding's own random draws in training (``pe.generator``:
``rope_dinov3``'s coordinate augmentation), so two runs with the same seed on the CPU give bitwise
identical metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from harness.config import TrainConfig, TrainConfigError
from harness.schema import LR, NO_POLICY, TRAIN_LOSS, VAL_ACC, VAL_LOSS, Size, Variant
from harness.training.checkpoint import OutputWriteError, load_checkpoint, save_atomic
from harness.errors import HarnessError, TrialFailed  # TrialFailed lives in errors: the model raises it too
from harness.training.progress import format_duration
from harness.training.stopwatch import Stopwatch
from harness.variants import rescale, temperature_factor

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


def resolve_device(name: str, *, option: str = "train.device",
                   error: type[HarnessError] = TrainConfigError) -> torch.device:
    """``auto``: CUDA when available, else the CPU. ``cuda`` without CUDA is an error.

    ``option`` names the setting in messages (``--device`` for the CLI) and ``error`` is the
    exception type raised.
    """
    if name not in ("auto", "cpu", "cuda"):
        raise error(f"{option} must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise error(f"{option} is 'cuda' but CUDA is not available here (use 'auto' or 'cpu')")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_device(device: torch.device, threads: int = 0) -> torch.dtype | None:
    """The recipe's numerics on ``device``: ``threads`` CPU threads (when > 0), TF32 matmuls on
    CUDA. Returns the autocast dtype: bfloat16 on CUDA, None (float32) on the CPU."""
    if threads > 0:
        torch.set_num_threads(threads)
    if device.type != "cuda":
        return None
    torch.set_float32_matmul_precision("high")  # TF32 matmuls
    torch.backends.cudnn.allow_tf32 = True
    return torch.bfloat16  # bf16 autocast on CUDA only


def lr_at(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of (0-based) ``step``: linear warm-up to ``lr``, then cosine to ``min_lr``.

    Warm-up steps 0 .. w-1 use lr * (step + 1) / w; after it the cosine runs from ``lr`` at
    step w to ``min_lr`` at the last step, total_steps - 1.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = total_steps - 1 - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps > 0 else 1.0
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------- the step
class TrainStep:
    """One optimisation step of the recipe, ready to call: ``step(x, y, lr) -> loss``.

    Holds the model, the network that runs (``torch.compile`` of it when ``cfg.compile``) and
    AdamW over :func:`param_groups` (fused on CUDA). A call sets the learning rate, augments
    ``x`` (``cfg.augment``, drawn from ``gen``), runs the forward pass under autocast
    (``amp_dtype``), the label-smoothed cross-entropy in float32, the backward pass, global-norm
    clipping, the AdamW step, and clears the gradients. ``harness bench`` times this same step.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None,
                 gen: torch.Generator | None = None) -> None:
        self.model, self.cfg, self.device, self.amp_dtype, self.gen = model, cfg, device, amp_dtype, gen
        self.net = torch.compile(model) if cfg.compile else model  # `model` keeps the plain state_dict
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                           fused=device.type == "cuda")

    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.cfg.augment == "flip_crop":
            x = flip_crop(x, self.gen)
        with autocast(self.device, self.amp_dtype):
            logits = self.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.cfg.label_smoothing)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss


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


def evaluate_variants(
    model: nn.Module, data: Any, cfg: TrainConfig, *, train_resolution: int,
    sizes: Mapping[str, Sequence[Size]], variants: Sequence[Variant], stopwatch: Stopwatch | None = None,
) -> dict[tuple[Variant, Size], dict[str, float]]:
    """Accuracy and loss of the trained ``model`` on the test split at every size of its regime
    (``sizes[regime]``) under every evaluation variant, all on the same weights: the regime picks the test images
    (``data.split(..., regime=, train_size=)``), the policy and temperature the model's
    behaviour off its training grid (``model.variant``; ``NO_POLICY``: the encoding's own).

    Variants identical by definition are evaluated once: on the training grid every new-grid
    policy is the identity and every temperature 1 (:func:`as_trained` checks both for the
    variant at hand), so there each such variant is the model as trained, and one evaluation
    serves every one of them, in either regime, as long as the images are the same (compared,
    not assumed: a canvas of the training size is the training image). ``stopwatch`` times the
    data (``data``) and each regime's evaluations (``test_eval_<regime>``).

    Each result also holds ``acc_a`` and ``acc_b``, the accuracy on each half of the test images
    (:func:`split_in_halves`), from the same logits: the report chooses a variant on one half and
    scores it on the other."""
    sw = stopwatch or Stopwatch()
    device = resolve_device(cfg.device)
    amp_dtype = prepare_device(device)
    out: dict[tuple[Variant, Size], dict[str, float]] = {}
    as_trained_runs: list[tuple[Any, dict[str, float]]] = []  # (split, result) of the model as trained
    for regime in dict.fromkeys(v.regime for v in variants):
        for size in sizes[regime]:
            with sw.phase("data"):
                split = data.split("test", size, device=device, regime=regime, train_size=train_resolution)
                halves = split_in_halves(split.labels)
            with sw.phase(f"test_eval_{regime}"):
                for v in (v for v in variants if v.regime == regime):
                    same = as_trained(model, v, size)
                    done = next((m for s, m in as_trained_runs if _same_split(s, split)), None) if same else None
                    if done is None:
                        with model.variant(None if v.policy == NO_POLICY else v.policy, v.temperature):
                            done = evaluate(model, split, cfg.eval_batch_size, device, amp_dtype, halves)
                        if same:
                            as_trained_runs.append((split, done))
                    out[v, size] = dict(done)
            del split
    return out


def as_trained(model: nn.Module, variant: Variant, size: Size) -> bool:
    """Whether ``variant`` at image ``size`` computes what the model computes as trained: the
    training grid, where the variant's new-grid policy maps every patch index to itself and its
    temperature is 1 (both checked on the grid's axes, so a plugin policy or temperature that
    breaks the rule is evaluated on its own)."""
    grid = model.grid(size.rows, size.cols)
    if not grid.is_train_grid:
        return False
    if temperature_factor(variant.temperature, grid.num_patches, grid.num_patches) != 1.0:
        return False
    if variant.policy == NO_POLICY:
        return True
    return all(rescale(float(i), n, n, variant.policy) == i for n in {grid.rows, grid.cols} for i in range(n))


def _same_split(a: Any, b: Any) -> bool:
    """Whether two splits hold the same images and labels (the very tensors, or equal ones)."""
    if a is b:
        return True
    return (a.images.shape == b.images.shape and torch.equal(a.images, b.images)
            and torch.equal(a.labels, b.labels))


#: the seed of the split of the test images into halves A and B (:func:`split_in_halves`)
HALVES_SEED = 0


def split_in_halves(labels: torch.Tensor | Sequence[int], seed: int = HALVES_SEED) -> torch.Tensor:
    """Half A of a test split, as a boolean mask over its images (half B: the rest): a seeded,
    class-stratified split, a function of the labels alone, so every run, every test size and
    every regime of a dataset (whose test splits hold the same scenes with the same labels) gets
    the same halves. Each class is shuffled (numpy's default_rng with ``seed``, classes in
    label order) and its first half goes to A; of the classes with an odd count, the first,
    third, ... give their extra image to A and the others to B, so the halves differ by at most
    one image overall and within each class."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    rng = np.random.default_rng(seed)
    in_a = np.zeros(len(y), dtype=bool)
    odd = 0
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        extra = len(idx) % 2
        in_a[idx[: len(idx) // 2 + (extra if odd % 2 == 0 else 0)]] = True
        odd += extra
    return torch.from_numpy(in_a)


@torch.no_grad()  # not inference_mode: the encodings cache tables that training reuses
def evaluate(
    model: nn.Module, split: Any, batch_size: int, device: torch.device | str, amp_dtype: torch.dtype | None = None,
    halves: torch.Tensor | None = None,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy (no label smoothing) of ``model`` on ``split``; with
    ``halves`` (a boolean mask of half A, :func:`split_in_halves`), also ``acc_a`` and ``acc_b``, the
    accuracy on each half, counted from the same predictions (no second forward pass)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    images, labels = split.images.to(device), split.labels.to(device)
    loss_sum = torch.zeros((), device=device)
    hits = torch.zeros(len(labels), device=device, dtype=torch.bool)
    for i in range(0, len(labels), batch_size):
        x, y = images[i : i + batch_size], labels[i : i + batch_size]
        with autocast(device, amp_dtype):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        hits[i : i + batch_size] = logits.argmax(dim=1) == y
    model.train(was_training)
    n = max(len(labels), 1)
    out = {"acc": hits.sum().item() / n, "loss": loss_sum.item() / n}
    if halves is not None:
        in_a = halves.to(device)
        out["acc_a"] = hits[in_a].sum().item() / max(int(in_a.sum()), 1)
        out["acc_b"] = hits[~in_a].sum().item() / max(int((~in_a).sum()), 1)
    return out


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
        self.say(f"training started: {self.epochs} epochs of {steps} steps at r{resolution} on {device}{resumed}"
                 f"{f'; {note}' if note else ''}")

    def epoch(self, epoch: int, loss: float, val_acc: float) -> None:
        now = time.monotonic()
        if now - self.last >= LINE_INTERVAL_S and epoch < self.epochs:  # the last epoch: the end line says it
            self.last = now
            self.say(f"epoch {epoch}/{self.epochs} loss {loss:.4f} val acc {val_acc:.4f} "
                     f"({format_duration(now - self.t0)})")

    def end(self, val_acc: float) -> None:
        self.say(f"training done in {format_duration(time.monotonic() - self.t0)}, val acc {val_acc:.4f}")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for every trainable parameter except the 1-d ones (biases, norms) and
    the names ``model.no_weight_decay()`` lists (one rule for our ViT and timm's)."""
    named = dict(model.named_parameters())
    skip = {n for n, p in named.items() if p.ndim <= 1}
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay()) & set(named)
    decay = [p for n, p in named.items() if p.requires_grad and n not in skip]
    no_decay = [p for n, p in named.items() if p.requires_grad and n in skip]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on CUDA; nothing on the CPU or when ``dtype`` is None."""
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def flip_crop(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random crop after reflect-padding by 1/8 of the side, in batch."""
    B, C, H, W = x.shape
    dev = x.device
    flip = torch.rand(B, generator=gen, device=dev) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    ph, pw = H // 8, W // 8
    if ph == 0 and pw == 0:
        return x
    padded = F.pad(x, (pw, pw, ph, ph), mode="reflect")  # (B, C, H + 2ph, W + 2pw)
    dy = torch.randint(0, 2 * ph + 1, (B,), generator=gen, device=dev)
    dx = torch.randint(0, 2 * pw + 1, (B,), generator=gen, device=dev)
    rows = (dy[:, None] + torch.arange(H, device=dev))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(W, device=dev))[:, None, None, :]  # (B, 1, 1, W)
    b = torch.arange(B, device=dev)[:, None, None, None]
    c = torch.arange(C, device=dev)[None, :, None, None]
    return padded[b, c, rows, cols]  # (B, C, H, W)


def _check_finite(losses: list[torch.Tensor], epoch: int) -> None:
    """Raise ``TrialFailed`` naming the first non-finite loss of the epoch (steps count from 1)."""
    bad = ~torch.isfinite(torch.stack(losses))
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise TrialFailed(f"non-finite loss ({losses[i].item()}) at epoch {epoch} step {i + 1}")
