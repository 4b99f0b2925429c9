"""The shared Vision Transformer (installed as ``harness.models``)."""

from harness.models.vit import ViT, ViTConfig, build_model

__all__ = ["ViT", "ViTConfig", "build_model"]
