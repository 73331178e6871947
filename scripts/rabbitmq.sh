#!/usr/bin/env bash
# A throwaway RabbitMQ for the tests and benchmarks: nodes with their own data, log and cookie
# under a temporary folder, on free loopback ports, no plugins, no system service involved.
#
#   scripts/rabbitmq.sh start STATE_DIR [NODES]   start NODES nodes (default 1; 3 makes a cluster)
#   scripts/rabbitmq.sh stop  STATE_DIR           stop them all and delete their folder
#   scripts/rabbitmq.sh halt  STATE_DIR N         stop node N (1-based), keep its data
#   scripts/rabbitmq.sh resume STATE_DIR N        start node N again, on the same ports
#   scripts/rabbitmq.sh kick  STATE_DIR           close every client connection (reconnect tests)
#
# Writes STATE_DIR/{base,nodes,amqp_ports,url}: url is "amqp://guest:guest@127.0.0.1:PORT/" of
# node 1; amqp_ports lists every node's AMQP port, one a line. Each node has its own node name
# (tellonce-N@localhost), AMQP port and distribution port; all share one Erlang cookie and an
# epmd on a port of their own (ERL_EPMD_PORT), so they meet neither a system RabbitMQ nor
# another test run. The guest user may connect from loopback only (RabbitMQ's default).
#
# Exits 77 (ctest's skip code) when the rabbitmq-server binaries are absent. As root it runs
# the nodes as an unprivileged user: TELLONCE_RABBITMQ_USER, else rabbitmq (created by Debian's
# rabbitmq-server package), else nobody.
set -euo pipefail

bin=${TELLONCE_RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}
usage="usage: rabbitmq.sh start|stop|halt|resume|kick STATE_DIR [NODES|N]"
action=${1:?$usage}
state=${2:?$usage}

if [[ ! -x $bin/rabbitmq-server || ! -x $bin/rabbitmqctl ]]; then
  echo "rabbitmq-server binaries not found in $bin (install rabbitmq-server: scripts/install-deps.sh); skipping" >&2
  exit 77
fi

server_user() {
  if [[ $(id -u) -eq 0 ]]; then
    if [[ -n ${TELLONCE_RABBITMQ_USER:-} ]]; then echo "$TELLONCE_RABBITMQ_USER"
    elif getent passwd rabbitmq >/dev/null; then echo rabbitmq
    else echo nobody; fi
  else
    id -un
  fi
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A free port that no other node of this run has taken.
pick_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 30000))
    if port_free "$p" && ! grep -qx "$p" "$base/ports" 2>/dev/null; then
      echo "$p" >>"$base/ports"
      echo "$p"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

# Runs a RabbitMQ command as node N's user with node N's environment.
as_node() {  # N command...
  local n=$1
  shift
  local node_dir=$base/node$n
  local envs=(
    HOME="$base"  # the shared .erlang.cookie
    ERL_EPMD_PORT="$(cat "$base/epmd_port")"
    RABBITMQ_NODENAME="tellonce-$n@localhost"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$(cat "$node_dir/amqp_port")"
    RABBITMQ_DIST_PORT="$(cat "$node_dir/dist_port")"
    RABBITMQ_MNESIA_BASE="$node_dir/mnesia"
    RABBITMQ_LOG_BASE="$node_dir/log"
    RABBITMQ_PID_FILE="$node_dir/pid"
    RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$base/advanced.config"
    RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
    RABBITMQ_CONF_ENV_FILE="$base/rabbitmq-env.conf"
    RABBITMQ_USE_LONGNAME=false
    # Erlang's own start-up: fewer schedulers and no kernel poll tuning; a test node is small.
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 2:2 +A 4 -kernel inet_dist_listen_min $(cat "$node_dir/dist_port") -kernel inet_dist_listen_max $(cat "$node_dir/dist_port")"
  )
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u "$(server_user)" -- env "${envs[@]}" "$@"
  else
    env "${envs[@]}" "$@"
  fi
}

start_node() {  # N
  as_node "$1" "$bin/rabbitmq-server" >"$base/node$1/console.log" 2>&1 &
  # Waits for the node's pid file, then for the node to serve (not for the whole cluster).
  as_node "$1" "$bin/rabbitmqctl" -n "tellonce-$1@localhost" -q --timeout 60 wait "$base/node$1/pid" >/dev/null
}

case $action in
  start)
    nodes=${3:-1}
    mkdir -p "$state"
    if [[ -f $state/base ]]; then "$0" stop "$state" || true; fi
    base=$(mktemp -d /tmp/tellonce-rabbitmq.XXXXXX)
    echo "$base" >"$state/base"
    echo "$nodes" >"$state/nodes"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$base/.erlang.cookie"
    chmod 400 "$base/.erlang.cookie"
    echo "[]." >"$base/enabled_plugins"
    : >"$base/rabbitmq-env.conf"
    echo "[]." >"$base/advanced.config"
    cat >"$base/rabbitmq.conf" <<'EOF'
loopback_users.guest = true
listeners.tcp.default = 5672
# A test node on a busy machine: no disk or memory alarm stops publishers.
disk_free_limit.absolute = 1MB
vm_memory_high_watermark.relative = 0.9
log.console = false
log.file.level = warning
EOF
    pick_port >"$base/epmd_port"
    : >"$state/amqp_ports"
    for n in $(seq 1 "$nodes"); do
      mkdir -p "$base/node$n/mnesia" "$base/node$n/log"
      pick_port >"$base/node$n/amqp_port"
      pick_port >"$base/node$n/dist_port"
      cat "$base/node$n/amqp_port" >>"$state/amqp_ports"
    done
    # The node's listener comes from RABBITMQ_NODE_PORT; the conf file must not pin 5672.
    sed -i '/^listeners.tcp.default/d' "$base/rabbitmq.conf"
    chown -R "$(server_user)" "$base"
    # One after the other: nodes booting at once on one machine trip over each other's
    # distribution port checks (dist_port_already_used).
    for n in $(seq 1 "$nodes"); do
      if ! start_node "$n"; then
        echo "could not start RabbitMQ node $n (see $base/node$n/console.log)" >&2
        cp "$base/node$n/console.log" "$state/node$n-console.log" 2>/dev/null || true
        "$0" stop "$state" || true
        exit 1
      fi
    done
    # Nodes 2..N join node 1: a cluster of one name, whose quorum queues span all of them.
    for n in $(seq 2 "$nodes"); do
      as_node "$n" "$bin/rabbitmqctl" -n "tellonce-$n@localhost" -q stop_app >/dev/null
      as_node "$n" "$bin/rabbitmqctl" -n "tellonce-$n@localhost" -q join_cluster tellonce-1@localhost >/dev/null
      as_node "$n" "$bin/rabbitmqctl" -n "tellonce-$n@localhost" -q start_app >/dev/null
    done
    echo "amqp://guest:guest@127.0.0.1:$(head -1 "$state/amqp_ports")/" >"$state/url"
    echo "RabbitMQ: $nodes node(s) on 127.0.0.1 ports $(tr '\n' ' ' <"$state/amqp_ports")in $base"
    ;;
  stop)
    [[ -f $state/base ]] || exit 0
    base=$(cat "$state/base")
    nodes=$(cat "$state/nodes")
    for n in $(seq 1 "$nodes"); do
      as_node "$n" "$bin/rabbitmqctl" -n "tellonce-$n@localhost" -q stop >/dev/null 2>&1 || true
    done
    # A node the CLI could not reach (half started) is ended through its pid file.
    for n in $(seq 1 "$nodes"); do
      pid=$(cat "$base/node$n/pid" 2>/dev/null || true)
      if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
      fi
    done
    # epmd was started by the first node on our port; it outlives the nodes unless told.
    if command -v epmd >/dev/null || [[ -x /usr/lib/erlang/bin/epmd ]]; then
      ERL_EPMD_PORT=$(cat "$base/epmd_port") "$(command -v epmd || echo /usr/lib/erlang/bin/epmd)" -kill >/dev/null 2>&1 || true
    fi
    rm -rf "$base"
    rm -f "$state/base" "$state/nodes" "$state/amqp_ports" "$state/url"
    ;;
  halt)
    base=$(cat "$state/base")
    n=${3:?$usage}
    as_node "$n" "$bin/rabbitmqctl" -n "tellonce-$n@localhost" -q stop >/dev/null
    ;;
  resume)
    base=$(cat "$state/base")
    n=${3:?$usage}
    start_node "$n"
    ;;
  kick)
    base=$(cat "$state/base")
    for n in $(seq 1 "$(cat "$state/nodes")"); do
      as_node "$n" "$bin/rabbitmqctl" -n "tellonce-$n@localhost" -q close_all_connections "test: connection closed on purpose" >/dev/null
    done
    ;;
  *)
    echo "unknown action $action" >&2
    exit 2
    ;;
esac
