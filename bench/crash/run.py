#!/usr/bin/env python3
"""Crash-durability run: kill -9 the broker (and now and then the partner) again and again under
load, restart it each time, and check that every record answered 202 reaches the partner.

Real processes on loopback: one `tellonce demo-sink` partner (which records each request durably
before it answers 201), one `tellonce serve` (SQLite synchronous=FULL), and bench/load/loadgen
driving keep-alive connections. Each round starts loadgen, waits a random 0.5-3 s, sends SIGKILL
to the broker, collects the ids loadgen heard 202 for, and restarts the broker. Every
--sink-kill-every rounds the partner is killed with SIGKILL too and restarted. At the end it waits
until every acknowledged id has reached the partner (or --drain-timeout), then prints the counts:
kills, acknowledged, delivered, lost (must be 0), duplicate deliveries, and records the partner
got although their client never heard 202 (the kill cut the answer off: allowed).

usage: bench/crash/run.py [--build build] [--kills 20] [--connections 16] [--sink-kill-every 5]
Exit status 1 when anything acknowledged was lost. Not a test: the suite has a short version
(tests/integration/crash_durability_test.cpp); figures go in docs/reliability.md.
"""
import argparse, json, os, random, shutil, signal, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import ROOT, broker_config, free_port, wait_line  # noqa: E402




def received(record):
    """Message ids the partner answered 201, in arrival order (a torn last line is skipped)."""
    ids = []
    if not os.path.exists(record):
        return ids
    with open(record) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("status") == 201:
                ids.append(r.get("messageId", ""))
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--sink-kill-every", type=int, default=5, help="also SIGKILL the partner every N rounds (0: never)")
    ap.add_argument("--mix", default="patient:3,observation:4,encounter:2")
    ap.add_argument("--drain-timeout", type=float, default=300)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tellonce = os.path.join(args.build, "broker/cli/tellonce")
    loadgen = os.path.join(args.build, "bench/load/loadgen")
    work = tempfile.mkdtemp(prefix="tellonce-crash-")
    port, sink_port = free_port(), free_port()
    broker_config(f"{work}/crash.yaml", port, [sink_port], "data/crash.db", "  concurrency_per_destination: 32\n",
                  endpoint="timeout: 5s")
    record = f"{work}/sink.ndjson"
    sink = broker = None
    acked = []
    sink_kills = 0
    started = time.time()

    def start_sink():
        p = subprocess.Popen([tellonce, "demo-sink", "--listen", f"127.0.0.1:{sink_port}", "--record", record,
                              "--record-ids-only", "--quiet"], stdout=subprocess.PIPE, text=True)
        wait_line(p, "listening")
        return p

    def start_broker(n):
        p = subprocess.Popen([tellonce, "serve", "--config", f"{work}/crash.yaml", "--quiet"], stdout=subprocess.PIPE,
                             stderr=open(f"{work}/broker-{n}.log", "w"), text=True)
        wait_line(p, "pending deliveries resumed")
        return p

    try:
        sink = start_sink()
        for n in range(args.kills):
            broker = start_broker(n)
            acked_file = f"{work}/acked-{n}.txt"
            load = subprocess.Popen([loadgen, "--port", str(port), "--connections", str(args.connections),
                                     "--seconds", "120", "--mix", args.mix, "--acked", acked_file],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(rng.uniform(0.5, 3.0))
            if args.sink_kill_every and n % args.sink_kill_every == args.sink_kill_every - 1:
                sink.send_signal(signal.SIGKILL)  # the partner dies too, mid-delivery
                sink.wait()
                sink_kills += 1
                time.sleep(rng.uniform(0.1, 0.5))
                sink = start_sink()
            broker.send_signal(signal.SIGKILL)
            broker.wait()
            out, err = load.communicate(timeout=60)
            with open(acked_file) as f:
                got = [line.strip() for line in f if line.strip()]
            acked.extend(got)
            print(f"# round {n + 1}: {len(got)} acknowledged before the kill", file=sys.stderr, flush=True)
        broker = start_broker(args.kills)

        promised = set(acked)
        deadline = time.time() + args.drain_timeout
        while True:
            have = set(received(record))
            missing = promised - have
            if not missing or time.time() > deadline:
                break
            time.sleep(0.5)
        ids = received(record)
        unique = set(ids)
        result = {
            "kills": args.kills,
            "partner_kills": sink_kills,
            "acknowledged": len(promised),
            "acknowledged_twice": len(acked) - len(promised),
            "delivered": len(promised & unique),
            "lost": len(promised - unique),
            "duplicate_deliveries": len(ids) - len(unique),
            "delivered_without_202": len(unique - promised),
            "minutes": round((time.time() - started) / 60, 1),
        }
        print(json.dumps(result))
        print(f"| {result['kills']} | {result['partner_kills']} | {result['acknowledged']} | {result['delivered']} | "
              f"{result['lost']} | {result['duplicate_deliveries']} | {result['delivered_without_202']} |")
        if result["lost"]:
            print("lost ids (first 20): " + " ".join(sorted(promised - unique)[:20]), file=sys.stderr)
        return 1 if result["lost"] or result["acknowledged_twice"] else 0
    finally:
        for p in (broker, sink):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if args.keep:
            print(f"# kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
