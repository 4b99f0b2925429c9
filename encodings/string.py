"""``string``: Cayley-STRING, separable translation-invariant rotary encoding (Schenck et al., ICML 2025).

STRING ("Learning the RoPEs: Better 2D and 3D Position Encodings with STRING", Schenck et al.,
ICML 2025, arXiv:2502.02562, Definition 3.1) encodes a position r = (x, y) as the rotation

    R(r) = exp(x L_x + y L_y),   L_x, L_y skew-symmetric (d x d) and commuting: L_x L_y = L_y L_x,

so R(r_i)^T R(r_j) = R(r_j - r_i) exactly, for every value of the generators (unlike LieRE with
blocks b > 2, whose generators need not commute). By the paper's Theorem 3.4 every such R is
R(r) = P^T RoPE(r) P for one orthogonal P; its Eq. 10 parameterises P by the Cayley transform of a
learned skew-symmetric S ("Cayley-STRING", the variant implemented here):

    P = (I - S)(I + S)^{-1},   S = U - U^T, U strictly upper triangular (d(d-1)/2 learned entries).

Definition used here, per layer l and head h (P, S and the frequencies are all per (layer,
head); the paper stores P "once per attention head", and every layer has its own heads):

- positions: p_i = (x_i, y_i), the patch's column and row (``grid.yx``, ``grid.offset`` included)
  after the new-grid policy (``harness.variants.rescale``, per axis);
- RoPE part: RoPE-Mixed with learned 2-D frequencies, exactly as ``rope_mixed``: pair j =
  channels (2j, 2j+1) turns by the angle theta_j(p) = f_j . p = f_jx x + f_jy y, as
  (z0, z1) -> (z0 cos - z1 sin, z0 sin + z1 cos) (one complex multiplication); so
  RoPE(p) = exp(x J_x + y J_y) with J_x = diag_j(f_jx [[0, -1], [1, 0]]), J_y likewise (block
  diagonal with the same 2x2 blocks: they commute);
- q_i' = RoPE(p_i) P q_i and k_j' = RoPE(p_j) P k_j, the same P for queries and keys;
- the cls token has no position: its R is the identity, i.e. RoPE(p_cls) = I, so it is turned by
  P alone: q_cls' = P q_cls, k_cls' = P k_cls (the same for every grid; ``cls_untouched = False``).

Every logit is then STRING's, the cls token's included. Between patches, q_i'.k_j' =
q_i^T P^T RoPE(p_j - p_i) P k_j = q_i^T R(p_i)^T R(p_j) k_j with R(p) = P^T RoPE(p) P =
exp(x L_x + y L_y), L_x = P^T J_x P and L_y = P^T J_y P: STRING's definition exactly. The hook
applies RoPE(p) P, not P^T RoPE(p) P: the two differ by the left factor P^T, one orthogonal map
common to every token, which no dot product sees (as the paper notes). It must be common to
*every* token, cls included: with the cls token untouched (as this encoding first did), a
cls-to-patch logit was q_cls^T RoPE(p_j) P k_j instead of STRING's q_cls^T R(p_j) k_j =
q_cls^T P^T RoPE(p_j) P k_j, wrong as soon as S != 0 (issue #21: off by more than 1 for a
random S, while every patch-to-patch logit agreed). Turning the cls token by P gives
q_cls^T P^T RoPE(p_j) P k_j = q_cls^T R(p_j) k_j, and P^T P = I in the cls-to-cls logit.
Relative: the patch-to-patch logits depend on p_j - p_i only (``relative = True``, tested by the
kit by shifting every position); under ``interpolate`` the positions are scaled per axis before
the rotation, which keeps that. The cls token's logits with a patch depend on where that patch
is, as with every rotary encoding (R_cls = I is R at the origin).

Initialisation: the frequencies as ``rope_mixed`` (magnitudes m_k = base^(-4k/d), k < d/4,
base 10; one angle alpha ~ U[0, 2 pi) per (layer, head); f_j = m_j (cos alpha, sin alpha) for the
first d/4 pairs, m_j (-sin alpha, cos alpha) for the rest). S = 0, so P = I and the encoding
starts as RoPE-Mixed exactly (the paper's "RoPE is STRING with P = I"; its text gives no
initialisation of S; at P = I the cls token is untouched, as in ``rope_mixed``). Gradients
reach S from the first step (dP = -2 dS at S = 0).

New grid: positions by the policy (``extrapolate``: one unit per patch, the default;
``interpolate``: an axis index scaled by (n_train - 1)/(n - 1)); P does not depend on the grid.

Weight decay: none for the frequencies (as ``rope_mixed``, Heo et al.) nor for S. S only
parameterises a rotation (P is orthogonal for every S): decaying it would pull P towards I,
i.e. towards plain RoPE-Mixed, a prior the paper does not state.

Precision: the angles, the table cos + i sin and P (one ``torch.linalg.solve`` of (I + S) P =
I - S per layer and head) are computed in float32 in ``build`` (autocast off, no TF32); the hook
computes P q in float32 with autocast off (under TF32 that product keeps 10 mantissa bits, as
LieRE's block product does), rotates in complex64 and rounds once to q's dtype.

Cost: per forward, L h solves of d x d systems (O(L h d^3), independent of the grid) and a
table of L h T d/2 complex angles (as ``rope_mixed``, the cls token's angle 0) plus L h d^2
floats for P; per layer, one dense d x d product per query and key token, cls included (2 B h T
d^2 multiply-adds) and the complex rotation.
LieRE (block b) instead computes L h N d/b matrix exponentials of b x b blocks per forward and
keeps a table of L h T d b floats (it grows with the grid), then multiplies each token by its own
block-diagonal matrix (2 B h N d b multiply-adds). At inference P could be folded into W_q and
W_k (the paper notes it); the hook keeps it separate, so training and evaluation run the same
code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harness.encodings._precision import autocast_off
from harness.encodings._rotary import RotaryEncoding, rotate
from harness.encodings.base import register_encoding, rescale
from harness.encodings.rope_mixed import mixed_frequencies


@register_encoding("string")
class CayleySTRING(RotaryEncoding):
    """Cayley-STRING: RoPE-Mixed in a learned orthogonal basis P = (I - S)(I + S)^-1 per layer and head."""

    @dataclass(frozen=True)
    class Options:
        base: float = 10.0
        policy: Literal["extrapolate", "interpolate"] = "extrapolate"

        def validate(self, dims):
            if self.base <= 1:
                raise ValueError(f"option 'base' must be > 1, got {self.base}")

    head_dim_multiple = 4
    # q_i'.k_j' = q_i^T P^T RoPE(p_j - p_i) P k_j: a function of the offset only, for every S
    relative = True
    # the cls token is turned by P (RoPE(p_cls) = I), so that its logits are STRING's too
    cls_untouched = False

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        d = dims.head_dim
        # the RoPE part: rope_mixed's frequencies and initialisation, (L, h, d/2, 2) = (f_x, f_y) per pair
        self.freqs = nn.Parameter(mixed_frequencies(dims, self.opts.base))
        # S = U - U^T: the strictly upper-triangular entries of U (triu_indices order), S = 0 at init
        self.skew = nn.Parameter(torch.zeros(dims.depth, dims.heads, d * (d - 1) // 2))
        self.register_buffer("_upper", torch.triu_indices(d, d, offset=1), persistent=False)

    def skew_matrix(self) -> torch.Tensor:
        """S = U - U^T, (L, h, d, d), in the dtype of the parameter."""
        d = self.dims.head_dim
        u = self.skew.new_zeros(*self.skew.shape[:-1], d, d)
        u[..., self._upper[0], self._upper[1]] = self.skew
        return u - u.transpose(-1, -2)

    def basis(self) -> torch.Tensor:
        """P = (I - S)(I + S)^{-1} = (I + S)^{-1}(I - S) (the two factors commute), (L, h, d, d):
        orthogonal with det +1 for every skew-symmetric S (I + S is always invertible)."""
        s = self.skew_matrix().float()
        eye = torch.eye(s.shape[-1], device=s.device, dtype=s.dtype)
        return torch.linalg.solve(eye + s, eye - s)

    def angles(self, grid, device):
        y, x = grid.yx(device)
        p = self.opts.policy
        pos = torch.stack([rescale(x, grid.cols, grid.train_cols, p), rescale(y, grid.rows, grid.train_rows, p)], 1)
        return torch.einsum("nc,lhjc->lhnj", pos, self.freqs.float())  # (L, h, N, d/2), f_j . p

    def build(self, grid, device):
        """(cis, P): every token's cos a + i sin a (L, h, T, d/2) complex64, exactly 1 for the cls
        token (angle 0, ``RotaryEncoding.build``; compiled: the real form (L, h, T, d/2, 2),
        ``_rotary.cis_table``) and P (L, h, d, d) float32."""
        return super().build(grid, device), self.basis()

    def qk(self, q, k, grid, state, layer):
        cis, basis = state
        cis, basis = cis[layer], basis[layer]  # (h, T, d/2), (h, d, d)
        return _turn(q, cis, basis), _turn(k, cis, basis)

    def no_weight_decay(self):
        return {"freqs", "skew"}


def _turn(x: torch.Tensor, cis: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """RoPE(p) P x for every token of x (B, h, T, d), in float32 with autocast off, rounded once
    to x's dtype; the prefix tokens (cls) have the rotation 1 + 0i, so they get P x exactly."""
    with autocast_off(x.device):
        mixed = torch.einsum("bhnd,hed->bhne", x.float(), basis)  # (B, h, T, d): P x per token
        return rotate(mixed, cis).to(x.dtype)
