#!/usr/bin/env bash
# Runs Sextant on its embedded SQLite database at http://127.0.0.1:8080 (override with
# SEXTANT_SERVER_HOST / SEXTANT_SERVER_PORT). Installs what it needs on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-uv.sh

echo "==> installing Sextant's Python dependencies (uv sync)"
uv sync --frozen --no-dev --quiet

database="${SEXTANT_DATABASE_URL:-sqlite:///./sextant.db}"
if [[ "$database" == sqlite:///./* ]] && [ ! -f "${database#sqlite:///}" ]; then
    # First start on a fresh embedded database: hand the user a way in.
    echo "==> first start: creating a system-admin token (shown once; keep it)"
    token=$(uv run --no-sync sextant tokens create --role system-admin --name bootstrap | tail -n 1)
    echo
    echo "    export SEXTANT_TOKEN=$token"
    echo "    curl -H \"Authorization: Bearer \$SEXTANT_TOKEN\" http://${SEXTANT_SERVER_HOST:-127.0.0.1}:${SEXTANT_SERVER_PORT:-8080}/api/v1/workspaces"
    echo
fi
echo "==> Sextant on http://${SEXTANT_SERVER_HOST:-127.0.0.1}:${SEXTANT_SERVER_PORT:-8080} (API docs at /docs; Ctrl-C stops it)"
exec uv run --no-sync sextant serve "$@"
