#!/usr/bin/env bash
# The whole test suite (set-up on first run): ruff, then pytest. Extra arguments go to pytest,
# e.g. `scripts/test.sh -m slow` for the long training-quality checks.
set -euo pipefail
source "$(dirname "$0")/_env.sh" test
cd "$ROOT"
ruff check src tests bench
lint-imports
python -m pytest "$@"
