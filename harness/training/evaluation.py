"""Evaluation of a trained model: :func:`evaluate` (accuracy and loss on one split, and the
accuracy on each half of it), :func:`evaluate_variants` (every test size of a regime under every
evaluation variant, the variants identical to the model as trained evaluated once:
:func:`as_trained`) and :func:`split_in_halves` (the seeded halves A and B of a test split, on
which the report chooses a variant and scores it).

Validation during training and the test resolutions at its end run :func:`evaluate` from the
training loop, :mod:`harness.training.train`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.config import TrainConfig
from harness.schema import NO_POLICY, Size, Variant
from harness.training.step import autocast, prepare_device, resolve_device
from harness.training.stopwatch import Stopwatch
from harness.variants import rescale, temperature_factor

__all__ = ["HALVES_SEED", "as_trained", "evaluate", "evaluate_variants", "split_in_halves"]


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
