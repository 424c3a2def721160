#!/usr/bin/env python3
"""offload: how many reads Causeway sends to replicas, at what read latency, per max_wait.

A benchmark, not a test (it measures; it asserts nothing, but it counts consistency
violations, which must be 0). Entry point: `bench/run.sh offload [--quick]` or
`python3 bench/offload.py --causeway-bin PATH`. Needs psycopg 3 (exits with 3 without it).

Setup (bench.py's functions): a throw-away PostgreSQL 15 primary and two streaming replicas
(pg_basebackup -R, hot_standby_feedback) on loopback, the replicas with
recovery_min_apply_delay (default replica1 1s, replica2 300ms: ALTER SYSTEM + reload on
the standby), so a replica is visibly behind the primary after every commit; a table
counters(user_id int primary key, v bigint) with one row per user; and, per measured run,
a freshly started Causeway with Causeway's default config plus the two replicas,
[consistency] max_wait = <the run's value>, the memory session store and trust auth.

Workload A, "sticky vs pooled" (--users-a users, default 20), each user in a loop: with 10 %
probability a write `UPDATE counters SET v = v + 1 WHERE user_id = $1 RETURNING v`
(autocommit), otherwise a read `SELECT v, inet_server_port() FROM counters WHERE user_id =
$1`, then think time uniform 50-150 ms. Modes:
  sticky  one connection per user (the connection is the session: no hint);
  pooled  an app-side pool of --app-pool connections (default 5) shared by all users in turn,
          each statement carrying /* causeway: session=user-N */ (a named session per user).
Workload B, "web" (--users-b users, default 50, one sticky connection each): human-paced
pages; a page is, with 20 % probability, one write (as above) first, then 3-6 reads back to
back: the user's own row first, then random users' rows; 1-3 s between pages.

Each run lasts --duration-a / --duration-b seconds of load; operations that start in the
first --warmup seconds are not timed (they are still checked). Per run: reads, share of
reads served by a replica (each read returns inet_server_port(), and every node listens on
its own port; Causeway's /metrics causeway_queries_total deltas are kept in the JSON as a
cross-check), read latency p50/p99, write latency p50 (time.perf_counter around execute +
fetch; in pooled mode without the wait for a pool connection, reported separately), and
violations: a read returning a `v` below the user's last acknowledged write of that row
(read-your-writes) or below what the same user read of that row before (monotonic reads).
v only grows, and only its own user writes a row, so these bounds are exact.

Bounded: every run has a hard deadline, every wait a timeout; every child process is
stopped and the temp dir removed on exit (also on SIGINT/SIGTERM/SIGHUP). Prints Markdown
tables and writes them with JSON and the server logs under bench-results/offload-<stamp>/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import queue
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import bench as b
import causeway_metrics as cwm
from rotation import percentile

CAUSEWAY = "causeway-replicas"  # the service name bench.stop_all knows
READ = "SELECT v, inet_server_port() FROM counters WHERE user_id = %s"
WRITE = "UPDATE counters SET v = v + 1 WHERE user_id = %s RETURNING v"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.sh offload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--causeway-bin", default=str(b.WORKSPACE / "target/release/causeway"),
                   help="Causeway binary (default target/release/causeway; never built here)")
    p.add_argument("--pg-bin", default=b.DEFAULT_PG_BIN, help=f"default {b.DEFAULT_PG_BIN}")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 6 s runs, A at 20ms and 400ms, B at 20ms (under a minute)")
    p.add_argument("--workloads", default="a,b", help="a, b or a,b (default a,b)")
    p.add_argument("--max-waits-a", default=None, help="workload A max_wait values (default 20ms,100ms,400ms)")
    p.add_argument("--max-waits-b", default=None, help="workload B max_wait values (default 20ms,100ms,400ms)")
    p.add_argument("--modes-a", default="sticky,pooled", help="workload A modes (default sticky,pooled)")
    p.add_argument("--duration-a", type=float, default=None, help="seconds per workload A run (default 20)")
    p.add_argument("--duration-b", type=float, default=None, help="seconds per workload B run (default 30)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds at the start of each run whose operations are not timed (default 2)")
    p.add_argument("--users-a", type=int, default=20, help="workload A users (default 20)")
    p.add_argument("--app-pool", type=int, default=5, help="workload A pooled: app pool connections (default 5)")
    p.add_argument("--users-b", type=int, default=50, help="workload B users (default 50)")
    p.add_argument("--replica-delays", default="1s,300ms",
                   help="recovery_min_apply_delay of replica1,replica2 (default 1s,300ms)")
    p.add_argument("--seed", type=int, default=20261205)
    p.add_argument("--results-dir", default=str(b.WORKSPACE / "bench-results"))
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (data dirs, configs, logs)")
    a = p.parse_args(argv)
    quick = {"duration_a": 6.0, "duration_b": 6.0, "warmup": 1.0,
             "max_waits_a": "20ms,400ms", "max_waits_b": "20ms"}
    full = {"duration_a": 20.0, "duration_b": 30.0, "warmup": 2.0,
            "max_waits_a": "20ms,100ms,400ms", "max_waits_b": "20ms,100ms,400ms"}
    for name, value in (quick if a.quick else full).items():
        if getattr(a, name) is None:
            setattr(a, name, value)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]
    a.workload_list = split(a.workloads.lower())
    a.mw_a, a.mw_b, a.mode_list = split(a.max_waits_a), split(a.max_waits_b), split(a.modes_a)
    a.delays = split(a.replica_delays)
    if not a.workload_list or set(a.workload_list) - {"a", "b"}:
        p.error("--workloads: a, b or a,b")
    if set(a.mode_list) - {"sticky", "pooled"} or not a.mode_list:
        p.error("--modes-a: sticky, pooled or both")
    if len(a.delays) != 2:
        p.error("--replica-delays: two values, replica1,replica2")
    for name in ("users_a", "users_b", "app_pool"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if min(a.duration_a, a.duration_b) <= a.warmup or a.warmup < 0:
        p.error("durations must exceed --warmup")
    if max(a.duration_a, a.duration_b) > 600:
        p.error("a run may last at most 600 s")
    # What bench.Env and bench's PostgreSQL helpers read.
    a.pg_user, a.pg_db, a.auth, a.replicas, a.active_targets = "postgres", "postgres", "trust", 2, [CAUSEWAY]
    return a


# --------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------


def setup_cluster(env: b.Env) -> None:
    a = env.args
    b.start_postgres(env)
    b.ensure_monitor_database(env)
    users = max(a.users_a, a.users_b)
    env.psql(env.pg_port, "CREATE TABLE counters (user_id int PRIMARY KEY, v bigint NOT NULL)",
             f"INSERT INTO counters SELECT g, 0 FROM generate_series(1, {users}) g", "CHECKPOINT")
    b.start_replicas(env)
    for (name, port), delay in zip(sorted(env.replicas.items()), a.delays):
        env.psql(port, f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'", "SELECT pg_reload_conf()")
        b.wait_until(f"{name} recovery_min_apply_delay = {delay}",
                     lambda: env.psql(port, "SHOW recovery_min_apply_delay") == normalize_setting(delay),
                     env.services[name], timeout=10)
        log(f"{name}: recovery_min_apply_delay = {delay}")


def normalize_setting(delay: str) -> str:
    """How SHOW prints a duration we set ('1s' -> '1s', '300ms' -> '300ms', '1000ms' -> '1s')."""
    ms = duration_ms(delay)
    if ms % 1000 == 0 and ms:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def duration_ms(text: str) -> int:
    text = text.strip()
    for unit, factor in (("ms", 1), ("s", 1000), ("min", 60000)):
        if text.endswith(unit) and text[:-len(unit)].strip().isdigit():
            return int(text[:-len(unit)]) * factor
    raise b.BenchError(f"cannot parse duration {text!r}")


def causeway_config(env: b.Env, port: int, admin_port: int, max_wait: str) -> str:
    """Causeway's defaults, plus the nodes, the user (trust; the replica monitor needs a
    password entry, which trust never asks for) and the run's max_wait."""
    replicas = "".join(f'[[replicas]]\nname = "{name}"\nhost = "{b.LOOPBACK}"\nport = {rport}\n'
                       for name, rport in sorted(env.replicas.items()))
    return (
        "# Written by bench/offload.py\n"
        "[proxy]\n"
        f'listen = "{b.LOOPBACK}:{port}"\nadmin_listen = "{b.LOOPBACK}:{admin_port}"\n'
        "[auth]\nmethod = \"trust\"\n"
        f'[primary]\nhost = "{b.LOOPBACK}"\nport = {env.pg_port}\n'
        f"{replicas}"
        f'[consistency]\nmax_wait = "{max_wait}"\n'
        '[session_store]\nkind = "memory"\n'
        f'[[users]]\nname = "{env.args.pg_user}"\npassword = "{b.BENCH_PASSWORD}"\n'
    )


def start_causeway(env: b.Env, label: str, max_wait: str) -> None:
    stop_causeway(env)
    b.start_causeway_with(env, env.args.causeway_bin, CAUSEWAY, label,
                          lambda port, admin: causeway_config(env, port, admin, max_wait))


def stop_causeway(env: b.Env) -> None:
    service = env.services.pop(CAUSEWAY, None)
    if service is not None:
        service.stop(timeout=15)


# --------------------------------------------------------------------------------------
# Simulated users
# --------------------------------------------------------------------------------------


class Stats:
    """One run's observations; each user thread appends to its own lists (no locking needed
    for list.append under the GIL), the main thread reads them after the join."""

    def __init__(self, node_of_port: dict[int, str]):
        self.node_of_port = node_of_port
        self.read_s: list[float] = []
        self.write_s: list[float] = []
        self.pool_wait_s: list[float] = []
        self.reads_by_node: dict[str, int] = {}  # timed reads
        self.all_reads_by_node: dict[str, int] = {}  # with the warm-up's, to compare with /metrics
        self.reads_total = self.writes_total = 0  # including warm-up
        self.ryw = self.monotonic = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def error(self, text: str) -> None:
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append(text[:300])
            else:
                self.errors[-1] = f"(and more) {text[:200]}"


class User:
    """One simulated user: the last value of each row it wrote or read."""

    def __init__(self, uid: int):
        self.uid = uid
        self.written: dict[int, int] = {}
        self.seen: dict[int, int] = {}

    def write(self, cur, stats: Stats, timed: bool, hint: str) -> None:
        t0 = time.perf_counter()
        cur.execute(hint + WRITE, (self.uid,))
        v = cur.fetchone()[0]
        dt_s = time.perf_counter() - t0
        with stats.lock:
            stats.writes_total += 1
        if timed:
            stats.write_s.append(dt_s)
        self.written[self.uid] = v

    def read(self, cur, row: int, stats: Stats, timed: bool, hint: str) -> None:
        t0 = time.perf_counter()
        cur.execute(hint + READ, (row,))
        v, port = cur.fetchone()
        dt_s = time.perf_counter() - t0
        node = stats.node_of_port.get(port, f"port {port}")
        with stats.lock:
            stats.reads_total += 1
            stats.all_reads_by_node[node] = stats.all_reads_by_node.get(node, 0) + 1
            if timed:
                stats.reads_by_node[node] = stats.reads_by_node.get(node, 0) + 1
        if timed:
            stats.read_s.append(dt_s)
        if v < self.written.get(row, 0):
            with stats.lock:
                stats.ryw += 1
            stats.error(f"read-your-writes: user {self.uid} read v={v} of row {row} on {port} "
                        f"after writing v={self.written[row]}")
        elif v < self.seen.get(row, 0):
            with stats.lock:
                stats.monotonic += 1
            stats.error(f"monotonic reads: user {self.uid} read v={v} of row {row} on {port} "
                        f"after reading v={self.seen[row]}")
        self.seen[row] = max(v, self.seen.get(row, 0))


def connect(env: b.Env, name: str):
    import psycopg
    return psycopg.connect(host=b.LOOPBACK, port=env.ports[CAUSEWAY], user=env.args.pg_user,
                           dbname=env.args.pg_db, autocommit=True, prepare_threshold=None,
                           connect_timeout=10, application_name=name)


def run_users(env: b.Env, n_users: int, conns_needed: int, body, duration: float, warmup: float,
              seed: int, stats: Stats) -> dict:
    """Opens `conns_needed` connections (one per user), then runs the users on them."""
    conns = []
    try:
        for i in range(conns_needed):
            conns.append(connect(env, f"bench-offload-{i}"))
        return run_users_with(n_users, conns, body, duration, warmup, seed, stats)
    finally:
        for c in conns:
            try:
                c.close()
            except Exception:
                pass


def guarded(body, stats: Stats, user: User, conns, rng, stop_at, timed_from) -> None:
    try:
        body(user, conns, rng, stop_at, timed_from, stats)
    except Exception as err:  # a broken connection ends this user, not the run
        stats.error(f"user {user.uid}: {type(err).__name__}: {err}")


def sleep_until(t: float, stop_at: float) -> bool:
    """Sleeps until t (not past stop_at); False when the run is over."""
    now = time.monotonic()
    if t >= stop_at:
        time.sleep(max(0.0, stop_at - now))
        return False
    time.sleep(max(0.0, t - now))
    return True


def sticky_body(user, conns, rng, stop_at, timed_from, stats):
    conn = conns[user.uid - 1]
    with conn.cursor() as cur:
        if not sleep_until(time.monotonic() + rng.uniform(0, 0.15), stop_at):
            return
        while time.monotonic() < stop_at:
            timed = time.monotonic() >= timed_from
            if rng.random() < 0.10:
                user.write(cur, stats, timed, "")
            else:
                user.read(cur, user.uid, stats, timed, "")
            if not sleep_until(time.monotonic() + rng.uniform(0.05, 0.15), stop_at):
                return


def pooled_body(user, conns, rng, stop_at, timed_from, stats):
    pool: queue.Queue = conns  # see run_workload_a
    hint = f"/* causeway: session=user-{user.uid} */ "
    if not sleep_until(time.monotonic() + rng.uniform(0, 0.15), stop_at):
        return
    while time.monotonic() < stop_at:
        timed = time.monotonic() >= timed_from
        t0 = time.perf_counter()
        conn = pool.get(timeout=30)
        try:
            if timed:
                stats.pool_wait_s.append(time.perf_counter() - t0)
            with conn.cursor() as cur:
                if rng.random() < 0.10:
                    user.write(cur, stats, timed, hint)
                else:
                    user.read(cur, user.uid, stats, timed, hint)
        finally:
            pool.put(conn)
        if not sleep_until(time.monotonic() + rng.uniform(0.05, 0.15), stop_at):
            return


def web_body(n_users):
    def body(user, conns, rng, stop_at, timed_from, stats):
        conn = conns[user.uid - 1]
        with conn.cursor() as cur:
            if not sleep_until(time.monotonic() + rng.uniform(0, 3.0), stop_at):
                return
            while time.monotonic() < stop_at:
                timed = time.monotonic() >= timed_from
                if rng.random() < 0.20:
                    user.write(cur, stats, timed, "")
                for i in range(rng.randint(3, 6)):
                    row = user.uid if i == 0 else rng.randint(1, n_users)
                    user.read(cur, row, stats, timed, "")
                if not sleep_until(time.monotonic() + rng.uniform(1.0, 3.0), stop_at):
                    return
    return body


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------


def ms(v):
    return None if v is None else round(1000 * v, 2)


def summarize(stats: Stats, routing: dict | None, meta: dict) -> dict:
    reads, writes, waits = sorted(stats.read_s), sorted(stats.write_s), sorted(stats.pool_wait_s)
    timed_reads = sum(stats.reads_by_node.values())
    on_replicas = sum(n for node, n in stats.reads_by_node.items() if node != "primary")
    out = dict(meta)
    out.update({
        "reads": timed_reads, "writes": len(writes),
        "reads_incl_warmup": stats.reads_total, "writes_incl_warmup": stats.writes_total,
        "replica_share": (on_replicas / timed_reads) if timed_reads else None,
        "reads_by_node": dict(sorted(stats.reads_by_node.items())),
        "reads_by_node_incl_warmup": dict(sorted(stats.all_reads_by_node.items())),
        "read_ms": {"mean": ms(sum(reads) / len(reads) if reads else None),
                    "p50": ms(percentile(reads, 0.5)), "p90": ms(percentile(reads, 0.9)),
                    "p99": ms(percentile(reads, 0.99)), "max": ms(reads[-1] if reads else None)},
        "write_ms": {"p50": ms(percentile(writes, 0.5)), "p99": ms(percentile(writes, 0.99))},
        "violations": stats.ryw + stats.monotonic,
        "violations_read_your_writes": stats.ryw, "violations_monotonic": stats.monotonic,
        "errors": stats.errors,
    })
    if waits:
        out["pool_wait_ms"] = {"p50": ms(percentile(waits, 0.5)), "p99": ms(percentile(waits, 0.99))}
    if routing is not None:
        out["metrics"] = routing
        out["metrics_replica_share"] = (routing["replica"] / routing["reads"]) if routing["reads"] else None
        # Cross-check: reads per node from inet_server_port() (warm-up included) against
        # causeway_queries_total per target minus the writes.
        per_target = dict(routing["per_target"])
        per_target["primary"] = per_target.get("primary", 0) - routing["writes"]
        out["ports_agree_with_metrics"] = all(
            per_target.get(node, 0) == n for node, n in stats.all_reads_by_node.items()) and \
            sum(per_target.values()) == stats.reads_total
    return out


def one_run(env: b.Env, workload: str, mode: str, max_wait: str, index: int) -> dict:
    a = env.args
    label = f"{workload}-{mode}-{max_wait}"
    b.wait_replicas_caught_up(env, timeout=30)  # no backlog from the previous run
    start_causeway(env, label, max_wait)
    node_of_port = {env.pg_port: "primary", **{p: n for n, p in env.replicas.items()}}
    stats = Stats(node_of_port)
    seed = a.seed + index
    log(f"run {label}: {a.duration_a if workload == 'a' else a.duration_b:.0f} s")
    before = b.try_scrape(env.admin[CAUSEWAY])
    if workload == "a" and mode == "sticky":
        info = run_users(env, a.users_a, a.users_a, sticky_body, a.duration_a, a.warmup, seed, stats)
    elif workload == "a":
        info = run_pooled(env, stats, seed)
    else:
        info = run_users(env, a.users_b, a.users_b, web_body(a.users_b), a.duration_b, a.warmup, seed, stats)
    after = b.try_scrape(env.admin[CAUSEWAY])
    routing = cwm.routing(cwm.diff(before, after)) if before is not None and after is not None else None
    result = summarize(stats, routing, {"workload": workload, "mode": mode, "max_wait": max_wait, **info})
    share = result["replica_share"]
    log(f"  {result['reads']} reads, {'-' if share is None else f'{100 * share:.1f} %'} on replicas, "
        f"read p50 {result['read_ms']['p50']} ms p99 {result['read_ms']['p99']} ms, "
        f"violations {result['violations']}, errors {len(stats.errors)}")
    for e in stats.errors[:5]:
        log(f"  error: {e}")
    return result


def run_pooled(env: b.Env, stats: Stats, seed: int) -> dict:
    """Workload A pooled: the app pool is a queue of connections shared by all user threads."""
    a = env.args
    pool: queue.Queue = queue.Queue()
    opened = []
    try:
        for i in range(a.app_pool):
            c = connect(env, f"bench-offload-pool-{i}")
            opened.append(c)
            pool.put(c)

        return run_users_with(a.users_a, pool, pooled_body, a.duration_a, a.warmup, seed, stats)
    finally:
        for c in opened:
            try:
                c.close()
            except Exception:
                pass


def run_users_with(n_users, conns, body, duration, warmup, seed, stats) -> dict:
    """Runs body(user, conns, rng, stop_at, timed_from, stats) in one thread per user until
    stop_at (`conns`: a list, one connection per user, or the pooled mode's queue); joins each
    thread with a timeout, so a hung statement cannot hold the benchmark."""
    start = time.monotonic()
    timed_from, stop_at = start + warmup, start + duration
    threads = []
    for uid in range(1, n_users + 1):
        rng = random.Random(seed * 1000 + uid)
        t = threading.Thread(target=guarded, args=(body, stats, User(uid), conns, rng, stop_at, timed_from),
                             name=f"user-{uid}", daemon=True)
        threads.append(t)
        t.start()
    for t in threads:
        t.join(timeout=max(0.1, stop_at + 30 - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    if stuck:
        stats.error(f"{stuck} user thread(s) still running 30 s after the run's end (abandoned)")
    return {"elapsed_s": round(time.monotonic() - start, 2), "stuck_users": stuck}


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def pct(v):
    return "—" if v is None else f"{100 * v:.1f} %"


def num(v):
    return "—" if v is None else f"{v:.2f}"


def table(rows: list[dict], pooled_wait: bool) -> list[str]:
    head = ("| mode | max_wait | reads | on replicas | replica1 / replica2 | read p50 ms | read p99 ms "
            "| read mean ms | write p50 ms |")
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if pooled_wait:
        head += " pool wait p99 ms |"
        sep += "---:|"
    head += " violations |"
    sep += "---:|"
    lines = [head, sep]
    for r in rows:
        by = r["reads_by_node"]
        split = f"{by.get('replica1', 0)} / {by.get('replica2', 0)}"
        line = (f"| {r['mode']} | {r['max_wait']} | {r['reads']} | {pct(r['replica_share'])} | {split} | "
                f"{num(r['read_ms'].get('p50'))} | {num(r['read_ms'].get('p99'))} | {num(r['read_ms'].get('mean'))} | "
                f"{num(r['write_ms'].get('p50'))} |")
        if pooled_wait:
            line += f" {num(r.get('pool_wait_ms', {}).get('p99'))} |"
        errors = f" ({len(r['errors'])} errors)" if r["errors"] else ""
        line += f" {r['violations']}{errors} |"
        lines.append(line)
    return lines


def binary_description(path: str) -> str:
    p = Path(path)
    try:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()[:12]
        mtime = dt.datetime.fromtimestamp(p.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
    except OSError:
        return f"{path} (unreadable)"
    return f"{path} (built {mtime}, sha256 {digest})"


def report(meta: dict, results: list[dict]) -> str:
    a = meta["settings"]
    out = [f"# Causeway offload / latency ({meta['started']})", "",
           f"- Causeway: {meta['binary']}; checkout {meta['git']}",
           f"- {meta['postgres']}, primary + 2 streaming replicas on loopback, "
           f"recovery_min_apply_delay replica1 = {a['delays'][0]}, replica2 = {a['delays'][1]}; "
           f"{meta['cpus']} CPUs shared by everything",
           "- Causeway: default config + the replicas, [consistency] default = session, max_wait per run, "
           "[session_store] kind = memory, [lag] poll_interval 50ms (default), trust auth",
           "- violations = reads older than the user's own last write of the row (read-your-writes) or than "
           "the user's previous read of it (monotonic reads); must be 0", ""]
    a_rows = [r for r in results if r["workload"] == "a"]
    if a_rows:
        out += [f"## Workload A: sticky vs pooled ({a['users_a']} users, 10 % writes, think 50-150 ms, "
                f"{a['duration_a']:g} s per run, first {a['warmup']:g} s untimed; pooled = {a['app_pool']} "
                "shared connections, /* causeway: session=user-N */)", ""]
        out += table(a_rows, any(r["mode"] == "pooled" for r in a_rows)) + [""]
    b_rows = [r for r in results if r["workload"] == "b"]
    if b_rows:
        out += [f"## Workload B: web pages ({a['users_b']} users, one connection each; a page = 20 % one write, "
                f"then 3-6 reads; 1-3 s between pages; {a['duration_b']:g} s per run)", ""]
        out += table(b_rows, False) + [""]
    checked = [r.get("ports_agree_with_metrics") for r in results if not r.get("error")]
    if checked:
        verdict = ("agree in every run" if all(c is True for c in checked)
                   else "DISAGREE in some run (see results.json)")
        out.append(f"Reads per node from inet_server_port() and Causeway's causeway_queries_total {verdict}.")
        out.append("")
    failed = [r for r in results if r.get("error")]
    for r in failed:
        out.append(f"- run {r['workload']}-{r['mode']}-{r['max_wait']} failed: {r['error']}")
    return "\n".join(out).rstrip() + "\n"


def log(message: str) -> None:
    print(f"[offload {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def plan(a) -> list[tuple[str, str, str]]:
    runs = []
    if "a" in a.workload_list:
        runs += [("a", mode, mw) for mw in a.mw_a for mode in a.mode_list]
    if "b" in a.workload_list:
        runs += [("b", "sticky", mw) for mw in a.mw_b]
    return runs


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print("psycopg (3) is not installed: offload skipped (pip install psycopg[binary])", file=sys.stderr)
        return 3
    for tool in ("initdb", "postgres", "psql", "pg_isready", "pg_basebackup"):
        if not os.access(Path(a.pg_bin) / tool, os.X_OK):
            print(f"{tool} not found in {a.pg_bin} (--pg-bin)", file=sys.stderr)
            return 1
    b.install_signal_handlers()
    started = dt.datetime.now()
    runs = plan(a)
    # Each run: its duration plus ~2 s (replicas catch up, Causeway restarts); setup ~15 s.
    seconds = sum((a.duration_a if w == "a" else a.duration_b) + 2 for w, _, _ in runs) + 15
    log(f"{len(runs)} runs, about {seconds / 60:.1f} minutes")
    env = None
    results = []
    try:
        user = b.server_user()
        tmp = b.make_tmp(user)
        env = b.Env(a, tmp, user, b.free_port(), None)
        log(f"temp dir {tmp}")
        setup_cluster(env)
        for i, (workload, mode, mw) in enumerate(runs):
            try:
                results.append(one_run(env, workload, mode, mw, i))
            except b.BenchError as err:
                log(f"run {workload}-{mode}-{mw} failed: {err}")
                results.append({"workload": workload, "mode": mode, "max_wait": mw, "error": str(err)[:500],
                                "reads": 0, "reads_by_node": {}, "replica_share": None, "read_ms": {},
                                "write_ms": {}, "violations": 0, "errors": [str(err)[:300]]})
        stop_causeway(env)
        meta = {"started": started.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
                "binary": binary_description(a.causeway_bin), "git": b.git_description(),
                "postgres": "PostgreSQL " + env.psql(env.pg_port, "SHOW server_version"),
                "settings": {k: v for k, v in vars(a).items()}}
        text = report(meta, [r for r in results if not r.get("error")] + [r for r in results if r.get("error")])
        out = Path(a.results_dir) / f"offload-{started.strftime('%Y%m%d-%H%M%S')}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text)
        (out / "results.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=2, default=str) + "\n")
        (out / "logs").mkdir(exist_ok=True)
        for src in tmp.glob("*"):
            if src.suffix in (".log", ".toml") and src.is_file():
                shutil.copy(src, out / "logs" / src.name)
        print(text, end="", flush=True)
        log(f"results written to {out}/results.md and results.json")
        bad = sum(r["violations"] for r in results)
        return 2 if bad else 0
    except b.BenchError as err:
        log(f"error: {err}")
        return 1
    except b.Interrupted as err:
        log(f"interrupted by {err}; cleaning up")
        return 128 + err.signum
    finally:
        b.ignore_signals()
        if env is not None:
            b.stop_all(env)
            if a.keep_tmp:
                log(f"kept {env.tmp}")
            else:
                shutil.rmtree(env.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
