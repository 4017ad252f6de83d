#!/usr/bin/env bash
# CPU throughput table at tiny shapes: every variant through motlab (Lightning) and as a bare
# PyTorch loop, synthetic tokens, in one run. From the repository root, offline:
#   bash benchmarks/cpu_suite.sh > cpu_suite.jsonl && python benchmarks/summarize.py cpu_suite.jsonl
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-5}
TOKENIZER=${TOKENIZER:-../shared/tokenizers/gpt2/tokenizer.json}
DATA=${DATA:-../shared/data}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

run() {  # run CONFIG [extra args...]
  local config=$1; shift
  python benchmarks/throughput.py --config "$config" --config conf/tiny.yaml --device cpu \
    --steps "$STEPS" --warmup "$WARMUP" --trainer.log_every_n_steps 50 \
    --data.tokenizer "$TOKENIZER" --data.path "$DATA" "$@" 2>/dev/null \
    || echo "{\"failed\": \"$config $*\"}"
}

for config in conf/dense.yaml conf/mot.yaml conf/mot_32e_16.yaml conf/token_choice.yaml \
              conf/expert_choice.yaml; do
  run "$config" --synthetic --loop bare
  run "$config" --synthetic --loop lightning
done
# Logging every step (the tiny overlay's default) instead of every 50, and the real data path.
run conf/mot.yaml --synthetic --loop lightning --trainer.log_every_n_steps 1
run conf/mot.yaml --loop bare --data.num_workers 1
run conf/mot.yaml --loop lightning --data.num_workers 1
