#!/usr/bin/env bash
# The test command: set up .venv, lint (ruff, then the import contracts of pyproject.toml's
# [tool.importlinter]), then run the whole test suite on two pytest-xdist processes (most
# tests wait on servers and child processes; tests/conftest.py starts the long end-to-end
# runs first). Every test has its own database, Redis key prefix, RabbitMQ vhost and
# temporary directory, so the two never collide.
#   scripts/test.sh                 # everything, on OMNIOPD_TEST_WORKERS (default 2) processes
#   scripts/test.sh tests/algo -x   # extra arguments go to pytest
#   scripts/test.sh -n 0 tests/db   # one process (pytest's own output, -x stops at once, pdb works)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest -n "${OMNIOPD_TEST_WORKERS:-2}" --dist load --maxschedchunk 1 "$@"
