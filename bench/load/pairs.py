#!/usr/bin/env python3
"""Two builds of the broker compared on one bench/load case, in alternating pairs.

The machine's speed drifts by 10-20 % within minutes, so a before/after comparison runs A and B
back to back, A B then B A then A B..., and reports the median of each side and the median of
the per-pair ratios B/A, of records accepted and of records delivered (from the start of the load
to the last delivery). Both, because a broker can accept faster by delivering less meanwhile: the
backlog it leaves ("undelivered when the load stopped") is delivered after the load, and counted
in delivered/s but not in accepted/s. Each run also records CPU per accepted record: each broker thread (by
name, from /proc ticks while load runs), the demo sinks, loadgen, and the share of the machine
left idle. Not a test: figures depend on the machine.

usage: bench/load/pairs.py A_BUILD B_BUILD [--pairs 8] [--seconds 10] [--connections 128]
                           [--destinations 1] [--mix patient:3,observation:4,encounter:2]
                           [--jsonl FILE] [--a-set SECTION.KEY=VALUE ...] [--b-set ...]
e.g.   git worktree add ../before HEAD~3 && (cd ../before && ./scripts/build.sh)
       bench/load/pairs.py ../before/build build
A setting against the same build (--a-set/--b-set change the broker config of one side):
       bench/load/pairs.py build build --b-set store.max_commit_delay=0ms
"""
import argparse, json, os, resource, statistics, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/load/run.py: one broker run)

TICK = os.sysconf("SC_CLK_TCK")


def thread_ticks(pid):
    """CPU ticks (user + system) per thread name of process pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[name] = out.get(name, 0) + int(fields[11]) + int(fields[12])
    return out


def machine_ticks():
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


class CpuProbe:
    """What run.one_run reports besides throughput: CPU ticks between load start and end."""

    def start(self, broker, sinks):
        self.broker, self.sinks = broker, sinks
        self.b0 = thread_ticks(broker)
        self.s0 = sum(sum(thread_ticks(p).values()) for p in sinks)
        self.m0 = machine_ticks()
        self.c0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # loadgen is the child that ends

    def stop(self):
        b1 = thread_ticks(self.broker)
        s1 = sum(sum(thread_ticks(p).values()) for p in self.sinks)
        m1 = machine_ticks()
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        delta = [b - a for a, b in zip(self.m0, m1)]
        return {
            "broker_ticks": {k: b1.get(k, 0) - v for k, v in self.b0.items()},
            "sink_ticks": s1 - self.s0,
            "loadgen_s": (c1.ru_utime + c1.ru_stime) - (self.c0.ru_utime + self.c0.ru_stime),
            "idle_share": (delta[3] + delta[4]) / max(1, sum(delta)),  # idle + iowait
        }


def per_record(r, seconds):
    n = max(1.0, r["accepted_per_s"] * seconds)
    us = lambda ticks: ticks / TICK * 1e6 / n  # noqa: E731
    threads = {k: round(us(v), 1) for k, v in r["broker_ticks"].items() if us(v) >= 0.05}
    return {"broker_us": round(sum(threads.values()), 1), "threads_us": threads,
            "sink_us": round(us(r["sink_ticks"]), 1), "loadgen_us": round(r["loadgen_s"] * 1e6 / n, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a_build")
    ap.add_argument("b_build")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=128)
    ap.add_argument("--destinations", type=int, default=1)
    ap.add_argument("--delivery-concurrency", type=int, default=64)
    ap.add_argument("--mix", default="patient:3,observation:4,encounter:2")
    ap.add_argument("--jsonl", help="also append every run, as JSON, to this file")
    ap.add_argument("--a-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a broker setting for A's runs, e.g. broker.io_threads=3 (repeatable)")
    ap.add_argument("--b-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a broker setting for B's runs (repeatable)")
    args = ap.parse_args()
    runs = {"A": [], "B": []}
    ratios, delivered_ratios = [], []
    for i in range(args.pairs):
        pair = {}
        for side in ("A", "B") if i % 2 == 0 else ("B", "A"):
            build = args.a_build if side == "A" else args.b_build
            run_args = argparse.Namespace(build=os.path.abspath(build), seconds=args.seconds, postgres="",
                                          delivery_concurrency=args.delivery_concurrency, mix=args.mix,
                                          settings=args.a_set if side == "A" else args.b_set)
            r = run.one_run(run_args, args.destinations, args.connections, CpuProbe())
            r.update(per_record(r, args.seconds))
            del r["broker_ticks"], r["sink_ticks"], r["loadgen_s"]
            pair[side] = r
            runs[side].append(r)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps({"pair": i, "side": side, **r}) + "\n")
        ratios.append(pair["B"]["accepted_per_s"] / pair["A"]["accepted_per_s"])
        delivered_ratios.append(pair["B"]["delivered_per_s"] / pair["A"]["delivered_per_s"])
        print(f"pair {i + 1}: accepted A {pair['A']['accepted_per_s']:.0f}/s  B {pair['B']['accepted_per_s']:.0f}/s  "
              f"B/A {ratios[-1]:.3f}; delivered A {pair['A']['delivered_per_s']:.0f}/s  "
              f"B {pair['B']['delivered_per_s']:.0f}/s  B/A {delivered_ratios[-1]:.3f}", file=sys.stderr, flush=True)

    med = statistics.median
    print(f"\n{args.pairs} alternating pairs of {args.seconds:g} s; {args.connections} connections, "
          f"{args.destinations} destination(s), mix {args.mix}"
          + "".join(f"; {side} sets {', '.join(sets)}" for side, sets in (("A", args.a_set), ("B", args.b_set)) if sets)
          + "\n")
    print("| | A | B |\n|---|---:|---:|")
    for key, label in [("accepted_per_s", "accepted/s"), ("delivered_in_load_per_s", "delivered/s while loaded"),
                       ("delivered_per_s", "delivered/s, load start to last delivery"),
                       ("backlog_at_load_end", "undelivered when the load stopped"), ("e2e_p50_ms", "end-to-end p50 ms"),
                       ("broker_us", "broker CPU µs a record"),
                       ("sink_us", "demo sink CPU µs a record"), ("loadgen_us", "loadgen CPU µs a record"),
                       ("idle_share", "machine idle share")]:
        a, b = med(r[key] for r in runs["A"]), med(r[key] for r in runs["B"])
        fmt = (lambda v: f"{v:.3f}") if key == "idle_share" else (lambda v: f"{v:,.0f}" if v > 1000 else f"{v:.1f}")
        print(f"| {label}, median | {fmt(a)} | {fmt(b)} |")
    names = sorted({k for r in runs["A"] + runs["B"] for k in r["threads_us"]})
    for name in names:
        a = med(r["threads_us"].get(name, 0) for r in runs["A"])
        b = med(r["threads_us"].get(name, 0) for r in runs["B"])
        print(f"| thread `{name}`, µs a record | {a:.1f} | {b:.1f} |")
    print()
    for label, xs in (("accepted/s", ratios), ("delivered/s", delivered_ratios)):
        print(f"B/A per pair, {label}: median {med(xs):.3f}; {sum(x >= 1 for x in xs)} of {len(xs)} pairs at or above 1")


if __name__ == "__main__":
    main()
