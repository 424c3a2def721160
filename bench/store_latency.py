#!/usr/bin/env python3
"""store-latency: what the Redis session store adds to a write commit and to a read,
compared with the in-process memory store.

Started by bench.py (a benchmark, not a test). Needs psycopg 3; exits with code 3 and a
message when it is missing. One client thread, loopback, bounded by --iterations and
--deadline. Two Causeway instances with the same replicas and the same config except
[session_store] kind (memory: causeway-replicas; redis: causeway-redis). Every variant has its
own connection, which names its own shared session with `SET causeway.session = '<key>'`
(sent alone, once), so its floor lives in the store: every statement that needs the floor
reads it from the store, every write (and a read that raises the floor) writes it there.
Variants, per store, run in blocks whose order rotates so they share the machine's noise:

  write-read   UPDATE one random pgbench_accounts row (`RETURNING abalance`, autocommit),
               timed end to end (the floor is stored before the client gets ReadyForQuery),
               then SELECT that row, timed: it must see the write (session consistency: a
               replica that has replayed it, after waiting up to max_wait, or the primary)
  read-only    SELECT one random row, no write before it on this session (any replica)
  write-only   UPDATE one random row, timed (only to attribute store operations to writes)

`older` counts SELECTs (write-read) that returned an older balance than the UPDATE's
RETURNING: read-your-writes violations, expected 0. /metrics of each instance is scraped
around each block: store operations (causeway_session_store_duration_seconds _count/_sum,
causeway_session_store_errors_total) and routing. With --redis-server, INFO commandstats of
redis-server is read around the redis blocks as a cross-check. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import causeway_metrics as cwm
import redis_info
from rotation import percentile, run_rotating

SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = %s"
UPDATE = "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = %s RETURNING abalance"
KINDS = ("write-read", "read-only", "write-only")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--user", default="postgres")
    p.add_argument("--db", default="postgres")
    p.add_argument("--password", default=None, help="default: none (PGPASSWORD is honoured by libpq)")
    p.add_argument("--accounts", type=int, required=True, help="rows in pgbench_accounts (100000 x scale)")
    p.add_argument("--memory-port", type=int, required=True, help="Causeway with the memory store")
    p.add_argument("--memory-admin", required=True)
    p.add_argument("--redis-port", type=int, required=True, help="Causeway with the Redis store")
    p.add_argument("--redis-admin", required=True)
    p.add_argument("--redis-server", default=None, help="host:port of redis-server, for INFO commandstats")
    p.add_argument("--iterations", type=int, default=2000, help="per variant (default 2000)")
    p.add_argument("--block", type=int, default=100, help="iterations per block (default 100)")
    p.add_argument("--deadline", type=float, default=60.0,
                   help="seconds; no new round of blocks starts after this (default 60)")
    return p.parse_args(argv)



def stats_ms(values):
    v = sorted(values)
    ms = lambda x: None if x is None else round(1000 * x, 4)
    return {"n": len(v), "p50": ms(percentile(v, 0.50)), "p90": ms(percentile(v, 0.90)),
            "p99": ms(percentile(v, 0.99)), "max": ms(v[-1] if v else None),
            "mean": ms(sum(v) / len(v) if v else None)}


class Variant:
    def __init__(self, store, kind, port, admin, redis_server):
        self.store, self.kind, self.port, self.admin = store, kind, port, admin
        self.key = f"{store}/{kind}"
        self.redis_server = redis_server if store == "redis" else None
        self.conn = None
        self.write_s, self.read_s = [], []
        self.iterations = self.older = self.scrape_errors = 0
        self.routing = self.store_ops = self.redis_calls = None

    def connect(self, connect, session):
        self.conn = connect(self.port, f"bench-store-{self.store}-{self.kind}")
        self.conn.execute(f"SET causeway.session = '{session}'")

    def run_block(self, n, accounts, rng):
        before, rbefore = self._scrape(), self._redis()
        with self.conn.cursor() as cur:
            for _ in range(n):
                aid = rng.randint(1, accounts)
                if self.kind in ("write-read", "write-only"):
                    t0 = time.perf_counter()
                    cur.execute(UPDATE, (aid,))
                    written = cur.fetchone()[0]
                    self.write_s.append(time.perf_counter() - t0)
                if self.kind in ("write-read", "read-only"):
                    t0 = time.perf_counter()
                    cur.execute(SELECT, (aid,))
                    read = cur.fetchone()[0]
                    self.read_s.append(time.perf_counter() - t0)
                    if self.kind == "write-read" and read != written:
                        self.older += 1
                self.iterations += 1
        after, rafter = self._scrape(), self._redis()
        if before is not None and after is not None:
            delta = cwm.diff(before, after)
            self.routing = cwm.add_routing(self.routing, cwm.routing(delta))
            self.store_ops = cwm.add_store(self.store_ops, cwm.store(delta))
        calls = redis_info.diff(rbefore, rafter)
        if calls is not None:
            self.redis_calls = self.redis_calls or {}
            for k, v in calls.items():
                self.redis_calls[k] = self.redis_calls.get(k, 0) + v

    def _scrape(self):
        try:
            return cwm.scrape(self.admin)
        except Exception:  # a failed scrape loses operation counts, not latencies
            self.scrape_errors += 1
            return None

    def _redis(self):
        if not self.redis_server:
            return None
        host, _, port = self.redis_server.rpartition(":")
        try:
            return redis_info.commandstats(host, int(port))
        except (OSError, ValueError):
            return None

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass

    def report(self):
        out = {"key": self.key, "store": self.store, "kind": self.kind, "iterations": self.iterations,
               "older_reads": self.older}
        if self.write_s:
            out["write_ms"] = stats_ms(self.write_s)
        if self.read_s:
            out["read_ms"] = stats_ms(self.read_s)
        if self.store_ops is not None:
            ops = {op: dict(v, per_iteration=v["count"] / self.iterations if self.iterations else None)
                   for op, v in self.store_ops.items()}
            for v in ops.values():
                v["p50"] = cwm.bucket_quantile(v["buckets"], 0.50)
                v["p99"] = cwm.bucket_quantile(v["buckets"], 0.99)
                v["mean_ms"] = 1000 * v["sum_s"] / v["count"] if v["count"] else None
            out["store_ops"] = ops
        if self.routing is not None:
            out["routing"] = self.routing
        if self.redis_calls is not None:
            out["redis_calls"] = self.redis_calls
        if self.scrape_errors:
            out["scrape_errors"] = self.scrape_errors
        return out


def ops_per_iteration(v):
    """(get, advance, total) store operations per iteration of a variant, or None."""
    ops = v.get("store_ops")
    if not ops or not v["iterations"]:
        return None
    get, adv = ops["get"]["count"] / v["iterations"], ops["advance"]["count"] / v["iterations"]
    return {"get": get, "advance": adv, "total": get + adv}


def summarize(reports):
    """redis − memory for each timed statement, and store operations per statement."""
    by = {(r["store"], r["kind"]): r for r in reports}
    added = {}
    for label, kind, field in (("write commit (write-read UPDATE)", "write-read", "write_ms"),
                               ("write commit (write-only UPDATE)", "write-only", "write_ms"),
                               ("read right after own write", "write-read", "read_ms"),
                               ("read, no preceding write", "read-only", "read_ms")):
        m, r = by.get(("memory", kind), {}).get(field), by.get(("redis", kind), {}).get(field)
        if m and r:
            added[label] = {q: round(r[q] - m[q], 4) for q in ("p50", "p99", "mean")}
            added[label].update(memory=m, redis=r)
    ops = {}
    for store in ("memory", "redis"):
        w, wr, ro = (ops_per_iteration(by.get((store, k), {"iterations": 0})) for k in
                     ("write-only", "write-read", "read-only"))
        entry = {}
        if w:
            entry["per write"] = w
        if ro:
            entry["per read (no preceding write)"] = ro
        if w and wr:
            entry["per read after own write"] = {k: wr[k] - w[k] for k in w}
        ops[store] = entry
    return {"added_ms": added, "ops_per_statement": ops}


def main(argv):
    args = parse_args(argv)
    try:
        import psycopg
    except ImportError:
        print("psycopg (3) is not installed: store-latency skipped (pip install psycopg[binary])",
              file=sys.stderr)
        return 3

    def connect(port, name):
        kw = {"host": args.host, "port": port, "user": args.user, "dbname": args.db}
        if args.password:
            kw["password"] = args.password
        return psycopg.connect(autocommit=True, prepare_threshold=None, connect_timeout=10,
                               application_name=name, **kw)

    variants = []
    for store, port, admin in (("memory", args.memory_port, args.memory_admin),
                               ("redis", args.redis_port, args.redis_admin)):
        variants += [Variant(store, kind, port, admin, args.redis_server) for kind in KINDS]

    rng = random.Random(20261123)

    def connect_all():
        for i, v in enumerate(variants):
            v.connect(connect, f"bench-{os.getpid()}-{i}")

    elapsed, stopped_early = run_rotating(variants, connect_all, args.iterations, args.block,
                                          args.deadline, args.accounts, rng)
    reports = [v.report() for v in variants]
    result = {
        "elapsed_s": round(elapsed, 2), "stopped_at_deadline": stopped_early,
        "iterations_wanted": args.iterations, "variants": reports, "summary": summarize(reports),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
