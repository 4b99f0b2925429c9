"""The figures derived from the measured ones: ratios to the reference, verdicts against the
targets, the timm comparison and the FLOP model. Pure functions of plain dicts."""

from __future__ import annotations

from typing import Any

from harness.bench.flops import analytic_flops
from harness.bench.timm_vit import TIMM_TARGET
from harness.config import ViTConfig

__all__ = ["TARGETS", "add_ratios", "flop_model", "timm_comparison"]

#: training-step time ratio enc / none that each encoding must not exceed (docs/performance.md, issue 5)
TARGETS: dict[str, float] = {
    "sincos2d": 1.10, "learned": 1.10, "rope1d": 1.10, "rope_axial": 1.10, "rope_mixed": 1.10,
    "rope_golden": 1.10, "alibi2d": 1.25, "liere": 1.50,
    "rpb": 1.25, "cpb": 1.25, "rope_dinov3": 1.25, "string": 1.25, "cpe": 1.15,  # issue 11
}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def add_ratios(figures: dict[str, dict[str, Any]], reference: str) -> None:
    """Add ``ratios`` (to the ``reference`` entry's figures), ``target`` and ``verdict`` to each entry."""
    ref = figures[reference]
    for key, d in figures.items():
        tr, rt = d["train"], ref["train"]
        d["ratios"] = {
            "train_step_time": _ratio(tr["step_s"], rt["step_s"]),
            "train_images_per_s": _ratio(tr["images_per_s"], rt["images_per_s"]),
            "train_peak_mem": _ratio(tr["peak_mem_bytes"], rt["peak_mem_bytes"]),
            "counted_flops": _ratio(tr["counted_flops"], rt["counted_flops"]),
            "flops_per_s": _ratio(tr["flops_per_s"], rt["flops_per_s"]),
            "eval_time": {r: _ratio(v["step_s"], ref["eval"][r]["step_s"]) for r, v in d["eval"].items()},
            "eval_peak_mem": {r: _ratio(v["peak_mem_bytes"], ref["eval"][r]["peak_mem_bytes"])
                              for r, v in d["eval"].items()},
        }
        target = TARGETS.get(d.get("name", key))  # a spec's label: its registered encoding's target
        d["target"] = target
        d["verdict"] = None if target is None else ("PASS" if d["ratios"]["train_step_time"] <= target else "FAIL")


def timm_comparison(timm: dict[str, Any], learned: dict[str, Any] | None, *, applies: bool) -> dict[str, Any]:
    """timm's figures with ``learned``'s training images/s over timm's and its verdict against
    ``TIMM_TARGET`` (``applies``: whether the target is set for this device and preset)."""
    r = _ratio(learned["train"]["images_per_s"], timm["train"]["images_per_s"]) if learned else None
    out = {k: v for k, v in timm.items() if k not in ("target", "verdict")}
    out.update({
        "model": "timm.models.vision_transformer.VisionTransformer (learned pos_embed incl. the cls row)",
        "learned_over_timm_images_per_s": r,
        "target": TIMM_TARGET,
        "target_applies": applies,
        "verdict": None if r is None else ("PASS" if r >= TIMM_TARGET else "FAIL"),
    })
    return out


def flop_model(cfg: ViTConfig, reference: dict[str, Any], *, train_resolution: int, resolutions: list[int],
               batch: int, peak: float) -> dict[str, Any]:
    """The analytic FLOPs next to the reference's counted ones, and the analytic MFU."""
    analytic = analytic_flops(cfg, train_resolution, batch)
    counted = reference["train"]["counted_flops"]
    return {
        "analytic": analytic,
        "analytic_eval_forward": {str(r): analytic_flops(cfg, r, batch)["forward"] for r in resolutions},
        "counted_none_train_step": counted,
        "counted_over_analytic": counted / analytic["train_step"],
        "analytic_mfu_none": analytic["train_step"] / reference["train"]["step_s"] / peak if peak > 0 else None,
    }
