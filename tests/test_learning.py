"""The harness's own sanity check: without positional information a ViT cannot learn the
relational task; with a 2-D rotary encoding it does (small, fast setting)."""

import pytest

from harness.config import ViTConfig
from harness.data import build_dataset
from harness.models.vit import build_model
from harness.train import TrainConfig, train_model


@pytest.mark.slow
def test_none_stays_at_chance_while_rope_axial_learns_relational():
    data = build_dataset("rendered", task="relational", num_train=4096, num_val=256, num_test=256, seed=0)
    cfg = ViTConfig(image_size=16, num_classes=data.num_classes, dim=32, depth=2, heads=4, mlp_ratio=2.0,
                    patch_kernel=4, patch_stride=4)
    recipe = TrainConfig(epochs=6, batch_size=64, lr=3e-3, warmup_epochs=0.5, device="cpu")
    acc = {}
    for name in ("none", "rope_axial"):
        model = build_model(cfg, name)
        result = train_model(model, data, recipe, train_resolution=16, test_resolutions=[16], seed=0, progress=False)
        acc[name] = result.test[16]["acc"]
    chance = 1 / data.num_classes
    assert abs(acc["none"] - chance) < 0.08, acc
    assert acc["rope_axial"] > chance + 0.3, acc
