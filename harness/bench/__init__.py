"""``harness bench``: what each positional encoding costs, measured in one process and one run.

For a model preset (default ``small``) and every selected encoding (default: all registered),
on one device, with the same batch and threads for all:

- **training step** at the preset's training resolution: forward + backward + AdamW step, the
  trainer's own step (``harness.training.step.TrainStep``: label-smoothed cross-entropy, global-norm
  clipping, AdamW with the same parameter groups, bf16 autocast and TF32 on CUDA);
- **evaluation** (``no_grad`` forward, ``model.eval()``) at each resolution;
- **peak memory** of the training step and of each evaluation (see ``memory_method``);
- **FLOPs**: one training step counted with ``torch.utils.flop_counter.FlopCounterMode`` (with
  a formula added for the CPU flash-attention kernel, which torch does not count), divided by
  the step time gives the achieved FLOP/s; as a fraction of the device's own matmul peak
  (square float32 matmuls on the CPU, bf16 on CUDA, measured in the same run before and after
  the models are built: the better of the two) it is the model FLOP utilisation (MFU).
  ``analytic_flops`` is the same count worked out from the dimensions (the JSON's
  ``flop_model`` holds both; the tests check that they agree);
- the **ratio** of each figure to the ``none`` encoding's (always measured: it is the
  reference), with PASS/FAIL for the training-step time ratio against ``TARGETS``;
- with a study spec (``--spec``): the study's own model, recipe, batch size, training
  resolution and encoding entries (labels with their options), and one cell's **evaluation
  path** as the study runs it (:mod:`harness.bench.cell_eval`): the first variant on the test
  split at the training size and at the largest test size (seconds, images/s, MFU), and the
  whole variant x size sweep of ``evaluate_variants`` (seconds, images/s);
- at **several thread counts** (``--threads 1 2``): every timed figure at each count, the
  counts interleaved within each repeat, each MFU against the matmul peak measured at the same
  count;
- the same training-step figures for timm's ``VisionTransformer`` built with identical
  dimensions (when timm is installed: ``pip install "vit-pe-harness[bench]"``), and ``learned``'s
  throughput as a ratio to timm's (target >= 1.0 on the CPU with the ``small`` preset).

Method. Every model is built first (seeded), warmed up and measured for memory and FLOPs one
after the other; then the timings run **interleaved**: repeat r times each model in turn
(starting one model further each repeat), so that a slow drift of the machine (another
process, clock changes) lands on every model alike rather than on whichever ran last. A timing
is ``steps`` consecutive steps (at least ``MIN_STEPS``, and enough to last ``min_time_s``)
between two clock reads, after ``torch.cuda.synchronize()`` on CUDA; the reported step time is
the median over the ``repeats`` timings, divided by ``steps``. ``range`` = (max - min) / median
of the timings: a PASS/FAIL closer to its target than the range is within the noise.

Entry points: :func:`run_bench` (returns a JSON-able dict), :func:`format_report` (the plain
tables), :func:`analytic_flops`, :func:`count_flops`, :func:`build_timm_vit`, :func:`model_config`.

Modules, one job each: ``request`` (the inputs, checked before anything runs), ``flops``
(analytic and counted FLOPs), ``memory`` (the peak-memory probe), ``timing`` (timed steps, the
matmul peak, the machine; its settings ``MIN_TIME_S``, ``WARMUP_STEPS``, ``MATMUL_SIZES``,
``MIN_STEPS``; the interleaving), ``timm_vit`` (the optional timm twin), ``cell_eval`` (a study
cell's evaluation path), ``run`` (the orchestration), ``results`` (ratios, verdicts, the FLOP
model) and ``report`` (the tables). Beside them, the GPU check (``bash bench/gpu_check.sh``):
``gpu_check`` (its command line and summary table), ``gpu_measure`` (its measurements) and
``gpu_arithmetic`` (its pure arithmetic: MFU, the projected wall time, the compile verdict).
"""


from harness.bench.flops import analytic_flops, count_flops
from harness.bench.report import format_report
from harness.bench.request import BenchError, model_config
from harness.bench.results import TARGETS
from harness.bench.run import run_bench
from harness.bench.timm_vit import TIMM_TARGET, build_timm_vit

__all__ = [
    "TARGETS",
    "TIMM_TARGET",
    "BenchError",
    "analytic_flops",
    "build_timm_vit",
    "count_flops",
    "format_report",
    "model_config",
    "run_bench",
]
