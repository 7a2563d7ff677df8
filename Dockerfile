# syntax=docker/dockerfile:1
#
# Sextant's image: python:3.11-slim, dependencies from uv.lock, runs as an unprivileged user.
#
#   docker build -t sextant:0.1.0 .
#   docker run --rm -p 8080:8080 sextant:0.1.0          # embedded SQLite, `none` runtime
#
# No Docker engine runs on the machines our CI uses, so this file is not built there;
# tests/unit/runtime/test_dockerfile.py checks its structure instead (non-root numeric USER,
# pinned base and uv, no secret in ENV/ARG, a HEALTHCHECK, a .dockerignore that keeps .env and
# .git out). On Kubernetes the probes in deploy/sextant/deployment.yaml do the health checking.

# --- build: resolve and install the locked dependencies into /app/.venv ------------------------
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first: this layer is reused until uv.lock changes.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
# The package and the artifacts it reads at run time (alert rules, dashboards, templates, the
# StatsD mapping, FluentD templates) are found relative to the source tree, so the project is
# installed in place (editable) in /app rather than copied into site-packages.
COPY app ./app
COPY alert_rules ./alert_rules
COPY dashboards ./dashboards
COPY deploy ./deploy
COPY fluentd ./fluentd
RUN uv sync --frozen --no-dev

# --- run ------------------------------------------------------------------------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 sextant \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin sextant
WORKDIR /app
# Owned by root and not writable by the user that runs it.
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SEXTANT_SERVER_HOST=0.0.0.0 \
    SEXTANT_SERVER_PORT=8080 \
    SEXTANT_DATABASE_URL=sqlite:////tmp/sextant.db
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["sextant"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
