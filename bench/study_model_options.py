"""What was tried to raise the main study model's MFU on the CPU (issue #20), side by side.

For a few encodings of ``studies/resolution_extrapolation.yaml`` (the ``cpu`` preset at 32 px,
batch 64, one thread, as each of the study's two workers runs), times one training step
(forward, backward, AdamW: the trainer's ``TrainStep``) and one evaluation of the 500 test
images at 64 px under each option:

- ``eager``: what the study runs;
- ``sdpa-math``: scaled_dot_product_attention forced to its plain math path (the fused CPU
  flash kernel is built for long sequences and large head dims; this model has 65 tokens and a
  head dim of 16);
- ``compile``: ``torch.compile`` of the model for the training step (``train.compile``), with
  its compile time (the first steps) reported apart: a study compiles once per cell;
- ``cpu-bf16``: the forward passes under ``torch.autocast("cpu", torch.bfloat16)`` (the loss in
  float32, as on CUDA), for CPUs with bf16 dot-product instructions (AVX512-BF16, AMX). Not
  what the study runs: it changes the arithmetic, so every number would move.

Timings are interleaved (each repeat runs every option in turn) and the median is reported.
Run on an idle machine: ``python bench/study_model_options.py [ENCODING ...] [--only OPTION,...]``
(``--only eager,cpu-bf16``: those options alone; ``eager``, the baseline, is always timed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness.models.vit import build_model
from harness.spec import load_spec
from harness.training.train import TrainStep, evaluate
from harness.study.trial import dataset_of

OPTIONS = ("eager", "sdpa-math", "compile", "cpu-bf16")


def main(encodings: list[str], options: tuple[str, ...] = OPTIONS, repeats: int = 5, steps: int = 10) -> None:
    torch.set_num_threads(1)
    spec = load_spec("studies/resolution_extrapolation.yaml")
    data = dataset_of(spec)
    train, test = data.split("train", 32), data.split("test", 64)
    cfg = spec.model_config(32, data.in_chans, data.num_classes)
    bs = spec.train.batch_size
    batches = [(train.images[i * bs:(i + 1) * bs], train.labels[i * bs:(i + 1) * bs]) for i in range(steps)]
    print(f"one thread, batch {bs}, {steps} steps per timing, median of {repeats}; eval: {len(test)} images at 64 px")
    for name in encodings:
        enc = spec.encoding(name)
        setups, compile_s = {}, None
        for opt in options:
            torch.manual_seed(0)
            model = build_model(cfg, enc.name, enc.options)
            tc = dataclasses.replace(spec.train_config(), compile=opt == "compile")
            step = TrainStep(model, tc, torch.device("cpu"), None, torch.Generator().manual_seed(0))
            t0 = time.perf_counter()
            with _backend(opt):
                for x, y in batches[:3]:
                    step(x, y, 1e-3)
            if opt == "compile":
                compile_s = time.perf_counter() - t0
            setups[opt] = (model, step)
        times = {opt: [] for opt in options}
        evals = {opt: [] for opt in options if opt != "compile"}
        for r in range(repeats):
            for opt in options[r % len(options):] + options[:r % len(options)]:
                model, step = setups[opt]
                with _backend(opt):
                    t0 = time.perf_counter()
                    for x, y in batches:
                        step(x, y, 1e-3)
                    times[opt].append((time.perf_counter() - t0) / steps)
                    if opt in evals:
                        t0 = time.perf_counter()
                        evaluate(model, test, 512, "cpu")
                        evals[opt].append(time.perf_counter() - t0)
        base = statistics.median(times["eager"])
        for opt in options:
            ms = statistics.median(times[opt]) * 1000
            ev = f"{statistics.median(evals[opt]):6.2f} s" if opt in evals else "      -"
            extra = f"  (compile: {compile_s:.1f} s for the first 3 steps)" if opt == "compile" else ""
            print(f"{name:12s} {opt:10s} step {ms:7.1f} ms  x{base * 1000 / ms:5.2f}   eval@64 {ev}{extra}")


def _backend(opt: str):
    if opt == "cpu-bf16":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return sdpa_kernel(SDPBackend.MATH) if opt == "sdpa-math" else contextlib.nullcontext()


if __name__ == "__main__":
    args = sys.argv[1:]
    only = OPTIONS
    if "--only" in args:
        at = args.index("--only")
        picked = args[at + 1].split(",") if at + 1 < len(args) else []
        if not picked or (unknown := sorted(set(picked) - set(OPTIONS))):
            print(f"error: --only takes a comma-separated list of {', '.join(OPTIONS)}; got "
                  f"{', '.join(picked) or 'nothing'}", file=sys.stderr)
            sys.exit(2)
        only = ("eager", *[o for o in OPTIONS if o in picked and o != "eager"])
        del args[at:at + 2]
    main(args or ["none", "rope_axial", "alibi2d", "liere"], only)
