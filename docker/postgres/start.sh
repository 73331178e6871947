#!/bin/sh
# First start: a cluster with a `tellonce` role and database; then the server itself (exec, so
# that docker stop's SIGTERM reaches it and it shuts down cleanly).
set -eu
bin=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  "$bin/initdb" -D "$PGDATA" --auth=trust --username=postgres >/dev/null
  "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start >/dev/null
  psql -h /tmp -U postgres -qc "CREATE ROLE tellonce LOGIN" -c "CREATE DATABASE tellonce OWNER tellonce"
  "$bin/pg_ctl" -D "$PGDATA" -w stop >/dev/null
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses=127.0.0.1 -c port="${PGPORT:-5442}" \
  -c unix_socket_directories=/tmp
