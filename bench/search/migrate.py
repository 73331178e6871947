#!/usr/bin/env python3
"""Times the schema 6 -> 7 upgrade (issue 11's search columns, tables and indexes) on a big store.

Copies the store bench/search/run.py uses (schema 7, built by make_store), takes the copy back
to schema 6 with SQLite alone (drops what schema 7 added: messages.nhs_number,
deliveries.received_at_ms, message_routes, the search indexes, destination_controls and
destination_events), checks the result has the tables, columns and indexes of a store the
broker at 9d4a4cf (schema 6) creates (--base-store: an empty one it made), then starts
`tellonce serve` on the copy and reports how long start-up took, against a start on the
schema-7 store. The copies are removed afterwards. Not a test: figures depend on the machine.

usage: bench/search/migrate.py [--build build] [--store build/bench-search/store.db]
                               [--base-tellonce /work/wt/base/build/broker/cli/tellonce]
"""
import argparse, os, shutil, sqlite3, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import ROOT, free_port, wait_line  # noqa: E402
from run import write_config  # noqa: E402

DOWNGRADE = """
DROP TABLE message_routes;
DROP TABLE destination_controls;
DROP TABLE destination_events;
DROP INDEX IF EXISTS deliveries_pending_by_destination;
DROP INDEX messages_by_received; DROP INDEX messages_by_source; DROP INDEX messages_by_resource_type;
DROP INDEX messages_by_event; DROP INDEX messages_by_nhs_number; DROP INDEX messages_unroutable_by_received;
DROP INDEX deliveries_by_destination; DROP INDEX deliveries_failed; DROP INDEX deliveries_waiting;
ALTER TABLE messages DROP COLUMN nhs_number;
ALTER TABLE deliveries DROP COLUMN received_at_ms;
PRAGMA user_version = 6;
"""


def shape(path):
    """Tables with their columns, and index names: what a schema is made of, without its text."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    out = {}
    for kind, name, table in db.execute("SELECT type, name, tbl_name FROM sqlite_master ORDER BY name"):
        if kind == "table":
            out[name] = [(c[1], c[2], c[3], c[4]) for c in db.execute(f"PRAGMA table_info({name})")]
        elif kind == "index":
            out["index " + name] = table
    version = db.execute("PRAGMA user_version").fetchone()[0]
    db.close()
    return version, out


def empty_base_store(base_tellonce, work):
    """An empty store made by the broker at 9d4a4cf: the schema 6 to compare with."""
    store = os.path.join(work, "base6.db")
    config = os.path.join(work, "base.yaml")
    write_config(config, free_port(), store, free_port())
    p = subprocess.Popen([base_tellonce, "serve", "--config", config], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        wait_line(p, "serving", timeout=60)
    finally:
        p.terminate()
        p.wait(timeout=30)
    return store


def timed_start(tellonce, store):
    """Seconds from starting `tellonce serve` on the store to its 'serving' line."""
    config = store + ".yaml"
    write_config(config, free_port(), store, free_port())
    started = time.time()
    p = subprocess.Popen([tellonce, "serve", "--config", config], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        wait_line(p, "serving", timeout=3600)
        return time.time() - started
    finally:
        p.terminate()
        p.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--store", default=None, help="default: BUILD/bench-search/store.db (run.py builds it)")
    ap.add_argument("--base-tellonce", default="/work/wt/base/build/broker/cli/tellonce")
    args = ap.parse_args()
    store = os.path.abspath(args.store or os.path.join(args.build, "bench-search", "store.db"))
    tellonce = os.path.join(args.build, "broker", "cli", "tellonce")
    if not os.path.exists(store):
        sys.exit(f"{store} missing: run bench/search/run.py first (it builds the store)")
    work = tempfile.mkdtemp(prefix="tellonce-migrate-", dir=os.path.dirname(store))
    try:
        copy = os.path.join(work, "store.db")
        started = time.time()
        shutil.copyfile(store, copy)
        shutil.copyfile(store + ".id", copy + ".id")
        db = sqlite3.connect(copy)
        db.executescript(DOWNGRADE)
        db.close()
        print(f"schema 6 copy made in {time.time() - started:.0f} s ({os.path.getsize(copy) / 1e9:.2f} GB)")
        if os.path.exists(args.base_tellonce):
            want = shape(empty_base_store(args.base_tellonce, work))
            got = shape(copy)
            if got != want:
                sys.exit(f"the schema 6 copy differs from a schema 6 store:\n{got}\n{want}")
            print("schema 6 copy has the tables, columns and indexes of a store made at 9d4a4cf")
        else:
            print(f"{args.base_tellonce} missing: schema 6 copy not compared with the broker's own")
        upgrade = timed_start(tellonce, copy)
        version, _ = shape(copy)
        if version != 7:
            sys.exit(f"the copy is at schema {version} after the start, not 7")
        again = timed_start(tellonce, copy)
        print(f"start on the schema 6 copy (upgrade to 7 included): {upgrade:.1f} s; "
              f"start on the same store at schema 7: {again:.1f} s; upgrade ~{upgrade - again:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
