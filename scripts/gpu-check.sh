#!/usr/bin/env bash
# The prepared GPU check: about 6 minutes on one GPU (an H200), one JSON at runs/gpu-check/gpu-check.json
# (or $1/gpu-check.json): bench speed at Qwen2-VL-2B's full shape in bf16 (batch 1 and 32), 20 training
# steps of the 2B-shaped recipe (LoRA and full, with and without GradCache: samples/s and peak memory
# against the memory planner), and bench encode throughput. Random weights: nothing is downloaded.
# What it runs: lame_testbed.bench.gpucheck (`--tiny`: the same on the tiny config, on a CPU).
#
#   bash scripts/gpu-check.sh [OUTPUT_FOLDER] [--parts speed train encode]
#
# Python: $PYTHON, else .venv/bin/python, else python3 (a GPU image's own torch + transformers will do:
# the project runs from src/ without installing).
set -euo pipefail
cd "$(dirname "$0")/.."
output=${1:-runs/gpu-check}
shift || true
python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
"$python" -c "import torch; assert torch.cuda.is_available(), 'no GPU: use --tiny on a CPU'" || exit 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# 470 s: under 8 minutes whatever happens; each part rewrites the JSON when it ends
exec timeout --signal=INT 470 "$python" -m lame_testbed.bench.gpucheck --output "$output" "$@"
