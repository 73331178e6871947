#!/usr/bin/env python3
"""Several broker nodes on PostgreSQL + RabbitMQ against the embedded SQLite node, same sitting.

Starts its own PostgreSQL 15 (scripts/postgres.sh) and RabbitMQ (scripts/rabbitmq.sh, 3 nodes by
default: quorum queues with three replicas, as deployed), then for each case: one demo-sink, N
`tellonce serve` nodes sharing a fresh schema and queue prefix, and N loadgens (one per node,
the connections split between them) for --seconds. It waits until every accepted record reached
the sink and reports accepted/s, delivered/s, accept latency and the CPU each part spent per
accepted record: the brokers together, PostgreSQL (every postgres process), RabbitMQ (its
Erlang VMs). The `sqlite` case is one node with the embedded store and in-process queue. Not a
test: figures depend on the machine (every process here shares its cores).

usage: bench/nodes/run.py [--build build] [--nodes 1,2,3] [--seconds 10] [--runs 2]
                          [--connections 64] [--rabbitmq-nodes 3] [--no-sqlite]
env NODES_DRAIN_S: how long to wait for every record to reach the sink (default 300 s).
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import ROOT, broker_config, free_port, stop_all, wait_line  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / TICK
        except (OSError, IndexError):
            pass
    return total


def pids_named(*names):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() in names:
                    out.append(int(pid))
        except OSError:
            pass
    return out


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as r:
        return json.load(r)


def one_run(args, nodes, conninfo, amqp_port):
    tellonce = os.path.join(args.build, "broker/cli/tellonce")
    loadgen = os.path.join(args.build, "bench/load/loadgen")
    work = tempfile.mkdtemp(prefix="tellonce-nodes-")
    procs = []
    name = f"bench_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    try:
        sink_port = free_port()
        sink = subprocess.Popen([tellonce, "demo-sink", "--listen", f"127.0.0.1:{sink_port}", "--record",
                                 f"{work}/sink.ndjson", "--record-ids-only", "--quiet"], stdout=subprocess.PIPE, text=True)
        procs.append(sink)
        wait_line(sink, "listening")
        if conninfo:
            subprocess.run(["psql", conninfo, "-qAt", "-c", f"CREATE SCHEMA {name}"], check=True, capture_output=True)
        brokers, ports = [], []
        for n in range(max(nodes, 1)):
            port = free_port()
            path = f"{work}/node-{n}.yaml"
            broker_config(path, port, [sink_port], f"data-{n}/bench.db", "  concurrency_per_destination: 64\n",
                          endpoint="max_connections: 64", broker="  max_body_bytes: 4MB\n")
            if conninfo:
                text = open(path).read()
                quoted = f"{conninfo} options='-csearch_path={name}'".replace('"', '\\"')
                text = text.replace(f"store:\n  path: data-{n}/bench.db\n",
                                    f'store:\n  type: postgresql\n  conninfo: "{quoted}"\n'
                                    f"queue:\n  type: rabbitmq\n  port: {amqp_port}\n  queue_prefix: {name}\n")
                open(path, "w").write(text)
            b = subprocess.Popen([tellonce, "serve", "--config", path, "--quiet"], stdout=subprocess.PIPE,
                                 stderr=open(f"{work}/node-{n}.log", "w"), text=True)
            procs.append(b)
            wait_line(b, "pending deliveries resumed")
            brokers.append(b)
            ports.append(port)
        server_pids = pids_named("postgres") if conninfo else []
        rabbit_pids = pids_named("beam.smp") if conninfo else []
        before = (cpu_seconds([b.pid for b in brokers]), cpu_seconds(server_pids), cpu_seconds(rabbit_pids))
        t0 = time.time()
        per = max(1, args.connections // len(ports))
        loads = [subprocess.Popen([loadgen, "--port", str(p), "--connections", str(per), "--seconds", str(args.seconds),
                                   "--mix", args.mix], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                 for p in ports]
        results = [json.loads(l.communicate()[0].strip().splitlines()[-1]) for l in loads]
        accepted = sum(r["accepted"] for r in results)
        deadline = time.time() + float(os.environ.get("NODES_DRAIN_S", "300"))
        delivered = 0
        while time.time() < deadline:
            delivered = stats(sink_port)["received"]
            if delivered >= accepted:
                break
            time.sleep(0.05)
        t_done = time.time()
        after = (cpu_seconds([b.pid for b in brokers]), cpu_seconds(server_pids), cpu_seconds(rabbit_pids))
        per_rec = [(a - b) * 1e6 / max(accepted, 1) for a, b in zip(after, before)]
        return {
            "accepted_per_s": sum(r["accepted_per_s"] for r in results),
            "delivered_per_s": delivered / (t_done - t0),
            "all_delivered": delivered >= accepted,
            "accept_p50_ms": max(r["accept_p50_ms"] for r in results),
            "accept_p99_ms": max(r["accept_p99_ms"] for r in results),
            "rejected": sum(r["rejected"] for r in results),
            "broker_cpu_us": per_rec[0], "postgres_cpu_us": per_rec[1], "rabbitmq_cpu_us": per_rec[2],
        }
    finally:
        stop_all(procs)
        if conninfo:
            subprocess.run(["psql", conninfo, "-qAt", "-c", f"DROP SCHEMA IF EXISTS {name} CASCADE"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--nodes", default="1,2,3")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64, help="client connections in all, split between the nodes")
    ap.add_argument("--rabbitmq-nodes", type=int, default=3)
    ap.add_argument("--no-sqlite", action="store_true", help="leave out the embedded SQLite case")
    # No `message` records: their Bundle ids come from a counter each loadgen starts at 0, so two
    # loadgens would send the same ids, answered as duplicates (200) and never delivered twice.
    ap.add_argument("--mix", default="patient:3,observation:4,encounter:2")
    args = ap.parse_args()
    state = tempfile.mkdtemp(prefix="tellonce-nodes-servers-")
    scripts = os.path.join(ROOT, "scripts")
    rows = []
    try:
        subprocess.run([f"{scripts}/postgres.sh", "start", f"{state}/pg"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([f"{scripts}/rabbitmq.sh", "start", f"{state}/rmq", str(args.rabbitmq_nodes)], check=True,
                       stdout=subprocess.DEVNULL)
        conninfo = open(f"{state}/pg/conninfo").read().strip()
        amqp_port = open(f"{state}/rmq/amqp_ports").read().split()[0]
        cases = ([] if args.no_sqlite else [("sqlite", 1)]) + [("postgresql+rabbitmq", int(n)) for n in args.nodes.split(",")]
        for kind, n in cases:
            runs = [one_run(args, n, conninfo if kind != "sqlite" else "", amqp_port) for _ in range(args.runs)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "all_delivered"}
            med["all_delivered"] = all(r["all_delivered"] for r in runs)
            rows.append((kind, n, med))
            print(f"# {kind} nodes={n}: {json.dumps(med)}", file=sys.stderr, flush=True)
            print(f"#   each run accepted/s {[round(r['accepted_per_s']) for r in runs]}", file=sys.stderr, flush=True)
    finally:
        subprocess.run([f"{scripts}/rabbitmq.sh", "stop", f"{state}/rmq"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([f"{scripts}/postgres.sh", "stop", f"{state}/pg"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(state, ignore_errors=True)
    print(f"\nMedian of {args.runs} runs of {args.seconds:g} s; {args.connections} client connections split between the "
          f"nodes; mix {args.mix}; RabbitMQ {args.rabbitmq_nodes} node(s); {os.cpu_count()} cores shared by everything.\n")
    print("| store + queue | broker nodes | accepted/s | delivered/s | accept p50 ms | accept p99 ms | "
          "broker CPU µs/record | PostgreSQL CPU µs/record | RabbitMQ CPU µs/record | all delivered |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for kind, n, m in rows:
        print(f"| {kind} | {n} | {m['accepted_per_s']:.0f} | {m['delivered_per_s']:.0f} | {m['accept_p50_ms']:.1f} | "
              f"{m['accept_p99_ms']:.1f} | {m['broker_cpu_us']:.0f} | {m['postgres_cpu_us']:.0f} | "
              f"{m['rabbitmq_cpu_us']:.0f} | {'yes' if m['all_delivered'] else 'NO'} |")


if __name__ == "__main__":
    main()
