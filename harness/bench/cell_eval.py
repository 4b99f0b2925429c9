"""A study cell's evaluation path, as the study runs it, for ``harness bench --spec``.

After training, every cell of a study is evaluated on the test split at every size of each
regime under every evaluation variant of its encoding (``harness.training.evaluation.evaluate_variants``
over ``harness.study.trial.variants_of``), in batches of the recipe's ``eval_batch_size``. This module
gives the bench two timed calls on one model:

- **one variant at one size**: ``harness.training.evaluation.evaluate`` of the test split under the first
  variant, at the training size and at the largest test size (by pixels);
- **the sweep**: ``evaluate_variants`` itself, every variant at every size of its regime.

The test splits are rendered once, before any timing (:meth:`CellEval.render`): a worker of
the study renders them for its first cell and keeps them for the next ones (the dataset caches
them per process), so a cell's evaluation costs the forward passes, not the rendering.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harness.config import StudySpec
from harness.data import load_dataset
from harness.schema import NO_POLICY, Size, Variant
from harness.training.evaluation import evaluate, evaluate_variants

__all__ = ["CellEval"]


class CellEval:
    """The evaluation of one cell of ``spec`` trained at ``train_resolution``, on ``device``."""

    def __init__(self, spec: StudySpec, train_resolution: int, device: torch.device,
                 amp: torch.dtype | None) -> None:
        self.spec, self.train_res, self.device, self.amp = spec, train_resolution, device, amp
        self.data = load_dataset(spec.dataset.name, spec.dataset.options)  # the instance check_request loaded
        self.recipe = dataclasses.replace(spec.train_config(), device=device.type)
        self.sizes: dict[str, tuple[Size, ...]] = {r: tuple(spec.sizes(r)) for r in spec.regimes}
        every = [s for sizes in self.sizes.values() for s in sizes]
        train = Size(train_resolution, train_resolution)
        largest = max(every, key=lambda s: s.rows * s.cols) if every else train
        #: the sizes of the one-variant timings: the training size and the largest test size
        self.single_sizes: list[Size] = [train] + ([largest] if largest != train else [])

    def render(self) -> float:
        """Render every test split the sweep reads (cached by the dataset); the seconds it took."""
        t0 = time.perf_counter()
        for regime, sizes in self.sizes.items():
            for size in sizes:
                self._split(size, regime)
        self._split(self.single_sizes[0], "zoom")
        return time.perf_counter() - t0

    def variants(self, model: nn.Module) -> list[Variant]:
        """The study's evaluation variants of ``model``'s encoding (``harness.study.trial.variants_of``)."""
        from harness.study.trial import variants_of  # optuna and MLflow: only for a spec

        return variants_of(self.spec, type(model.pe))

    def sweep_images(self, model: nn.Module, variants: list[Variant]) -> tuple[int, int]:
        """(evaluations, test images) of the sweep over ``variants`` as ``evaluate_variants`` runs
        it: one evaluation per variant and size of its regime, each over the whole test split,
        except that the variants identical to the model as trained (``harness.training.evaluation.as_trained``)
        on the same images are evaluated once."""
        from harness.training.evaluation import _same_split, as_trained

        evaluations, images, seen = 0, 0, []
        for v in variants:
            for s in self.sizes[v.regime]:
                split = self._split(s, v.regime)
                if as_trained(model, v, s):
                    if any(_same_split(split, other) for other in seen):
                        continue
                    seen.append(split)
                evaluations += 1
                images += len(split.labels)
        return evaluations, images

    def single(self, model: nn.Module, variant: Variant, size: Size) -> tuple[Callable[[], Any], int]:
        """A call that evaluates ``model`` under ``variant`` on the test split at ``size`` (the
        zoom regime at the training size: the training images), and its image count."""
        split = self._split(size, variant.regime)
        policy = None if variant.policy == NO_POLICY else variant.policy

        def run() -> dict[str, float]:
            with model.variant(policy, variant.temperature):
                return evaluate(model, split, self.recipe.eval_batch_size, self.device, self.amp)

        return run, len(split.labels)

    def sweep(self, model: nn.Module, variants: list[Variant]) -> Callable[[], Any]:
        """A call that runs the cell's whole sweep, as the study does after training."""
        return lambda: evaluate_variants(model, self.data, self.recipe, train_resolution=self.train_res,
                                         sizes=self.sizes, variants=variants)

    def describe(self) -> dict[str, Any]:
        """The sweep's settings, for the JSON."""
        return {
            "spec": self.spec.source,
            "study": self.spec.name,
            "dataset": self.spec.resolved.get("dataset"),
            "regimes": list(self.sizes),
            "sizes": {r: [s.label for s in sizes] for r, sizes in self.sizes.items()},
            "policies": list(self.spec.policies),
            "temperatures": list(self.spec.temperatures),
            "test_images": len(self._split(self.single_sizes[0], "zoom").labels),
            "eval_batch_size": self.recipe.eval_batch_size,
            "single_sizes": [s.label for s in self.single_sizes],
        }

    def _split(self, size: Size, regime: str) -> Any:
        return self.data.split("test", size, device=self.device, regime=regime, train_size=self.train_res)
