#!/usr/bin/env bash
# The medium-shape throughput table (benchmarks/RESULTS.md) in one prepared run on one GPU.
#
# On the GPU machine, from the repository root, after staging wheels, data and tokenizer into
# .device/ (see the device notes of your cluster; the tokenizer is needed for the vocabulary):
#   bash benchmarks/gpu_suite.sh > gpu_suite.jsonl
# then `python benchmarks/summarize.py gpu_suite.jsonl`. An offline GPU image also needs
# motlab's pure-Python dependencies it lacks as wheels beside the staged ones, e.g. fetched on
# a machine with an index (pytest only for the GPU tests at the end):
#   python3 -m pip download --no-deps --only-binary=:all: -d .device/wheels \
#     torchdata==0.11.0 pytest pluggy iniconfig
# Dry run of the same script on a CPU at tiny shapes:
#   DEVICE=cpu OVERLAY=conf/tiny.yaml STEPS=2 WARMUP=1 COMPILE= bash benchmarks/gpu_suite.sh
#
# Each line is one JSON result; ratios are taken between results of the same run.
# The table comes first and the GPU tests last; BUDGET_S bounds the whole run: an item that
# would start with less than MIN_LEFT_S left is skipped and reported as {"skipped": ...}, so a
# run with a hard time limit still ends with its results written.
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-10}
COMPILE=${COMPILE---compile}
PEAK=${PEAK:-812e12}                  # measured bf16 matmul peak of the H200 (datasheet 989e12)
TOKENIZER=${TOKENIZER:-.device/tokenizers/gpt2/tokenizer.json}
DATA=${DATA:-.device/data}
OVERLAY=${OVERLAY:-}
BUDGET_S=${BUDGET_S:-540}
MIN_LEFT_S=${MIN_LEFT_S:-45}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

left() { echo $((BUDGET_S - SECONDS)); }

run() {  # run CONFIG [extra args...]
  local config=$1; shift
  if (($(left) < MIN_LEFT_S)); then
    echo "{\"skipped\": \"$config $*\", \"reason\": \"BUDGET_S=$BUDGET_S spent\"}"
    return
  fi
  local overlay=()
  [[ -n "$OVERLAY" ]] && overlay=(--config "$OVERLAY")
  timeout "$(left)" python3 benchmarks/throughput.py --config "$config" "${overlay[@]}" \
    --device "$DEVICE" --steps "$STEPS" --warmup "$WARMUP" $COMPILE --peak-flops "$PEAK" \
    --data.tokenizer "$TOKENIZER" --data.path "$DATA" "$@" || echo "{\"failed\": \"$config $*\"}"
}

run conf/dense.yaml --synthetic --loop plain           # a hand-written loop (model compiled)
run conf/dense.yaml --synthetic
run conf/mot.yaml --synthetic
run conf/token_choice.yaml --synthetic
run conf/expert_choice.yaml --synthetic
run conf/mot_32e_16.yaml --synthetic
run conf/dense.yaml --synthetic --loop bare            # the same loop compiling model + loss
run conf/dense.yaml                                    # with the real data path (8 workers)
run conf/mot_32e_16.yaml --synthetic --float32_matmul_precision highest  # router off TF32

# GPU correctness (bf16 + compile vs eager, no host syncs, fused AdamW); report on stderr.
if [[ "$DEVICE" == cuda ]]; then
  if ! python3 -c "import pytest" 2>/dev/null; then
    echo "gpu_suite: pytest is not installed, GPU tests skipped (see the header)" >&2
  elif (($(left) < MIN_LEFT_S)); then
    echo "gpu_suite: BUDGET_S=$BUDGET_S spent, GPU tests skipped" >&2
  else
    timeout "$(left)" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py >&2
  fi
fi
