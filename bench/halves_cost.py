"""Cost of the half metrics (issue #21): harness.training.train.evaluate with and without the halves of
the test images, interleaved, one thread, on the main study's rope_axial model (untrained: the
cost does not depend on the weights). Run from the repository root: python bench/halves_cost.py"""
import statistics
import time

import torch

from harness.data import build_dataset
from harness.models.vit import build_model
from harness.schema import Size
from harness.spec import load_spec
from harness.training.train import evaluate, split_in_halves

torch.set_num_threads(1)
spec = load_spec("studies/resolution_extrapolation.yaml")
d = spec.resolved["dataset"]; d = {k: v for k, v in d.items() if k != "name"}
data = build_dataset("rendered", **d)
cfg = spec.model_config(32, 3, 8)
model = build_model(cfg, "rope_axial")
for size in (Size(32, 32), Size(64, 64)):
    split = data.split("test", size, regime="zoom", train_size=32)
    t = {"without": [], "with (split_in_halves + two counts)": []}
    for rep in range(5):
        for k in t:
            t0 = time.perf_counter()
            if k == "without":
                evaluate(model, split, 512, "cpu")
            else:
                evaluate(model, split, 512, "cpu", None, split_in_halves(split.labels))
            t[k].append(time.perf_counter() - t0)
    a, b = (statistics.median(v) for v in t.values())
    print(f"{size.label} px: without {a:.3f} s, with {b:.3f} s, ratio {b / a:.3f} (medians of 5, interleaved)")
