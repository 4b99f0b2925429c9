"""timm's ``VisionTransformer`` with our dimensions: the reference implementation to beat.

timm is an optional extra (``pip install "vit-pe-harness[bench]"``): it is imported only here,
and only when asked for.
"""

from __future__ import annotations

from typing import Any

from harness.bench.request import BenchError
from harness.config import ViTConfig

__all__ = ["TIMM_TARGET", "build_timm_vit", "timm_unavailable", "timm_version"]

#: our ``learned`` training images/s over timm's, at least (defined for the CPU, preset small)
TIMM_TARGET = 1.0


def timm_unavailable(cfg: ViTConfig) -> str | None:
    """Why timm's ViT of ``cfg`` cannot be built here (None when it can)."""
    try:
        import timm  # noqa: F401
        from timm.models.vision_transformer import VisionTransformer  # noqa: F401
    except ImportError as exc:
        return (f"timm is not installed ({exc.__class__.__name__}): timm rows skipped; "
                "pip install 'vit-pe-harness[bench]' (or timm>=1.0) to compare")
    if cfg.patch_stride != cfg.patch_kernel:
        return (f"timm rows skipped: the preset's stem overlaps (kernel {cfg.patch_kernel}, "
                f"stride {cfg.patch_stride}); timm's patch embedding does not")
    return None


def timm_version() -> str:
    """The installed timm's version (call after :func:`timm_unavailable` said it is there)."""
    import timm

    return timm.__version__


def build_timm_vit(cfg: ViTConfig) -> Any:
    """timm's ``VisionTransformer`` with our dimensions and its own learned position table.

    Our stem must have stride == kernel (timm's patch embedding does not overlap) and a cls
    token (``pool: cls`` -> ``global_pool='token'``; ``mean`` -> ``'avg'``). Its ``pos_embed``
    has a row for the cls token as well: it has ``dim`` more parameters than ours with ``learned``.
    """
    from timm.models.vision_transformer import VisionTransformer

    if cfg.patch_stride != cfg.patch_kernel:
        raise BenchError(f"timm's ViT needs a non-overlapping stem; this preset has kernel {cfg.patch_kernel}, "
                         f"stride {cfg.patch_stride}")
    return VisionTransformer(
        img_size=cfg.image_size, patch_size=cfg.patch_kernel, in_chans=cfg.in_chans, num_classes=cfg.num_classes,
        global_pool="token" if cfg.pool == "cls" else "avg", embed_dim=cfg.dim, depth=cfg.depth,
        num_heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, class_token=True,
    )
