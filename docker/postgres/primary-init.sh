#!/bin/sh
# Prepares the primary for Causeway and its replicas. The postgres image runs it once, when
# it creates the data directory (/docker-entrypoint-initdb.d, as the postgres user, against
# a server on the local socket); integration-tests/tests/docker.rs runs it against a local
# primary so it is tested without Docker.
#
# Creates the role replicas clone and stream with, Causeway's login role and its database
# (pg_monitor lets Causeway's monitor see each replica's WAL receiver), and lets replicas
# connect for replication with a password.
set -eu

: "${PGDATA:?PGDATA must name the data directory}"
: "${REPLICATION_PASSWORD:?set REPLICATION_PASSWORD}"
: "${APP_PASSWORD:?set APP_PASSWORD}"
REPLICATION_USER="${REPLICATION_USER:-replicator}"
APP_USER="${APP_USER:-app}"
APP_DB="${APP_DB:-$APP_USER}"
# Addresses replicas connect from (a CIDR, or "all").
REPLICA_NETWORK="${REPLICA_NETWORK:-all}"

psql -v ON_ERROR_STOP=1 -X -q --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v repl_user="$REPLICATION_USER" -v repl_password="$REPLICATION_PASSWORD" \
  -v app_user="$APP_USER" -v app_password="$APP_PASSWORD" -v app_db="$APP_DB" <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE :"repl_user" WITH LOGIN REPLICATION PASSWORD :'repl_password';
CREATE ROLE :"app_user" WITH LOGIN PASSWORD :'app_password';
GRANT pg_monitor TO :"app_user";
CREATE DATABASE :"app_db" OWNER :"app_user";
SQL

printf 'host replication %s %s scram-sha-256\n' "$REPLICATION_USER" "$REPLICA_NETWORK" \
  >>"$PGDATA/pg_hba.conf"
psql -v ON_ERROR_STOP=1 -X -q --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -c 'SELECT pg_reload_conf()' >/dev/null
echo "primary-init.sh: roles $REPLICATION_USER and $APP_USER, database $APP_DB ready"
