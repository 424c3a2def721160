#!/usr/bin/env bash
# Runs Causeway locally against a throw-away cluster: builds the workspace, starts a
# PostgreSQL primary + 2 replicas + Redis in the background (integration-tests `cluster
# up`), writes a matching Causeway config, and runs causeway in the foreground on
# 127.0.0.1:6432 (admin 127.0.0.1:9930). Ctrl-C stops causeway and tears the cluster down.
#
#   scripts/run-local.sh [--release] [extra causeway args...]
#   then: PGPASSWORD=secret psql -h 127.0.0.1 -p 6432 -U app app
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/setup.sh
profile=debug
cargo_flags=()
if [ "${1:-}" = "--release" ]; then
  profile=release
  cargo_flags+=(--release)
  shift
fi

config="${CAUSEWAY_LOCAL_CONFIG:-/tmp/causeway-local.toml}"
cluster_log="$(mktemp /tmp/causeway-cluster-log.XXXXXX)"
target="${CARGO_TARGET_DIR:-target}"

cargo build "${cargo_flags[@]}" -p causeway -p integration-tests --bins

rm -f "$config"
"$target/$profile/cluster" up --causeway-config "$config" >"$cluster_log" 2>&1 &
cluster_pid=$!

cleanup() {
  trap - EXIT INT TERM
  if kill -0 "$cluster_pid" 2>/dev/null; then
    kill -TERM "$cluster_pid" 2>/dev/null || true
    wait "$cluster_pid" 2>/dev/null || true
  fi
  rm -f "$cluster_log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for _ in $(seq 1 600); do
  grep -q '^ready' "$cluster_log" && break
  if ! kill -0 "$cluster_pid" 2>/dev/null; then
    cat "$cluster_log" >&2
    echo "run-local.sh: the cluster failed to start" >&2
    exit 1
  fi
  sleep 0.1
done
grep -q '^ready' "$cluster_log" || { cat "$cluster_log" >&2; echo "run-local.sh: cluster start timed out" >&2; exit 1; }
cat "$cluster_log"
echo
echo "causeway: PGPASSWORD=secret psql -h 127.0.0.1 -p 6432 -U app app"
"$target/$profile/causeway" --config "$config" "$@"
