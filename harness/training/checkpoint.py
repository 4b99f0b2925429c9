"""Training checkpoints: written atomically, read back only after every field is checked.

:func:`save_atomic` writes the trainer's checkpoint dictionary through ``<name>.tmp`` and a
rename, so a reader finds the old checkpoint or the new one, never half of one; a write that
fails (a full disk, a quota, ``ulimit -f``) leaves no ``.tmp`` and raises
:class:`OutputWriteError`, one line naming the folder.

:func:`load_checkpoint` checks every field before training resumes from it (``harness.training.train``
calls it): a checkpoint of another recipe, seed, resolution or model is an error (the user
changed the study); a damaged one (a wrong-typed field, an epoch beyond the recipe, a history
that does not match it, non-finite values, RNG states of the wrong size, an optimizer state
that does not fit) is set aside as ``<name>.bad-<time>`` with a one-line warning, and the cell
trains from scratch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.config import TrainConfig, TrainConfigError
from harness.errors import HarnessError, os_reason
from harness.schema import LR, TRAIN_LOSS, VAL_ACC, VAL_LOSS

__all__ = ["OutputWriteError", "load_checkpoint", "save_atomic"]


class OutputWriteError(HarnessError):
    """A file under the output folder cannot be written (a full disk, a quota, no permission):
    one line naming the folder (``no space left on device in FOLDER``). The trial fails with
    this reason and the run stops (every other cell would fail the same way)."""

    def __init__(self, reason: str, folder: Path | None = None) -> None:
        super().__init__(reason)
        self.reason, self.folder = reason, folder

    @classmethod
    def of(cls, exc: OSError, folder: Path, doing: str = "") -> "OutputWriteError":
        """The error for ``exc`` raised while writing in ``folder`` (``doing``: what was written)."""
        return cls(f"{os_reason(exc)} in {folder}" + (f" ({doing})" if doing else ""), folder)


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write ``obj`` to ``path`` through ``<name>.tmp`` and a rename: a reader finds the old
    checkpoint or the new one, never half of one. A write that fails (a full disk, a quota)
    removes the ``.tmp`` and raises :class:`OutputWriteError` naming the folder."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            out = _KeptErrors(f)
            try:
                torch.save(obj, out)
            except Exception:
                if out.error is not None:  # torch reports a failed write as "unexpected pos 768 vs 662"
                    raise out.error from None
                raise
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # no partial file left behind (and the space it took back)
        if isinstance(exc, OSError):
            raise OutputWriteError.of(exc, path.parent, f"writing checkpoint {path.name}") from None
        raise


class _KeptErrors:
    """The binary file ``torch.save`` writes to, keeping the ``OSError`` of a failed write (a
    full disk, a file size limit): torch swallows it and raises "unexpected pos" instead."""

    def __init__(self, f: Any) -> None:
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                n = self.f.write(view[done:])
                if not n:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += n
        except OSError as exc:
            self.error = self.error or exc
            raise
        return done

    def flush(self) -> None:
        self.f.flush()


class _Damaged(Exception):
    """What is wrong with a checkpoint that is set aside (a damaged or foreign file, not a
    study the user changed)."""


#: the fields every checkpoint of this harness holds (``step`` too, checked when present)
_CK_FIELDS = ("model", "optimizer", "epoch", "history", "rng", "config", "seed", "train_resolution",
              "train_seconds", "train_images")
#: the keys of one epoch of the history
_HISTORY_KEYS = frozenset({"epoch", TRAIN_LOSS, VAL_ACC, VAL_LOSS, LR})
#: AdamW's hyperparameters in a saved group that must be the recipe's (not lr: the loop sets it per step)
_GROUP_KEYS = ("betas", "eps", "weight_decay", "amsgrad", "maximize")


def load_checkpoint(path: Path, model: nn.Module, optimizer, cfg: TrainConfig, seed: int, resolution: int, *,
                     steps_per_epoch: int, generator: torch.Generator, cuda: bool = False) -> dict | None:
    """The checkpoint at ``path``, every field checked, with its weights and optimizer state
    loaded into ``model`` and ``optimizer``.

    A checkpoint of another recipe, seed, resolution or model is an error (the user changed
    the study: restore it, or delete the file), and so is a file torch cannot read. A damaged
    one (a missing or wrong-typed field, an epoch beyond the recipe, a history that does not
    match its epoch, a non-finite value, RNG states of the wrong size, an optimizer state that
    does not fit the model) is set aside as ``<name>.bad-<time>`` with a one-line warning on
    stderr, and None is returned: ``model`` and ``optimizer`` are as they were, training starts
    from scratch."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user-facing error
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 300 else detail[:300] + " ..."
        raise TrainConfigError(f"checkpoint {path} cannot be read: {detail}; delete it to train from scratch") from None
    model_before = optimizer_before = None
    try:
        if not isinstance(ck, dict):
            raise _Damaged(f"it holds a {type(ck).__name__}, not a dictionary")
        missing = [k for k in _CK_FIELDS if k not in ck]
        if missing:
            raise _Damaged(f"no field {', '.join(map(repr, missing))}")
        if not isinstance(ck["config"], dict) or not all(isinstance(k, str) for k in ck["config"]):
            raise _Damaged(f"'config' is {_kind(ck['config'])}, not a dictionary of settings")
        odd = [k for k, v in ck["config"].items() if not _is_plain(v)]
        if odd:
            raise _Damaged(f"config {odd[0]!r} is {_kind(ck['config'][odd[0]])}, not a setting")
        for key in ("seed", "train_resolution"):
            if not _is_int(ck[key]):
                raise _Damaged(f"{key!r} is {_kind(ck[key])}, not an integer")
        _check_same_study(ck, path, cfg, seed, resolution)  # the user changed the study: an error
        _check_progress(ck, cfg, steps_per_epoch)
        _check_rng(ck["rng"], generator, cuda)
        state = ck["model"]
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in state.items()):
            raise _Damaged(f"'model' is {_kind(state)}, not a dictionary of tensors")
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise _Damaged(f"non-finite weights in {bad[0]!r}")
        opt = ck["optimizer"]
        if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) \
                or not isinstance(opt.get("param_groups"), list):
            raise _Damaged(f"'optimizer' is {_kind(opt)}, not an optimizer state")
        _check_groups(opt["param_groups"], optimizer.param_groups)
        model_before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())
            detail = detail if len(detail) <= 400 else detail[:400] + " ..."
            raise TrainConfigError(f"checkpoint {path} does not match the model: {detail}") from None
        optimizer_before = copy.deepcopy(optimizer.state_dict())
        try:
            optimizer.load_state_dict(opt)
        except Exception as exc:  # noqa: BLE001 - any way it does not load: damaged
            detail = " ".join(str(exc).split())[:200]
            raise _Damaged(f"the optimizer state does not load ({type(exc).__name__}: {detail})") from None
        _check_optimizer_state(optimizer, ck["epoch"] * steps_per_epoch)
    except _Damaged as exc:
        if model_before is not None:
            model.load_state_dict(model_before)
        if optimizer_before is not None:
            optimizer.load_state_dict(optimizer_before)
        _set_aside(path, str(exc))
        return None
    return ck


def _check_same_study(ck: dict, path: Path, cfg: TrainConfig, seed: int, resolution: int) -> None:
    """The checkpoint's recipe, seed and resolution are this run's, or a ``TrainConfigError``."""
    mine = dataclasses.asdict(cfg)
    for key, value in ck["config"].items():
        if key not in TrainConfig.RUNTIME_ONLY and mine.get(key) != value:
            raise TrainConfigError(
                f"checkpoint {path} was written with train.{key} = {value!r}, this run has {mine.get(key)!r}; "
                "restore the recipe or delete the checkpoint"
            )
    if ck["seed"] != seed or ck["train_resolution"] != resolution:
        raise TrainConfigError(
            f"checkpoint {path} belongs to seed {ck['seed']} at resolution {ck['train_resolution']}, "
            f"not seed {seed} at resolution {resolution}"
        )


def _check_progress(ck: dict, cfg: TrainConfig, steps_per_epoch: int) -> None:
    """Epoch, step, history, train seconds and images agree with each other and the recipe.
    A checkpoint at ``cfg.epochs`` is legitimate: trained, not yet evaluated."""
    epoch = ck["epoch"]
    if not _is_int(epoch):
        raise _Damaged(f"'epoch' is {_kind(epoch)}, not an integer")
    if not 0 <= epoch <= cfg.epochs:
        raise _Damaged(f"epoch {epoch} is outside the recipe's 0..{cfg.epochs}")
    if "step" in ck and (not _is_int(ck["step"]) or ck["step"] != epoch * steps_per_epoch):
        raise _Damaged(f"'step' is {ck['step']!r}, not epoch {epoch} x {steps_per_epoch} steps per epoch")
    history = ck["history"]
    if not isinstance(history, list):
        raise _Damaged(f"'history' is {_kind(history)}, not a list")
    if len(history) != epoch:
        raise _Damaged(f"'history' has {len(history)} epochs for epoch {epoch}")
    for i, h in enumerate(history, 1):
        if not isinstance(h, dict) or set(h) != _HISTORY_KEYS:
            keys = sorted(map(str, h)) if isinstance(h, dict) else _kind(h)
            raise _Damaged(f"history epoch {i} is {keys}, not {sorted(_HISTORY_KEYS)}")
        if h["epoch"] != i or not _is_int(h["epoch"]):
            raise _Damaged(f"history entry {i} says epoch {h['epoch']!r}")
        for key in (TRAIN_LOSS, VAL_ACC, VAL_LOSS, LR):
            v = h[key]
            if not _is_real(v) or v < 0 or (key == VAL_ACC and v > 1):
                raise _Damaged(f"history epoch {i}: {key} is {v!r}")
    seconds, images = ck["train_seconds"], ck["train_images"]
    if not _is_real(seconds) or seconds < 0:
        raise _Damaged(f"'train_seconds' is {seconds!r}, not a finite number of seconds")
    if not _is_int(images) or images != epoch * steps_per_epoch * cfg.batch_size:
        raise _Damaged(f"'train_images' is {images!r}, not {epoch * steps_per_epoch * cfg.batch_size} "
                       f"({epoch} epochs of {steps_per_epoch} batches of {cfg.batch_size})")


def _check_rng(rng: Any, generator: torch.Generator, cuda: bool) -> None:
    """RNG states that ``torch.set_rng_state`` and ``generator.set_state`` take: uint8 tensors
    of their sizes (and, resuming on CUDA, one per device, or None)."""
    if not isinstance(rng, dict) or not {"torch", "generator", "cuda"} <= set(rng):
        raise _Damaged(f"'rng' is {_kind(rng)}, not the torch, generator and cuda states")
    for key, like in (("torch", torch.get_rng_state()), ("generator", generator.get_state())):
        if not _is_state(rng[key], like):
            raise _Damaged(f"rng {key!r} is {_kind(rng[key])}, not a uint8 tensor of {like.numel()} bytes")
    if cuda and rng["cuda"] is not None:
        states = rng["cuda"]
        likes = torch.cuda.get_rng_state_all()
        if not isinstance(states, (list, tuple)) or len(states) != len(likes) \
                or not all(_is_state(s, like) for s, like in zip(states, likes)):
            raise _Damaged(f"rng 'cuda' is {_kind(states)}, not {len(likes)} CUDA generator states")


def _check_groups(saved: list, groups: list[dict]) -> None:
    """The saved parameter groups are the recipe's: as many, each as many parameters, the same
    AdamW hyperparameters."""
    if len(saved) != len(groups):
        raise _Damaged(f"the optimizer state has {len(saved)} parameter groups, not {len(groups)}")
    for i, (s, g) in enumerate(zip(saved, groups)):
        if not isinstance(s, dict) or not isinstance(s.get("params"), list) or len(s["params"]) != len(g["params"]):
            raise _Damaged(f"optimizer parameter group {i} does not hold {len(g['params'])} parameters")
        for key in _GROUP_KEYS:
            if key in s and key in g and (not _is_plain(s[key]) or s[key] != g[key]):
                raise _Damaged(f"optimizer parameter group {i}: {key} {_kind(s[key])}, the recipe's is {g[key]!r}")


def _check_optimizer_state(optimizer: torch.optim.Optimizer, steps: int) -> None:
    """Each parameter's AdamW state, once loaded: moments of the parameter's shape, finite, and
    the step count the epoch implies."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if not isinstance(state, dict):
                raise _Damaged(f"optimizer state {_kind(state)} for a parameter, not a dictionary")
            for key, v in state.items():
                if not isinstance(v, torch.Tensor):
                    raise _Damaged(f"optimizer state {key!r} is {_kind(v)}, not a tensor")
                if not torch.isfinite(v).all():
                    raise _Damaged(f"optimizer state {key!r} is not finite")
                if key == "step":
                    if v.numel() != 1 or v.item() != steps:
                        raise _Damaged(f"optimizer step count {v.tolist()}, not {steps}")
                elif v.shape != p.shape:
                    raise _Damaged(f"optimizer state {key!r} of shape {tuple(v.shape)} for a parameter "
                                   f"of shape {tuple(p.shape)}")


def _set_aside(path: Path, why: str) -> None:
    """Rename a damaged checkpoint ``<name>.bad-<time>`` (kept, not deleted) and say so in one
    line on stderr."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bad, n = path.with_name(f"{path.name}.bad-{stamp}"), 1
    while bad.exists():
        n += 1
        bad = path.with_name(f"{path.name}.bad-{stamp}-{n}")
    try:
        os.replace(path, bad)
        kept = f"set aside as {bad.name}"
    except OSError as exc:
        kept = f"not set aside ({(exc.strerror or str(exc)).lower()}): the next epoch overwrites it"
    print(f"warning: checkpoint {path} is damaged ({why}): {kept}; training from scratch", file=sys.stderr, flush=True)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    """A finite Python number (int or float, not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_plain(x: Any) -> bool:
    """A setting as ``dataclasses.asdict`` of a recipe writes it: None, a bool, number or
    string, or a list or tuple of them (compared with ``!=`` safely)."""
    if isinstance(x, (list, tuple)):
        return all(_is_plain(v) for v in x)
    return x is None or isinstance(x, (bool, int, float, str))


def _is_state(x: Any, like: torch.Tensor) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.device.type == "cpu" and x.shape == like.shape


def _kind(x: Any) -> str:
    """What a value is, for a message: its type and a short repr."""
    text = repr(x)
    return f"{type(x).__name__} {text if len(text) <= 40 else text[:40] + '...'}"
