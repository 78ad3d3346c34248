#!/usr/bin/env bash
# Start the learner of a run in the foreground (it owns the embedded broker: start it first).
#   scripts/start_learner.sh CONFIG [--force] [omniopd learner options, e.g. --set learner.max_steps=10 --no-progress]
# 1. Creates or migrates the store (safe to repeat).
# 2. Forecasts the run's teacher spend (`omniopd plan`, saved to <run.output_dir>/plan.json)
#    and refuses to start when the forecast exceeds a budget cap; --force starts anyway (the
#    cap still holds: audits stop when it is reached). The forecast assumes trajectories as
#    long as rollout.max_new_tokens unless OMNIOPD_PLAN_SAMPLE=K measures them on K samples
#    of the student first.
# 3. Runs `omniopd learner`. SIGTERM / Ctrl-C: the current step finishes, a checkpoint is
#    written, exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 CONFIG [--force] [omniopd learner options]" >&2
    exit 2
fi
config=$1
shift
force=()
args=()
sets=()  # --set overrides apply to the plan too
while [[ $# -gt 0 ]]; do
    case "$1" in
        --force) force=(--force) ;;
        --set|-s) sets+=(--set "$2"); args+=("$1" "$2"); shift ;;
        --set=*) sets+=("$1"); args+=("$1") ;;
        *) args+=("$1") ;;
    esac
    shift
done
python=${OMNIOPD_PYTHON:-.venv/bin/python}
"$python" -m omniopd db upgrade --config "$config"
if ! "$python" -m omniopd plan --config "$config" --sample "${OMNIOPD_PLAN_SAMPLE:-0}" "${sets[@]}" "${force[@]}"; then
    echo "start_learner: not starting the run (see the plan above); pass --force to start anyway" >&2
    exit 3
fi
exec "$python" -m omniopd learner --config "$config" "${args[@]}"
