#!/usr/bin/env python3
"""fresh-read-latency: how much a read that must see the session's own write costs.

Started by bench.py (a benchmark, not a test). Needs psycopg 3; exits with code 3 and a
message when it is missing. One client thread, loopback, bounded by --iterations and
--deadline. Each iteration of a variant: UPDATE one random pgbench_accounts row
(`RETURNING abalance`), then SELECT that row; the SELECT alone is timed
(time.perf_counter around execute + fetch). Variants, run in blocks whose order rotates so
they share the machine's noise:

  replicas-own-write   causeway-replicas; the SELECT runs on the connection that just wrote,
                       so under session consistency it needs a replica that has replayed
                       the UPDATE (waits up to [consistency] max_wait, else the primary)
  replicas-eventual    causeway-replicas; same pattern, SELECT with the hint
                       /* causeway: consistency=eventual */ (any replica, no waiting)
  replicas-other-conn  causeway-replicas; the UPDATE runs on one connection, the SELECT on
                       another that never writes (no read-your-writes requirement)
  causeway-own-write   causeway without replicas (every statement on the primary)
  direct-own-write     the primary directly

A SELECT that returns an older balance than the UPDATE returned is counted as `older`
(expected only where nothing promises read-your-writes). With --*-admin, Causeway's
/metrics is scraped around each block to report where the SELECTs went.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from causeway_metrics import add_routing, diff, routing, scrape
from rotation import percentile, run_rotating

EVENTUAL_HINT = "/* causeway: consistency=eventual */ "
SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = %s"
UPDATE = "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = %s RETURNING abalance"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--user", default="postgres")
    p.add_argument("--db", default="postgres")
    p.add_argument("--password", default=None, help="default: none (PGPASSWORD is honoured by libpq)")
    p.add_argument("--accounts", type=int, required=True, help="rows in pgbench_accounts (100000 x scale)")
    p.add_argument("--direct-port", type=int)
    p.add_argument("--causeway-port", type=int)
    p.add_argument("--causeway-admin")
    p.add_argument("--replicas-port", type=int, help="causeway-replicas")
    p.add_argument("--replicas-admin")
    p.add_argument("--iterations", type=int, default=2000, help="per variant (default 2000)")
    p.add_argument("--block", type=int, default=100, help="iterations per block (default 100)")
    p.add_argument("--deadline", type=float, default=60.0,
                   help="seconds; no new block starts after this (default 60)")
    return p.parse_args(argv)



class Variant:
    def __init__(self, key, title, port, admin, hint="", separate_reader=False):
        self.key, self.title, self.port, self.admin = key, title, port, admin
        self.hint, self.separate_reader = hint, separate_reader
        self.writer = self.reader = None
        self.select_s, self.update_s = [], []
        self.older = 0
        self.routing = None
        self.scrape_errors = 0

    def connect(self, args, connect):
        self.writer = connect(args.port_args(self.port), f"bench-fresh-{self.key}-w")
        self.reader = connect(args.port_args(self.port), f"bench-fresh-{self.key}-r") \
            if self.separate_reader else self.writer

    def run_block(self, n, accounts, rng):
        before = self._scrape()
        select = self.hint + SELECT
        with self.writer.cursor() as wcur, self.reader.cursor() as rcur:
            for _ in range(n):
                aid = rng.randint(1, accounts)
                t0 = time.perf_counter()
                wcur.execute(UPDATE, (aid,))
                written = wcur.fetchone()[0]
                t1 = time.perf_counter()
                rcur.execute(select, (aid,))
                read = rcur.fetchone()[0]
                t2 = time.perf_counter()
                self.update_s.append(t1 - t0)
                self.select_s.append(t2 - t1)
                if read != written:
                    self.older += 1
        after = self._scrape()
        if before is not None and after is not None:
            self.routing = add_routing(self.routing, routing(diff(before, after)))

    def _scrape(self):
        if not self.admin:
            return None
        try:
            return scrape(self.admin)
        except Exception:  # a failed scrape loses routing figures, not latency ones
            self.scrape_errors += 1
            return None

    def close(self):
        for conn in {id(c): c for c in (self.writer, self.reader) if c is not None}.values():
            try:
                conn.close()
            except Exception:
                pass

    def report(self):
        sel = sorted(self.select_s)
        upd = sorted(self.update_s)
        ms = lambda v: None if v is None else round(1000 * v, 4)
        out = {
            "key": self.key, "title": self.title, "iterations": len(sel), "older_reads": self.older,
            "select_ms": {"p50": ms(percentile(sel, 0.50)), "p90": ms(percentile(sel, 0.90)),
                          "p99": ms(percentile(sel, 0.99)), "max": ms(sel[-1] if sel else None),
                          "mean": ms(sum(sel) / len(sel) if sel else None)},
            "update_ms": {"p50": ms(percentile(upd, 0.50)), "p99": ms(percentile(upd, 0.99))},
        }
        if self.routing is not None:
            out["routing"] = self.routing
        if self.scrape_errors:
            out["scrape_errors"] = self.scrape_errors
        return out


def main(argv):
    args = parse_args(argv)
    try:
        import psycopg
    except ImportError:
        print("psycopg (3) is not installed: fresh-read-latency skipped (pip install psycopg[binary])",
              file=sys.stderr)
        return 3

    def port_args(port):
        kw = {"host": args.host, "port": port, "user": args.user, "dbname": args.db}
        if args.password:
            kw["password"] = args.password
        return kw

    args.port_args = port_args

    def connect(kw, name):
        return psycopg.connect(autocommit=True, prepare_threshold=None, connect_timeout=10,
                               application_name=name, **kw)

    variants = []
    if args.replicas_port:
        variants += [
            Variant("replicas-own-write", "causeway-replicas, SELECT right after own UPDATE (session)",
                    args.replicas_port, args.replicas_admin),
            Variant("replicas-eventual", "causeway-replicas, same, SELECT hinted consistency=eventual",
                    args.replicas_port, args.replicas_admin, hint=EVENTUAL_HINT),
            Variant("replicas-other-conn", "causeway-replicas, SELECT on a connection that never writes",
                    args.replicas_port, args.replicas_admin, separate_reader=True),
        ]
    if args.causeway_port:
        variants.append(Variant("causeway-own-write", "causeway (primary only), SELECT after own UPDATE",
                                args.causeway_port, args.causeway_admin))
    if args.direct_port:
        variants.append(Variant("direct-own-write", "direct (primary), SELECT after own UPDATE",
                                args.direct_port, None))
    if not variants:
        print("no target given", file=sys.stderr)
        return 2

    rng = random.Random(20261122)

    def connect_all():
        for v in variants:
            v.connect(args, connect)

    elapsed, stopped_early = run_rotating(variants, connect_all, args.iterations, args.block,
                                          args.deadline, args.accounts, rng)
    result = {
        "elapsed_s": round(elapsed, 2), "stopped_at_deadline": stopped_early,
        "iterations_wanted": args.iterations, "variants": [v.report() for v in variants],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
