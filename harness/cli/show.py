"""``harness show``: figures that explain an encoding on a patch grid.

The figures follow the hooks an encoding uses, so a plugin gets them too:

- every encoding: the patch grid (stem kernel and stride, patch indices, the cls token);
- attention-logit encodings (ALiBi): the bias of every head (with the cls row and column),
  the bias from the central patch laid out on the grid, and, where the encoding has
  per-head ``slopes``, the slopes and the distance matrix;
- query/key encodings (rotary, LieRE) and encodings with no hook: the attention logit
  between a fixed query at the central patch and the same key at every patch, per head,
  as a function of the 2-D offset;
- token encodings (sinusoidal, learned): the cosine similarity of each position's
  embedding (what the hook adds to a constant token) to every other position;
- encodings acting between blocks (``cpe``'s convolution): what the hook adds, per patch, to
  a sequence whose patch tokens are all equal, after every block where it acts. A position
  signal shows up only where that change differs from patch to patch (for a zero-padded
  convolution: at the border).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Rectangle

from harness.config import ViTConfig
from harness.encodings.base import PatchGrid, build_encoding, get_encoding
from harness.errors import HarnessError
from harness.spec.presets import load_preset

__all__ = ["MAX_GRID_SIDE", "show_encoding"]

#: the largest grid side a figure can show: the similarity figure gives each position a
#: 0.6-inch panel (66 px at 110 dpi) showing the whole grid, two pixels a patch at 32 (a 32x32
#: grid takes about 30 s on a CPU; 1000x1000 would never end)
MAX_GRID_SIDE = 32


def show_encoding(name: str, *, grid: tuple[int, int], out: str | Path, preset: str = "small",
                  options: dict[str, Any] | None = None) -> list[Path]:
    """Write the PNG figures for encoding ``name`` on a ``grid`` = (rows, cols); return their paths."""
    rows, cols = grid
    if not (1 <= rows <= MAX_GRID_SIDE and 1 <= cols <= MAX_GRID_SIDE):
        raise HarnessError(f"--grid {rows}x{cols}: a figure shows grids of 1 to {MAX_GRID_SIDE} patches a side")
    hooks = get_encoding(name).describe().hooks  # unknown name: a clear error before anything is written
    matplotlib.use("Agg")  # files only, never a window
    cfg = ViTConfig.from_dict(load_preset("model", preset))
    torch.manual_seed(0)
    pe = build_encoding(name, cfg.dims, options).eval()
    rows, cols = grid
    g = PatchGrid(rows, cols, pe.dims.train_rows, pe.dims.train_cols, cfg.patch_kernel, cfg.patch_stride, 1)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"output folder {out}: cannot be created ({exc.strerror})") from None
    paths = [_patch_grid(out / f"{name}_patch_grid.png", name, g)]
    with torch.no_grad():
        state = pe.state(g, "cpu")
        if "attn_bias" in hooks:
            paths += _bias_figures(out, name, pe, g, state)
        if "qk" in hooks or not hooks:
            paths.append(_logit_figure(out / f"{name}_logits_vs_offset.png", name, pe, g, state))
        if "tokens" in hooks:
            paths.append(_similarity_figure(out / f"{name}_embedding_similarity.png", name, pe, g, state))
        if "after_block" in hooks:
            paths.append(_after_block_figure(out / f"{name}_after_block.png", name, pe, g, state))
    return paths


def _save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` and close it; a failed write (a full disk) leaves no partial
    file and is the one-line :class:`~harness.training.checkpoint.OutputWriteError`."""
    from harness.training.checkpoint import OutputWriteError

    try:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise OutputWriteError.of(exc, path.parent, f"writing {path.name}") from None
    finally:
        plt.close(fig)
    return path


def _heads_layout(n: int) -> tuple[int, int]:
    c = min(n, 4)
    return math.ceil(n / c), c


def _patch_grid(path: Path, name: str, g) -> Path:
    k, s = g.kernel, g.stride
    height, width = (g.rows - 1) * s + k, (g.cols - 1) * s + k
    fig, (ax_cls, ax) = plt.subplots(1, 2, figsize=(1.2 + 0.5 * g.cols + 1.5, 0.5 * g.rows + 1.5),
                                     gridspec_kw={"width_ratios": [1, max(2, g.cols)]})
    ax_cls.add_patch(Rectangle((0, 0), 1, 1, color="tab:orange", alpha=0.6))
    ax_cls.text(0.5, 0.5, "cls\n(token 0)", ha="center", va="center", fontsize=8)
    ax_cls.set_xlim(0, 1), ax_cls.set_ylim(0, 1), ax_cls.axis("off")
    for y in range(g.rows):
        for x in range(g.cols):
            ax.add_patch(Rectangle((x * s, y * s), k, k, fill=True, alpha=0.15, ec="tab:blue", lw=0.8))
            ax.text(x * s + k / 2, y * s + k / 2, f"{1 + y * g.cols + x}\n({y},{x})", ha="center", va="center",
                    fontsize=6)
    ax.set_xlim(0, width), ax.set_ylim(height, 0), ax.set_aspect("equal")
    ax.set_xlabel("pixels (x = column)"), ax.set_ylabel("pixels (y = row)")
    overlap = " (overlapping)" if s < k else ""
    ax.set_title(f"{name}: {g.rows}x{g.cols} patches, kernel {k}, stride {s}{overlap}; token index (row, col)",
                 fontsize=9)
    return _save(fig, path)


def _bias_figures(out: Path, name: str, pe, g, state) -> list[Path]:
    bias = pe.attn_bias(g, state, 0)
    if bias is None:
        return []
    bias = bias.float().cpu()  # (h, T, T)
    h = bias.shape[0]
    paths = []
    slopes = getattr(pe, "slopes", None)
    if isinstance(slopes, torch.Tensor) and slopes.numel() == h:
        slopes = slopes.float().cpu()
        fig, ax = plt.subplots(figsize=(1 + 0.5 * h, 3))
        ax.bar(range(h), slopes.numpy())
        ax.set_yscale("log", base=2), ax.set_xlabel("head"), ax.set_ylabel("slope m_h")
        ax.set_title(f"{name}: per-head slopes", fontsize=9)
        paths.append(_save(fig, out / f"{name}_slopes.png"))
        dist = bias[0] / -slopes[0]
        fig, ax = plt.subplots(figsize=(5, 4.5))
        im = ax.imshow(dist.numpy(), cmap="viridis")
        fig.colorbar(im, ax=ax, label="distance (patch units)")
        ax.set_title(f"{name}: token-to-token distance, token 0 = cls (distance 0)", fontsize=9)
        ax.set_xlabel("key token"), ax.set_ylabel("query token")
        paths.append(_save(fig, out / f"{name}_distance_matrix.png"))
    r, c = _heads_layout(h)
    fig, axes = plt.subplots(r, c, figsize=(3.4 * c, 3 * r), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        if i >= h:
            ax.axis("off")
            continue
        im = ax.imshow(bias[i].numpy(), cmap="magma")
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(f"head {i}", fontsize=9)
    fig.suptitle(f"{name}: attention-logit bias per head (token 0 = cls)", fontsize=10)
    paths.append(_save(fig, out / f"{name}_bias_per_head.png"))
    centre = 1 + (g.rows // 2) * g.cols + g.cols // 2
    fig, axes = plt.subplots(r, c, figsize=(3.4 * c, 3 * r), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        if i >= h:
            ax.axis("off")
            continue
        im = ax.imshow(bias[i, centre, g.num_prefix:].reshape(g.rows, g.cols).numpy(), cmap="magma")
        ax.plot(g.cols // 2, g.rows // 2, "c+", ms=10)
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(f"head {i}", fontsize=9)
    fig.suptitle(f"{name}: bias from the central patch (+) to every patch", fontsize=10)
    paths.append(_save(fig, out / f"{name}_bias_from_centre.png"))
    return paths


def _logit_figure(path: Path, name: str, pe, g, state) -> Path:
    h, d = pe.dims.heads, pe.dims.head_dim
    ones = torch.ones(1, h, g.num_tokens, d) / math.sqrt(d)  # the same content at every token
    q, k = pe.qk(ones, ones.clone(), g, state, 0)
    bias = pe.attn_bias(g, state, 0)
    cy, cx = g.rows // 2, g.cols // 2
    centre = g.num_prefix + cy * g.cols + cx
    logits = (q[0, :, centre:centre + 1] @ k[0, :, g.num_prefix:].transpose(-1, -2))[:, 0] * math.sqrt(d)
    if bias is not None:
        logits = logits + bias.float()[:, centre, g.num_prefix:]
    logits = logits.reshape(h, g.rows, g.cols).float()
    r, c = _heads_layout(h)
    fig, axes = plt.subplots(r, c, figsize=(3.4 * c, 3 * r), squeeze=False, layout="constrained")
    extent = (-cx - 0.5, g.cols - cx - 0.5, g.rows - cy - 0.5, -cy - 0.5)
    for i, ax in enumerate(axes.flat):
        if i >= h:
            ax.axis("off")
            continue
        im = ax.imshow(logits[i].numpy(), cmap="coolwarm", extent=extent)
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(f"head {i}", fontsize=9), ax.set_xlabel("dx"), ax.set_ylabel("dy")
    fig.suptitle(f"{name}, layer 0: logit q·k between a fixed query at the centre and the same key at "
                 f"offset (dy, dx); {g.rows}x{g.cols} grid", fontsize=9)
    return _save(fig, path)


def _constant_tokens(pe, g) -> torch.Tensor:
    """(1, N, D): the same random vector at every patch (content carries no position)."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, 1, pe.dims.dim, generator=gen).expand(1, g.num_patches, -1).clone()


def _similarity_figure(path: Path, name: str, pe, g, state) -> Path:
    x = _constant_tokens(pe, g)
    emb = (pe.tokens(x, g, state) - x)[0].float()  # (N, D): what the hook adds at each position
    if not emb.any():  # e.g. cpe with no convolution before the first block
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.text(0.5, 0.5, f"{name}: the tokens hook adds nothing with these options", ha="center", va="center")
        ax.axis("off")
        return _save(fig, path)
    emb = torch.nn.functional.normalize(emb, dim=-1)
    sim = (emb @ emb.T).reshape(g.rows, g.cols, g.rows, g.cols)
    fig, axes = plt.subplots(g.rows, g.cols, figsize=(0.6 * g.cols + 1, 0.6 * g.rows + 0.8), squeeze=False)
    for y in range(g.rows):
        for x in range(g.cols):
            ax = axes[y, x]
            ax.imshow(sim[y, x].numpy(), cmap="viridis", vmin=-1, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"{name}: cosine similarity of each position's embedding (subplot at row y, column x) "
                 "to every position", fontsize=8)
    return _save(fig, path)


def _after_block_figure(path: Path, name: str, pe, g, state) -> Path:
    x = _constant_tokens(pe, g)
    seq = torch.cat([torch.zeros(1, g.num_prefix, pe.dims.dim), x], dim=1)
    changes = {}
    for layer in range(pe.dims.depth):
        delta = (pe.after_block(seq, g, state, layer) - seq)[0, g.num_prefix:].float()  # (N, D)
        if delta.abs().max() > 0:
            # how far each patch's change is from the mean change: zero where it carries no position
            changes[layer] = (delta - delta.mean(0)).norm(dim=-1).reshape(g.rows, g.cols)
    n = max(len(changes), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), squeeze=False)
    if not changes:
        axes[0, 0].text(0.5, 0.5, "the hook changes nothing with these options", ha="center", va="center")
        axes[0, 0].axis("off")
    for ax, (layer, change) in zip(axes[0], changes.items()):
        im = ax.imshow(change.numpy(), cmap="magma")
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(f"after block {layer}", fontsize=9), ax.set_xlabel("column"), ax.set_ylabel("row")
    fig.suptitle(f"{name}: what the hook between blocks adds to identical patch tokens, minus its mean over "
                 f"patches (|.| per patch); nonzero = a position signal; {g.rows}x{g.cols} grid", fontsize=8)
    return _save(fig, path)
