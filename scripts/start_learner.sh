#!/usr/bin/env bash
# Start the learner of a run in the foreground (it owns the embedded broker: start it first).
#   scripts/start_learner.sh configs/demo.yaml [--gpus N] [--set learner.max_steps=10] [--no-progress] ...
# Creates or migrates the store first (safe to repeat), then runs `omniopd learner`.
# --gpus N (N > 1): N learner processes on this node under torchrun, the student sharded with
# FSDP across them (docs/learner.md, Scale-out); rank 0 alone talks to the store and broker.
# SIGTERM / Ctrl-C: the current step finishes, a checkpoint is written, exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 CONFIG [--gpus N] [omniopd learner options]" >&2
    exit 2
fi
config=$1
shift
gpus=1
rest=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpus) gpus=${2:?--gpus needs a number}; shift 2 ;;
        --gpus=*) gpus=${1#--gpus=}; shift ;;
        *) rest+=("$1"); shift ;;
    esac
done
if ! [[ "$gpus" =~ ^[1-9][0-9]*$ ]]; then
    echo "--gpus: expected a positive number of processes, got '$gpus'" >&2
    exit 2
fi
python=${OMNIOPD_PYTHON:-.venv/bin/python}
"$python" -m omniopd db upgrade --config "$config"
if [[ "$gpus" -eq 1 ]]; then
    exec "$python" -m omniopd learner --config "$config" "${rest[@]}"
fi
# one node; for several, run torchrun yourself with --nnodes / --rdzv-endpoint
exec "$python" -m torch.distributed.run --standalone --nproc-per-node "$gpus" \
    -m omniopd learner --config "$config" "${rest[@]}"
