#!/usr/bin/env bash
# The GPU check, in one run of at most 8 minutes on one GPU:
#   1. the CUDA-only tests (tests/test_cuda.py: bf16 autocast against float32 for every encoding,
#      position tables exact under bf16 + TF32 (eager and compiled), fused against plain AdamW,
#      a CUDA checkpoint resumed on CUDA, eval memory at 128 px);
#   2. python -m harness.bench.gpu_check measure: the bf16 matmul peak; every encoding of
#      studies/rendered_gpu.yaml at its real size (vit_s, 64 px, batch 256), eager: training
#      step, MFU, memory, evaluation at every test size; one cell trained train.compile off and
#      on (same accuracy within noise?); then compiled training steps while the budget lasts;
#      and the projected wall time of the whole study;
#   3. harness bench --preset vit_s --device cuda --encodings learned (with none, and timm's ViT
#      side by side: learned / timm training images/s; every encoding's cost against none is
#      measured in step 2 at the study's real size; GPU_CHECK_BENCH_ALL=1 benches every encoding);
#   4. one summary table.
#
#   bash bench/gpu_check.sh        # from anywhere; files in $GPU_CHECK_OUT (default $OUT, else bench/gpu_check_out)
#
# Without CUDA it says so and exits 0 having run nothing. The exit status is 1 when a test
# failed or compile changed the accuracy (the summary is printed anyway).
# Time limits per stage (seconds; environment): GPU_CHECK_TESTS_S (130), GPU_CHECK_MEASURE_S
# (230; new measurements stop starting after GPU_CHECK_BUDGET_S, 170), GPU_CHECK_BENCH_S (90).
# Together with start-up, under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# GPU_CHECK_DEVICE=cpu runs the same stages on the CPU (a dry run of this script: pass a small
# spec in GPU_CHECK_MEASURE_ARGS, e.g. "--spec studies/smoke.yaml", and GPU_CHECK_BENCH_PRESET=tiny)
DEV=${GPU_CHECK_DEVICE:-cuda}
if [ "$DEV" = cuda ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check.sh: CUDA is not available here: the GPU check is skipped (no test, training or benchmark was run)."
    exit 0
fi

DIR=${GPU_CHECK_OUT:-${OUT:-bench/gpu_check_out}}
mkdir -p "$DIR"
export PYTHONUNBUFFERED=1
status=0
t0=$(date +%s)
stamp() { echo "=== $(( $(date +%s) - t0 ))s: $*"; }

# the package (harness.encodings maps to encodings/): installed already, or installed now without the network
if ! "$PY" -c "import harness.encodings, harness.models" 2>/dev/null; then
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . || { echo "gpu_check.sh: cannot install the package"; exit 2; }
fi
"$PY" -c "import timm" 2>/dev/null || echo "gpu_check.sh: timm is not installed: the timm row will be skipped"
[ "$DEV" = cuda ] && "$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv,noheader 2>/dev/null || true

stamp "1. CUDA-only tests"
timeout "${GPU_CHECK_TESTS_S:-130}" "$PY" -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider 2>&1 | tail -40
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "gpu_check.sh: CUDA tests: exit $rc"; status=1; }

stamp "2. rendered_gpu.yaml: every encoding eager, one cell compile off/on, compiled steps, projection"
timeout "${GPU_CHECK_MEASURE_S:-230}" "$PY" -m harness.bench.gpu_check measure --budget-s "${GPU_CHECK_BUDGET_S:-170}" \
    --device "$DEV" ${GPU_CHECK_MEASURE_ARGS:-} --json "$DIR/gpu_check.json" 2>&1 | tail -60
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "gpu_check.sh: measure: exit $rc (124: out of time; what was measured is in $DIR/gpu_check.json)"; status=1; }

stamp "3. harness bench --preset ${GPU_CHECK_BENCH_PRESET:-vit_s} --device $DEV (timm side by side)"
only=(--encodings learned)
[ "${GPU_CHECK_BENCH_ALL:-0}" = 1 ] && only=()
timeout "${GPU_CHECK_BENCH_S:-90}" "$PY" -m harness bench --preset "${GPU_CHECK_BENCH_PRESET:-vit_s}" --device "$DEV" \
    --batch-size 256 --repeats 3 ${only[@]+"${only[@]}"} --json "$DIR/bench_vit_s.json" > "$DIR/bench_vit_s.txt" 2> "$DIR/bench_vit_s.log"
rc=$?
cat "$DIR/bench_vit_s.txt"
[ "$rc" -eq 0 ] || { echo "gpu_check.sh: bench: exit $rc"; tail -5 "$DIR/bench_vit_s.log"; status=1; }

stamp "4. summary"
"$PY" -m harness.bench.gpu_check summary --json "$DIR/gpu_check.json" --bench "$DIR/bench_vit_s.json" \
    | tee "$DIR/summary.txt"
stamp "done (exit $status); files in $DIR"
exit $status
