#!/usr/bin/env bash
# The chaos soak: the demo task in production mode under randomized fault schedules.
#
#   scripts/chaos.sh [omniopd chaos options...]
#
# Default: 200 schedules from seed 0 (a few hours on 2 CPU cores; each prints its checks,
# and runs/chaos/chaos-results.jsonl keeps them). Needs PostgreSQL: set
# OMNIOPD_CHAOS_POSTGRES_URL (or pass --postgres) to a database the harness may connect
# to; it creates and drops one database per schedule. A failed seed replays with
# `omniopd chaos --seed S --schedules 1`. The CI version is tests/workers/chaos/.
set -euo pipefail
cd "$(dirname "$0")/.."
py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python
exec "$py" -m omniopd chaos --schedules "${SCHEDULES:-200}" "$@"
