#!/usr/bin/env python3
"""HL7 v2 over MLLP benchmark: ADT^A01 messages/s acknowledged AA (after the durable commit) and
ACK latency p50/p99, at 1, 8, 32 and 128 connections. A real broker (full conversion and
validation, SQLite synchronous=FULL) with one demo-sink GP the messages are routed to;
bench/mllp/mllp_loadgen drives closed-loop connections (one message in flight each). Repeats
--runs times and prints medians as a markdown table. Not a test: figures depend on the machine.

usage: bench/mllp/run.py [--build build] [--seconds 10] [--runs 3] [--connections 1,8,32,128]
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import ROOT, free_port, wait_line  # noqa: E402


def config(path, api_port, mllp_port, sink_port):
    with open(path, "w") as f:
        f.write(f"""api:
  listen: 127.0.0.1:{api_port}
store:
  path: data/bench.db
delivery:
  concurrency_per_destination: 64
partners:
  - id: rtx
    name: Bench Trust
    kind: trust
    ods: RTX
  - id: gp
    name: Bench Surgery
    kind: primary-care
    ods: A81001
    endpoint: {{ type: fhir-rest, url: "http://127.0.0.1:{sink_port}/fhir", max_connections: 64 }}
inbound:
  - id: v2
    type: mllp
    listen: 127.0.0.1:{mllp_port}
routes:
  - id: everyone
    match: {{}}
    to: [gp]
""")


def thread_cpu(pid):
    """CPU seconds per thread name of a process (utime + stime from /proc/PID/task/*/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


# Broker threads by what they do with an ADT message. The io threads (named like the binary) run
# the MLLP connections: framing, parse, convert, validate, route, the ACK, and the HTTP side of
# delivering to the sink; the store writer commits (SQLite, fsync waits are not CPU).
THREAD_ROLES = {"store-writer": "commit", "deliver-curl": "deliver (libcurl)", "store-ckpt": "checkpoint"}


def one_run(args, conns):
    tellonce = os.path.join(args.build, "broker/cli/tellonce")
    loadgen = os.path.join(args.build, "bench/mllp/mllp_loadgen")
    work = tempfile.mkdtemp(prefix="tellonce-bench-mllp-")
    procs = []
    try:
        sink_port = free_port()
        sink = subprocess.Popen([tellonce, "demo-sink", "--listen", f"127.0.0.1:{sink_port}", "--record",
                                 f"{work}/sink.ndjson", "--record-ids-only", "--quiet"],
                                stdout=subprocess.PIPE, text=True)
        procs.append(sink)
        wait_line(sink, "listening")
        api_port, mllp_port = free_port(), free_port()
        config(f"{work}/bench.yaml", api_port, mllp_port, sink_port)
        broker = subprocess.Popen([tellonce, "serve", "--config", f"{work}/bench.yaml"], stdout=subprocess.PIPE,
                                  stderr=open(f"{work}/broker.log", "w"), text=True)
        procs.append(broker)
        wait_line(broker, "pending deliveries resumed")
        before = thread_cpu(broker.pid)
        out = subprocess.run([loadgen, "--port", str(mllp_port), "--connections", str(conns), "--seconds",
                              str(args.seconds)], capture_output=True, text=True, check=True)
        after = thread_cpu(broker.pid)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        per_role = {}
        for name, seconds in after.items():
            role = THREAD_ROLES.get(name, "io threads" if name.startswith("tellonce") else name)
            per_role[role] = per_role.get(role, 0.0) + seconds - before.get(name, 0.0)
        aa = max(1, result["aa"])
        for role, seconds in per_role.items():
            result[f"cpu_us:{role}"] = round(1e6 * seconds / aa, 1)
        return result
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", default="1,8,32,128")
    args = ap.parse_args()
    rows = []
    for conns in [int(x) for x in args.connections.split(",")]:
        runs = [one_run(args, conns) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append((conns, med))
        print(f"# conns={conns}: {json.dumps(med)}  each run AA/s {[round(r['aa_per_s']) for r in runs]}",
              file=sys.stderr, flush=True)
    print(f"\nMedian of {args.runs} runs of {args.seconds:g} s each; ADT^A01 converted, validated, committed "
          f"(SQLite synchronous=FULL) and routed to one FHIR partner; {os.cpu_count()} cores shared by "
          f"load generator, broker and sink.\n")
    print("| connections | ACK AA/s | ACK p50 ms | ACK p99 ms | AE | AR |")
    print("|---:|---:|---:|---:|---:|---:|")
    for conns, m in rows:
        print(f"| {conns} | {m['aa_per_s']:.0f} | {m['ack_p50_ms']:.2f} | {m['ack_p99_ms']:.2f} | {m['ae']:.0f} | {m['ar']:.0f} |")
    print("\nBroker CPU per acknowledged message, by thread (µs; median of the runs):\n")
    roles = sorted({k[len("cpu_us:"):] for _, m in rows for k in m if k.startswith("cpu_us:")})
    print("| connections | " + " | ".join(roles) + " |")
    print("|---:|" + "---:|" * len(roles))
    for conns, m in rows:
        print(f"| {conns} | " + " | ".join(f"{m.get('cpu_us:' + r, 0):.1f}" for r in roles) + " |")


if __name__ == "__main__":
    main()
