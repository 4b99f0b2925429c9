"""The encoding interface: one value object for the patch grid, one base class with four hooks;
the registry of encodings and the option checks it shares with the spec are
:mod:`harness.encodings._catalog` (torch-free), re-exported here.

A ViT calls, once per forward pass::

    state = pe.state(grid, device)            # tables for this grid (cached when fixed)
    x = pe.tokens(x, grid, state)             # (B, N, D) patch tokens, before the cls token is added
    for layer in range(depth):
        # inside block ``layer``'s attention:
        q, k = pe.qk(q, k, grid, state, layer)        # (B, h, T, d), T = prefix + N
        bias = pe.attn_bias(grid, state, layer)       # (h, T, T) or None, added to the scaled logits
        # after block ``layer`` (attention and MLP, with their residuals):
        x = pe.after_block(x, grid, state, layer)     # (B, T, D), prefix tokens first

An encoding overrides only the hooks it uses; the others are no-ops. Random draws an encoding
makes in training (``rope_dinov3``'s coordinate augmentation) come from ``pe.generator``: the
trainer sets it to its seeded generator, so two runs with the same seed draw the same numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from harness.config import ModelDims
from harness.encodings._precision import in_float32
from harness.encodings._catalog import (
    ENCODINGS,
    HOOKS,
    EncodingConfigError,
    EncodingSummary,
    NoOptions,
    Policy,
    build_encoding,
    build_options,
    check_dims,
    get_encoding,
    known_names,
    register_encoding,
    summarize,
)
from harness.variants import rescale

__all__ = [
    "ENCODINGS",
    "HOOKS",
    "EncodingConfigError",
    "EncodingSummary",
    "ModelDims",
    "PatchGrid",
    "Policy",
    "PositionalEncoding",
    "build_encoding",
    "get_encoding",
    "known_names",
    "memoised",
    "register_encoding",
    "rescale",
]


_T = TypeVar("_T")


def memoised(cache: OrderedDict[tuple, _T], key: tuple, make: Callable[[], _T], size: int) -> _T:
    """``make()`` memoised in ``cache`` under ``key``, the least recently used entry dropped past
    ``size``: for what depends on the patch grid alone (fixed tables, index maps). While
    ``torch.export`` traces the model nothing is stored: the exported program computes the value
    itself (a tensor attribute assigned during export is not part of the program, and torch warns
    that it is not a buffer)."""
    hit = cache.get(key)
    if hit is not None:
        cache.move_to_end(key)
        return hit
    hit = make()
    if not torch.compiler.is_exporting():
        cache[key] = hit
        while len(cache) > size:
            cache.popitem(last=False)
    return hit


@dataclass(frozen=True)
class PatchGrid:
    """The patch grid of the current input, passed to every hook.

    ``rows`` x ``cols`` patches in raster order (x = column, y = row), produced by a stem of
    ``kernel`` and ``stride``; ``num_prefix`` tokens (the cls token) come before the patches;
    the model was trained on a ``train_rows`` x ``train_cols`` grid. ``offset`` = (dy, dx) is
    the position of the top-left patch, in patch units (0 for a whole image).
    """

    rows: int
    cols: int
    train_rows: int
    train_cols: int
    kernel: int = 1
    stride: int = 1
    num_prefix: int = 1
    offset: tuple[float, float] = (0.0, 0.0)

    @property
    def num_patches(self) -> int:
        return self.rows * self.cols

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.rows * self.cols

    @property
    def is_train_grid(self) -> bool:
        return (self.rows, self.cols) == (self.train_rows, self.train_cols)

    def yx(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch indices (y, x), each (N,) float32 in raster order, plus ``offset``."""
        y = torch.arange(self.rows, device=device, dtype=torch.float32).repeat_interleave(self.cols)
        x = torch.arange(self.cols, device=device, dtype=torch.float32).repeat(self.rows)
        return y + self.offset[0], x + self.offset[1]


class PositionalEncoding(nn.Module):
    """Base class: every hook is a no-op. Subclasses register with ``@register_encoding(name)``.

    Class attributes a subclass may set:

    - ``Options``: a frozen dataclass of the encoding's named options, each with a type and a
      default (bounds with ``harness.config.option(default, gt=...)``); a field
      ``policy: Literal["extrapolate", "interpolate"]`` selects the new-grid policy. The options
      are checked by ``harness.config``; ``validate(self, dims)`` on it may raise ``ValueError``
      (or ``harness.config.Invalid(field, detail)``) for values that do not fit the model dims.
    - ``relative``: True when the attention logits depend only on the offsets p_i - p_j, for
      every value of the options (the conformance kit tests it: shifting every position by
      the same offset changes no logit and no token).
    - ``fixed_tables``: True when ``build`` depends only on the grid (not on parameters):
      its result is then cached per grid shape and device.
    - ``cls_untouched``: True (the default) when the encoding leaves the cls token as it is: its
      q and k unchanged, its bias row and column zero. False for a definition that acts on it
      without giving it a position (``string`` turns its q and k by the learned basis P,
      ``cpb`` gives it learned bias entries): what it gets is then the same on every grid and
      at every offset (the conformance kit tests either).
    - ``head_dim_multiple``: the head dimension must be a multiple of it.

    A built-in's ``Options``, hooks, ``relative`` and ``head_dim_multiple`` are declared again
    in :mod:`harness.encodings._catalog`, which checks a spec without torch; a test keeps the two
    equal. A plugin (or a new file here) needs no declaration: it is built to be checked.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    relative: ClassVar[bool] = False
    fixed_tables: ClassVar[bool] = False
    cls_untouched: ClassVar[bool] = True
    head_dim_multiple: ClassVar[int] = 1
    cache_size: ClassVar[int] = 16

    def __init__(self, dims: ModelDims, **options: Any) -> None:
        super().__init__()
        self.dims = dims
        self.opts = build_options(self.name, self.Options, dims, options)
        check_dims(self.name, self.head_dim_multiple, dims)
        self._tables: OrderedDict[tuple, Any] = OrderedDict()
        #: the source of random draws in training (the trainer's seeded generator); None: torch's global one
        self.generator: torch.Generator | None = None

    @classmethod
    def describe(cls) -> EncodingSummary:
        """Hooks, policies, option defaults and description, read from the class itself."""
        doc = (cls.__doc__ or "").strip().splitlines()
        hooks = tuple(h for h in HOOKS if getattr(cls, h) is not getattr(PositionalEncoding, h))
        return summarize(cls.name, cls.Options, hooks, cls.relative, doc[0].strip() if doc else "")

    def num_trainable(self) -> int:
        """Trainable parameters of this encoding."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @contextlib.contextmanager
    def policy(self, policy: str | None) -> Iterator[None]:
        """Evaluate under new-grid ``policy`` (same weights); None: the encoding's own.
        Only off the training grid does a policy change anything; the cached tables of the
        other policy are dropped on the way in and out."""
        if policy is None or policy == getattr(self.opts, "policy", None):
            yield
            return
        policies = self.describe().policies
        if policy not in policies:
            raise EncodingConfigError(f"encoding {self.name!r} has no new-grid policy {policy!r} "
                                      f"(its policies: {', '.join(policies) or 'none'})")
        own = self.opts
        self.opts = dataclasses.replace(own, policy=policy)
        self._tables.clear()
        try:
            yield
        finally:
            self.opts = own
            self._tables.clear()

    # ------------------------------------------------------------------ tables
    def state(self, grid: PatchGrid, device: torch.device | str) -> Any:
        """This forward's tables for ``grid``: built once per forward, cached per grid if fixed.
        ``build`` runs with autocast off and full-precision float32 matmuls (``in_float32``), so
        tables are float32 under bf16 autocast and TF32 too (a bf16 angle is ~0.1 rad off)."""
        if not self.fixed_tables:
            return in_float32(device, self.build, grid, torch.device(device))
        key = (grid.rows, grid.cols, grid.num_prefix, grid.offset, str(device))
        return memoised(self._tables, key, lambda: self._fixed(grid, device), self.cache_size)

    def _fixed(self, grid: PatchGrid, device: torch.device | str) -> Any:
        with torch.no_grad():
            return in_float32(device, self.build, grid, torch.device(device))

    def build(self, grid: PatchGrid, device: torch.device) -> Any:
        """Position tables for ``grid`` (angles, biases, embeddings); None by default."""
        return None

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0,
                device: torch.device | str | None = None) -> torch.Tensor:
        """Uniform draws in [low, high), float32, from ``self.generator`` (on its device) when the
        trainer has set one, otherwise from torch's global generator on ``device``."""
        gen = self.generator
        where = gen.device if gen is not None else device
        out = torch.empty(*shape, dtype=torch.float32, device=where).uniform_(low, high, generator=gen)
        return out if device is None else out.to(device)

    # ------------------------------------------------------------------ the four hooks
    def tokens(self, x: torch.Tensor, grid: PatchGrid, state: Any) -> torch.Tensor:
        """Patch tokens (B, N, D) after the stem, before the cls token is prepended."""
        return x

    def qk(self, q: torch.Tensor, k: torch.Tensor, grid: PatchGrid, state: Any, layer: int):
        """Queries and keys (B, h, T, d) of attention layer ``layer``; prefix tokens first."""
        return q, k

    def attn_bias(self, grid: PatchGrid, state: Any, layer: int) -> torch.Tensor | None:
        """A bias (h, T, T) added to the scaled attention logits of ``layer``, or None."""
        return None

    def after_block(self, x: torch.Tensor, grid: PatchGrid, state: Any, layer: int) -> torch.Tensor:
        """The token sequence (B, T, D), prefix tokens first, after block ``layer`` (its attention
        and MLP with their residuals); what the next block (or the final norm) receives. Used by
        encodings computed from the tokens between blocks (``cpe``'s convolution)."""
        return x

    # ------------------------------------------------------------------ misc
    def no_weight_decay(self) -> set[str]:
        """Names of parameters (relative to this module) to exclude from weight decay."""
        return set()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(self.opts).items())
