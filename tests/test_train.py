"""The training loop: schedule, learning, determinism, resume, divergence, config errors, AdamW groups."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from harness.config import ViTConfig
from harness.errors import HarnessError
from harness.models import build_model
from harness.train import (
    TrainConfig,
    TrainConfigError,
    TrainResult,
    TrainStep,
    TrialFailed,
    evaluate,
    flip_crop,
    lr_at,
    param_groups,
    resolve_device,
    train_model,
)

TINY = ViTConfig(image_size=16, dim=32, depth=2, heads=4, mlp_ratio=2.0, num_classes=4)


# ---------------------------------------------------------------------------- a toy dataset
@dataclass
class Split:
    images: torch.Tensor
    labels: torch.Tensor


class Squares:
    """A bright square in one quadrant of a noisy image; the label is the quadrant.

    The scenes (square positions, noise) are fixed per split, and rendered at any resolution.
    """

    name = "squares"
    num_classes = 4
    in_chans = 3

    def __init__(self, sizes=(512, 128, 128)) -> None:
        self.sizes = dict(zip(("train", "val", "test"), sizes))

    def split(self, which, resolution, device="cpu") -> Split:
        g = torch.Generator().manual_seed({"train": 1, "val": 2, "test": 3}[which])
        n = self.sizes[which]
        labels = torch.randint(0, 4, (n,), generator=g)
        off = torch.rand(n, 2, generator=g) * 0.25
        y0 = (labels // 2) * 0.5 + off[:, 0]  # top-left corner, in [0, 1] image units
        x0 = (labels % 2) * 0.5 + off[:, 1]
        c = (torch.arange(resolution) + 0.5) / resolution  # pixel centres
        rows = (c[None, :] >= y0[:, None]) & (c[None, :] < y0[:, None] + 0.25)  # (n, R)
        cols = (c[None, :] >= x0[:, None]) & (c[None, :] < x0[:, None] + 0.25)
        inside = (rows[:, :, None] & cols[:, None, :]).float()  # (n, R, R)
        noise = torch.randn(n, 3, resolution, resolution, generator=g) * 0.3
        return Split((inside[:, None] * 2.0 - 0.5 + noise).to(device), labels.to(device))


def tiny_model(encoding="rope_axial", seed=0, cfg=TINY):
    torch.manual_seed(seed)
    return build_model(cfg, encoding)


@pytest.fixture(autouse=True)
def _restore_threads():
    """The recipe sets one thread (tiny models; robust on a loaded machine): restore the count after."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def recipe(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=64, lr=3e-3, warmup_epochs=1.0, device="cpu", threads=1)
    return TrainConfig(**{**base, **kw})


def run(model=None, cfg=None, *, seed=0, data=None, **kw) -> TrainResult:
    return train_model(
        model if model is not None else tiny_model(),
        data if data is not None else Squares(),
        cfg if cfg is not None else recipe(),
        train_resolution=16,
        test_resolutions=kw.pop("test_resolutions", [16, 24]),
        seed=seed,
        progress=kw.pop("progress", False),
        **kw,
    )


# ---------------------------------------------------------------------------- the schedule
def test_lr_schedule_matches_the_formula():
    peak, low, w, total = 1e-3, 1e-5, 10, 110
    lr = lambda s: lr_at(s, lr=peak, min_lr=low, warmup_steps=w, total_steps=total)  # noqa: E731
    assert lr(0) == pytest.approx(peak * 1 / 10)
    assert lr(4) == pytest.approx(peak * 5 / 10)
    assert lr(9) == pytest.approx(peak)  # the warm-up ends at the peak
    assert lr(10) == pytest.approx(peak)  # the cosine starts at the peak
    mid = 10 + 99 / 2  # half way through the decay (steps 10 .. 109)
    assert lr(int(mid)) == pytest.approx(low + 0.5 * (peak - low) * (1 + math.cos(math.pi * (int(mid) - 10) / 99)))
    assert lr(35) == pytest.approx(low + 0.5 * (peak - low) * (1 + math.cos(math.pi * 25 / 99)))
    assert lr(109) == pytest.approx(low)  # the last step is at min_lr
    assert all(lr(s) >= lr(s + 1) for s in range(10, 109))
    # no warm-up: the cosine starts at step 0
    assert lr_at(0, lr=peak, min_lr=low, warmup_steps=0, total_steps=5) == pytest.approx(peak)
    assert lr_at(4, lr=peak, min_lr=low, warmup_steps=0, total_steps=5) == pytest.approx(low)


def test_history_lr_is_the_schedule_at_each_epochs_last_step():
    cfg = recipe(epochs=3, warmup_epochs=0.5)  # 512 // 64 = 8 steps per epoch, 4 warm-up steps
    res = run(cfg=cfg, test_resolutions=[16])
    want = [lr_at(8 * e - 1, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=4, total_steps=24) for e in (1, 2, 3)]
    assert [h["lr"] for h in res.history] == pytest.approx(want)
    assert res.history[-1]["lr"] == pytest.approx(cfg.min_lr)


# ---------------------------------------------------------------------------- learning
def test_learns_the_toy_task():
    model = tiny_model()
    res = run(model, recipe(epochs=15), test_resolutions=[16, 24])
    losses = [h["train/loss"] for h in res.history]
    assert losses[-1] < losses[0] - 0.3, losses
    assert res.history[-1]["val/acc"] > 0.6, res.history  # chance is 0.25
    assert res.test[16]["acc"] > 0.6, res.test
    assert set(res.test) == {16, 24} and set(res.test[24]) == {"acc", "loss"}
    assert [h["epoch"] for h in res.history] == list(range(1, 16))
    assert set(res.history[0]) == {"epoch", "train/loss", "val/acc", "val/loss", "lr"}
    assert res.params == sum(p.numel() for p in model.parameters())
    assert res.device == "cpu" and res.resumed_from_epoch == 0 and res.images_per_s > 0
    assert res.val_images == 128  # Squares' validation split: each val/acc is a proportion of 128 images


def test_evaluate_is_plain_cross_entropy_and_keeps_the_mode():
    torch.set_num_threads(1)
    model = tiny_model()
    split = Squares(sizes=(8, 8, 37)).split("test", 16)
    model.train()
    got = evaluate(model, split, batch_size=10, device="cpu")  # 37 = 3 full batches and a partial one
    assert model.training
    with torch.no_grad():
        model.eval()
        logits = model(split.images)
    assert got["loss"] == pytest.approx(F.cross_entropy(logits, split.labels).item(), rel=1e-5)
    assert got["acc"] == pytest.approx((logits.argmax(1) == split.labels).float().mean().item())


# ---------------------------------------------------------------------------- determinism and resume
def test_same_seed_gives_identical_metrics():
    cfg = recipe(augment="flip_crop")
    a, b = run(cfg=cfg, seed=3), run(cfg=cfg, seed=3)
    assert a.history == b.history and a.test == b.test
    c = run(cfg=cfg, seed=4)  # another seed shuffles (and augments) differently
    assert c.history != a.history


def test_resume_from_checkpoint_gives_the_same_result(tmp_path):
    cfg = recipe(epochs=3, augment="flip_crop")
    whole = run(cfg=cfg)

    ckpt = tmp_path / "trial" / "ckpt.pt"
    seen = []

    def stop_after_first(epoch, metrics):
        seen.append((epoch, metrics))
        assert ckpt.exists()  # on_epoch comes after the checkpoint write
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg=cfg, checkpoint=ckpt, on_epoch=stop_after_first)
    assert [e for e, _ in seen] == [1] and seen[0][1] == whole.history[0]
    assert not list(ckpt.parent.glob("*.tmp"))
    ck = torch.load(ckpt, weights_only=True)
    assert ck["epoch"] == 1 and ck["step"] == 8 and len(ck["history"]) == 1
    assert ck["rng"]["generator"].dtype == torch.uint8 and ck["config"]["epochs"] == 3

    # a fresh model: everything that matters comes from the checkpoint
    resumed = run(tiny_model(seed=123), cfg=cfg, checkpoint=ckpt, on_epoch=lambda e, m: seen.append((e, m)))
    assert resumed.resumed_from_epoch == 1
    assert [e for e, _ in seen] == [1, 2, 3]
    assert resumed.history == whole.history
    assert resumed.test == whole.test

    # a finished checkpoint: nothing left to train, the same test metrics
    again = run(tiny_model(seed=7), cfg=cfg, checkpoint=ckpt)
    assert again.resumed_from_epoch == 3 and again.history == whole.history and again.test == whole.test


def test_checkpoint_of_another_model_or_recipe_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    run(cfg=recipe(epochs=1), checkpoint=ckpt, test_resolutions=[])
    other = tiny_model(cfg=ViTConfig(image_size=16, dim=16, depth=2, heads=4, mlp_ratio=2.0, num_classes=4))
    with pytest.raises(TrainConfigError, match=r"checkpoint .*ckpt\.pt does not match the model: "):
        run(other, cfg=recipe(epochs=1), checkpoint=ckpt)
    with pytest.raises(TrainConfigError, match=r"train\.lr"):
        run(cfg=recipe(epochs=1, lr=1e-3), checkpoint=ckpt)
    with pytest.raises(TrainConfigError, match=r"seed"):
        run(cfg=recipe(epochs=1), checkpoint=ckpt, seed=1)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainConfigError, match="cannot be read"):
        run(cfg=recipe(epochs=1), checkpoint=ckpt)


def test_on_epoch_exception_propagates():
    class Pruned(Exception):
        pass

    def prune(epoch, metrics):
        raise Pruned(epoch)

    with pytest.raises(Pruned):
        run(on_epoch=prune)


# ---------------------------------------------------------------------------- divergence
def test_nan_from_the_model_fails_the_trial_naming_epoch_and_step():
    model = tiny_model()
    calls = []

    def inject(module, args, output):
        calls.append(1)
        return output * float("nan") if len(calls) == 3 else output

    model.head.register_forward_hook(inject)
    with pytest.raises(TrialFailed, match="non-finite loss") as info:
        run(model, recipe(epochs=1))
    assert "epoch 1 step 3" in info.value.reason
    assert not isinstance(info.value, HarnessError)


def test_huge_learning_rate_fails_the_trial():
    with pytest.raises(TrialFailed, match=r"at epoch \d+ step \d+"):
        run(cfg=recipe(epochs=3, lr=1e6, min_lr=0.0, warmup_epochs=0.0, grad_clip=0.0))


# ---------------------------------------------------------------------------- the recipe
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("batch_size", True),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("min_lr", 1.0),  # above lr
        ("weight_decay", -0.1),
        ("warmup_epochs", 20.0),  # beyond the epochs
        ("label_smoothing", 1.0),
        ("grad_clip", -1.0),
        ("device", "tpu"),
        ("eval_batch_size", 0),
        ("augment", "mixup"),
        ("compile", "yes"),
        ("threads", -1),
        ("lr", "fast"),
    ],
)
def test_bad_config_values_name_the_key(key, value):
    with pytest.raises(TrainConfigError, match=rf"train\.{key}\b"):
        TrainConfig(**{key: value})


def test_config_types_and_unknown_keys():
    cfg = TrainConfig(lr=1, warmup_epochs=0)
    assert isinstance(cfg.lr, float) and isinstance(cfg.warmup_epochs, float)
    assert TrainConfig.from_dict({"epochs": 3}).epochs == 3
    with pytest.raises(TrainConfigError, match=r"unknown key 'train\.learning_rate'.*"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(TrainConfigError, match=r"did you mean 'train\.epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    assert issubclass(TrainConfigError, HarnessError)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainConfigError, match=r"train\.device"):
            resolve_device("cuda")
    with pytest.raises(TrainConfigError, match=r"^train\.device must be auto, cpu or cuda, got 'tpu'$"):
        resolve_device("tpu")

    class CliError(HarnessError):
        pass

    # another caller names its own option and error type (harness bench: --device, BenchError)
    with pytest.raises(CliError, match=r"^--device must be auto, cpu or cuda, got 'tpu'$"):
        resolve_device("tpu", option="--device", error=CliError)


def test_batch_larger_than_the_training_set_and_wrong_resolution_are_errors():
    with pytest.raises(TrainConfigError, match=r"train\.batch_size"):
        run(cfg=recipe(batch_size=1024))
    with pytest.raises(TrainConfigError, match="image_size"):
        train_model(tiny_model(), Squares(), recipe(), train_resolution=24, test_resolutions=[], seed=0)


# ---------------------------------------------------------------------------- AdamW groups and augmentation
def test_weight_decay_groups_exclude_biases_norms_cls_and_pe():
    model = tiny_model("learned")
    decay, no_decay = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    name = {id(p): n for n, p in model.named_parameters()}
    decayed = {name[id(p)] for p in decay["params"]}
    kept = {name[id(p)] for p in no_decay["params"]}
    assert decayed | kept == set(name.values()) and not decayed & kept
    assert {"cls_token", "pe.table", "stem.bias", "norm.weight", "norm.bias", "head.bias"} <= kept
    assert {"blocks.0.norm1.weight", "blocks.1.attn.qkv.bias", "blocks.0.mlp.fc1.bias"} <= kept
    assert decayed == {n for n in name.values() if n.endswith(".weight") and "norm" not in n}
    assert {"stem.weight", "head.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight"} <= decayed


def test_flip_crop_is_a_flip_and_a_shifted_window_of_the_reflect_padded_image():
    x = torch.randn(6, 2, 16, 16)
    out = flip_crop(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for i in range(6):
        candidates = []
        for img in (x[i], x[i].flip(-1)):
            padded = F.pad(img[None], (2, 2, 2, 2), mode="reflect")[0]
            candidates += [padded[:, dy : dy + 16, dx : dx + 16] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], c) for c in candidates)
    again = flip_crop(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_progress_bars_run():
    res = run(cfg=recipe(epochs=1), progress=True, test_resolutions=[16])
    assert len(res.history) == 1


# ---------------------------------------------------------------------------- the step
def test_train_step_is_adamw_on_smoothed_cross_entropy_with_clipping():
    """Two steps of ``TrainStep`` against the recipe written out by hand on a twin model."""
    torch.set_num_threads(1)
    cfg = recipe(lr=1e-2, grad_clip=0.5, label_smoothing=0.2, weight_decay=0.1)
    ours, twin = tiny_model("learned", seed=1), tiny_model("learned", seed=1)
    split = Squares(sizes=(32, 8, 8)).split("train", 16)
    step = TrainStep(ours, cfg, torch.device("cpu"), None)

    named = dict(twin.named_parameters())
    decayed = [p for n, p in named.items() if n.endswith(".weight") and "norm" not in n]
    rest = [p for n, p in named.items() if not (n.endswith(".weight") and "norm" not in n)]
    opt = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}])
    for lr in (3e-3, 1e-2):
        loss = step(split.images, split.labels, lr)
        for group in opt.param_groups:
            group["lr"] = lr
        want = F.cross_entropy(twin(split.images), split.labels, label_smoothing=0.2)
        want.backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
        opt.step()
        opt.zero_grad()
        torch.testing.assert_close(loss, want)
    assert all(p.grad is None for p in ours.parameters())
    assert [g["lr"] for g in step.optimizer.param_groups] == [1e-2, 1e-2]
    for (name, p), q in zip(ours.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, msg=name)
    assert not torch.equal(ours.head.weight, tiny_model("learned", seed=1).head.weight)  # it did train


def test_train_step_augments_with_its_generator():
    cfg = recipe(augment="flip_crop", lr=1e-2)
    split = Squares(sizes=(16, 8, 8)).split("train", 16)
    losses = []
    for seed in (0, 0, 1):
        step = TrainStep(tiny_model(seed=0), cfg, torch.device("cpu"), None, torch.Generator().manual_seed(seed))
        losses.append(step(split.images, split.labels, 1e-2).item())
    assert losses[0] == losses[1] and losses[0] != losses[2]


def test_weight_decay_groups_follow_one_rule_for_a_foreign_model():
    """timm's ViT lists only its tables in ``no_weight_decay()``: its biases and norms are 1-d and kept too."""

    class TimmLike(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos_embed = torch.nn.Parameter(torch.zeros(1, 5, 8))
            self.fc = torch.nn.Linear(8, 8)
            self.norm = torch.nn.LayerNorm(8)
            self.frozen = torch.nn.Parameter(torch.zeros(8, 8), requires_grad=False)

        def no_weight_decay(self):
            return {"pos_embed", "dist_token"}  # a name it does not have: ignored

    model = TimmLike()
    decay, no_decay = param_groups(model, 0.3)
    name = {id(p): n for n, p in model.named_parameters()}
    assert [name[id(p)] for p in decay["params"]] == ["fc.weight"] and decay["weight_decay"] == 0.3
    assert [name[id(p)] for p in no_decay["params"]] == ["pos_embed", "fc.bias", "norm.weight", "norm.bias"]
    assert no_decay["weight_decay"] == 0.0

