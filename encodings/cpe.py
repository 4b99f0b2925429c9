"""``cpe``: conditional positional encoding, CPVT's Position Encoding Generator (PEG) (Chu et al.,
"Conditional Positional Encodings for Vision Transformers", ICLR 2023; also the PEG of Twins).

Definition. The N = H·W patch tokens, in raster order (token n = y·W + x, y = row, x = column), are
laid out as a D-channel image X[b, c, y, x] and replaced by themselves plus a depthwise k×k
convolution of themselves, zero-padded by r = k // 2 (so the output has the input's H×W size):

    X'[b, c, y, x] = X[b, c, y, x] + β_c + Σ_{i=0..k−1} Σ_{j=0..k−1} w_c[i, j] · X[b, c, y + i − r, x + j − r]

with X = 0 outside the grid (the zero padding), one k×k kernel w_c and one bias β_c per channel
c < D (``groups = D``), stride 1. The cls token is not part of the image and passes unchanged.
Nothing else: no table, no position index, no normalisation or activation (the paper's Algorithm 1
is one ``nn.Conv2d(D, D, k, 1, k // 2, groups=D)`` plus the residual).

Why it carries position. A convolution is translation-equivariant, so in the interior of the grid
the PEG sees only content. The zero padding breaks the equivariance at the border: a patch within
r of an edge sees zeros where its neighbours would be, and stacked layers propagate that
border signal inwards, so the network can recover absolute position (CPVT's explanation, after
Islam et al., ICLR 2020, who showed zero-padded CNNs encode absolute position; the paper's ablation
without padding loses accuracy). The class therefore declares ``relative = False``: the signal is
tied to the distance to the grid's border, not to offsets between patches. ``PatchGrid.offset``
is ignored (a convolution has no notion of where the grid sits); k = 1 gives a per-channel
scale and bias only, no position at all.

Where it sits. Option ``blocks``: the 0-based indices of the blocks after which a PEG is applied
(through the ``after_block`` hook, on the patch tokens of the whole (B, T, D) sequence), one PEG
with its own weights per entry; −1 means on the patch tokens before the first block (through the
``tokens`` hook, before the cls token is prepended). The default (0,), one PEG after the first
block, is CPVT's: its ablation of the position (DeiT-tiny, ImageNet top-1) finds a PEG after the
first encoder block (position 0) better than before it (position −1, on the patch embeddings)
and than later blocks; DeiT-tiny without any position encoding drops from 72.2 % to 68.2 %.
(The per-position figures are not reproduced here: they were not at hand to check.) The paper's
reading: after one block of global attention each token already
mixes information from the whole image, so the k×k neighbourhood the PEG sees carries more
context than raw patch embeddings do (a larger effective receptive field), while a PEG placed
deep leaves the early blocks without any position.

New grid: nothing to do. The convolution runs on any H×W (a 1-row grid included), so there is no
table to resample and no ``policy`` option; what the border tells a patch is the same at every
resolution, which is how CPVT generalises to inputs larger than the training ones.

Initialisation (option ``init``): ``torch`` (default), PyTorch's default for ``nn.Conv2d``, as in
the paper's Algorithm 1, which sets none: Kaiming-uniform with a = √5 on fan_in = k² (one input
channel per group), i.e. w ~ U(−1/k, 1/k), and β ~ U(−1/k, 1/k). ``fan_out``: what the authors'
released code does (the PEG ``PosCNN`` of the Twins repository, the code release of CPVT, is
re-initialised by ``CPVTV2._init_weights``): w ~ N(0, 2 / fan_out) with fan_out = k²·D / groups = k²
(std √2 / k), β = 0. The ViT's own initialisation touches only linear layers and the cls token, so
the PEG keeps exactly one of these two.

Weight decay: none on the PEG. The released code's ``no_weight_decay`` returns every parameter of
``pos_block`` (weights and biases), and ``no_weight_decay()`` here names them all.

Precision: the convolution and the residual run in float32 with autocast off and the result is
rounded once to the dtype of the activations (as ``add_table`` does for tables), so under bf16
autocast the position signal is not computed in bf16. The image is a view of the tokens (the
(B, N, D) layout read as a channels-last (B, D, H, W) image), so no copy is made before the
convolution; its channels-last output is read back as (B, N, D) without a copy either.

Parameters: ``pegs.i.weight`` (D, 1, k, k) and ``pegs.i.bias`` (D,), i indexing ``blocks`` in the
order given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from harness.encodings._precision import autocast_off
from harness.encodings.base import PositionalEncoding, register_encoding


@register_encoding("cpe")
class ConditionalPE(PositionalEncoding):
    """Conditional position encoding (CPVT's PEG): patches += zero-padded depthwise k×k conv, after block 0."""

    @dataclass(frozen=True)
    class Options:
        kernel: int = 3
        blocks: tuple[int, ...] = (0,)
        init: Literal["torch", "fan_out"] = "torch"

        def validate(self, dims):
            if self.kernel < 1 or self.kernel % 2 == 0:
                raise ValueError(f"option 'kernel' must be an odd integer >= 1 (zero padding kernel // 2 keeps "
                                 f"the grid's size only for odd kernels), got {self.kernel}")
            if not self.blocks:
                raise ValueError("option 'blocks' needs at least one entry (a cpe without a PEG is 'none')")
            bad = [b for b in self.blocks if not -1 <= b <= dims.depth - 1]
            if bad:
                raise ValueError(f"option 'blocks': entries must lie in [-1, {dims.depth - 1}] (-1: before the "
                                 f"first block; the model has {dims.depth} blocks), got {list(self.blocks)}")
            dupes = sorted({b for b in self.blocks if self.blocks.count(b) > 1})
            if dupes:
                raise ValueError(f"option 'blocks': duplicate entries {dupes} in {list(self.blocks)} "
                                 f"(one PEG per position)")

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        k, d = self.opts.kernel, dims.dim
        self.pegs = nn.ModuleList(nn.Conv2d(d, d, k, stride=1, padding=k // 2, groups=d, bias=True)
                                  for _ in self.opts.blocks)
        if self.opts.init == "fan_out":
            with torch.no_grad():
                for conv in self.pegs:
                    conv.weight.normal_(0.0, (2.0 / (k * k)) ** 0.5)  # fan_out = k * k * d / groups = k * k
                    conv.bias.zero_()
        #: layer (-1: before the first block) -> index into ``pegs``
        self._where = {b: i for i, b in enumerate(self.opts.blocks)}

    def peg(self, patches: torch.Tensor, grid, index: int) -> torch.Tensor:
        """PEG number ``index`` on patch tokens (B, N, D), raster order: x + DWConv(x), same shape
        and dtype (computed in float32, autocast off, rounded once)."""
        conv = self.pegs[index]
        B, N, D = patches.shape
        with autocast_off(patches.device):
            x = patches.float()
            img = x.transpose(1, 2).reshape(B, D, grid.rows, grid.cols)  # a view: channels-last (B, D, H, W)
            out = F.conv2d(img, conv.weight, conv.bias, padding=conv.padding, groups=D)
            return (x + out.flatten(2).transpose(1, 2)).to(patches.dtype)

    def tokens(self, x, grid, state):
        i = self._where.get(-1)
        return x if i is None else self.peg(x, grid, i)

    def after_block(self, x, grid, state, layer):
        i = self._where.get(layer)
        if i is None:
            return x
        p = grid.num_prefix
        return torch.cat([x[:, :p], self.peg(x[:, p:], grid, i)], dim=1)

    def no_weight_decay(self):
        return {f"pegs.{i}.{n}" for i, conv in enumerate(self.pegs) for n, _ in conv.named_parameters()}
