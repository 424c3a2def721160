#!/usr/bin/env bash
# Causeway throughput benchmark (a benchmark, not a test): runs bounded, loopback-only
# pgbench workloads (16 clients) against PostgreSQL directly, through Causeway (primary only,
# and with two streaming replicas: causeway-replicas) and through PgBouncer, alternating the
# targets over several rounds in one run so the ratios are measured under the same machine
# noise; then fresh-read-latency (psycopg; skipped without it). Prints Markdown tables and
# writes them, with the raw JSON and the server logs, under bench-results/<timestamp>/.
#
#   bench/run.sh                                    # full run, ~7-8 minutes on 2 cores (+ build)
#   bench/run.sh --quick                            # smoke run: -T 3, 1 round
#   bench/run.sh --scenarios read-mostly,fresh-read-latency --quick
#   bench/run.sh --replicas 0                       # no replicas, no causeway-replicas target
#   bench/run.sh --targets direct,pgbouncer --quick # without Causeway (no build)
#   bench/run.sh --session-store both --targets direct,causeway,causeway-replicas,causeway-redis \
#       --scenarios select-simple,select-prepared,read-mostly,store-latency
#                                                   # memory vs Redis session store ([session] key =
#                                                   # user), ~7 minutes; redis-server needed
#   bench/run.sh --tls --replicas 0 --targets direct,causeway,pgbouncer --scenarios select-simple
#                                                   # TLS on both legs (sslmode=require clients,
#                                                   # ssl=on hostssl-only PostgreSQL)
#   bench/run.sh --help                             # every option
#
#   bench/run.sh offload --causeway-bin PATH        # the offload/latency trade-off of [consistency]
#                                                   # max_wait (bench/offload.py, psycopg 3): replicas
#                                                   # with recovery_min_apply_delay 1s / 300ms, 20 users
#                                                   # sticky vs app-pooled with session hints, and 50
#                                                   # web users, at max_wait 20ms/100ms/400ms; share
#                                                   # of reads on replicas, read p50/p99, violations
#                                                   # of read-your-writes / monotonic reads. ~4 minutes,
#                                                   # never builds; --quick < 1 minute; offload --help
#
#   bench/run.sh psycopg-compat --causeway-bin PATH [--select 'tests/test_cursor.py ...']
#                                                   # psycopg 3's own test suite (bench/psycopg_compat.py)
#                                                   # directly, through Causeway in session and in
#                                                   # transaction mode; lists the tests that fail only
#                                                   # through Causeway, with a reason class. Whole suite
#                                                   # ~1 hour; --ignore 'tests/pool tests/crdb
#                                                   # tests/*_async.py' ~13 minutes; needs a psycopg source tree and a
#                                                   # virtualenv (psycopg-compat --help); never builds
#
# By default it starts a throw-away PostgreSQL 15 primary and two pg_basebackup replicas in a
# temp dir (as the `postgres` OS user when run as root) and removes them, PgBouncer and both
# Causeway instances (and redis-server, for causeway-redis) on exit. The work is done by bench/bench.py (Python 3, standard library
# only) and bench/fresh_read.py (psycopg 3).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v python3 >/dev/null 2>&1; then
  echo "bench/run.sh: python3 is required but was not found on PATH" >&2
  exit 1
fi
if [ "${1:-}" = offload ]; then
  shift
  exec python3 "$here/offload.py" "$@"
fi
if [ "${1:-}" = psycopg-compat ]; then
  shift
  exec python3 "$here/psycopg_compat.py" "$@"
fi
exec python3 "$here/bench.py" "$@"
