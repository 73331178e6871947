#!/usr/bin/env python3
"""End-to-end load benchmark: real broker, real demo-sink partners, loadgen on loopback.

For each (destinations, connections) case it starts fresh sinks and a fresh broker (full
validation, SQLite synchronous=FULL), drives load for --seconds, waits until every accepted
record has reached every destination, and reports accepted/s, delivered/s, accept latency,
end-to-end delivery latency, how many deliveries were still owed when the load stopped (a broker
that accepts faster than it delivers builds that backlog) and the broker's peak RSS. Repeats --runs times; prints medians
as a markdown table. Not a test: figures depend on the machine.

usage: bench/load/run.py [--build build] [--seconds 10] [--runs 3]
                         [--connections 8,32,128] [--destinations 1,2,4]
                         [--delivery-concurrency 64] [--mix patient:3,observation:4,encounter:2,message:1]
                         [--set SECTION.KEY=VALUE ...]

--delivery-concurrency is deliveries in flight per destination (and connections to it). At 32
the delivery side fell behind acceptance at 128 client connections on the 2-core VM (8,300
delivered/s against 9,800 accepted/s, end-to-end p50 over a second); at 64 it keeps up.
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import ROOT, broker_config, free_port, wait_line  # noqa: E402


def config(port, sinks, path, concurrency, pg_conninfo=""):
    broker_config(path, port, sinks, "data/bench.db", f"  concurrency_per_destination: {concurrency}\n",
                  endpoint=f"max_connections: {concurrency}", broker="  max_body_bytes: 4MB\n")
    if pg_conninfo:  # --postgres: the same run on the postgresql store, in a fresh schema
        with open(path) as f:
            text = f.read()
        section = "store:\n  path: data/bench.db\n"
        assert section in text
        schema = "bench_" + str(port)
        subprocess.run(["psql", pg_conninfo, "-qAt", "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"],
                       check=True, capture_output=True)
        quoted = f"{pg_conninfo} options='-csearch_path={schema}'".replace('"', '\\"')
        with open(path, "w") as f:
            f.write(text.replace(section, f'store:\n  type: postgresql\n  conninfo: "{quoted}"\n'))


def apply_settings(path, settings):
    """Sets `section.key=value` pairs (e.g. store.max_commit_delay=0ms) in a config written by
    config(): the key's line in that top-level section is replaced, or added at its start."""
    with open(path) as f:
        lines = f.read().split("\n")
    for item in settings:
        name, _, value = item.partition("=")
        section, _, key = name.partition(".")
        if not (section and key and value):
            raise SystemExit(f"--set wants section.key=value, got {item!r}")
        line = f"  {key}: {value}"
        if f"{section}:" not in lines:
            lines[0:0] = [f"{section}:", line]
            continue
        start = lines.index(f"{section}:") + 1
        end = start
        while end < len(lines) and lines[end].startswith("  "):
            end += 1
        same = [i for i in range(start, end) if lines[i].startswith(f"  {key}:")]
        if same:
            lines[same[0]] = line
        else:
            lines.insert(start, line)
    with open(path, "w") as f:
        f.write("\n".join(lines))


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as r:
        return json.load(r)


def rss_peak_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def pct(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[int(p * (len(values) - 1))]


def one_run(args, n_dest, conns, probe=None):
    """One run; `probe` (see pairs.py) is told the broker's and sinks' pids when load starts,
    and its results are added to the run's figures when load ends."""
    tellonce = os.path.join(args.build, "broker/cli/tellonce")
    loadgen = os.path.join(args.build, "bench/load/loadgen")
    work = tempfile.mkdtemp(prefix="tellonce-bench-")
    procs = []
    try:
        sink_ports = [free_port() for _ in range(n_dest)]
        for i, sp in enumerate(sink_ports):
            p = subprocess.Popen([tellonce, "demo-sink", "--listen", f"127.0.0.1:{sp}", "--record",
                                  f"{work}/sink-{i}.ndjson", "--record-ids-only", "--quiet"],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            wait_line(p, "listening")
        port = free_port()
        config(port, sink_ports, f"{work}/bench.yaml", args.delivery_concurrency, args.postgres)
        apply_settings(f"{work}/bench.yaml", args.settings)
        broker = subprocess.Popen([tellonce, "serve", "--config", f"{work}/bench.yaml", "--quiet"],
                                  stdout=subprocess.PIPE, stderr=open(f"{work}/broker.log", "w"), text=True)
        procs.append(broker)
        wait_line(broker, "pending deliveries resumed")
        t0 = time.time()
        if probe:
            probe.start(broker.pid, [p.pid for p in procs[:n_dest]])
        out = subprocess.run([loadgen, "--port", str(port), "--connections", str(conns), "--seconds",
                              str(args.seconds), "--sent", f"{work}/sent.txt", "--mix", args.mix],
                             capture_output=True, text=True, check=True)
        probed = probe.stop() if probe else {}
        load = json.loads(out.stdout.strip().splitlines()[-1])
        expected = load["accepted"] * n_dest
        # What the partners had when the load stopped: a broker that accepts faster than it
        # delivers shows it here (the rest is its backlog, delivered after the load).
        delivered_in_load = sum(stats(sp)["received"] for sp in sink_ports)
        deadline = time.time() + 120
        delivered = 0
        while time.time() < deadline:
            delivered = sum(stats(sp)["received"] for sp in sink_ports)
            if delivered >= expected:
                break
            time.sleep(0.05)
        t_done = time.time()
        peak = rss_peak_kb(broker.pid)
        sent = {}
        with open(f"{work}/sent.txt") as f:
            for line in f:
                mid, ms = line.split()
                sent[mid] = int(ms)
        e2e = []
        for p in procs[:n_dest]:  # sinks flush their records on SIGTERM
            p.send_signal(signal.SIGTERM)
        for p in procs[:n_dest]:
            p.wait(timeout=10)
        for i in range(n_dest):
            with open(f"{work}/sink-{i}.ndjson") as f:
                for line in f:
                    try:
                        r = json.loads(line)
                    except ValueError:
                        continue
                    if r.get("messageId") in sent:
                        e2e.append(r["at"] - sent[r["messageId"]])
        return {
            "accepted_per_s": load["accepted_per_s"],
            "delivered_per_s": delivered / (t_done - t0),
            "delivered_in_load_per_s": delivered_in_load / load["seconds"],
            "backlog_at_load_end": expected - delivered_in_load,
            "all_delivered": delivered >= expected,
            "accept_p50_ms": load["accept_p50_ms"],
            "accept_p99_ms": load["accept_p99_ms"],
            "e2e_p50_ms": pct(e2e, 0.5),
            "e2e_p99_ms": pct(e2e, 0.99),
            "peak_rss_mb": peak / 1024,
            "rejected": load["rejected"],
            **probed,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--postgres", default="", metavar="CONNINFO",
                    help="store records in PostgreSQL (store.type: postgresql) at this libpq conninfo, "
                         "e.g. from scripts/postgres.sh start DIR (DIR/conninfo); default: SQLite")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", default="8,32,128")
    ap.add_argument("--destinations", default="1,2,4")
    ap.add_argument("--delivery-concurrency", type=int, default=64,
                    help="deliveries in flight per destination (and connections to it)")
    ap.add_argument("--mix", default="patient:3,observation:4,encounter:2,message:1")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a broker setting for every run, e.g. store.max_commit_delay=0ms (repeatable)")
    args = ap.parse_args()
    rows = []
    for n_dest in [int(x) for x in args.destinations.split(",")]:
        for conns in [int(x) for x in args.connections.split(",")]:
            runs = [one_run(args, n_dest, conns) for _ in range(args.runs)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "all_delivered"}
            med["all_delivered"] = all(r["all_delivered"] for r in runs)
            rows.append((n_dest, conns, med))
            print(f"# dest={n_dest} conns={conns}: {json.dumps(med)}", file=sys.stderr, flush=True)
            print(f"#   each run accepted/s {[round(r['accepted_per_s']) for r in runs]} "
                  f"delivered/s {[round(r['delivered_per_s']) for r in runs]}", file=sys.stderr, flush=True)
    print(f"\nMedian of {args.runs} runs of {args.seconds:g} s each; mix {args.mix}; "
          f"{args.delivery_concurrency} deliveries in flight per destination; "
          f"full validation, SQLite synchronous=FULL, {os.cpu_count()} cores shared by loadgen, broker and sinks.\n")
    print("| destinations | connections | accepted/s | delivered/s (all destinations) | accept p50 ms | accept p99 ms | end-to-end p50 ms | end-to-end p99 ms | undelivered when the load stopped | broker peak RSS MB | all delivered |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for n_dest, conns, m in rows:
        print(f"| {n_dest} | {conns} | {m['accepted_per_s']:.0f} | {m['delivered_per_s']:.0f} | {m['accept_p50_ms']:.2f} | "
              f"{m['accept_p99_ms']:.2f} | {m['e2e_p50_ms']:.0f} | {m['e2e_p99_ms']:.0f} | {m['backlog_at_load_end']:.0f} | {m['peak_rss_mb']:.0f} | "
              f"{'yes' if m['all_delivered'] else 'NO'} |")


if __name__ == "__main__":
    main()
