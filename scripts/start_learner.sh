#!/usr/bin/env bash
# Start the learner of a run in the foreground (it owns the embedded broker: start it first).
#   scripts/start_learner.sh CONFIG [--gpus N] [--force] [omniopd learner options, e.g. --set learner.max_steps=10 --no-progress]
# 1. Creates or migrates the store (safe to repeat).
# 2. Forecasts the run's teacher spend (`omniopd plan`, saved to <run.output_dir>/plan.json)
#    and refuses to start when the forecast exceeds a budget cap; --force starts anyway (the
#    cap still holds: audits stop when it is reached). The forecast assumes trajectories as
#    long as rollout.max_new_tokens unless OMNIOPD_PLAN_SAMPLE=K measures them on K samples
#    of the student first.
# 3. Runs `omniopd learner`; --gpus N (N > 1): N learner processes on this node under
#    torchrun, the student sharded with FSDP across them (docs/learner.md, Scale-out); rank 0
#    alone talks to the store and broker.
# SIGTERM / Ctrl-C: the current step finishes, a checkpoint is written, exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 CONFIG [--gpus N] [--force] [omniopd learner options]" >&2
    exit 2
fi
config=$1
shift
gpus=1
force=()
rest=()
sets=()  # --set overrides apply to the plan too
while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpus) gpus=${2:?--gpus needs a number}; shift ;;
        --gpus=*) gpus=${1#--gpus=} ;;
        --force) force=(--force) ;;
        --set|-s) sets+=(--set "${2:?$1 needs KEY=VALUE}"); rest+=("$1" "$2"); shift ;;
        --set=*) sets+=("$1"); rest+=("$1") ;;
        *) rest+=("$1") ;;
    esac
    shift
done
if ! [[ "$gpus" =~ ^[1-9][0-9]*$ ]]; then
    echo "--gpus: expected a positive number of processes, got '$gpus'" >&2
    exit 2
fi
python=${OMNIOPD_PYTHON:-.venv/bin/python}
"$python" -m omniopd db upgrade --config "$config"
plan_status=0
"$python" -m omniopd plan --config "$config" --sample "${OMNIOPD_PLAN_SAMPLE:-0}" "${sets[@]}" "${force[@]}" || plan_status=$?
if [[ $plan_status -eq 3 ]]; then
    echo "start_learner: not starting the run: its forecast exceeds a budget cap (see above); pass --force to start anyway" >&2
    exit 3
elif [[ $plan_status -ne 0 ]]; then  # e.g. no teacher to plan for (loss.method: sft)
    echo "start_learner: no spend forecast (see above); starting the learner anyway" >&2
fi
if [[ "$gpus" -eq 1 ]]; then
    exec "$python" -m omniopd learner --config "$config" "${rest[@]}"
fi
# one node; for several, run torchrun yourself with --nnodes / --rdzv-endpoint
exec "$python" -m torch.distributed.run --standalone --nproc-per-node "$gpus" \
    -m omniopd learner --config "$config" "${rest[@]}"
