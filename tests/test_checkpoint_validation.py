"""A damaged checkpoint is set aside (renamed, kept) with a one-line warning and the training
starts from scratch; a checkpoint of another recipe, seed or model is still an error (issue 14).

The expectation is independent of the checkpoint code: the same seed trained from scratch
without any checkpoint gives bitwise the same history (the loop is deterministic on the CPU)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch

from harness.config import ViTConfig
from harness.models import build_model
from harness.train import TrainConfig, TrainConfigError, train_model

TINY = ViTConfig(image_size=16, dim=16, depth=1, heads=2, mlp_ratio=2.0, num_classes=4)


@dataclass
class Split:
    images: torch.Tensor
    labels: torch.Tensor


class Noise:
    """Fixed random images and labels per split (nothing to learn: the loop is what is tested)."""

    num_classes, in_chans = 4, 3

    def split(self, which, resolution, device="cpu"):
        g = torch.Generator().manual_seed({"train": 1, "val": 2, "test": 3}[which])
        n = 64 if which == "train" else 16
        return Split(torch.randn(n, 3, resolution, resolution, generator=g).to(device),
                     torch.randint(0, 4, (n,), generator=g).to(device))


def recipe(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(epochs=2, batch_size=16, lr=3e-3, warmup_epochs=0.5, device="cpu", threads=1), **kw})


def run(checkpoint=None, *, cfg=None, seed=0, model_seed=0, **kw):
    torch.manual_seed(model_seed)
    model = build_model(TINY, "rope_axial")
    n = torch.get_num_threads()
    try:
        return train_model(model, Noise(), cfg or recipe(), train_resolution=16, test_resolutions=[16], seed=seed,
                           checkpoint=checkpoint, progress=False, **kw)
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def fresh():
    """The result of training from scratch, no checkpoint anywhere."""
    return run()


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A genuine checkpoint after epoch 1 of the 2-epoch recipe."""
    path = tmp_path_factory.mktemp("good") / "ckpt.pt"

    def stop(epoch, metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(path, on_epoch=stop)
    return torch.load(path, weights_only=True)


def _opt_state(ck, fn):
    ck = copy.deepcopy(ck)
    first = next(iter(ck["optimizer"]["state"]))
    fn(ck["optimizer"]["state"][first])
    return ck


def _set(path, value):
    """Set a field given as a path of keys ("rng.torch", "history.0.val/acc")."""
    def change(ck):
        ck = copy.deepcopy(ck)
        *where, last = path.split(".")
        node = ck
        for key in where:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
        return ck
    return change


def _drop(key):
    def change(ck):
        ck = dict(ck)
        del ck[key]
        return ck
    return change


def _nan_weight(ck):
    ck = copy.deepcopy(ck)
    ck["model"]["head.weight"][0, 0] = float("nan")
    return ck


DAMAGE = {
    # (what is changed, a phrase of the warning)
    "epoch_beyond_recipe": (_set("epoch", 1000), "epoch 1000 is outside the recipe's 0..2"),
    "epoch_negative": (_set("epoch", -1), "epoch -1"),
    "epoch_str": (_set("epoch", "1"), "'epoch' is str"),
    "epoch_float": (_set("epoch", 1.0), "'epoch' is float"),
    "epoch_bool": (_set("epoch", True), "'epoch' is bool"),
    "history_str": (_set("history", "oops"), "'history' is str"),
    "history_short": (_set("history", []), "'history' has 0 epochs for epoch 1"),
    "history_nan": (_set("history.0.train/loss", float("nan")), "train/loss is nan"),
    "history_acc_above_one": (_set("history.0.val/acc", 3.0), "val/acc is 3.0"),
    "history_str_value": (_set("history.0.lr", "0.1"), "lr is '0.1'"),
    "history_keys": (_set("history.0", {"epoch": 1}), "history epoch 1 is"),
    "history_wrong_epoch": (_set("history.0.epoch", 7), "history entry 1 says epoch 7"),
    "rng_float": (_set("rng.torch", torch.zeros(5056)), "rng 'torch' is Tensor"),
    "rng_short": (_set("rng.generator", torch.zeros(10, dtype=torch.uint8)), "rng 'generator'"),
    "rng_str": (_set("rng", "seed"), "'rng' is str"),
    "train_seconds_str": (_set("train_seconds", "fast"), "'train_seconds' is 'fast'"),
    "train_seconds_inf": (_set("train_seconds", float("inf")), "'train_seconds' is inf"),
    "train_images_none": (_set("train_images", None), "'train_images' is None"),
    "train_images_wrong": (_set("train_images", 5), "'train_images' is 5, not 64"),
    "step_wrong": (_set("step", 999), "'step' is 999"),
    "optimizer_garbage": (_set("optimizer", {"state": 5}), "'optimizer' is dict"),
    "optimizer_moment_shape": (lambda ck: _opt_state(ck, lambda s: s.update(exp_avg=torch.zeros(3))),
                               "optimizer state 'exp_avg' of shape (3,)"),
    "optimizer_moment_nan": (lambda ck: _opt_state(ck, lambda s: s["exp_avg_sq"].fill_(float("nan"))),
                             "optimizer state 'exp_avg_sq' is not finite"),
    "optimizer_step_count": (lambda ck: _opt_state(ck, lambda s: s.update(step=torch.tensor(1000.0))),
                             "optimizer step count 1000.0, not 4"),
    "optimizer_group_betas": (_set("optimizer.param_groups.0.betas", (0.5, 0.5)), "betas tuple (0.5, 0.5)"),
    "optimizer_group_tensor": (_set("optimizer.param_groups.0.eps", torch.ones(3)), "eps Tensor"),
    "optimizer_state_int": (lambda ck: _opt_state(ck, lambda s: (s.clear(), s.update(x=5))),
                            "the optimizer state does not load (KeyError: 'step')"),
    "config_tensor": (_set("config.lr", torch.ones(2)), "config 'lr' is Tensor"),
    "weights_nan": (_nan_weight, "non-finite weights in 'head.weight'"),
    "model_not_a_dict": (_set("model", [1, 2]), "'model' is list"),
    "missing_history": (_drop("history"), "no field 'history'"),
    "config_str": (_set("config", "lr=1"), "'config' is str"),
    "seed_str": (_set("seed", "0"), "'seed' is str"),
    "not_a_dict": (lambda ck: [ck], "it holds a list"),
}


@pytest.mark.parametrize("case", DAMAGE, ids=list(DAMAGE))
def test_damaged_checkpoint_is_set_aside_and_training_starts_over(case, good, fresh, tmp_path, capsys):
    change, phrase = DAMAGE[case]
    path = tmp_path / "ckpt.pt"
    torch.save(change(good), path)
    before = path.read_bytes()
    capsys.readouterr()
    # another initial model: if the damaged weights or optimizer state leaked in, the history would differ
    res = run(path)
    err = capsys.readouterr().err
    assert res.resumed_from_epoch == 0
    assert res.history == fresh.history and res.test == fresh.test  # bitwise: trained from scratch
    assert len(res.history) == 2
    # set aside, not deleted: renamed, byte for byte; one warning line naming the file and the fault
    kept = list(tmp_path.glob("ckpt.pt.bad-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == before
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("warning: checkpoint ") and str(path) in lines[0]
    assert phrase in lines[0] and "set aside as ckpt.pt.bad-" in lines[0] and "from scratch" in lines[0]
    assert "Traceback" not in err
    # the new checkpoint the training wrote is a good one: it resumes
    assert torch.load(path, weights_only=True)["epoch"] == 2
    again = run(path)
    assert again.resumed_from_epoch == 2 and again.history == fresh.history


def test_the_genuine_checkpoint_still_resumes(good, fresh, tmp_path, capsys):
    path = tmp_path / "ckpt.pt"
    torch.save(good, path)
    res = run(path, model_seed=123)  # another initial model: the weights come from the checkpoint
    assert res.resumed_from_epoch == 1 and res.history == fresh.history and res.test == fresh.test
    assert not list(tmp_path.glob("*.bad-*")) and "warning" not in capsys.readouterr().err


def test_checkpoint_at_the_last_epoch_is_trained_not_evaluated(fresh, tmp_path, capsys):
    path = tmp_path / "ckpt.pt"
    # a whole training that stopped before its evaluation: epoch == cfg.epochs is legitimate
    first = run(path)
    assert first.history == fresh.history
    res = run(path, model_seed=5)
    assert res.resumed_from_epoch == 2 and res.history == fresh.history and res.test == fresh.test
    assert not list(tmp_path.glob("*.bad-*")) and "warning" not in capsys.readouterr().err


def test_a_changed_study_is_still_an_error_and_the_checkpoint_stays(good, tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save(good, path)
    with pytest.raises(TrainConfigError, match=r"train\.lr = 0\.003, this run has 0\.001"):
        run(path, cfg=recipe(lr=1e-3))
    with pytest.raises(TrainConfigError, match=r"belongs to seed 0 at resolution 16, not seed 1"):
        run(path, seed=1)
    # a recipe with more epochs is another recipe too (not a checkpoint beyond its recipe)
    with pytest.raises(TrainConfigError, match=r"train\.epochs = 2, this run has 1"):
        run(path, cfg=recipe(epochs=1))
    assert path.exists() and not list(tmp_path.glob("*.bad-*"))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainConfigError, match="cannot be read"):
        run(path)

