#!/usr/bin/env bash
# A production rehearsal of CONFIG on the demo task (README, "Running it for real").
#
#   scripts/rehearse.sh [CONFIG] [omniopd rehearse options, e.g. --broker both --outage]
#
# PostgreSQL (a database of its own, created and dropped), the machine's Redis or RabbitMQ as
# broker, the learner from scripts/start_learner.sh, two rollout workers (one on vLLM) and two
# audit workers from scripts/start_workers.sh, a rate-limited emulated teacher; then every
# check of a healthy run (--outage: the store, then the broker, go away mid-run). Environment:
# OMNIOPD_REHEARSAL_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres).
# Exit 1 if a check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
config=configs/demo.yaml
if [ $# -ge 1 ] && [[ "$1" != -* ]]; then config=$1; shift; fi
py=${OMNIOPD_PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
export OMNIOPD_REHEARSAL_POSTGRES_URL=${OMNIOPD_REHEARSAL_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}
exec "$py" -m omniopd rehearse "$config" "$@"
