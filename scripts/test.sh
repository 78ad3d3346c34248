#!/usr/bin/env bash
# The test command: set up .venv, lint (ruff, then the import contracts of pyproject.toml's
# [tool.importlinter]), then run the whole test suite.
#   scripts/test.sh                 # everything
#   scripts/test.sh tests/algo -x   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest "$@"
