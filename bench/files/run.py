#!/usr/bin/env python3
"""CSV files in: rows/s from a file appearing in a partner's inbox to every row stored (the file
moved to archive/) and to every row delivered to a demo-sink GP. A real broker (the `file` inbound
adapter with a Task + Observation transaction mapping like the demo's, full validation, SQLite
synchronous=FULL). Each run drops one file of --rows rows; the clock starts when the file is
renamed into the inbox, so it includes the adapter's wait for the file to settle (one poll of
100 ms, up to two). Repeats --runs times (a fresh broker each) and prints medians. Not a test.

usage: bench/files/run.py [--build build] [--rows 5000] [--runs 3]
"""
import argparse, os, shutil, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import ROOT, free_port, wait_line  # noqa: E402

MAPPING = """    mapping:
      bundle: transaction
      resources:
        - type: Task
          fields:
            - { path: intent, value: order }
            - { path: status, column: Outcome, codes: [ { value: Completed, code: completed }, { value: Declined, code: rejected } ] }
            - { path: for.identifier.system, value: "https://fhir.nhs.uk/Id/nhs-number" }
            - { path: for.identifier.value, column: NHS number, as: nhs-number, required: true }
            - { path: authoredOn, column: Referral date, as: date, required: true }
            - { path: owner.display, column: Link worker }
        - type: Observation
          fields:
            - { path: status, value: final }
            - { path: code.text, value: Social prescribing referral outcome }
            - { path: subject.identifier.system, value: "https://fhir.nhs.uk/Id/nhs-number" }
            - { path: subject.identifier.value, column: NHS number, as: nhs-number, required: true }
            - { path: valueString, column: Outcome }
            - { path: "focus[0].reference", reference_to: Task }
"""


def nhs_number(n):
    """A 10-digit number with a valid mod-11 check digit, from n."""
    while True:
        base = f"{900000000 + n % 99999999:09d}"
        total = sum(int(d) * (10 - i) for i, d in enumerate(base))
        check = 11 - total % 11
        check = 0 if check == 11 else check
        if check != 10:
            return base + str(check)
        n += 1


def csv_text(rows):
    out = ["NHS number,Referral date,Link worker,Outcome\r\n"]
    for i in range(rows):
        n = nhs_number(i * 7 + 1)
        out.append(f"{n[:3]} {n[3:6]} {n[6:]},{1 + i % 28:02d}/02/2026,Worker {i % 9},Completed\r\n")
    return "".join(out)


def lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def one_run(tellonce, rows, text):
    work = tempfile.mkdtemp(prefix="tellonce-bench-files-")
    inbox = os.path.join(work, "inbox")
    os.makedirs(inbox)
    api_port, sink_port = free_port(), free_port()
    with open(f"{work}/bench.yaml", "w") as f:
        f.write(f"""api:
  listen: 127.0.0.1:{api_port}
store:
  path: data/bench.db
delivery:
  concurrency_per_destination: 64
partners:
  - id: charity
    kind: vcse
    ods: 8JK99
  - id: gp
    kind: primary-care
    ods: A81001
    endpoint: {{ type: fhir-rest, url: "http://127.0.0.1:{sink_port}/fhir", max_connections: 64 }}
inbound:
  - id: drops
    type: file
    inbox: {inbox}
    partner: charity
    poll_interval: 100ms
{MAPPING}routes:
  - id: everyone
    match: {{}}
    to: [gp]
""")
    sink = subprocess.Popen([tellonce, "demo-sink", "--listen", f"127.0.0.1:{sink_port}", "--record",
                             f"{work}/sink.ndjson", "--record-ids-only", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    broker = subprocess.Popen([tellonce, "serve", "--config", f"{work}/bench.yaml"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        wait_line(broker, "listening")
        with open(f"{work}/outcomes.tmp", "w", newline="") as f:
            f.write(text)
        start = time.monotonic()
        os.rename(f"{work}/outcomes.tmp", f"{inbox}/outcomes.csv")
        stored = delivered = None
        deadline = start + 600
        while time.monotonic() < deadline and delivered is None:
            now = time.monotonic()
            if stored is None and os.path.exists(f"{inbox}/archive/outcomes.csv"):
                stored = now - start
            if stored is not None and lines(f"{work}/sink.ndjson") >= rows:
                delivered = now - start
            time.sleep(0.01)
        if delivered is None:
            raise RuntimeError("the rows were not all delivered within 600 s")
        return stored, delivered
    finally:
        broker.send_signal(signal.SIGTERM)
        sink.send_signal(signal.SIGTERM)
        broker.wait(30)
        sink.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    tellonce = os.path.join(ROOT, a.build, "broker/cli/tellonce")
    text = csv_text(a.rows)
    results = [one_run(tellonce, a.rows, text) for _ in range(a.runs)]
    stored = statistics.median(r[0] for r in results)
    delivered = statistics.median(r[1] for r in results)
    print(f"| rows | runs | inbox to stored (archived) | rows/s stored | inbox to delivered | rows/s delivered |")
    print(f"|---|---|---|---|---|---|")
    print(f"| {a.rows} | {a.runs} | {stored:.2f} s | {a.rows / stored:,.0f} | {delivered:.2f} s | {a.rows / delivered:,.0f} |")


if __name__ == "__main__":
    main()
