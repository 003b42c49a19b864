#!/usr/bin/env bash
# Sets up everything the test suite needs, then runs ruff, mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
PY=${PYTHON:-python3}
"$PY" -m ruff check .
"$PY" -m mypy
"$PY" -m pytest "$@"
