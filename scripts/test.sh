#!/usr/bin/env bash
# Installs everything the tests need (real PostgreSQL, Prometheus, ... see install-test-deps.sh),
# runs the linters and the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-uv.sh
started=$(date +%s)

bash scripts/install-test-deps.sh

echo "==> Python dependencies (uv sync)"
uv sync --frozen --quiet

echo "==> ruff"
uv run --no-sync ruff check .
uv run --no-sync ruff format --check .
echo "==> mypy"
uv run --no-sync mypy
echo "==> import layers"
uv run --no-sync lint-imports

echo "==> tests"
uv run --no-sync pytest "$@"
echo "==> done in $(( $(date +%s) - started ))s"
