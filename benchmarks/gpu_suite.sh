#!/usr/bin/env bash
# The medium-shape throughput table (benchmarks/RESULTS.md) in one prepared run on one GPU.
#
# On the GPU machine, from the repository root, after staging wheels, data and tokenizer into
# .device/ (see the device notes of your cluster; the tokenizer is needed for the vocabulary):
#   bash benchmarks/gpu_suite.sh > gpu_suite.jsonl
# Dry run of the same script on a CPU at tiny shapes:
#   DEVICE=cpu OVERLAY=conf/tiny.yaml STEPS=2 WARMUP=1 COMPILE= bash benchmarks/gpu_suite.sh
# Each line is one JSON result; the bare PyTorch loop on dense is the baseline of the ratios.
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
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

run() {  # run CONFIG [extra args...]
  local config=$1; shift
  local overlay=()
  [[ -n "$OVERLAY" ]] && overlay=(--config "$OVERLAY")
  timeout 300 python3 benchmarks/throughput.py --config "$config" "${overlay[@]}" \
    --device "$DEVICE" --steps "$STEPS" --warmup "$WARMUP" $COMPILE --peak-flops "$PEAK" \
    --data.tokenizer "$TOKENIZER" --data.path "$DATA" "$@" || echo "{\"failed\": \"$config $*\"}"
}

# GPU correctness first (bf16 + compile vs eager, fused AdamW); its report goes to stderr.
[[ "$DEVICE" == cuda ]] && timeout 300 python3 -m pytest -q -m gpu tests/test_gpu.py >&2

run conf/dense.yaml --synthetic --loop bare            # baseline: hand-written loop
run conf/dense.yaml --synthetic
run conf/mot.yaml --synthetic
run conf/mot_32e_16.yaml --synthetic
run conf/token_choice.yaml --synthetic
run conf/expert_choice.yaml --synthetic
run conf/dense.yaml --data.num_workers 8               # with the real data path
