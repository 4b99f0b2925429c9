"""Evaluation-time variants: what changes only off the training grid, applied to trained weights.

Two registries of plain functions (the generic ``harness.registry.Registry``):

- ``POLICIES``: how an encoding places the positions of a grid it was not trained on, along
  one axis: ``f(index, n, n_train) -> positions`` for patch indices ``index`` (0 .. n-1) of an
  axis of ``n`` patches, trained with ``n_train``. On the training grid every policy is the
  identity, so training never depends on it.

  - ``extrapolate``: one unit per patch; the range grows with the grid.
  - ``interpolate``: the new grid spans the training range with its ends aligned,
    index * (n_train - 1) / (n - 1) (the first and last patch land on the training grid's).
  - ``interpolate_eva``: timm / EVA-02's rule, index * n_train / n (the grid is rescaled as
    if its patches shrank; the last patch falls short of the training grid's last).

- ``TEMPERATURES``: a factor on the attention logits q.k / sqrt(d) of a grid of ``n`` patches,
  trained with ``n_train``: ``f(n, n_train) -> factor``.

  - ``none``: 1.
  - ``log``: log n / log n_train, which keeps the attention entropy from growing with the
    number of tokens (Chiang & Cholak 2022; used for ViT resolution extrapolation, e.g. by
    FiT and in "length-extrapolatable" attention). A bias added to the logits (ALiBi) is not
    scaled.

Works on floats and tensors alike; torch-free.
"""

from __future__ import annotations

import math
from typing import Any

from harness.registry import Registry
from harness.schema import NO_POLICY

__all__ = ["POLICIES", "TEMPERATURES", "default_policy", "register_policy", "register_temperature", "rescale",
           "temperature_factor"]

POLICIES: Registry[Any] = Registry("policy")
TEMPERATURES: Registry[Any] = Registry("temperature")
register_policy = POLICIES.register
register_temperature = TEMPERATURES.register


@register_policy("extrapolate")
def extrapolate(index: Any, n: int, n_train: int) -> Any:
    """One unit per patch: the range grows with the grid."""
    return index


@register_policy("interpolate")
def interpolate(index: Any, n: int, n_train: int) -> Any:
    """Ends aligned: index * (n_train - 1) / (n - 1)."""
    if n > 1 and n != n_train:
        return index * ((n_train - 1) / (n - 1))
    return index


@register_policy("interpolate_eva")
def interpolate_eva(index: Any, n: int, n_train: int) -> Any:
    """timm / EVA-02: index * n_train / n."""
    if n != n_train:
        return index * (n_train / n)
    return index


@register_temperature("none")
def no_temperature(n: int, n_train: int) -> float:
    """Logits as trained."""
    return 1.0


@register_temperature("log")
def log_temperature(n: int, n_train: int) -> float:
    """log n / log n_train (1 on the training grid; 1 when either grid has a single patch)."""
    if n == n_train or n < 2 or n_train < 2:
        return 1.0
    return math.log(n) / math.log(n_train)


def rescale(index: Any, n: int, n_train: int, policy: str) -> Any:
    """Positions along one axis of ``n`` patches (trained with ``n_train``) under ``policy``."""
    return POLICIES.get(policy)(index, n, n_train)


def temperature_factor(name: str, n: int, n_train: int) -> float:
    """The factor on the attention logits of a grid of ``n`` patches (trained: ``n_train``)."""
    return TEMPERATURES.get(name)(n, n_train)


def default_policy(summary: Any) -> str:
    """The policy an encoding uses when nobody chooses one, named as its evaluation variants name
    it: its ``policy`` option's default, or :data:`~harness.schema.NO_POLICY` (``na``) for an
    encoding with no choice of policy (evaluated once, like ``none`` and ``learned``).
    ``summary``: the encoding's ``describe()`` (its ``policies`` and ``default_policy``). The
    report shows this variant as what a user gets without choosing."""
    if len(summary.policies) > 1 and summary.default_policy:
        return str(summary.default_policy)
    return NO_POLICY
