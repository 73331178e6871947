#!/usr/bin/env python3
"""Backlog benchmark: a partner down while a large backlog arrives, then up (issue 7, item 7).

Two fresh brokers (full validation, SQLite synchronous=FULL), one destination, the same load:
  up:   the partner (tellonce demo-sink) is up; loadgen sends --records records.
  down: the partner has no listener while loadgen sends the same number of records; then it
        starts and the backlog drains.
Reports the intake rate of each (accepted/s, from loadgen), the broker's peak RSS and log
bytes, the store's size (database + WAL) at the end of intake, the drain time, how many
deliveries were dead-lettered, and whether every patient's records arrived in acceptance order
(checked against the store's `messages.seq`, first arrival of each id at the sink; records sent
concurrently, whose commits overlapped, have no order between them and are counted apart). Not a test:
figures depend on the machine.

usage: bench/backlog/run.py [--build build] [--records 200000] [--connections 32]
                            [--max-backoff 5s] [--max-queued-body-bytes 256MB]
                            [--mix patient:3,observation:4,encounter:2]
                            [--json FILE]

--max-backoff caps the wait between probes of the down partner, so the first probe after it
is back comes within that time (the shipped default is 5m; the bench would wait for it).
"""
import argparse, json, os, shutil, signal, sqlite3, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import ROOT, broker_config, free_port, wait_line  # noqa: E402


def write_config(path, port, sink_port, concurrency, max_backoff, body_budget):
    broker_config(path, port, [sink_port], "data/backlog.db",
                  f"  concurrency_per_destination: {concurrency}\n"
                  f"  max_queued_body_bytes: {body_budget}\n"
                  f"  retry: {{ keep_trying_for: 3d, initial_backoff: 500ms, max_backoff: {max_backoff}, "
                  "multiplier: 2, jitter: 0.2 }\n",
                  endpoint=f"max_connections: {concurrency}", broker="  max_body_bytes: 4MB\n")


def sink_received(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as r:
            return json.load(r)["received"]
    except OSError:
        return 0


def proc_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def start_sink(tellonce, port, record):
    p = subprocess.Popen([tellonce, "demo-sink", "--listen", f"127.0.0.1:{port}", "--record", record,
                          "--record-ids-only", "--quiet"], stdout=subprocess.PIPE, text=True)
    wait_line(p, "listening")
    return p


def store_bytes(work):
    total = 0
    for name in ("backlog.db", "backlog.db-wal"):
        path = os.path.join(work, "data", name)
        if os.path.exists(path):
            total += os.path.getsize(path)
    return total


def check_store(work, sink_record):
    """Dead-lettered deliveries, and per-patient order at the sink against acceptance order."""
    db = sqlite3.connect(f"file:{os.path.join(work, 'data', 'backlog.db')}?mode=ro", uri=True)
    dead = db.execute("SELECT count(*) FROM deliveries WHERE status = 'dead'").fetchone()[0]
    pending = db.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()[0]
    failed_attempt_rows = db.execute("SELECT count(*) FROM events WHERE kind IN ('attempt', 'dead')").fetchone()[0]
    facts = {mid: (pk, seq, received, accepted) for mid, pk, seq, received, accepted in
             db.execute("SELECT id, patient_key, seq, received_at_ms, accepted_at_ms FROM messages")}
    db.close()
    last = {}  # patient -> (seq, received_at_ms, accepted_at_ms) of the latest record arrived so far
    seen = set()
    out_of_order = 0
    concurrent_reordered = 0
    duplicates = 0
    with open(sink_record) as f:
        for line in f:
            try:
                mid = json.loads(line).get("messageId")
            except ValueError:
                continue
            if mid in seen:
                duplicates += 1
                continue
            seen.add(mid)
            if mid not in facts:
                continue
            pk, seq, received, accepted = facts[mid]
            prev = last.get(pk)
            if pk and prev and seq < prev[0]:
                # An inversion counts only if the later record was sent after the earlier one was
                # acknowledged. Records whose commits overlapped (sent concurrently on two
                # connections) have no acceptance order between them (include/tellonce/queue.hpp).
                if prev[1] > accepted:
                    out_of_order += 1
                else:
                    concurrent_reordered += 1
            if not prev or seq > prev[0]:
                last[pk] = (seq, received, accepted)
    return {"dead": dead, "pending": pending, "failed_attempt_rows": failed_attempt_rows,
            "received_distinct": len(seen), "duplicates": duplicates, "out_of_order": out_of_order,
            "concurrent_reordered": concurrent_reordered, "patients": len(last)}


def run(args, partner_up):
    tellonce = os.path.join(args.build, "broker/cli/tellonce")
    loadgen = os.path.join(args.build, "bench/load/loadgen")
    work = tempfile.mkdtemp(prefix="tellonce-backlog-")
    procs = []
    try:
        sink_port, port = free_port(), free_port()
        record = f"{work}/sink.ndjson"
        sink = start_sink(tellonce, sink_port, record) if partner_up else None
        if sink:
            procs.append(sink)
        write_config(f"{work}/backlog.yaml", port, sink_port, args.delivery_concurrency, args.max_backoff,
                     args.max_queued_body_bytes)
        log_path = f"{work}/broker.log"
        broker = subprocess.Popen([tellonce, "serve", "--config", f"{work}/backlog.yaml"],
                                  stdout=subprocess.PIPE, stderr=open(log_path, "w"), text=True)
        procs.append(broker)
        wait_line(broker, "pending deliveries resumed")
        out = subprocess.run([loadgen, "--port", str(port), "--connections", str(args.connections),
                              "--seconds", "3600", "--records", str(args.records), "--mix", args.mix],
                             capture_output=True, text=True, check=True)
        load = json.loads(out.stdout.strip().splitlines()[-1])
        r = {"partner": "up" if partner_up else "down", "accepted": load["accepted"],
             "rejected": load["rejected"], "intake_s": load["seconds"],
             "accepted_per_s": load["accepted_per_s"], "accept_p50_ms": load["accept_p50_ms"],
             "accept_p99_ms": load["accept_p99_ms"],
             "rss_after_intake_mb": proc_kb(broker.pid, "VmRSS") / 1024,
             "store_after_intake_mb": store_bytes(work) / 2**20,
             "log_after_intake_bytes": os.path.getsize(log_path)}
        if not partner_up:
            sink = start_sink(tellonce, sink_port, record)
            procs.insert(0, sink)
        t0 = time.time()
        deadline = t0 + args.drain_timeout
        while time.time() < deadline and sink_received(sink_port) < load["accepted"]:
            time.sleep(0.1)
        r["drain_s"] = time.time() - t0  # with the partner up: how far delivery lagged intake
        r["all_delivered"] = sink_received(sink_port) >= load["accepted"]
        r["rss_peak_mb"] = proc_kb(broker.pid, "VmHWM") / 1024
        broker.send_signal(signal.SIGTERM)
        broker.wait(timeout=60)
        sink.send_signal(signal.SIGTERM)  # the sink flushes its record file
        sink.wait(timeout=30)
        r["log_bytes"] = os.path.getsize(log_path)
        with open(log_path) as f:
            text = f.read()
        r["log_lines"] = text.count("\n")
        r["log_lines_destination"] = text.count("destination=dest-0")
        r["store_after_drain_mb"] = store_bytes(work) / 2**20
        r.update(check_store(work, record))
        return r
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--records", type=int, default=200000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--delivery-concurrency", type=int, default=64)
    ap.add_argument("--max-backoff", default="5s")
    ap.add_argument("--max-queued-body-bytes", default="256MB", help="delivery.max_queued_body_bytes (the default)")
    ap.add_argument("--mix", default="patient:3,observation:4,encounter:2")
    ap.add_argument("--drain-timeout", type=float, default=600)
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    results = [run(args, True), run(args, False)]
    up, down = results
    keys = ["accepted", "accepted_per_s", "accept_p50_ms", "accept_p99_ms", "rss_after_intake_mb", "rss_peak_mb",
            "log_after_intake_bytes", "log_bytes", "log_lines", "log_lines_destination", "store_after_intake_mb",
            "store_after_drain_mb", "drain_s", "all_delivered", "received_distinct", "duplicates", "dead",
            "pending", "failed_attempt_rows", "out_of_order", "concurrent_reordered", "patients"]
    print("| figure | partner up | partner down, then up |")
    print("|---|---:|---:|")
    for k in keys:
        fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else str(v)
        print(f"| {k} | {fmt(up[k])} | {fmt(down[k])} |")
    ratio = down["accepted_per_s"] / up["accepted_per_s"] if up["accepted_per_s"] else 0
    print(f"\nintake rate down / up: {ratio:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
