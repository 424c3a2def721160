#!/bin/sh
# Entrypoint of a streaming replica (replica1 and replica2 in docker-compose.yml; also run
# by integration-tests/tests/docker.rs against a local primary, so it is tested without
# Docker). On first start it waits for the primary and clones it with pg_basebackup (-R
# writes standby.signal); then it runs postgres with the arguments it was given.
#
# Environment: PGDATA, PRIMARY_HOST, PRIMARY_PORT (5432), REPLICATION_USER (replicator),
# REPLICATION_PASSWORD, REPLICA_NAME (the application_name the primary sees; hostname).
# Passwords must not contain single quotes or spaces (they go into primary_conninfo).
set -eu

: "${PGDATA:?PGDATA must name the data directory}"
: "${PRIMARY_HOST:?set PRIMARY_HOST}"
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
REPLICATION_USER="${REPLICATION_USER:-replicator}"
REPLICA_NAME="${REPLICA_NAME:-$(hostname)}"
# Seconds to wait for the primary to accept connections.
PRIMARY_WAIT_SECONDS="${PRIMARY_WAIT_SECONDS:-120}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  waited=0
  until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do
    if [ "$waited" -ge "$PRIMARY_WAIT_SECONDS" ]; then
      echo "replica-entrypoint.sh: primary $PRIMARY_HOST:$PRIMARY_PORT not ready after ${waited}s" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  conninfo="host=$PRIMARY_HOST port=$PRIMARY_PORT user=$REPLICATION_USER"
  conninfo="$conninfo password=$REPLICATION_PASSWORD application_name=$REPLICA_NAME"
  mkdir -p "$PGDATA"
  # Cloning needs an empty directory; a half-finished clone is not a replica.
  find "$PGDATA" -mindepth 1 -delete
  pg_basebackup --dbname="$conninfo" --pgdata="$PGDATA" --wal-method=stream \
    --checkpoint=fast --write-recovery-conf --no-password
  # -R copies the connection options it used; state them explicitly all the same, so
  # the primary names this replica in pg_stat_replication.
  printf "primary_conninfo = '%s'\n" "$conninfo" >>"$PGDATA/postgresql.auto.conf"
  chmod 0700 "$PGDATA"
  echo "replica-entrypoint.sh: $REPLICA_NAME cloned from $PRIMARY_HOST:$PRIMARY_PORT"
fi

exec postgres -D "$PGDATA" "$@"
