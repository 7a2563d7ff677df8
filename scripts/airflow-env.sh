#!/usr/bin/env bash
# Create (or reuse) a dedicated virtual environment holding a real Apache Airflow 3.
#
# Airflow pins FastAPI/Starlette below what Sextant uses, so it never goes into the
# project's own environment. The venv lives outside the repository:
#
#   ${SEXTANT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sextant}/airflow-<version>
#
# Usage:  scripts/airflow-env.sh [VERSION]      (default: $AIRFLOW_VERSION or 3.3.2)
# Prints the venv path on the last line of stdout.
#
# The official constraints file lives on GitHub (raw.githubusercontent.com), which is not
# reachable from our machines, so instead of `--constraint` we pin the one dependency known
# to break the Celery provider when left unpinned: celery 5.7 ("cannot load executor").
# The postgres extra brings psycopg2 and asyncpg (Airflow 3 also opens an async engine on the
# metadata DB), needed for the PostgreSQL metadata database of the CeleryExecutor setup.
# The elasticsearch extra is the remote-logging provider; its client stays below 9, which
# refuses to talk to an Elasticsearch 8 cluster.
set -euo pipefail

VERSION="${1:-${AIRFLOW_VERSION:-3.3.2}}"
PYTHON="${SEXTANT_AIRFLOW_PYTHON:-3.11}"
TOOLS_DIR="${SEXTANT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sextant}"
VENV="$TOOLS_DIR/airflow-$VERSION"
CONSTRAINTS_URL="https://raw.githubusercontent.com/apache/airflow/constraints-${VERSION}/constraints-${PYTHON}.txt"

if [ -x "$VENV/bin/airflow" ] && "$VENV/bin/python" -c "import airflow, airflow.providers.elasticsearch, asyncpg, psycopg2, statsd, sys; sys.exit(airflow.__version__ != '$VERSION')" 2>/dev/null; then
    echo "airflow $VERSION already installed in $VENV" >&2
    echo "$VENV"
    exit 0
fi

command -v uv >/dev/null || { echo "uv not found on PATH (pip install uv)" >&2; exit 1; }
mkdir -p "$TOOLS_DIR"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV (python $PYTHON)" >&2
    uv venv --quiet --python "$PYTHON" "$VENV" >&2
else
    echo "completing the install in existing $VENV" >&2
fi

extra=()
if curl -fsS -m 5 -o "$VENV/constraints.txt" "$CONSTRAINTS_URL" 2>/dev/null; then
    echo "using official constraints $CONSTRAINTS_URL" >&2
    extra=(--constraint "$VENV/constraints.txt")
else
    echo "official constraints not reachable; pinning celery[redis]<5.7 only" >&2
    rm -f "$VENV/constraints.txt"
fi

uv pip install --quiet --python "$VENV/bin/python" "${extra[@]}" \
    "apache-airflow[celery,elasticsearch,postgres,statsd]==$VERSION" "celery[redis]<5.7" \
    "elasticsearch<9" >&2

"$VENV/bin/python" -c "import airflow; print('installed airflow', airflow.__version__)" >&2
echo "$VENV"
