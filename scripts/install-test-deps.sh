#!/usr/bin/env bash
# Install the real components the test suite starts (see tests/harness/).
#
# Debian packages:  PostgreSQL 15, Redis, PgBouncer, Prometheus (+promtool),
#                   Alertmanager (+amtool)
# Go module proxy:  statsd_exporter; k8s.io/kubernetes for the kube-apiserver harness
#                   (tests/harness/kube, built into sextant-kube-apiserver)
# Maven Central:    the Elasticsearch 8 server (integ-test-zip, runs on the machine's JDK 17)
#
# Idempotent: a repeat run on the same machine only checks what is there. Everything that is
# not an apt package goes to the tools dir, which tests/harness/availability.py also searches:
#   ${SEXTANT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sextant}
# Exit status is non-zero when something the tests need is still missing at the end.
set -euo pipefail

STATSD_EXPORTER_VERSION="${SEXTANT_STATSD_EXPORTER_VERSION:-v0.28.0}"
# Newest 8.x on Maven Central that runs on Java 17; the Python client's major must match (8).
ES_VERSION="${SEXTANT_ES_VERSION:-8.19.21}"
ES_ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:${ES_VERSION}:zip"
MAVEN_DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# Elasticsearch refuses to run as root; the harness runs it as this user when tests run as root.
TEST_USER="${SEXTANT_TEST_USER:-sextant-test}"
PG_BIN=/usr/lib/postgresql/15/bin

TOOLS="${SEXTANT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sextant}"
BIN="$TOOLS/bin"
STARTED_AT=$SECONDS
MISSING=()

say() { printf '==> %s\n' "$*"; }
warn() { printf '!!! %s\n' "$*" >&2; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# --- Debian packages -------------------------------------------------------------------------

# "package:binary" pairs; a package is needed when its binary is missing.
APT_CHECKS=(
  "postgresql:$PG_BIN/initdb"
  "postgresql:$PG_BIN/postgres"
  "postgresql-client:$PG_BIN/pg_isready"
  "postgresql-client:$PG_BIN/psql"
  "redis-server:redis-server"
  "pgbouncer:pgbouncer"
  "prometheus:prometheus"
  "prometheus:promtool"
  "prometheus-alertmanager:prometheus-alertmanager"
  "prometheus-alertmanager:amtool"
  "unzip:unzip"
  "maven:mvn"
  "openjdk-17-jre-headless:java"
)

has_binary() {
  case "$1" in
    /*) [ -x "$1" ] ;;
    # pgbouncer lives in /usr/sbin, which is not on every user's PATH.
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] ;;
  esac
}

missing_apt_packages() {
  local entry pkg bin seen=" "
  for entry in "${APT_CHECKS[@]}"; do
    pkg="${entry%%:*}"
    bin="${entry#*:}"
    if ! has_binary "$bin" && [[ "$seen" != *" $pkg "* ]]; then
      seen+="$pkg "
      printf '%s\n' "$pkg"
    fi
  done
}

POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=""

restore_policy() {
  if [ -n "$POLICY_BACKUP" ]; then
    mv "$POLICY_BACKUP" "$POLICY"
  else
    rm -f "$POLICY"
  fi
}

# Should a postinst start its daemon anyway, stop the packaged instance through its init script:
# it finds the daemon by its pid file, so other servers (the tests' own) are left alone.
stop_packaged_daemons() {
  local pkg script
  for pkg in "$@"; do
    script="/etc/init.d/$pkg"
    if [ -x "$script" ] && "$script" status >/dev/null 2>&1; then
      warn "stopping $pkg, which its package started"
      "$script" stop >/dev/null 2>&1 || true
    fi
  done
}

install_apt_packages() {
  local packages
  mapfile -t packages < <(missing_apt_packages)
  if [ "${#packages[@]}" -eq 0 ]; then
    say "apt packages: all binaries present, skipping apt"
    return
  fi
  if ! is_root; then
    warn "not root: install these apt packages, then re-run:"
    warn "  sudo apt-get install -y --no-install-recommends ${packages[*]}"
    MISSING+=("apt: ${packages[*]}")
    return
  fi
  say "installing apt packages: ${packages[*]}"
  # Nothing may start listening during the install: without systemd, invoke-rc.d asks
  # policy-rc.d, and 101 means "do not start". Ours stands in for any other until we are done.
  if [ -e "$POLICY" ]; then
    POLICY_BACKUP="$(mktemp)"
    cp -p "$POLICY" "$POLICY_BACKUP"
  fi
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  restore_policy
  trap - EXIT
  stop_packaged_daemons "${packages[@]}"
}

check_java() {
  local version
  if ! version="$(java -version 2>&1 | head -n 1)"; then
    MISSING+=("java 17 (apt: openjdk-17-jre-headless)")
    return
  fi
  # Elasticsearch 8 runs on Java 17 or newer.
  if [[ "$version" =~ \"([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -ge 17 ]; then
    say "java: $version"
  else
    warn "java 17+ needed for Elasticsearch, found: $version"
    MISSING+=("java 17 (apt: openjdk-17-jre-headless)")
  fi
}

# --- unprivileged user -----------------------------------------------------------------------

ensure_test_user() {
  is_root || return 0
  if id "$TEST_USER" >/dev/null 2>&1; then
    say "user $TEST_USER: present"
    return
  fi
  say "creating system user $TEST_USER (Elasticsearch refuses to run as root)"
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$TEST_USER"
}

# --- statsd_exporter from the Go module proxy ------------------------------------------------

find_go() {
  if command -v go >/dev/null 2>&1; then
    command -v go
  elif [ -x /usr/local/go/bin/go ]; then
    echo /usr/local/go/bin/go
  else
    return 1
  fi
}

install_statsd_exporter() {
  local target="$BIN/statsd_exporter" stamp="$TOOLS/statsd_exporter.version" go
  # `go install` leaves no version in --version output, so a stamp file records what was built.
  if [ -x "$target" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$STATSD_EXPORTER_VERSION" ]; then
    say "statsd_exporter $STATSD_EXPORTER_VERSION: present"
    return
  fi
  if ! go="$(find_go)"; then
    warn "go not found (expected on PATH or /usr/local/go/bin); statsd_exporter needs Go >= 1.22"
    MISSING+=("statsd_exporter (needs Go >= 1.22)")
    return
  fi
  say "installing statsd_exporter $STATSD_EXPORTER_VERSION with $("$go" version | cut -d' ' -f3) ..."
  mkdir -p "$BIN"
  # Module and build caches live in the tools dir so that a repeat install is fast;
  # -modcacherw keeps the module cache deletable with a plain rm -rf.
  GOBIN="$BIN" GOMODCACHE="$TOOLS/go/mod" GOCACHE="$TOOLS/go/cache" GOFLAGS=-modcacherw \
    "$go" install "github.com/prometheus/statsd_exporter@$STATSD_EXPORTER_VERSION"
  printf '%s\n' "$STATSD_EXPORTER_VERSION" >"$stamp"
}

# --- kube-apiserver harness from the Go module proxy -----------------------------------------

KUBE_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/harness/kube"

# The digest of the harness's sources; tests/harness/kubernetes.py computes the same one to tell
# a binary that is older than the sources.
kube_sources_hash() {
  (cd "$KUBE_SRC" && export LC_ALL=C && sha256sum go.mod go.sum *.go | sha256sum | cut -c1-64)
}

install_kube_apiserver() {
  local target="$BIN/sextant-kube-apiserver" stamp="$TOOLS/sextant-kube-apiserver.stamp"
  local go version ldflags recipe expected started
  version="$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$KUBE_SRC/go.mod")"
  # What the API server reports as its version (/version, discovery); `go build` leaves it at
  # v0.0.0-master otherwise.
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=$(echo "$version" | cut -d. -f1 | tr -d v)"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=$(echo "$version" | cut -d. -f2)"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  recipe="CGO_ENABLED=0 go build -trimpath -ldflags '$ldflags'"
  # A change to the sources or to the recipe rebuilds.
  expected="$(printf 'sources %s\nbuild %s' "$(kube_sources_hash)" "$recipe")"
  if [ -x "$target" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$expected" ]; then
    say "kube-apiserver harness (k8s.io/kubernetes $version): present"
    return
  fi
  if ! go="$(find_go)"; then
    warn "go not found (expected on PATH or /usr/local/go/bin); the kube-apiserver harness needs Go"
    MISSING+=("kube-apiserver harness (needs Go, see tests/harness/kube/go.mod)")
    return
  fi
  say "building the kube-apiserver harness (k8s.io/kubernetes $version) with $("$go" version | cut -d' ' -f3) ..."
  say "  a cold build downloads ~140 MB of modules (~700 MB unpacked) and compiles for 5-7 minutes"
  started=$SECONDS
  mkdir -p "$BIN"
  # Same caches as statsd_exporter; GOTOOLCHAIN=local: use this Go or fail, never download one.
  if ! (cd "$KUBE_SRC" && GOMODCACHE="$TOOLS/go/mod" GOCACHE="$TOOLS/go/cache" \
    GOFLAGS="-modcacherw -buildvcs=false -mod=readonly" GOTOOLCHAIN=local CGO_ENABLED=0 \
    "$go" build -trimpath -ldflags "$ldflags" -o "$target.partial" .); then
    rm -f "$target.partial"
    warn "building tests/harness/kube failed"
    MISSING+=("kube-apiserver harness (go build failed)")
    return
  fi
  mv "$target.partial" "$target"
  printf '%s\n' "$expected" >"$stamp"
  say "kube-apiserver harness built in $((SECONDS - started))s"
}

# --- Elasticsearch from Maven Central --------------------------------------------------------

install_elasticsearch() {
  local home="$TOOLS/elasticsearch-$ES_VERSION" download="$TOOLS/download"
  if [ -x "$home/bin/elasticsearch" ]; then
    say "elasticsearch $ES_VERSION: present"
  elif ! command -v mvn >/dev/null 2>&1 || ! command -v unzip >/dev/null 2>&1; then
    warn "mvn and unzip are needed to fetch Elasticsearch from Maven Central"
    MISSING+=("elasticsearch $ES_VERSION (needs mvn and unzip)")
    return
  else
    say "installing elasticsearch $ES_VERSION from Maven Central ..."
    mkdir -p "$download"
    # The local repository sits in the tools dir too, so a re-install needs no download.
    # Maven prints its errors on stdout among colour codes: keep the output for a failure only.
    if ! mvn -B -q -Dmaven.repo.local="$TOOLS/m2" "$MAVEN_DEPENDENCY_PLUGIN:copy" \
      -Dartifact="$ES_ARTIFACT" -DoutputDirectory="$download" >"$download/mvn.log" 2>&1; then
      cat "$download/mvn.log" >&2
      warn "downloading $ES_ARTIFACT failed"
      MISSING+=("elasticsearch $ES_VERSION (Maven download failed)")
      return
    fi
    # Unpack beside the target and rename, so an interrupted run never looks installed.
    rm -rf "$home.partial"
    mkdir -p "$home.partial"
    unzip -q "$download/elasticsearch-$ES_VERSION.zip" -d "$home.partial"
    mv "$home.partial/elasticsearch-$ES_VERSION" "$home"
    rm -rf "$home.partial" "$download"
  fi
  printf '%s\n' "$ES_VERSION" >"$TOOLS/elasticsearch.version"
}

# --- Apache Airflow from PyPI, in its own venv ----------------------------------------------

install_airflow() {
  local script venv
  script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/airflow-env.sh"
  # The local runtime's tests run a real Airflow 3 (CeleryExecutor); idempotent, ~20 s with uv.
  if venv="$(SEXTANT_TOOLS_DIR="$TOOLS" bash "$script" | tail -n 1)"; then
    say "airflow venv: $venv"
  else
    warn "creating the Airflow venv failed (scripts/airflow-env.sh)"
    MISSING+=("airflow venv (scripts/airflow-env.sh failed)")
  fi
}

# --- main ------------------------------------------------------------------------------------

main() {
  say "tools dir: $TOOLS"
  mkdir -p "$BIN"
  install_apt_packages
  check_java
  ensure_test_user
  install_statsd_exporter
  install_kube_apiserver
  install_elasticsearch
  install_airflow
  local elapsed=$((SECONDS - STARTED_AT))
  if [ "${#MISSING[@]}" -gt 0 ]; then
    warn "still missing:"
    printf '!!!   %s\n' "${MISSING[@]}" >&2
    warn "done with gaps in ${elapsed}s"
    exit 1
  fi
  say "done in ${elapsed}s"
}

main "$@"
