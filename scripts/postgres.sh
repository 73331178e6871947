#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for the tests and benchmarks: its own data folder under /tmp, on a
# free loopback port, trust authentication on 127.0.0.1 only, no system service involved.
#
#   scripts/postgres.sh start STATE_DIR   initdb + start; writes STATE_DIR/{port,conninfo,datadir}
#   scripts/postgres.sh stop  STATE_DIR   stop it and delete its data folder
#   scripts/postgres.sh halt  STATE_DIR   stop the server, keep the data (the restart test)
#   scripts/postgres.sh resume STATE_DIR  start it again on the same port
#
# Exits 77 (ctest's skip code) when the PostgreSQL 15 binaries are absent. As root it runs the
# server as an unprivileged user (initdb refuses root): TELLONCE_PG_USER, else postgres (created
# by Debian's postgresql-15 package), else nobody.
set -euo pipefail

bin=${TELLONCE_PG_BIN:-/usr/lib/postgresql/15/bin}
action=${1:?usage: postgres.sh start|stop|halt|resume STATE_DIR}
state=${2:?usage: postgres.sh start|stop|halt|resume STATE_DIR}

if [[ ! -x $bin/pg_ctl || ! -x $bin/initdb ]]; then
  echo "PostgreSQL 15 binaries not found in $bin (install postgresql-15: scripts/install-deps.sh); skipping" >&2
  exit 77
fi

as_server() {
  if [[ $(id -u) -eq 0 ]]; then
    local user=${TELLONCE_PG_USER:-}
    if [[ -z $user ]]; then
      if getent passwd postgres >/dev/null; then user=postgres; else user=nobody; fi
    fi
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

server_user() {
  if [[ $(id -u) -eq 0 ]]; then
    if [[ -n ${TELLONCE_PG_USER:-} ]]; then echo "$TELLONCE_PG_USER"
    elif getent passwd postgres >/dev/null; then echo postgres
    else echo nobody; fi
  else
    id -un
  fi
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_server() {  # datadir port
  as_server "$bin/pg_ctl" -D "$1" -l "$1/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $2 -k $1 -c max_connections=200" start >/dev/null
}

case $action in
  start)
    mkdir -p "$state"
    if [[ -f $state/datadir ]]; then "$0" stop "$state" || true; fi
    datadir=$(mktemp -d /tmp/tellonce-pg.XXXXXX)
    chown "$(server_user)" "$datadir"
    chmod 700 "$datadir"
    as_server "$bin/initdb" -D "$datadir" -U tellonce --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    echo "$datadir" >"$state/datadir"
    for try in 1 2 3 4 5 6 7 8; do
      port=$((20000 + RANDOM % 30000))
      port_free "$port" || continue
      if start_server "$datadir" "$port"; then
        echo "$port" >"$state/port"
        "$bin/psql" -h 127.0.0.1 -p "$port" -U tellonce -d postgres -qAt -c "CREATE DATABASE tellonce" >/dev/null
        echo "host=127.0.0.1 port=$port dbname=tellonce user=tellonce" >"$state/conninfo"
        echo "PostgreSQL 15 on 127.0.0.1:$port, data in $datadir"
        exit 0
      fi
    done
    echo "could not start PostgreSQL (see $datadir/server.log)" >&2
    exit 1
    ;;
  stop)
    [[ -f $state/datadir ]] || exit 0
    datadir=$(cat "$state/datadir")
    as_server "$bin/pg_ctl" -D "$datadir" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$datadir"
    rm -f "$state/datadir" "$state/port" "$state/conninfo"
    ;;
  halt)
    as_server "$bin/pg_ctl" -D "$(cat "$state/datadir")" -m fast -w stop >/dev/null
    ;;
  resume)
    start_server "$(cat "$state/datadir")" "$(cat "$state/port")"
    ;;
  *)
    echo "unknown action $action" >&2
    exit 2
    ;;
esac
