#!/usr/bin/env python3
"""Search benchmark: GET /api/messages on a store of 1,000,000 messages (issue 11, "Fast on a
big store: p99 under 50 ms for each filter").

Builds the store once with build/bench/search/make_store (the real SQLite store engine; see
make_store.cpp for the mix) and keeps it (default build/bench-search/store.db; reused when it is
there). Starts the real `tellonce serve` on it (every destination in it is paused, so nothing is
delivered and the store stays as built) and measures the search over HTTP, one keep-alive
connection, one request at a time: each filter alone, a few combinations, each as the first page
and as a deep page (the cursor --deep pages in). Values that vary (NHS numbers, time windows) are
drawn afresh for each request. Prints p50/p99/max per case and the machine's load. Not a test:
figures depend on the machine.

usage: bench/search/run.py [--build build] [--store build/bench-search/store.db]
                           [--messages 1000000] [--requests 200] [--limit 50] [--deep 20]
                           [--only SUBSTRING] [--json FILE]
"""
import argparse, hashlib, http.client, json, os, random, secrets, sqlite3, subprocess, sys, tempfile, time, urllib.parse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import ROOT, free_port, wait_line  # noqa: E402

DESTINATIONS = ["gp-a81001", "ehr-main", "lab-ice", "spine-pds", "audit-archive", "mailbox-vcse"]
SOURCES = ["rtx", "rgt", "gp-a81001", "pas-mllp", "lab-csv", "rare-vcse"]
FHIR_EVENT = "https://fhir.nhs.uk/CodeSystem/message-events|transfer-of-care"
HOUR = 3600 * 1000
DAY = 24 * HOUR


# The operator the benchmark signs in as (the admin API needs one): a token made for this run,
# its hash in the config (sha256:<hex> of the token, as `tellonce hash-key` prints it).
TOKEN = secrets.token_hex(32)


def write_config(path, port, store, dead_port):
    """The sources and destinations make_store wrote, as partners; the destinations point at a
    port nobody listens on (they are paused in the store anyway)."""
    token_hash = "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()
    lines = [f"api:\n  listen: 127.0.0.1:{port}\nstore:\n  path: {store}\n",
             f"operators:\n  - {{ name: bench, role: viewer, token_hashes: [\"{token_hash}\"] }}\n",
             "delivery:\n  concurrency_per_destination: 1\n", "partners:\n"]
    for s in SOURCES:
        if s not in DESTINATIONS:
            lines.append(f"  - id: {s}\n    name: Source {s}\n    kind: trust\n    ods: R{abs(hash(s)) % 1000:03d}\n")
    for i, d in enumerate(DESTINATIONS):
        lines.append(f"""  - id: {d}
    name: Destination {d}
    kind: primary-care
    ods: A9100{i}
    endpoint: {{ type: fhir-rest, url: "http://127.0.0.1:{dead_port}/fhir" }}
""")
    lines.append(f"""inbound:
  - id: http
    type: fhir-rest
    listen: 127.0.0.1:{port}
    base_path: /fhir
routes:
  - id: everyone
    match: {{}}
    to: [{", ".join(DESTINATIONS)}]
""")
    with open(path, "w") as f:
        f.write("".join(lines))


def ensure_store(build, store, messages):
    if os.path.exists(store):
        print(f"store: reusing {store} ({os.path.getsize(store) / 1e9:.2f} GB)")
        return
    tool = os.path.join(build, "bench", "search", "make_store")
    if not os.path.exists(tool):
        sys.exit(f"{tool} missing: /work/wt/build.sh --target make_store tellonce")
    os.makedirs(os.path.dirname(store) or ".", exist_ok=True)
    print(f"store: building {store} with {messages} messages (minutes)")
    started = time.time()
    subprocess.run([tool, store, str(messages)], check=True)
    print(f"store: built in {time.time() - started:.0f} s, {os.path.getsize(store) / 1e9:.2f} GB")


def store_facts(store):
    """What the request values are drawn from: NHS numbers present, the received time span."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    lo, hi, n = db.execute("SELECT min(received_at_ms), max(received_at_ms), count(*) FROM messages").fetchone()
    nhs = [r[0] for r in db.execute(
        "SELECT nhs_number FROM messages WHERE seq IN (SELECT abs(random()) % ? + 1 FROM messages LIMIT 5000) "
        "AND nhs_number <> ''", (n,))]
    db.close()
    return lo, hi, n, nhs


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def cases(lo, hi, nhs, rng):
    """(name, function returning the query parameters for one request)."""
    def window(length):
        def params():
            start = rng.randrange(lo, hi - length)
            return {"since": iso(start), "until": iso(start + length)}
        return params

    def fixed(**p):
        return lambda: dict(p)

    # (name, parameters for one request, whether they vary from request to request)

    out = [(f"state={s}", fixed(state=s)) for s in ("delivered", "delivering", "failed", "unroutable", "accepted")]
    out += [("source=rtx (38 %)", fixed(source="rtx")), ("source=rare-vcse (0.05 %)", fixed(source="rare-vcse")),
            ("destination=lab-ice", fixed(destination="lab-ice")),
            ("destination=mailbox-vcse", fixed(destination="mailbox-vcse")),
            ("route=to-spine-pds", fixed(route="to-spine-pds")),
            ("resourceType=Observation", fixed(resourceType="Observation")),
            ("event=ADT^A01", fixed(event="ADT^A01")), ("event=transfer-of-care", fixed(event=FHIR_EVENT)),
            ("since/until 1 h (random)", window(HOUR)), ("since/until 1 day (random)", window(DAY)),
            ("nhsNumber (random)", lambda: {"nhsNumber": rng.choice(nhs)}),
            ("rare source + state=delivered", fixed(source="rare-vcse", state="delivered")),
            ("rare source + state=failed", fixed(source="rare-vcse", state="failed")),
            ("rare source + destination=lab-ice (none)", fixed(source="rare-vcse", destination="lab-ice")),
            ("rare source + route=to-lab-ice (none)", fixed(source="rare-vcse", route="to-lab-ice")),
            ("destination=lab-ice + state=failed", fixed(destination="lab-ice", state="failed")),
            ("resourceType=Immunization + state=failed", fixed(resourceType="Immunization", state="failed")),
            ("destination=spine-pds + state=delivering", fixed(destination="spine-pds", state="delivering")),
            ("source=pas-mllp + event=ADT^A03", fixed(source="pas-mllp", event="ADT^A03")),
            ("nhsNumber + state=delivered (random)", lambda: {"nhsNumber": rng.choice(nhs), "state": "delivered"}),
            ("1 day + resourceType=DiagnosticReport",
             lambda: {**window(DAY)(), "resourceType": "DiagnosticReport"})]
    return [(name, make, name.endswith("(random)") or name.startswith("1 day +")) for name, make in out]


class Api:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, params):
        path = "/api/messages?" + urllib.parse.urlencode(params)
        started = time.perf_counter()
        self.conn.request("GET", path, headers={"Authorization": "Bearer " + TOKEN})
        r = self.conn.getresponse()
        body = r.read()
        elapsed = (time.perf_counter() - started) * 1000
        if r.status != 200:
            raise RuntimeError(f"{path}: HTTP {r.status} {body[:300]!r}")
        return elapsed, json.loads(body)


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def walk(api, params, deep):
    """The cursor of the page `deep` pages in (or of the last page, when there are fewer), and
    how many pages in that is (0: the filter has one page)."""
    cursor, depth = None, 0
    for _ in range(deep):
        _, answer = api.get({**params, **({"cursor": cursor} if cursor else {})})
        if not answer.get("next"):
            break
        cursor, depth = answer["next"], depth + 1
    return cursor, depth


def measure(api, make_params, varying, requests, limit, deep):
    """Latencies (ms) of first pages, and of deep pages (None when the filter has one page),
    the mean rows on a first page and how many pages in the deep page is."""
    first, rows = [], 0
    for _ in range(requests):
        t, answer = api.get({**make_params(), "limit": limit})
        first.append(t)
        rows += len(answer["messages"])
    deep_times, depths = [], []
    draws = 10 if varying else 1
    for _ in range(draws):
        params = {**make_params(), "limit": limit}
        cursor, depth = walk(api, params, deep)
        if not cursor:
            continue
        depths.append(depth)
        for _ in range(requests // draws):
            t, _ = api.get({**params, "cursor": cursor})
            deep_times.append(t)
    return first, deep_times or None, rows / requests, min(depths) if depths else 0


def summary(times):
    s = sorted(times)
    return {"p50": percentile(s, 50), "p99": percentile(s, 99), "max": s[-1], "n": len(s)}


def machine_state():
    building = subprocess.run(["pgrep", "-f", "cmake --build"], capture_output=True, text=True).stdout.split()
    return {"loadavg": os.getloadavg(), "builds_running": len(building)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--store", default=None, help="default: BUILD/bench-search/store.db")
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--requests", type=int, default=200, help="per case and page")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--deep", type=int, default=20, help="pages in for the deep-page case")
    ap.add_argument("--only", default="", help="only cases whose name contains this")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    store = os.path.abspath(args.store or os.path.join(args.build, "bench-search", "store.db"))
    ensure_store(args.build, store, args.messages)
    lo, hi, count, nhs = store_facts(store)
    print(f"store: {count} messages received over {(hi - lo) / DAY:.1f} days, {len(nhs)} NHS numbers sampled")

    tellonce = os.path.join(args.build, "broker", "cli", "tellonce")
    work = tempfile.mkdtemp(prefix="tellonce-search-")
    port = free_port()
    config = os.path.join(work, "tellonce.yaml")
    write_config(config, port, store, free_port())
    started = time.time()
    broker = subprocess.Popen([tellonce, "serve", "--config", config], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    results = []
    try:
        wait_line(broker, "serving", timeout=600)
        print(f"broker: serving after {time.time() - started:.1f} s (start-up checks of the store included)")
        api = Api(port)
        rng = random.Random(11)
        before = machine_state()
        header = f"{'case':42} {'rows':>5} | {'first p50':>9} {'p99':>7} {'max':>7} | {'deep p50':>8} {'p99':>7} {'max':>7} {'at':>4}"
        print(header)
        print("-" * len(header))
        for name, make_params, varying in cases(lo, hi, nhs, rng):
            if args.only and args.only not in name:
                continue
            first, deep, rows, depth = measure(api, make_params, varying, args.requests, args.limit, args.deep)
            f = summary(first)
            d = summary(deep) if deep else None
            results.append({"case": name, "rows": rows, "first": f, "deep": d, "deep_page": depth + 1 if d else None})
            deep_text = (f"{d['p50']:8.1f} {d['p99']:7.1f} {d['max']:7.1f} {depth + 1:4d}" if d
                         else f"{'(one page)':>33}")
            flag = "  <-- p99 >= 50 ms" if f["p99"] >= 50 or (d and d["p99"] >= 50) else ""
            print(f"{name:42} {rows:5.0f} | {f['p50']:9.1f} {f['p99']:7.1f} {f['max']:7.1f} | {deep_text}{flag}",
                  flush=True)
        after = machine_state()
        print(f"ms per request, {args.requests} requests per case and page, limit {args.limit}; "
              f"load average before {before['loadavg'][0]:.2f}, after {after['loadavg'][0]:.2f}; "
              f"'cmake --build' processes (running or waiting) before/after: "
              f"{before['builds_running']}/{after['builds_running']}")
    finally:
        broker.terminate()
        broker.wait(timeout=60)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"messages": count, "limit": args.limit, "results": results,
                       "machine": {"before": before, "after": after}}, f, indent=2)


if __name__ == "__main__":
    main()
