#!/usr/bin/env bash
# Start the learner of a run in the foreground (it owns the embedded broker: start it first).
#   scripts/start_learner.sh configs/demo.yaml [--set learner.max_steps=10] [--no-progress] ...
# Creates or migrates the store first (safe to repeat), then runs `omniopd learner`.
# SIGTERM / Ctrl-C: the current step finishes, a checkpoint is written, exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 || "$1" == -* ]]; then
    echo "usage: $0 CONFIG [omniopd learner options]" >&2
    exit 2
fi
config=$1
shift
python=${OMNIOPD_PYTHON:-.venv/bin/python}
"$python" -m omniopd db upgrade --config "$config"
exec "$python" -m omniopd learner --config "$config" "$@"
