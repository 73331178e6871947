#!/usr/bin/env python3
"""Mailbox benchmark: how fast one partner empties its mailbox. A real broker (validation, SQLite
synchronous=FULL) holds --records Patients for a mailbox partner; the partner, one keep-alive HTTP
connection (python http.client), then collects them one at a time as a cautious client would:
GET /mailbox/{p}/inbox, GET the oldest, PUT .../status/acknowledged. One round trip is those three
requests; the figure is round trips/s (records collected per second), plus the p50/p99 of one round
trip. Repeats --runs times with a fresh broker and prints the medians. Not a test: figures depend on
the machine.

usage: bench/mailbox/run.py [--build build] [--records 2000] [--runs 3]
"""
import argparse, http.client, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import ROOT, free_port, wait_line  # noqa: E402

KEY = "bench-carers-key"


def config(path, port):
    with open(path, "w") as f:
        f.write(f"""api:
  listen: 127.0.0.1:{port}
store:
  path: data/bench.db
insecure_clear_api_keys: true
partners:
  - id: rtx
    name: Bench Trust
    kind: trust
    ods: RTX
  - id: carers
    name: Bench Carers Centre
    kind: vcse
    ods: 8JK98
    api_keys: [{KEY}]
    endpoint: {{ type: mailbox }}
inbound:
  - id: http
    type: fhir-rest
    listen: 127.0.0.1:{port}
    base_path: /fhir
    allow_partner_header: true
routes:
  - id: everyone
    match: {{}}
    to: [carers]
""")


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    res = conn.getresponse()
    data = res.read()
    if res.status >= 300:
        raise RuntimeError(f"{method} {path}: HTTP {res.status} {data[:200]!r}")
    return data


def one_run(tellonce, records, patient):
    work = tempfile.mkdtemp(prefix="tellonce-bench-mailbox-")
    port = free_port()
    config(f"{work}/bench.yaml", port)
    broker = subprocess.Popen([tellonce, "serve", "--config", f"{work}/bench.yaml"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, cwd=work)
    try:
        wait_line(broker, "pending deliveries resumed")
        conn = http.client.HTTPConnection("127.0.0.1", port)
        send = {"Content-Type": "application/fhir+json", "X-Tellonce-Partner": "rtx"}
        for _ in range(records):
            request(conn, "POST", "/fhir/Patient", patient, send)
        auth = {"Authorization": f"Bearer {KEY}"}
        inbox = "/mailbox/carers/inbox"
        deadline = time.time() + 60
        while len(json.loads(request(conn, "GET", inbox, headers=auth))["messages"]) < min(records, 500):
            if time.time() > deadline:
                raise RuntimeError("the mailbox did not fill")
            time.sleep(0.05)
        time.sleep(0.5)  # let the dispatcher finish holding the rest
        latencies = []
        started = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            ids = json.loads(request(conn, "GET", inbox, headers=auth))["messages"]
            if not ids:
                break
            request(conn, "GET", f"{inbox}/{ids[0]}", headers=auth)
            request(conn, "PUT", f"{inbox}/{ids[0]}/status/acknowledged", headers=auth)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        if len(latencies) != records:
            raise RuntimeError(f"collected {len(latencies)} of {records}")
        latencies.sort()
        return (len(latencies) / elapsed, latencies[len(latencies) // 2] * 1000,
                latencies[int(len(latencies) * 0.99)] * 1000)
    finally:
        broker.terminate()
        broker.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    tellonce = os.path.join(args.build, "broker", "cli", "tellonce")
    with open(os.path.join(ROOT, "config", "examples", "patient-a81001.json"), "rb") as f:
        patient = f.read()
    results = [one_run(tellonce, args.records, patient) for _ in range(args.runs)]
    for i, (rate, p50, p99) in enumerate(results, 1):
        print(f"run {i}: {rate:,.0f} round trips/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms", file=sys.stderr)
    print("| records | round trips/s (list + get + ack) | p50 ms | p99 ms |")
    print("|---:|---:|---:|---:|")
    print(f"| {args.records} | {statistics.median(r[0] for r in results):,.0f} | "
          f"{statistics.median(r[1] for r in results):.2f} | {statistics.median(r[2] for r in results):.2f} |")


if __name__ == "__main__":
    main()
