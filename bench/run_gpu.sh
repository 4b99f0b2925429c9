#!/usr/bin/env bash
# harness bench on a GPU machine: every encoding (and timm's ViT) on CUDA, bf16 autocast.
#
#   bash bench/run_gpu.sh            # from anywhere; writes bench/gpu.json and bench/gpu_small.json
#
# Two runs in one go (each about 1-2 minutes on an H100, under 5 minutes together):
#   1. preset small (the CPU benchmark's model) at batch 256 -> bench/gpu_small.json
#   2. preset vit_s (DeiT-S dimensions) at batch 256        -> bench/gpu.json
# The vit_s table is printed last. Extra arguments are passed to both runs (e.g. --repeats 3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# the package with the `bench` extra (timm); offline, fall back to what is installed already
if ! "$PY" -m pip install -q -e ".[bench]"; then
    echo "run_gpu.sh: pip install -e '.[bench]' failed (offline?); installing the package alone" >&2
    "$PY" -m pip install -q --no-deps --no-build-isolation -e .
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'run_gpu.sh: CUDA is not available here')"
"$PY" -c "import timm" 2>/dev/null || echo "run_gpu.sh: timm is not installed: the timm rows will be skipped" >&2

export PYTHONUNBUFFERED=1
small=$(mktemp) vits=$(mktemp)
trap 'rm -f "$small" "$vits"' EXIT
"$PY" -m harness bench --preset small --device cuda --batch-size 256 --json bench/gpu_small.json "$@" >"$small"
"$PY" -m harness bench --preset vit_s --device cuda --batch-size 256 --json bench/gpu.json "$@" >"$vits"

echo "=== preset small, batch 256 (bench/gpu_small.json)"
cat "$small"
echo
echo "=== preset vit_s, batch 256 (bench/gpu.json)"
cat "$vits"
