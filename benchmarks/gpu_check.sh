#!/usr/bin/env bash
# GPU check (benchmarks/gpu_check.py): DDP (nccl, one process), AMP training steps/s,
# bf16 inference Mpix/s, the input pipeline against the GPU's consumption, peak GPU
# memory; one JSON result. Under 5 minutes on one GPU (killed at 290 s).
#   benchmarks/gpu_check.sh                  # on a GPU machine -> benchmarks/results/gpu_check.json
#   benchmarks/gpu_check.sh --dry-run [--out FILE]   # CPU + gloo, small sizes (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec timeout 290 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 \
    -m benchmarks.gpu_check "$@"
