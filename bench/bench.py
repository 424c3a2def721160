#!/usr/bin/env python3
"""Causeway benchmark driver: pgbench through Causeway vs PgBouncer vs PostgreSQL directly.

This is a benchmark, not a test: it measures, it does not assert. Entry point: bench/run.sh.

It starts a throw-away PostgreSQL primary, two streaming replicas of it (pg_basebackup -R,
hot_standby_feedback; --replicas 0 for none), PgBouncer and two Causeway instances. For each
round, each scenario and each of the scenario's targets (the target order rotates every
round, so no target always runs first), it resets the pgbench tables as pgbench itself would
(VACUUM the small tables, TRUNCATE history — done directly on the primary, so the proxies
never see it), waits until every replica has replayed the primary's WAL, and runs one bounded
pgbench (`-c 16 -j 2 -T <seconds>`, under a hard timeout) over loopback TCP. Targets:

  direct             the PostgreSQL primary
  direct-replicas    the replicas straight, pgbench's clients split evenly between them
                     (select-only scenarios): what routed reads could reach on this machine,
                     where the replicas share the CPUs with everything else
  causeway           Causeway, primary only (no [[replicas]]): every statement on the primary;
                     pool_mode = "transaction", pool_size = --pool-size
  causeway-replicas  the same, with the replicas in [[replicas]]: reads are routed to them
                     with read-your-writes and monotonic reads ([consistency] defaults:
                     session, max_wait 20ms)
  causeway-redis     causeway-replicas with [session_store] kind = "redis" (a throw-away local
                     redis-server, no persistence): only with --session-store redis or both
  pgbouncer          PgBouncer, pool_mode = transaction, default_pool_size = --pool-size
  pgbouncer-replicas the same PgBouncer reading the replicas (one [databases] entry per
                     replica), pgbench's clients split evenly between them as for
                     direct-replicas (select-only scenarios): a proxy of PgBouncer's cost on
                     the replicas without any routing decision, so what "routed reads as
                     cheap as PgBouncer's primary-only ones" can reach on this machine

--session-key sets [session] key on causeway-replicas and causeway-redis (default user when
causeway-redis runs: every statement that needs the floor then uses the store, memory or
Redis, and all pgbench clients share one floor). With --session-store redis/both the
select-only scenarios also run on the replica targets, and a table of session-store
operations per statement (from causeway_session_store_duration_seconds) is printed.

Scenarios: the pgbench built-ins (select-only simple/prepared, TPC-B-like, select-only with a
new connection per transaction) on direct/causeway/pgbouncer, and read-mostly (a custom
script: 9 point SELECTs and 1 UPDATE on pgbench_accounts as 10 autocommit statements,
simple/prepared) on all four targets; for the Causeway targets, /metrics is scraped around
each run to report where the reads went (causeway_queries_total by target and reason,
causeway_consistency_fallbacks_total, causeway_consistency_wait_seconds). Then
fresh-read-latency (bench/fresh_read.py, psycopg; skipped if psycopg is missing): the
latency of a SELECT right after the same connection's UPDATE through causeway-replicas
(it needs a replica that has replayed the UPDATE) vs reads that need no fresh replica. Then
store-latency (bench/store_latency.py, psycopg; by default only with --session-store both):
write-commit and read latency with per-connection shared sessions, memory store vs Redis.

With --rate N every pgbench runs at N transactions per second (pgbench -R): the proxies'
CPU per transaction is then compared at the same load. At full speed a target that reaches
fewer transactions per second (routed reads pay for spreading over the replicas on a small
machine) also batches less per wake-up, which raises its CPU per transaction by itself.

Client authentication is the same everywhere: trust on loopback (default) or, with
--auth scram-sha-256, SCRAM for clients of all targets (and for the proxies' logins).

Reported per scenario and target: median TPS over the rounds, mean of pgbench's average
latency, ratio to direct, Causeway/PgBouncer ratio, and for the proxies CPU time per
transaction (utime+stime deltas from /proc/<pid>/stat around each measured run, divided by
the transactions pgbench processed) and RSS (VmRSS / VmHWM from /proc/<pid>/status at the
end). A failing run (e.g. `-M prepared` through PgBouncer in transaction mode) is recorded
as failed with pgbench's error, and the benchmark goes on.

Every child process is started in its own session with a parent-death signal and is
stopped in a `finally` (also on SIGINT/SIGTERM/SIGHUP), so nothing is left behind.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import causeway_metrics as cwm
import redis_info

HERE = Path(__file__).resolve().parent
WORKSPACE = Path(__file__).resolve().parent.parent
DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
DEFAULT_PGBOUNCER = "/usr/sbin/pgbouncer"
LOOPBACK = "127.0.0.1"
BENCH_PASSWORD = "bench-secret"  # only for the throw-away cluster with --auth scram-sha-256
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1
ALL_TARGETS = ("direct", "direct-replicas", "causeway", "causeway-replicas", "causeway-redis", "pgbouncer",
               "pgbouncer-replicas")
BASE_TARGETS = ("direct", "causeway", "pgbouncer")
PROXIES = ("causeway", "causeway-replicas", "causeway-redis", "pgbouncer")
CAUSEWAYS = ("causeway", "causeway-replicas", "causeway-redis")
REPLICA_TARGETS = ("causeway-replicas", "causeway-redis")  # Causeway with [[replicas]]
# pgbench straight to the replicas, its clients split evenly between them (read-only
# scenarios): the ceiling of routed reads on this machine, where the replicas share the
# CPUs with the primary, pgbench and the proxies.
DIRECT_REPLICAS = "direct-replicas"
# PgBouncer reading the replicas, its clients split between them as for direct-replicas.
PGBOUNCER_REPLICAS = "pgbouncer-replicas"
SPLIT_TARGETS = (DIRECT_REPLICAS, PGBOUNCER_REPLICAS)
NEEDS_REPLICAS = REPLICA_TARGETS + SPLIT_TARGETS
USES_PGBOUNCER = ("pgbouncer", PGBOUNCER_REPLICAS)
# Targets given a ratio to PgBouncer on the primary, and targets whose proxy CPU is measured
# per run (pgbouncer-replicas is the pgbouncer process, so it is not one of PROXIES).
VS_PGBOUNCER = CAUSEWAYS + (PGBOUNCER_REPLICAS,)
CPU_MEASURED = PROXIES + (PGBOUNCER_REPLICAS,)
FRESH_READ = "fresh-read-latency"
STORE_LATENCY = "store-latency"
DEFAULT_REDIS = "/usr/bin/redis-server"
READ_MOSTLY_SCRIPT = "read-mostly.sql"


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    pgbench_args: tuple[str, ...]
    targets: tuple[str, ...] = BASE_TARGETS
    script: str | None = None  # a custom pgbench script written to the temp dir (-f)
    # Also on the replica targets when session stores are compared (--session-store redis/both).
    store_compare: bool = False


# The pgbench scenarios also run through Causeway with its replicas (the routed path, as
# users run it), when the run has replicas.
ROUTED_TARGETS = BASE_TARGETS + ("causeway-replicas",)
READ_TARGETS = ROUTED_TARGETS + SPLIT_TARGETS

SCENARIOS = (
    Scenario("select-simple", "select-only, simple protocol", ("-S", "-M", "simple"),
             READ_TARGETS, store_compare=True),
    Scenario("select-prepared", "select-only, prepared statements", ("-S", "-M", "prepared"),
             READ_TARGETS, store_compare=True),
    Scenario("select-extended", "select-only, extended protocol, unnamed statements",
             ("-S", "-M", "extended"), READ_TARGETS, store_compare=True),
    Scenario("tpcb", "TPC-B-like (default script), simple", ("-M", "simple"), ROUTED_TARGETS),
    Scenario("select-connect", "select-only, new connection per txn (-C)", ("-S", "-C", "-M", "simple"),
             ROUTED_TARGETS),
    Scenario("read-mostly-simple", "9 SELECT + 1 UPDATE autocommit statements, simple",
             ("-M", "simple"), ALL_TARGETS, READ_MOSTLY_SCRIPT),
    Scenario("read-mostly-prepared", "9 SELECT + 1 UPDATE autocommit statements, prepared",
             ("-M", "prepared"), ALL_TARGETS, READ_MOSTLY_SCRIPT),
)
SCENARIO_ALIASES = {"read-mostly": ("read-mostly-simple", "read-mostly-prepared")}
ALL_SCENARIO_KEYS = tuple(s.key for s in SCENARIOS) + (FRESH_READ, STORE_LATENCY)


class BenchError(Exception):
    """A failure that stops the benchmark, with a message for the user."""


class Interrupted(BaseException):
    """Raised from a signal handler so `finally` blocks clean up."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum



def uses_tls(args) -> bool:
    """Whether a run asked for TLS on both legs (--tls); the other tools that reuse these
    functions (offload, callgrind, psycopg-compat) have no such option."""
    return bool(getattr(args, "tls", False))

def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run.sh",
        description="pgbench through Causeway vs PgBouncer vs PostgreSQL directly (loopback).",
    )
    p.add_argument("--targets", default=None,
                   help="comma-separated subset of " + ",".join(ALL_TARGETS) + " (default: all "
                        "that --session-store selects; without replicas neither causeway-replicas nor "
                        "causeway-redis). Each scenario runs on the listed targets it supports")
    p.add_argument("--scenarios", default=None,
                   help="comma-separated subset of " + ",".join(ALL_SCENARIO_KEYS)
                        + f" (read-mostly = both read-mostly scenarios; default: all, {STORE_LATENCY} "
                        "only with --session-store both)")
    p.add_argument("--session-store", choices=("memory", "redis", "both"), default="memory",
                   help="session store of the Causeway target with replicas: memory = causeway-replicas "
                        "(default), redis = causeway-redis (the same config with [session_store] kind = "
                        "\"redis\", against a redis-server the benchmark starts), both = both targets, "
                        "compared. With redis or both, select-simple/select-prepared also run on them")
    p.add_argument("--session-key", choices=("connection", "user"), default=None,
                   help="[session] key of causeway-replicas and causeway-redis (default: user when "
                        "causeway-redis runs, so both stores are used, else Causeway's default, connection, "
                        "which uses no store). key = user: all clients of the user share one floor")
    p.add_argument("--store-timeout", default=None,
                   help='[session_store] timeout, e.g. "10ms" (default: not set, Causeway\'s default 10ms)')
    p.add_argument("--store-iterations", type=int, default=None,
                   help=f"{STORE_LATENCY} iterations per variant (default 2000; --quick 300)")
    p.add_argument("--store-deadline", type=float, default=45.0,
                   help=f"{STORE_LATENCY}: no new round of blocks after this many seconds (default 45)")
    p.add_argument("--redis-bin", default=DEFAULT_REDIS, help=f"default {DEFAULT_REDIS}")
    p.add_argument("-T", "--duration", type=int, default=None, help="seconds per pgbench run (default 8)")
    p.add_argument("--rounds", type=int, default=None, help="rounds over all targets (default 2)")
    p.add_argument("--warmup", type=int, default=None,
                   help="seconds of unrecorded select-only load per target before round 1 (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: -T 3, 1 round, 1 s warm-up")
    p.add_argument("-c", "--clients", type=int, default=16, help="pgbench clients (default 16)")
    p.add_argument("--rate", type=int, default=None,
                   help="run every pgbench at this many transactions per second (pgbench -R, split "
                        "between the replicas for direct-replicas and pgbouncer-replicas): the proxies' "
                        "CPU per transaction compared at equal load (default: as fast as possible)")
    p.add_argument("-j", "--threads", type=int, default=2, help="pgbench threads (default 2)")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale factor (default 10)")
    p.add_argument("--replicas", type=int, default=None,
                   help="streaming replicas to start with pg_basebackup for causeway-replicas "
                        "(default 2; 0 with --pg-port; 0 = none, no causeway-replicas target)")
    p.add_argument("--consistency", choices=("session", "bounded", "eventual", "strong"), default=None,
                   help="causeway-replicas [consistency] default (default: not set, Causeway's "
                        "default, session)")
    p.add_argument("--fresh-iterations", type=int, default=None,
                   help="fresh-read-latency iterations per variant (default 2000; --quick 300)")
    p.add_argument("--fresh-deadline", type=float, default=45.0,
                   help="fresh-read-latency: no new block of iterations after this many seconds "
                        "(default 45)")
    p.add_argument("--pool-size", type=int, default=16,
                   help="Causeway pool_size and PgBouncer default_pool_size (default 16)")
    p.add_argument("--causeway-workers", type=int, default=0,
                   help="Causeway [proxy] workers; 0 = one per CPU (default 0)")
    p.add_argument("--auth", choices=("trust", "scram-sha-256"), default="trust",
                   help="client auth for all targets (default trust, loopback only)")
    p.add_argument("--tls", action="store_true",
                   help="TLS on both legs: PostgreSQL ssl=on (hostssl only), pgbench and psql with "
                        "sslmode=require, Causeway [client_tls]/[server_tls] and PgBouncer "
                        "client_tls_sslmode/server_tls_sslmode = require (certificates made with openssl)")
    p.add_argument("--pg-port", type=int, default=None,
                   help="use an existing primary on 127.0.0.1:PORT instead of starting one "
                        "(pgbench tables are created if missing; PGPASSWORD is used if set)")
    p.add_argument("--pg-user", default="postgres", help="database user (default postgres)")
    p.add_argument("--pg-db", default="postgres", help="database (default postgres)")
    p.add_argument("--pg-bin", default=DEFAULT_PG_BIN, help=f"PostgreSQL bin dir (default {DEFAULT_PG_BIN})")
    p.add_argument("--pgbouncer-bin", default=DEFAULT_PGBOUNCER, help=f"default {DEFAULT_PGBOUNCER}")
    p.add_argument("--causeway-bin", default=str(WORKSPACE / "target/release/causeway"),
                   help="Causeway binary (default target/release/causeway)")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build --release -p causeway")
    p.add_argument("--results-dir", default=str(WORKSPACE / "bench-results"),
                   help="where to write results (default bench-results/)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (data dir, configs, logs)")
    args = p.parse_args(argv)
    apply_defaults(args)
    validate_args(p, args)
    return args


def apply_defaults(args: argparse.Namespace) -> None:
    quick = {"duration": 3, "rounds": 1, "warmup": 1, "fresh_iterations": 300, "store_iterations": 300}
    full = {"duration": 8, "rounds": 2, "warmup": 2, "fresh_iterations": 2000, "store_iterations": 2000}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.replicas is None:
        args.replicas = 0 if args.pg_port else 2
    args.compare_stores = args.session_store != "memory"
    if args.scenarios is None:
        args.scenarios = ",".join(k for k in ALL_SCENARIO_KEYS
                                  if k != STORE_LATENCY or args.session_store == "both")
    wanted = []
    for w in (s.strip() for s in args.scenarios.split(",")):
        wanted += list(SCENARIO_ALIASES.get(w, (w,) if w else ()))
    args.scenario_list = [s for s in SCENARIOS if s.key in wanted]
    args.fresh_read = FRESH_READ in wanted
    args.store_latency = STORE_LATENCY in wanted
    args.unknown_scenarios = [w for w in wanted if w not in ALL_SCENARIO_KEYS]
    if args.targets is None:
        stores = {"memory": ("causeway-replicas",), "redis": ("causeway-redis",), "both": REPLICA_TARGETS}
        chosen = set(REPLICA_TARGETS if args.store_latency else stores[args.session_store])
        args.targets = ",".join(t for t in ALL_TARGETS
                                if (t not in NEEDS_REPLICAS or args.replicas)
                                and (t not in REPLICA_TARGETS or t in chosen))
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.session_key is None and "causeway-redis" in args.targets:
        args.session_key = "user"
    # Targets something will run on: a scenario's targets, fresh-read-latency's or store-latency's.
    used = {t for s in args.scenario_list for t in scenario_targets(args, s)}
    if args.fresh_read:
        used |= {"direct", "causeway", "causeway-replicas"}
    if args.store_latency:
        used |= set(REPLICA_TARGETS)
    args.active_targets = [t for t in args.targets if t in used]


def validate_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    bad = [t for t in args.targets if t not in ALL_TARGETS]
    if bad or not args.targets:
        p.error(f"--targets: unknown target(s) {bad}; choose from {','.join(ALL_TARGETS)}")
    if len(set(args.targets)) != len(args.targets):
        p.error("--targets: a target is listed twice")
    if args.unknown_scenarios or not (args.scenario_list or args.fresh_read):
        p.error(f"--scenarios: unknown scenario(s) {args.unknown_scenarios}; "
                f"choose from {','.join(ALL_SCENARIO_KEYS)} or read-mostly")
    if not args.active_targets:
        p.error("no selected scenario runs on the selected --targets")
    if args.replicas < 0:
        p.error("--replicas must not be negative")
    for name in NEEDS_REPLICAS:
        if name in args.targets and args.replicas == 0:
            p.error(f"--targets {name} needs --replicas 1 or more")
    if args.store_latency and not all(t in args.targets for t in REPLICA_TARGETS):
        p.error(f"{STORE_LATENCY} needs both causeway-replicas and causeway-redis in --targets "
                "(and --replicas 1 or more)")
    for name in ("duration", "rounds", "clients", "threads", "scale", "pool_size", "fresh_iterations",
                 "store_iterations"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rate is not None and args.rate < 1:
        p.error("--rate must be at least 1 transaction per second")
    if args.warmup < 0 or args.causeway_workers < 0:
        p.error("--warmup and --causeway-workers must not be negative")
    if args.threads > args.clients:
        p.error("--threads must not exceed --clients")


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def server_user() -> str | None:
    """PostgreSQL and PgBouncer refuse to run as root: use the `postgres` OS user then."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as err:
        raise BenchError("running as root but there is no `postgres` OS user to run PostgreSQL as") from err
    return "postgres"


def child_setup(death_signal: int):
    """preexec_fn: deliver `death_signal` to the child if this script dies (even by SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        libc.prctl(PR_SET_PDEATHSIG, death_signal)

    return setup


def user_kwargs(user: str | None) -> dict:
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def run(argv: list[str], timeout: float, env: dict | None = None, user: str | None = None,
        cwd: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Runs a short command to completion under a timeout; output captured."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
            start_new_session=True, preexec_fn=child_setup(signal.SIGKILL), **user_kwargs(user),
        )
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"timed out after {timeout:.0f}s: {' '.join(argv)}") from err
    except FileNotFoundError as err:
        raise BenchError(f"command not found: {argv[0]}") from err
    if check and proc.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` exited with {proc.returncode}:\n"
                         f"{(proc.stderr or proc.stdout).strip()}")
    return proc


class Service:
    """A long-running child process (postgres, pgbouncer, causeway) with its own log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, user: str | None = None,
                 env: dict | None = None, cwd: str | None = None,
                 stop_signal: int = signal.SIGTERM, death_signal: int = signal.SIGKILL):
        self.name, self.argv, self.log_path, self.user = name, argv, log_path, user
        self.env, self.cwd = env, cwd
        self.stop_signal, self.death_signal = stop_signal, death_signal
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log(f"starting {self.name}: {' '.join(self.argv)}")
        with open(self.log_path, "ab") as out:
            try:
                self.proc = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=self.env, cwd=self.cwd, start_new_session=True,
                    preexec_fn=child_setup(self.death_signal), **user_kwargs(self.user),
                )
            except FileNotFoundError as err:
                raise BenchError(f"{self.name}: command not found: {self.argv[0]}") from err

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_description(self) -> str:
        code = self.proc.poll() if self.proc else None
        return "not started" if self.proc is None else ("running" if code is None else f"exited with {code}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        log(f"stopping {self.name} (pid {self.proc.pid})")
        try:
            self.proc.send_signal(self.stop_signal)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop within {timeout:.0f}s; killing it")
            kill_group(self.proc.pid)
            self.proc.wait(timeout=10)


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_until(what: str, ready, service: Service | None, timeout: float) -> None:
    """Polls `ready()` until true; fails early with the log tail if `service` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service is not None and not service.alive():
            raise BenchError(f"{service.name} {service.exit_description()} while waiting for {what}; "
                             f"log {service.log_path}:\n{service.log_tail()}")
        if ready():
            return
        time.sleep(0.2)
    tail = f"; log {service.log_path}:\n{service.log_tail()}" if service else ""
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_memory_kib(pid: int) -> dict[str, int]:
    result = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                result[key] = int(value.split()[0])
    return result


# --------------------------------------------------------------------------------------
# Environment: PostgreSQL, PgBouncer, Causeway
# --------------------------------------------------------------------------------------


@dataclass
class Env:
    args: argparse.Namespace
    tmp: Path
    user: str | None
    pg_port: int
    password: str | None
    services: dict[str, Service] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    admin: dict[str, str] = field(default_factory=dict)  # Causeway target -> admin host:port
    replicas: dict[str, int] = field(default_factory=dict)  # replica name -> port
    accounts: int = 0  # rows in pgbench_accounts (max aid)
    redis_port: int | None = None  # the bench's redis-server, for causeway-redis

    @property
    def wants_replicas(self) -> bool:
        return self.args.replicas > 0 and any(t in self.args.active_targets for t in NEEDS_REPLICAS)

    def pg_tool(self, name: str) -> str:
        return str(Path(self.args.pg_bin) / name)

    def client_env(self) -> dict:
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        env.pop("PGSERVICE", None)
        if uses_tls(self.args):
            env["PGSSLMODE"] = "require"
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def psql(self, port: int, *sql: str, timeout: float = 60) -> str:
        argv = [self.pg_tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", LOOPBACK, "-p", str(port), "-U", self.args.pg_user, "-d", self.args.pg_db]
        for statement in sql:
            argv += ["-c", statement]
        return run(argv, timeout, env=self.client_env()).stdout.strip()

    def can_query(self, port: int) -> bool:
        try:
            return self.psql(port, "SELECT 1", timeout=10) == "1"
        except BenchError:
            return False


def make_tmp(user: str | None) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="causeway-bench-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
    tmp.chmod(0o700)
    return tmp


def make_certificate(env: Env) -> None:
    """A self-signed P-256 certificate for --tls (tls.crt, tls.key in env.tmp), owned by the
    server user: PostgreSQL, PgBouncer and Causeway all present it."""
    cert, key = env.tmp / "tls.crt", env.tmp / "tls.key"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)], timeout=30)
    key.chmod(0o600)
    if env.user:
        entry = pwd.getpwnam(env.user)
        for path in (cert, key):
            os.chown(path, entry.pw_uid, entry.pw_gid)


def start_postgres(env: Env) -> None:
    """initdb + postgres in env.tmp, loopback only, fsync off, trust or SCRAM for TCP."""
    data = env.tmp / "pgdata"
    run([env.pg_tool("initdb"), "-D", str(data), "-U", env.args.pg_user, "--auth=trust",
         "--no-sync", "-E", "UTF8", "--locale=C"], timeout=120, user=env.user, cwd=str(env.tmp))
    host_method = "scram-sha-256" if env.args.auth == "scram-sha-256" else "trust"
    host = "hostssl" if uses_tls(env.args) else "host"
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "local replication all trust\n"
        "host replication all 127.0.0.1/32 trust\n"
        f"{host} all all 127.0.0.1/32 {host_method}\n"
    )
    settings = {
        "port": env.pg_port, "listen_addresses": LOOPBACK, "unix_socket_directories": str(env.tmp),
        "max_connections": 200, "fsync": "off", "full_page_writes": "off",
        "shared_buffers": "128MB", "logging_collector": "off",
        # Streaming replication (both are PostgreSQL 15's defaults; stated for clarity).
        "wal_level": "replica", "max_wal_senders": 10,
    }
    if uses_tls(env.args):
        make_certificate(env)
        settings.update({"ssl": "on", "ssl_cert_file": str(env.tmp / "tls.crt"),
                         "ssl_key_file": str(env.tmp / "tls.key")})
    argv = [env.pg_tool("postgres"), "-D", str(data)]
    for key, value in settings.items():
        argv += ["-c", f"{key}={value}"]
    service = Service("postgres", argv, env.tmp / "postgres.log", user=env.user, cwd=str(env.tmp),
                      stop_signal=signal.SIGINT, death_signal=signal.SIGQUIT)
    env.services["postgres"] = service
    service.start()
    socket_ready = lambda: run([env.pg_tool("pg_isready"), "-q", "-h", str(env.tmp), "-p", str(env.pg_port)],
                               timeout=10, check=False).returncode == 0
    wait_until("PostgreSQL to accept connections", socket_ready, service, timeout=60)
    if env.password:
        run([env.pg_tool("psql"), "-X", "-q", "-h", str(env.tmp), "-p", str(env.pg_port), "-U", env.args.pg_user,
             "-d", env.args.pg_db, "-c", f"ALTER ROLE {env.args.pg_user} PASSWORD '{env.password}'"], timeout=30)
    wait_until("PostgreSQL on TCP", lambda: env.can_query(env.pg_port), service, timeout=30)


def lsn_value(text: str) -> int:
    hi, lo = text.strip().split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def normalize_lsn(lsn: int) -> int:
    """An insert position just past a page header (24 bytes, 40 at a segment start) becomes the
    page start: a replica reports its replay position at the end of the last record, which is
    before the header, until more WAL arrives."""
    if lsn % (16 << 20) == 40:
        return lsn - 40
    if lsn % 8192 == 24:
        return lsn - 24
    return lsn


def start_replicas(env: Env) -> None:
    """pg_basebackup -R of the primary, one hot standby per replica, each on its own port."""
    for i in range(1, env.args.replicas + 1):
        name = f"replica{i}"
        data = env.tmp / f"{name}-data"
        log(f"pg_basebackup for {name}")
        run([env.pg_tool("pg_basebackup"), "-h", LOOPBACK, "-p", str(env.pg_port), "-U", env.args.pg_user,
             "-D", str(data), "-R", "-X", "stream", "-c", "fast", "--no-sync"],
            timeout=600, env=env.client_env(), user=env.user, cwd=str(env.tmp))
        port = free_port()
        settings = {
            "port": port, "listen_addresses": LOOPBACK, "unix_socket_directories": str(env.tmp),
            "max_connections": 200, "fsync": "off", "full_page_writes": "off",
            "shared_buffers": "128MB", "logging_collector": "off",
            "hot_standby": "on", "hot_standby_feedback": "on", "cluster_name": name,
        }
        argv = [env.pg_tool("postgres"), "-D", str(data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        service = Service(name, argv, env.tmp / f"{name}.log", user=env.user, cwd=str(env.tmp),
                          stop_signal=signal.SIGINT, death_signal=signal.SIGQUIT)
        env.services[name] = service
        env.replicas[name] = port
        service.start()
        wait_until(f"{name} to accept queries", lambda: env.can_query(port), service, timeout=60)
        if env.psql(port, "SELECT pg_is_in_recovery()") != "t":
            raise BenchError(f"{name} is not in recovery; log {service.log_path}:\n{service.log_tail()}")
    wait_replicas_caught_up(env, timeout=120, strict=True)


def wait_replicas_caught_up(env: Env, timeout: float = 60, strict: bool = False) -> None:
    """Waits until every replica has replayed the primary's current insert position."""
    if not env.replicas:
        return
    target = normalize_lsn(lsn_value(env.psql(env.pg_port, "SELECT pg_current_wal_insert_lsn()")))
    for name, port in env.replicas.items():
        replayed = lambda: lsn_value(env.psql(port, "SELECT pg_last_wal_replay_lsn()")) >= target
        try:
            wait_until(f"{name} to replay the primary's WAL up to {target >> 32:X}/{target & 0xFFFFFFFF:X}",
                       replayed, env.services[name], timeout)
        except BenchError as err:
            if strict:
                raise
            log(f"warning: {err}")


def replica_pool_state(admin: str) -> dict[str, bool] | None:
    """Which replicas Causeway has in its read pool: the causeway_replica_in_pool gauge, else
    /status nodes[].in_pool; None when Causeway exposes neither."""
    state = cwm.replicas_in_pool(cwm.scrape(admin, timeout=2))
    if state:
        return state
    with urllib.request.urlopen(f"http://{admin}/status", timeout=2) as reply:
        nodes = json.loads(reply.read()).get("nodes", [])
    state = {n["name"]: bool(n["in_pool"]) for n in nodes if n.get("role") == "replica" and "in_pool" in n}
    return state or None


_POOL_STATE_UNKNOWN_LOGGED = set()


def wait_replicas_in_pool(env: Env, target: str, timeout: float = 15) -> None:
    """Waits until Causeway's monitor has every replica in its read pool (it may have evicted
    one for lag during a write-heavy run on another target)."""
    admin = env.admin.get(target)
    if not admin or not env.replicas:
        return

    def in_pool() -> bool:
        try:
            state = replica_pool_state(admin)
        except (OSError, ValueError):
            return False
        if state is None:
            if target not in _POOL_STATE_UNKNOWN_LOGGED:
                _POOL_STATE_UNKNOWN_LOGGED.add(target)
                log(f"note: {target} exposes no replica pool state (no causeway_replica_in_pool samples, "
                    "no in_pool in /status); not waiting for it")
            return True
        return all(state.get(name) for name in env.replicas)

    try:
        wait_until(f"{target} to have every replica in its read pool", in_pool, env.services[target], timeout)
    except BenchError as err:
        log(f"warning: {err}")


def ensure_monitor_database(env: Env) -> None:
    """Causeway's replica monitor logs in to the database named like its user (libpq's
    default): create it on our own primary if missing (before pg_basebackup copies it)."""
    user = env.args.pg_user
    exists = env.psql(env.pg_port, f"SELECT count(*) FROM pg_database WHERE datname = '{user}'")
    if exists == "1":
        return
    if env.args.pg_port is not None:
        log(f"warning: database {user!r} does not exist; Causeway's replica monitor (which logs in to "
            "the database named like the user) will fail and every read will go to the primary")
        return
    log(f"creating database {user!r} for Causeway's replica monitor")
    env.psql(env.pg_port, f'CREATE DATABASE "{user}"')


def count_accounts(env: Env) -> int:
    return int(env.psql(env.pg_port, "SELECT max(aid) FROM pgbench_accounts"))


def write_read_mostly_script(env: Env) -> Path:
    """9 point SELECTs and 1 UPDATE as 10 autocommit statements (no BEGIN/END), so that
    Causeway can route each SELECT on its own."""
    n = env.accounts
    lines = ["-- read-mostly: written by bench/bench.py; 10 autocommit statements per transaction"]
    lines += [f"\\set aid{i} random(1, {n})" for i in range(1, 10)]
    lines += [f"\\set aid random(1, {n})", "\\set delta random(-5000, 5000)"]
    lines += [f"SELECT abalance FROM pgbench_accounts WHERE aid = :aid{i};" for i in range(1, 10)]
    lines += ["UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;"]
    path = env.tmp / READ_MOSTLY_SCRIPT
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o644)
    return path


def ensure_pgbench_tables(env: Env) -> None:
    exists = env.psql(env.pg_port, "SELECT to_regclass('pgbench_accounts') IS NOT NULL")
    if exists == "t" and env.args.pg_port is not None:
        log("pgbench tables exist; not re-initialising the existing primary")
        return
    log(f"pgbench -i -s {env.args.scale} (direct)")
    run([env.pg_tool("pgbench"), "-i", "-q", "-s", str(env.args.scale), "-h", LOOPBACK, "-p", str(env.pg_port),
         "-U", env.args.pg_user, env.args.pg_db], timeout=900, env=env.client_env())


def start_pgbouncer(env: Env) -> None:
    port = free_port()
    auth_type = "scram-sha-256" if env.args.auth == "scram-sha-256" else "trust"
    userlist = env.tmp / "pgbouncer-userlist.txt"
    userlist.write_text(f'"{env.args.pg_user}" "{env.password or ""}"\n')
    ini = env.tmp / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"{env.args.pg_db} = host={LOOPBACK} port={env.pg_port} dbname={env.args.pg_db}\n"
        + "".join(f"{replica_db(env, name)} = host={LOOPBACK} port={port} dbname={env.args.pg_db}\n"
                  for name, port in sorted(env.replicas.items()))
        + "[pgbouncer]\n"
        f"listen_addr = {LOOPBACK}\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = {auth_type}\nauth_file = {userlist}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {env.args.pool_size}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
        "max_client_conn = 1000\n"
        "log_connections = 0\nlog_disconnections = 0\n"
        "ignore_startup_parameters = extra_float_digits\n"
        + (f"client_tls_sslmode = require\nclient_tls_cert_file = {env.tmp / 'tls.crt'}\n"
           f"client_tls_key_file = {env.tmp / 'tls.key'}\nserver_tls_sslmode = require\n"
           if uses_tls(env.args) else "")
    )
    service = Service("pgbouncer", [env.args.pgbouncer_bin, str(ini)], env.tmp / "pgbouncer.log",
                      user=env.user, cwd=str(env.tmp), stop_signal=signal.SIGINT)
    env.services["pgbouncer"] = service
    env.ports["pgbouncer"] = port
    service.start()
    wait_until("PgBouncer to serve queries", lambda: env.can_query(port), service, timeout=30)


def replica_db(env: Env, replica: str) -> str:
    """PgBouncer's database name for `replica` (pgbouncer-replicas)."""
    return f"{env.args.pg_db}_{replica}"


def start_redis(env: Env) -> None:
    """A throw-away redis-server for causeway-redis: loopback only, no persistence."""
    port = free_port()
    argv = [env.args.redis_bin, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
            "--dir", str(env.tmp), "--daemonize", "no", "--logfile", ""]
    service = Service("redis", argv, env.tmp / "redis.log", cwd=str(env.tmp))
    env.services["redis"] = service
    env.redis_port = port
    service.start()
    wait_until("redis-server to answer PING", lambda: redis_info.ping(LOOPBACK, port), service, timeout=30)


def redis_calls(env: Env) -> dict | None:
    if env.redis_port is None:
        return None
    try:
        return redis_info.commandstats(LOOPBACK, env.redis_port)
    except (OSError, ValueError) as err:
        log(f"warning: INFO commandstats failed: {err}")
        return None


def build_causeway(args: argparse.Namespace) -> None:
    log("cargo build --release -p causeway")
    try:
        proc = subprocess.run(["cargo", "build", "--release", "-p", "causeway"], cwd=WORKSPACE,
                              stdout=sys.stderr, stderr=sys.stderr, timeout=3600)
    except FileNotFoundError as err:
        raise BenchError("cargo not found; install Rust or pass --no-build with --causeway-bin") from err
    except subprocess.TimeoutExpired as err:
        raise BenchError("cargo build timed out after 1 h") from err
    if proc.returncode != 0:
        raise BenchError("cargo build --release -p causeway failed (see above); "
                         "run with --targets direct,pgbouncer to benchmark without Causeway")


def causeway_config(env: Env, port: int, admin_port: int, with_replicas: bool = False,
                    redis_store: bool = False) -> str:
    """Causeway's config; with_replicas lists the replicas (causeway-replicas, causeway-redis),
    otherwise every statement goes to the primary (causeway). [consistency] and [lag] keep
    their defaults (session, max_wait 20ms; poll_interval 50ms). The replica targets get
    --session-key as [session] key; causeway-redis (redis_store) differs from
    causeway-replicas only by [session_store] kind = "redis"."""
    a = env.args
    user = f'[[users]]\nname = "{a.pg_user}"\n'
    if env.password:
        user += f'password = "{env.password}"\n'
    elif with_replicas:
        # The replica monitor logs in as the first user with a password; under trust the
        # servers never ask for it, so any value works.
        user += f'password = "{BENCH_PASSWORD}"\n'
    replicas = "".join(
        f'[[replicas]]\nname = "{name}"\nhost = "{LOOPBACK}"\nport = {rport}\n'
        for name, rport in env.replicas.items()) if with_replicas else ""
    consistency = (f'[consistency]\ndefault = "{a.consistency}"\n'
                   if with_replicas and a.consistency else "")
    session = f'[session]\nkey = "{a.session_key}"\n' if with_replicas and a.session_key else ""
    store = ""
    if redis_store:
        store = f'[session_store]\nkind = "redis"\nurl = "redis://{LOOPBACK}:{env.redis_port}"\n'
    if with_replicas and a.store_timeout:
        store = (store or "[session_store]\n") + f'timeout = "{a.store_timeout}"\n'

    tls = (f'[client_tls]\nsslmode = "require"\ncert_file = "{env.tmp / "tls.crt"}"\n'
           f'key_file = "{env.tmp / "tls.key"}"\n[server_tls]\nsslmode = "require"\n'
           if uses_tls(a) else "")
    return (
        "# Written by bench/bench.py\n"
        "[proxy]\n"
        f'listen = "{LOOPBACK}:{port}"\nadmin_listen = "{LOOPBACK}:{admin_port}"\n'
        f'pool_mode = "transaction"\npool_size = {a.pool_size}\nworkers = {a.causeway_workers}\n'
        "[auth]\n"
        f'method = "{a.auth}"\n'
        "[primary]\n"
        f'host = "{LOOPBACK}"\nport = {env.pg_port}\n'
        f"{replicas}"
        f"{consistency}"
        f"{session}"
        f"{store}"
        f"{tls}"
        f"{user}"
    )


def start_causeway_with(env: Env, binary: str, name: str, label: str, make_config) -> int:
    """Start Causeway from `binary` as service `name` with the config `make_config(port,
    admin_port)` writes (checked first), wait
    until it serves queries and /metrics and has every replica in its read pool; returns its
    port. For the tools that start Causeway with a config of their own (offload,
    psycopg-compat)."""
    path = Path(binary)
    if not path.is_file():
        raise BenchError(f"Causeway binary not found at {path}; pass --causeway-bin")
    port, admin_port = free_port(), free_port()
    config = env.tmp / f"causeway-{label}.toml"
    config.write_text(make_config(port, admin_port))
    run([str(path), "--check-config", str(config)], timeout=30)
    service = Service(name, [str(path), "--config", str(config)], env.tmp / f"causeway-{label}.log",
                      env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1"))
    env.services[name] = service
    env.ports[name] = port
    env.admin[name] = f"{LOOPBACK}:{admin_port}"
    service.start()
    wait_until("Causeway to serve queries", lambda: env.can_query(port), service, timeout=30)
    wait_until("Causeway to serve /metrics", lambda: metrics_ok(env.admin[name]), service, timeout=30)
    wait_replicas_in_pool(env, name, timeout=30)
    return port


def start_causeway(env: Env, name: str = "causeway") -> None:
    binary = Path(env.args.causeway_bin)
    if not binary.is_file():
        raise BenchError(f"Causeway binary not found at {binary}; build it or pass --causeway-bin")
    with_replicas = name in REPLICA_TARGETS
    port, admin_port = free_port(), free_port()
    config = env.tmp / f"{name}.toml"
    config.write_text(causeway_config(env, port, admin_port, with_replicas, name == "causeway-redis"))
    run([str(binary), "--check-config", str(config)], timeout=30)
    service = Service(name, [str(binary), "--config", str(config)], env.tmp / f"{name}.log",
                      env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1"))
    env.services[name] = service
    env.ports[name] = port
    env.admin[name] = f"{LOOPBACK}:{admin_port}"
    service.start()
    wait_until(f"{name} to serve queries", lambda: env.can_query(port), service, timeout=30)
    wait_until(f"{name} to serve /metrics", lambda: metrics_ok(env.admin[name]), service, timeout=30)
    if with_replicas:
        wait_replicas_in_pool(env, name, timeout=30)
        wait_read_routed_to_replica(env, name, timeout=15)


def wait_read_routed_to_replica(env: Env, name: str, timeout: float) -> None:
    """Sanity check: a read through causeway-replicas reaches a replica (its monitor has
    sampled them); warns, without stopping, if none does."""
    admin, port = env.admin[name], env.ports[name]

    def routed() -> bool:
        before = try_scrape(admin)
        env.psql(port, "SELECT 1")
        after = try_scrape(admin)
        return before is not None and after is not None and cwm.routing(cwm.diff(before, after))["replica"] > 0

    try:
        wait_until(f"a read through {name} to reach a replica", routed, env.services[name], timeout)
    except BenchError as err:
        log(f"warning: {err}")


def metrics_ok(admin: str) -> bool:
    try:
        cwm.scrape(admin, timeout=2)
        return True
    except OSError:
        return False


def stop_all(env: Env) -> None:
    # Proxies first, so they do not see the primary disappear under them; replicas before
    # the primary, so they do not spin reconnecting to it.
    names = ["causeway-redis", "causeway-replicas", "causeway", "pgbouncer", "redis", *sorted(env.replicas),
             "postgres"]
    for name in names:
        service = env.services.get(name)
        if service is None:
            continue
        try:
            service.stop(timeout=15 if name in PROXIES else 30)
        except Exception as err:  # keep stopping the others
            log(f"error while stopping {name}: {err}")
            if service.proc is not None:
                kill_group(service.proc.pid)


# --------------------------------------------------------------------------------------
# Running pgbench
# --------------------------------------------------------------------------------------


@dataclass
class RunResult:
    round: int
    scenario: str
    target: str
    ok: bool
    tps: float | None = None
    latency_ms: float | None = None
    transactions: int | None = None
    failed_transactions: int | None = None
    proxy_cpu_s: float | None = None
    wall_s: float | None = None
    error: str | None = None
    command: str = ""
    routing: dict | None = None  # Causeway targets: /metrics diff around the run (causeway_metrics.routing)
    store: dict | None = None  # Causeway targets: session-store operations (causeway_metrics.store)
    redis_calls: dict | None = None  # causeway-redis: INFO commandstats diff around the run


def target_port(env: Env, target: str) -> int:
    return env.pg_port if target == "direct" else env.ports[target]


def pgbench_argv(env: Env, target: str, scenario: Scenario, seconds: int) -> list[str]:
    return pgbench_argv_at(env, target_port(env, target), scenario, seconds, env.args.clients, env.args.threads)


def pgbench_argv_at(env: Env, port: int, scenario: Scenario, seconds: int, clients: int,
                    threads: int, db: str | None = None, rate: int | None = None) -> list[str]:
    a = env.args
    script = ["-f", str(env.tmp / scenario.script)] if scenario.script else []
    rate = a.rate if rate is None else rate
    limit = ["-R", str(rate)] if rate else []
    return [env.pg_tool("pgbench"), "-n", "-c", str(clients), "-j", str(threads), "-T", str(seconds), *limit,
            *scenario.pgbench_args, *script, "-h", LOOPBACK, "-p", str(port), "-U", a.pg_user, db or a.pg_db]


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` in `parts` shares differing by at most one, each at least one."""
    return [max(1, total // parts + (1 if i < total % parts else 0)) for i in range(parts)]


def run_split(env: Env, rnd: int, scenario: Scenario, target: str, seconds: int) -> RunResult:
    """pgbench to every replica at once, the clients (and threads) split evenly: straight
    (direct-replicas) or through PgBouncer (pgbouncer-replicas, whose CPU is measured). TPS
    and transactions summed, latency averaged over the transactions."""
    if target == PGBOUNCER_REPLICAS:
        endpoints = [(env.ports["pgbouncer"], replica_db(env, name)) for name in sorted(env.replicas)]
        service = env.services.get("pgbouncer")
    else:
        endpoints = [(port, None) for port in sorted(env.replicas.values())]
        service = None
    clients = split_evenly(env.args.clients, len(endpoints))
    threads = [min(c, t) for c, t in zip(clients, split_evenly(env.args.threads, len(endpoints)))]
    rates = split_evenly(env.args.rate, len(endpoints)) if env.args.rate else [None] * len(endpoints)
    argvs = [pgbench_argv_at(env, port, scenario, seconds, c, t, db, r)
             for (port, db), c, t, r in zip(endpoints, clients, threads, rates)]
    result = RunResult(rnd, scenario.key, target, ok=False, command=" & ".join(" ".join(a) for a in argvs))
    if service is not None and not service.alive():
        result.error = f"pgbouncer {service.exit_description()}"
        return result
    cpu_before = proc_cpu_seconds(service.pid) if service else None
    timeout = seconds + 30
    started = time.monotonic()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.client_env(),
                              start_new_session=True, preexec_fn=child_setup(signal.SIGKILL)) for argv in argvs]
    outputs = []
    for proc in procs:
        try:
            outputs.append((proc.returncode, *proc.communicate(timeout=max(1.0, timeout - (time.monotonic() - started)))))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            result.error = f"pgbench timed out after {timeout}s (killed)"
            return result
    result.wall_s = round(time.monotonic() - started, 2)
    if service is not None and service.alive():
        result.proxy_cpu_s = round(proc_cpu_seconds(service.pid) - cpu_before, 3)
    parsed = [parse_pgbench(stdout) for _, stdout, _ in outputs]
    for proc, (_, stdout, stderr), one in zip(procs, outputs, parsed):
        if proc.returncode != 0 or one["tps"] is None or not one["transactions"]:
            result.error = f"pgbench exit {proc.returncode}: {first_error(stderr, stdout)}"
            return result
    result.transactions = sum(p["transactions"] for p in parsed)
    result.tps = sum(p["tps"] for p in parsed)
    result.latency_ms = sum(p["latency_ms"] * p["transactions"] for p in parsed) / result.transactions
    result.failed_transactions = sum(p["failed_transactions"] or 0 for p in parsed)
    result.ok = True
    return result


def parse_pgbench(stdout: str) -> dict:
    def number(pattern: str, cast=float):
        m = re.search(pattern, stdout, re.MULTILINE)
        return cast(m.group(1)) if m else None

    return {
        "tps": number(r"^tps = ([\d.]+)"),
        "latency_ms": number(r"^latency average = ([\d.]+) ms"),
        "transactions": number(r"^number of transactions actually processed: (\d+)", int),
        "failed_transactions": number(r"^number of failed transactions: (\d+)", int),
    }


def first_error(stderr: str, stdout: str) -> str:
    for line in (stderr + "\n" + stdout).splitlines():
        if re.search(r"error|fatal|abort", line, re.IGNORECASE):
            return line.strip()[:300]
    text = (stderr or stdout).strip().splitlines()
    return text[-1][:300] if text else "no output"


def reset_tables(env: Env) -> None:
    """What pgbench does before a run unless -n, but directly on the primary."""
    env.psql(env.pg_port, "VACUUM pgbench_branches", "VACUUM pgbench_tellers", "TRUNCATE pgbench_history")


def run_pgbench(env: Env, rnd: int, scenario: Scenario, target: str, seconds: int) -> RunResult:
    if target in SPLIT_TARGETS:
        return run_split(env, rnd, scenario, target, seconds)
    argv = pgbench_argv(env, target, scenario, seconds)
    result = RunResult(rnd, scenario.key, target, ok=False, command=" ".join(argv))
    service = env.services.get(target)
    if service is not None and not service.alive():
        result.error = f"{target} {service.exit_description()}"
        return result
    admin = env.admin.get(target)
    metrics_before = try_scrape(admin)
    redis_before = redis_calls(env) if target == "causeway-redis" else None
    cpu_before = proc_cpu_seconds(service.pid) if service else None
    started = time.monotonic()
    timeout = seconds + 30 + (seconds if "-C" in scenario.pgbench_args else 0)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env.client_env(),
                              start_new_session=True, preexec_fn=child_setup(signal.SIGKILL))
    except subprocess.TimeoutExpired:
        result.error = f"pgbench timed out after {timeout}s (killed)"
        return result
    result.wall_s = round(time.monotonic() - started, 2)
    if service is not None and service.alive():
        result.proxy_cpu_s = round(proc_cpu_seconds(service.pid) - cpu_before, 3)
    metrics_after = try_scrape(admin)
    if metrics_before is not None and metrics_after is not None:
        delta = cwm.diff(metrics_before, metrics_after)
        result.routing = cwm.routing(delta)
        result.store = cwm.store(delta)
    if redis_before is not None:
        result.redis_calls = redis_info.diff(redis_before, redis_calls(env))
    parsed = parse_pgbench(proc.stdout)
    if proc.returncode != 0 or parsed["tps"] is None or not parsed["transactions"]:
        result.error = f"pgbench exit {proc.returncode}: {first_error(proc.stderr, proc.stdout)}"
        if service is not None and not service.alive():
            result.error += f"; {target} {service.exit_description()}"
        return result
    for key, value in parsed.items():
        setattr(result, key, value)
    result.ok = True
    return result


def try_scrape(admin: str | None) -> dict | None:
    if not admin:
        return None
    try:
        return cwm.scrape(admin)
    except (OSError, ValueError) as err:
        log(f"warning: scraping http://{admin}/metrics failed: {err}")
        return None


def describe_routing(r: dict) -> str:
    reads = r["reads"]
    share = f"{100 * r['replica'] / reads:.1f}%" if reads else "–"
    text = f"reads to replicas {share} ({r['replica']:,}/{reads:,})"
    if r["waits"]:
        text += f", waited {r['waits']:,}× (mean {1000 * r['wait_s'] / r['waits']:.2f} ms)"
    if r["fallbacks"]:
        text += ", fallbacks " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["fallbacks"].items()))
    if r["evictions"]:
        text += ", evictions " + ", ".join(f"{k} {v}" for k, v in sorted(r["evictions"].items()))
    return text


def describe(result: RunResult) -> str:
    if not result.ok:
        return f"FAILED: {result.error}"
    cpu = ""
    if result.proxy_cpu_s is not None:
        cpu = f", proxy CPU {1e6 * result.proxy_cpu_s / result.transactions:.1f} us/txn"
    routing = f"; {describe_routing(result.routing)}" if result.routing and result.routing["statements"] else ""
    store = ""
    if result.store and any(v["errors"] for v in result.store.values()):
        store = "; store errors " + ", ".join(
            f"{op} {v['errors']:,} ({fmt(cwm.slower_than(v, 0.01), ',')} > 10 ms)" for op, v in result.store.items())
    return f"{result.tps:,.0f} tps, {result.latency_ms:.3f} ms{cpu}{routing}{store}"


def check_primary(env: Env) -> None:
    for name in ("postgres", *env.replicas):
        service = env.services.get(name)
        if service is not None and not service.alive():
            raise BenchError(f"{name} {service.exit_description()}; log {service.log_path}:\n{service.log_tail()}")


def scenario_targets(args: argparse.Namespace, scenario: Scenario) -> list[str]:
    return [t for t in args.targets if t in scenario.targets
            or (scenario.store_compare and args.compare_stores and t in REPLICA_TARGETS)]


def prepare_run(env: Env, target: str) -> None:
    """Before each measured run: the primary is up, the replicas have replayed everything, and
    causeway-replicas has them in its read pool."""
    check_primary(env)
    wait_replicas_caught_up(env)
    if target in REPLICA_TARGETS:
        wait_replicas_in_pool(env, target)


def warm_up(env: Env) -> None:
    if env.args.warmup <= 0:
        return
    for target in env.args.active_targets:
        log(f"warm-up {target}: {env.args.warmup}s select-only")
        prepare_run(env, target)
        result = run_pgbench(env, 0, SCENARIOS[0], target, env.args.warmup)
        if not result.ok:
            log(f"  warm-up on {target} failed: {result.error}")


def rotated(items: list[str], by: int) -> list[str]:
    by %= len(items)
    return items[by:] + items[:by]


def run_rounds(env: Env) -> list[RunResult]:
    a = env.args
    results = []
    for rnd in range(1, a.rounds + 1):
        for scenario in a.scenario_list:
            for target in rotated(scenario_targets(a, scenario), rnd - 1):
                check_primary(env)
                reset_tables(env)
                prepare_run(env, target)
                log(f"round {rnd}/{a.rounds} {scenario.key:<20} {target:<17} ...")
                result = run_pgbench(env, rnd, scenario, target, a.duration)
                log(f"  {describe(result)}")
                results.append(result)
    return results


# --------------------------------------------------------------------------------------
# Summary and report
# --------------------------------------------------------------------------------------


def summarize(results: list[RunResult], args: argparse.Namespace) -> dict:
    """Per (scenario, target): median TPS, mean latency, CPU/txn, ratios."""
    summary = {}
    for scenario in args.scenario_list:
        rows = {}
        for target in scenario_targets(args, scenario):
            runs = [r for r in results if r.scenario == scenario.key and r.target == target]
            ok = [r for r in runs if r.ok]
            row = {"rounds_ok": len(ok), "rounds": len(runs),
                   "errors": sorted({r.error for r in runs if not r.ok})}
            if ok:
                tps = [r.tps for r in ok]
                row.update(tps_median=statistics.median(tps), tps_min=min(tps), tps_max=max(tps),
                           latency_ms_mean=statistics.mean(r.latency_ms for r in ok))
                cpu_runs = [r for r in ok if r.proxy_cpu_s is not None]
                if cpu_runs:
                    row["proxy_cpu_us_per_txn"] = (1e6 * sum(r.proxy_cpu_s for r in cpu_runs)
                                                   / sum(r.transactions for r in cpu_runs))
                routing = None
                for r in ok:
                    if r.routing is not None:
                        routing = cwm.add_routing(routing, r.routing)
                if routing is not None:
                    row["routing"] = routing
                store = None
                for r in ok:
                    if r.store is not None:
                        store = cwm.add_store(store, r.store)
                if store is not None:
                    row["store"] = store
                calls = {}
                for r in ok:
                    for k, v in (r.redis_calls or {}).items():
                        calls[k] = calls.get(k, 0) + v
                if calls:
                    row["redis_calls"] = calls
            rows[target] = row
        add_ratios(rows)
        summary[scenario.key] = rows
    return summary


def add_ratios(rows: dict) -> None:
    def tps(target):
        return rows.get(target, {}).get("tps_median")

    for target, row in rows.items():
        if tps(target) and tps("direct"):
            row["vs_direct"] = tps(target) / tps("direct")
    for target in VS_PGBOUNCER:
        if tps(target) and tps("pgbouncer"):
            rows[target]["vs_pgbouncer"] = tps(target) / tps("pgbouncer")
    if tps("causeway-redis") and tps("causeway-replicas"):
        rows["causeway-redis"]["vs_memory_store"] = tps("causeway-redis") / tps("causeway-replicas")


def resource_totals(env: Env, results: list[RunResult]) -> dict:
    totals = {}
    for name in PROXIES:
        service = env.services.get(name)
        if service is None:
            continue
        runs = [r for r in results if r.target == name and r.ok and r.proxy_cpu_s is not None]
        cpu = sum(r.proxy_cpu_s for r in runs)
        txns = sum(r.transactions for r in runs)
        entry = {"alive_at_end": service.alive(), "measured_cpu_s": round(cpu, 3), "transactions": txns,
                 "cpu_us_per_txn": 1e6 * cpu / txns if txns else None}
        if service.alive():
            entry.update({k.lower() + "_kib": v for k, v in proc_memory_kib(service.pid).items()})
            entry["total_cpu_s"] = proc_cpu_seconds(service.pid)
        totals[name] = entry
    return totals


def fmt(value, spec: str, missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def markdown(meta: dict, summary: dict, resources: dict, fresh: dict | None, args: argparse.Namespace,
             store_latency: dict | None = None) -> str:
    lines = [
        f"## Causeway benchmark — {meta['started']}",
        "",
        f"- host: {meta['cpus']} CPUs ({meta['machine']}), {meta['postgres']}, {meta['pgbouncer']}, "
        f"causeway {meta['git']}",
        f"- pgbench: `-c {args.clients} -j {args.threads} -T {args.duration} -n"
        + (f" -R {args.rate}" if args.rate else "") + f"`, scale {args.scale}, "
        f"{args.rounds} round(s), target order rotated each round; TPS is the median over rounds, "
        f"latency the mean of pgbench's average",
        f"- pools: transaction mode, size {args.pool_size} (Causeway pool_size, PgBouncer default_pool_size); "
        f"Causeway workers = {args.causeway_workers} (0 = one per CPU); client auth: {args.auth} on loopback "
        f"for every target",
        f"- {meta['replicas']}",
        *(["- TLS on both legs (`--tls`): clients with sslmode=require to every target, the proxies "
           "to PostgreSQL with TLS (require); PostgreSQL `hostssl` only, a P-256 certificate"]
          if uses_tls(args) else []),
        "- proxy CPU/txn = utime+stime delta of the proxy process over the measured runs ÷ transactions",
    ]
    lines += session_notes(args)
    redis_column = "causeway-redis" in args.active_targets and "causeway-replicas" in args.active_targets
    if args.scenario_list:
        lines += [
            "",
            "| Scenario | Target | TPS (median) | TPS min–max | Latency avg (ms) | vs direct "
            "| ÷ PgBouncer | Proxy CPU µs/txn | Runs OK |"
            + (" Redis / memory store |" if redis_column else ""),
            "|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if redis_column else ""),
        ]
    notes = []
    for scenario in args.scenario_list:
        for target in scenario_targets(args, scenario):
            row = summary[scenario.key][target]
            if "tps_median" in row:
                cells = [fmt(row["tps_median"], ",.0f"), f"{row['tps_min']:,.0f}–{row['tps_max']:,.0f}",
                         fmt(row["latency_ms_mean"], ".3f"), fmt(row.get("vs_direct"), ".2f"),
                         fmt(row.get("vs_pgbouncer"), ".2f") if target in VS_PGBOUNCER else "",
                         fmt(row.get("proxy_cpu_us_per_txn"), ".1f") if target in CPU_MEASURED else ""]
            else:
                cells = ["FAILED", "", "", "", "", ""]
            lines.append(f"| {scenario.key} | {target} | " + " | ".join(cells)
                         + f" | {row['rounds_ok']}/{row['rounds']} |"
                         + (f" {fmt(row.get('vs_memory_store'), '.2f', '')} |" if redis_column else ""))
            for error in row["errors"]:
                notes.append(f"- {scenario.key} / {target}: {error}")
    lines += routing_table(summary, args)
    lines += store_table(summary, args)
    if meta.get("store_episodes"):
        lines += ["", f"- causeway-redis logged \"session store is back\" {meta['store_episodes']} time(s) over the whole "
                      "benchmark: after a failed or timed-out store call it backs off (50 ms, doubling), and the "
                      "first success starts the grace period (floors distrusted; every shared-floor read goes "
                      "to the primary and is counted as a get error)"]
    if resources:
        lines += ["", "| Proxy | RSS at end (MiB) | Peak RSS (MiB) | CPU s (measured runs) | Transactions "
                      "| CPU µs/txn (all scenarios) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, r in resources.items():
            rss = fmt(r.get("vmrss_kib") and r["vmrss_kib"] / 1024, ".1f", "exited")
            hwm = fmt(r.get("vmhwm_kib") and r["vmhwm_kib"] / 1024, ".1f", "exited")
            lines.append(f"| {name} | {rss} | {hwm} | {r['measured_cpu_s']:.2f} | {r['transactions']:,} "
                         f"| {fmt(r['cpu_us_per_txn'], '.1f')} |")
    if fresh is not None:
        lines += fresh_read_markdown(fresh)
    if store_latency is not None:
        lines += store_latency_markdown(store_latency)
    if notes:
        lines += ["", "Failed runs:", *notes]
    return "\n".join(lines) + "\n"


def routing_table(summary: dict, args: argparse.Namespace) -> list[str]:
    """Where Causeway sent the statements of the scenarios that run on a replica target."""
    rows = []
    for scenario in args.scenario_list:
        if not any(t in REPLICA_TARGETS for t in scenario_targets(args, scenario)):
            continue
        for target in scenario_targets(args, scenario):
            r = summary[scenario.key][target].get("routing")
            if target not in CAUSEWAYS or not r or not r["statements"]:
                continue
            reads = r["reads"]
            per_replica = " / ".join(f"{r['per_target'].get(name, 0) / reads:.1%}" if reads else "–"
                                     for name in sorted(n for n in r["per_target"] if n != "primary")) or "–"
            waits = (f"{r['waits']:,} ({100 * r['waits'] / reads:.1f}% of reads), mean "
                     f"{1000 * r['wait_s'] / r['waits']:.2f} ms" if r["waits"] and reads else "0")
            fallbacks = ", ".join(f"{k} {v:,}" for k, v in sorted(r["fallbacks"].items())) or "0"
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(r["per_reason"].items(), key=lambda kv: -kv[1]))
            share = f"{r['replica'] / reads:.1%}" if reads else "–"
            evictions = ", ".join(f"{k} {v}" for k, v in sorted(r["evictions"].items())) or "0"
            rows.append(f"| {scenario.key} | {target} | {r['statements']:,} | {reads:,} | {share} | {per_replica} "
                        f"| {waits} | {fallbacks} | {evictions} | {reasons} |")
    if not rows:
        return []
    return ["", "Read routing (Causeway /metrics diffs summed over the measured runs; reads = statements "
                "not routed as `write`; a read right after its session's own UPDATE needs a replica that "
                "has replayed it: it waits up to `[consistency] max_wait` (20ms) for one, else goes to the "
                "primary):",
            "",
            "| Scenario | Target | Statements | Reads | Reads → replicas | per replica | Reads that waited "
            "| Fallbacks to primary | Evictions | target:reason |",
            "|---|---|---:|---:|---:|---:|---|---|---|---|", *rows]


def session_notes(args: argparse.Namespace) -> list[str]:
    replica_targets = [t for t in REPLICA_TARGETS if t in args.active_targets]
    if not replica_targets:
        return []
    key = args.session_key or "connection (Causeway's default)"
    lines = [f"- session store: {', '.join(replica_targets)} with [session] key = {key}"
             + (f", [session_store] timeout = {args.store_timeout}" if args.store_timeout else
                ", [session_store] timeout = Causeway's default (10ms)")
             + "; causeway-replicas: kind = memory (in-process), causeway-redis: kind = redis (a local "
               "redis-server started by the benchmark, loopback, no persistence), otherwise the same config"]
    if args.session_key == "user":
        lines.append(f"- key = user: all {args.clients} pgbench clients (one database user) share ONE session "
                     "floor: every client's write raises the floor every client's reads must respect (more "
                     "waits/fallbacks than per-connection floors), and every statement that needs the floor "
                     "reads it from the store")
        if args.fresh_read:
            lines.append(f"- {FRESH_READ} with key = user: replicas-other-conn shares the writer's floor too")
    return lines


def store_table(summary: dict, args: argparse.Namespace) -> list[str]:
    """Session-store operations per statement for the Causeway targets with replicas."""
    rows = []
    for scenario in args.scenario_list:
        for target in scenario_targets(args, scenario):
            row = summary[scenario.key][target]
            st, r = row.get("store"), row.get("routing")
            if target not in REPLICA_TARGETS or not st or not r or not r["statements"]:
                continue
            n, reads, writes = r["statements"], r["reads"], r["writes"]
            get, adv = st["get"], st["advance"]

            def lat(op):
                if not op["count"]:
                    return "–"
                p50 = cwm.bucket_quantile(op["buckets"], 0.5) or "–"
                p99 = cwm.bucket_quantile(op["buckets"], 0.99) or "–"
                return f"{1000 * op['sum_s'] / op['count']:.3f} / {p50} / {p99}"

            calls = row.get("redis_calls")
            redis = ("–" if not calls else ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(calls.items())))
            errors = ", ".join(f"{op} {st[op]['errors']:,}" for op in ("get", "advance") if st[op]["errors"]) or "0"
            slow = ", ".join(f"{op} {fmt(cwm.slower_than(st[op], 0.01), ',')}" for op in ("get", "advance"))
            rows.append(f"| {scenario.key} | {target} | {n:,} | {reads:,} / {writes:,} "
                        f"| {(get['count'] + adv['count']) / n:.2f} | {get['count'] / n:.2f} "
                        f"| {adv['count'] / n:.2f} | {fmt(get['count'] / reads if reads else None, '.2f')} "
                        f"| {fmt(adv['count'] / writes if writes else None, '.2f')} | {lat(get)} | {lat(adv)} "
                        f"| {errors} | {slow} | {redis} |")
    if not rows:
        return []
    return ["", "Session-store operations (Causeway /metrics diffs summed over the measured runs: "
                "causeway_session_store_duration_seconds _count, _sum and buckets; get = read a shared floor, "
                "advance = raise it; p50/p99 are histogram bucket bounds; errors include timeouts, after which "
                "the statement went to the primary, and the calls refused while the store backs off or distrusts its floors "
                "after an error; > 10 ms = operations that took longer than 10 ms, the default timeout: an upper bound "
                "on the timeouts, as a reply can also be picked up late by a busy worker); "
                "Redis commands per statement from INFO commandstats: one round "
                "trip is a GET (get) or an EVALSHA (advance, an atomic max in Lua); the GET/SET/PEXPIRE the script "
                "runs inside Redis are counted there too):",
            "",
            "| Scenario | Target | Statements | reads / writes | store ops/stmt | get/stmt | advance/stmt "
            "| get ÷ reads | advance ÷ writes | get ms mean / p50 / p99 | advance ms mean / p50 / p99 "
            "| store errors | > 10 ms | Redis cmds/stmt |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|", *rows]


def store_latency_markdown(res: dict) -> list[str]:
    lines = ["", f"### {STORE_LATENCY}", ""]
    if res.get("skipped"):
        return lines + [f"Skipped: {res['skipped']}"]
    if res.get("error"):
        return lines + [f"Failed: {res['error']}"]
    lines += [
        "One psycopg connection per variant, loopback, autocommit, each naming its own shared session "
        "(`SET causeway.session = 'bench-…'`, so its floor lives in the store); memory = causeway-replicas, "
        "redis = causeway-redis (same config but the store). write-read: UPDATE one random row (timed end to "
        "end), then SELECT it (timed; must see the write); read-only: SELECT, no write on that session; "
        "write-only: UPDATE (to attribute store operations). Variants run in blocks of 100 in rotating order; "
        f"{res['elapsed_s']:.1f} s" + (" (stopped at the deadline)" if res.get("stopped_at_deadline") else "")
        + ". `older` = reads that missed their own write.",
        "",
        "| Variant | Iterations | write p50 / p99 / mean ms | read p50 / p99 / mean ms | older "
        "| store get / advance per iteration | get ms mean / p99 | advance ms mean / p99 | store errors "
        "| reads → replicas | fallbacks |",
        "|---|---:|---|---|---:|---|---|---|---|---:|---|",
    ]

    def trio(d):
        return "–" if not d else f"{d['p50']:.3f} / {d['p99']:.3f} / {d['mean']:.3f}"

    for v in res["variants"]:
        ops, r = v.get("store_ops"), v.get("routing")
        if ops:
            per = f"{ops['get']['per_iteration']:.2f} / {ops['advance']['per_iteration']:.2f}"
            g = (f"{ops['get']['mean_ms']:.3f} / {ops['get']['p99']}" if ops["get"]["count"] else "–")
            a = (f"{ops['advance']['mean_ms']:.3f} / {ops['advance']['p99']}" if ops["advance"]["count"] else "–")
            errors = ", ".join(f"{op} {ops[op]['errors']:,}" for op in ("get", "advance") if ops[op]["errors"]) or "0"
        else:
            per = g = a = errors = "–"
        if r:
            sel = r["reads"]
            to_replicas = f"{r['replica'] / sel:.1%}" if sel else "–"
            fallbacks = ", ".join(f"{k} {n:,}" for k, n in sorted(r["fallbacks"].items())) or "0"
        else:
            to_replicas, fallbacks = "–", "–"
        lines.append(f"| {v['key']} | {v['iterations']:,} | {trio(v.get('write_ms'))} | {trio(v.get('read_ms'))} "
                     f"| {v['older_reads']:,} | {per} | {g} | {a} | {errors} | {to_replicas} | {fallbacks} |")
    summary = res.get("summary", {})
    if summary.get("added_ms"):
        lines += ["", "Added latency, redis − memory (ms):", "",
                  "| Statement | p50 | p99 | mean | memory p50 / p99 | redis p50 / p99 |",
                  "|---|---:|---:|---:|---|---|"]
        for label, d in summary["added_ms"].items():
            lines.append(f"| {label} | {d['p50']:+.3f} | {d['p99']:+.3f} | {d['mean']:+.3f} "
                         f"| {d['memory']['p50']:.3f} / {d['memory']['p99']:.3f} "
                         f"| {d['redis']['p50']:.3f} / {d['redis']['p99']:.3f} |")
    if summary.get("ops_per_statement"):
        lines += ["", "Store operations per statement (per write = write-only; per read after own write = "
                      "write-read − write-only):", "",
                  "| Store | Statement | get | advance | total |", "|---|---|---:|---:|---:|"]
        for store, entry in summary["ops_per_statement"].items():
            for label, d in entry.items():
                lines.append(f"| {store} | {label} | {d['get']:.2f} | {d['advance']:.2f} | {d['total']:.2f} |")
    return lines


def fresh_read_markdown(fresh: dict) -> list[str]:
    lines = ["", f"### {FRESH_READ}", ""]
    if fresh.get("skipped"):
        return lines + [f"Skipped: {fresh['skipped']}"]
    if fresh.get("error"):
        return lines + [f"Failed: {fresh['error']}"]
    lines += [
        f"Own connection(s) per variant, loopback, autocommit; UPDATE one random row then SELECT it; only the SELECT is "
        f"timed. Variants run in blocks of 100 in rotating order; {fresh['elapsed_s']:.1f} s"
        + (" (stopped at the deadline)" if fresh.get("stopped_at_deadline") else "") + ". "
        "`older` = SELECTs that returned a balance older than the UPDATE's RETURNING.",
        "",
        "| Variant | SELECTs | p50 ms | p90 ms | p99 ms | max ms | UPDATE p50 ms | older | SELECTs → replicas "
        "| waited | fallbacks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    by_key = {}
    for v in fresh["variants"]:
        by_key[v["key"]] = v
        sel, r = v["select_ms"], v.get("routing")
        if r:
            reads = r["reads"]
            to_replicas = f"{r['replica'] / reads:.1%}" if reads else "–"
            waited = (f"{r['waits']:,} (mean {1000 * r['wait_s'] / r['waits']:.2f} ms)" if r["waits"] else "0")
            fallbacks = ", ".join(f"{k} {n:,}" for k, n in sorted(r["fallbacks"].items())) or "0"
        else:
            to_replicas, waited, fallbacks = "(primary)" if v["key"].startswith("direct") else "–", "", ""
        lines.append(f"| {v['key']}: {v['title']} | {v['iterations']:,} | {fmt(sel['p50'], '.3f')} "
                     f"| {fmt(sel['p90'], '.3f')} | {fmt(sel['p99'], '.3f')} | {fmt(sel['max'], '.3f')} "
                     f"| {fmt(v['update_ms']['p50'], '.3f')} | {v['older_reads']:,} | {to_replicas} | {waited} "
                     f"| {fallbacks} |")
    fresh_v = by_key.get("replicas-own-write")
    if fresh_v:
        lines.append("")
        for key, what in (("replicas-eventual", "the same pattern with consistency=eventual"),
                          ("replicas-other-conn", "a read on a connection that never writes"),
                          ("causeway-own-write", "causeway without replicas (primary)"),
                          ("direct-own-write", "the primary directly")):
            other = by_key.get(key)
            if not other:
                continue
            d50 = fresh_v["select_ms"]["p50"] - other["select_ms"]["p50"]
            d99 = fresh_v["select_ms"]["p99"] - other["select_ms"]["p99"]
            lines.append(f"- read that needs a fresh replica vs {what}: p50 {d50:+.3f} ms, p99 {d99:+.3f} ms")
    return lines


def version_of(argv: list[str]) -> str:
    try:
        out = run(argv, timeout=10, check=False).stdout.strip().splitlines()
        return out[0] if out else "unknown"
    except BenchError:
        return "unknown"


def git_description() -> str:
    try:
        rev = run(["git", "-C", str(WORKSPACE), "rev-parse", "--short", "HEAD"], timeout=10).stdout.strip()
        dirty = run(["git", "-C", str(WORKSPACE), "status", "--porcelain"], timeout=30).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except BenchError:
        return "unknown"


def collect_meta(env: Env, started: dt.datetime) -> dict:
    a = env.args
    return {
        "started": started.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(), "machine": platform.machine(),
        "postgres": "PostgreSQL " + env.psql(env.pg_port, "SHOW server_version"),
        "pgbouncer": version_of([a.pgbouncer_bin, "--version"]) if "pgbouncer" in a.targets else "(not run)",
        "git": git_description() if set(CAUSEWAYS) & set(a.active_targets) else "(not run)",
        "replicas": replicas_description(env),
        "settings": {k: v for k, v in vars(a).items() if k not in ("scenario_list", "unknown_scenarios")},
    }


def replicas_description(env: Env) -> str:
    if not env.replicas:
        return "no replicas (causeway-replicas not run)"
    readers = " and ".join(t for t in REPLICA_TARGETS if t in env.ports) or "causeway-replicas"
    return (f"{len(env.replicas)} streaming replicas of the primary (pg_basebackup -R -X stream, hot_standby_feedback "
            f"= on, async, loopback) replay all targets' writes during every run; only {readers} read "
            f"from them ([consistency] default = {env.args.consistency or 'session'}, max_wait = 20ms; "
            "[lag] poll_interval = 50ms" + ("" if env.args.consistency else ": Causeway's defaults")
            + "); `causeway` lists no replicas")


def write_results(env: Env, stamp: str, report: str, data: dict) -> Path:
    out = Path(env.args.results_dir) / stamp
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(report)
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    copy_logs(env, out)
    return out


def copy_logs(env: Env, out: Path) -> None:
    names = ["postgres.log", "pgbouncer.log", "pgbouncer.ini", "redis.log", READ_MOSTLY_SCRIPT]
    names += [f"{c}.{ext}" for c in CAUSEWAYS for ext in ("log", "toml")]
    names += [f"{r}.log" for r in env.replicas]
    for name in names:
        src = env.tmp / name
        if src.exists():
            (out / "logs").mkdir(exist_ok=True)
            shutil.copy(src, out / "logs" / name)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def check_tools(args: argparse.Namespace) -> None:
    tools = ("pgbench", "psql", "pg_isready") + (() if args.pg_port else ("initdb", "postgres"))
    if args.replicas and any(t in args.active_targets for t in REPLICA_TARGETS):
        tools += ("pg_basebackup", "postgres")
    for tool in tools:
        if not os.access(Path(args.pg_bin) / tool, os.X_OK):
            raise BenchError(f"{tool} not found in {args.pg_bin} (pass --pg-bin)")
    if any(t in args.active_targets for t in USES_PGBOUNCER) and not os.access(args.pgbouncer_bin, os.X_OK):
        raise BenchError(f"pgbouncer not found at {args.pgbouncer_bin} (pass --pgbouncer-bin or drop it "
                         "from --targets)")
    if "causeway-redis" in args.active_targets and not os.access(args.redis_bin, os.X_OK):
        raise BenchError(f"redis-server not found at {args.redis_bin} (pass --redis-bin or --session-store memory)")


def estimate_minutes(args: argparse.Namespace) -> float:
    runs = args.rounds * sum(len(scenario_targets(args, s)) for s in args.scenario_list)
    seconds = runs * (args.duration + 1.5) + len(args.active_targets) * (args.warmup + 1)
    if args.fresh_read:
        seconds += min(args.fresh_deadline, args.fresh_iterations * 0.01) + 5
    if args.store_latency:
        seconds += min(args.store_deadline, args.store_iterations * 0.015) + 5
    return seconds / 60


def setup(env: Env) -> None:
    a = env.args
    if a.pg_port is None:
        start_postgres(env)
    elif not env.can_query(env.pg_port):
        raise BenchError(f"cannot query the primary on {LOOPBACK}:{env.pg_port} as {a.pg_user}")
    ensure_pgbench_tables(env)
    env.accounts = count_accounts(env)
    if any(s.script == READ_MOSTLY_SCRIPT for s in a.scenario_list):
        write_read_mostly_script(env)
    if env.wants_replicas:
        ensure_monitor_database(env)
        start_replicas(env)
    if any(t in a.active_targets for t in USES_PGBOUNCER):
        start_pgbouncer(env)
    if "causeway-redis" in a.active_targets and env.replicas:
        start_redis(env)
    for name in CAUSEWAYS:
        if name in a.active_targets and (name == "causeway" or env.replicas):
            start_causeway(env, name)


def fresh_read_latency(env: Env) -> dict:
    """bench/fresh_read.py (psycopg) against causeway-replicas, causeway and direct."""
    a = env.args
    argv = [sys.executable, str(HERE / "fresh_read.py"), "--host", LOOPBACK, "--user", a.pg_user,
            "--db", a.pg_db, "--accounts", str(env.accounts), "--iterations", str(a.fresh_iterations),
            "--deadline", str(a.fresh_deadline)]
    if "causeway-replicas" in env.ports:
        argv += ["--replicas-port", str(env.ports["causeway-replicas"]),
                 "--replicas-admin", env.admin["causeway-replicas"]]
    if "causeway" in env.ports:
        argv += ["--causeway-port", str(env.ports["causeway"]), "--causeway-admin", env.admin["causeway"]]
    if "direct" in a.targets:
        argv += ["--direct-port", str(env.pg_port)]
    if "causeway-replicas" not in env.ports:
        log(f"note: {FRESH_READ} without causeway-replicas measures only the primary paths")
    check_primary(env)
    wait_replicas_caught_up(env)
    wait_replicas_in_pool(env, "causeway-replicas")
    timeout = a.fresh_deadline + 120
    log(f"{FRESH_READ}: up to {a.fresh_iterations} iterations per variant, at most ~{a.fresh_deadline:.0f}s")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env.client_env(),
                              start_new_session=True, preexec_fn=child_setup(signal.SIGKILL))
    except subprocess.TimeoutExpired:
        return {"error": f"fresh_read.py timed out after {timeout:.0f}s (killed)"}
    if proc.returncode == 3:
        message = proc.stderr.strip() or "psycopg is not installed"
        log(f"{FRESH_READ} skipped: {message}")
        return {"skipped": message}
    if proc.returncode != 0:
        return {"error": f"fresh_read.py exited with {proc.returncode}: "
                         f"{(proc.stderr.strip().splitlines() or ['no output'])[-1][:300]}"}
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        return {"error": f"fresh_read.py printed no JSON ({err})"}


def store_latency(env: Env) -> dict:
    """bench/store_latency.py (psycopg) against causeway-replicas (memory) and causeway-redis."""
    a = env.args
    if not all(t in env.ports for t in REPLICA_TARGETS):
        return {"error": "needs both causeway-replicas and causeway-redis running"}
    argv = [sys.executable, str(HERE / "store_latency.py"), "--host", LOOPBACK, "--user", a.pg_user,
            "--db", a.pg_db, "--accounts", str(env.accounts), "--iterations", str(a.store_iterations),
            "--deadline", str(a.store_deadline),
            "--memory-port", str(env.ports["causeway-replicas"]), "--memory-admin", env.admin["causeway-replicas"],
            "--redis-port", str(env.ports["causeway-redis"]), "--redis-admin", env.admin["causeway-redis"],
            "--redis-server", f"{LOOPBACK}:{env.redis_port}"]
    check_primary(env)
    wait_replicas_caught_up(env)
    for target in REPLICA_TARGETS:
        wait_replicas_in_pool(env, target)
    timeout = a.store_deadline + 120
    log(f"{STORE_LATENCY}: up to {a.store_iterations} iterations per variant, at most ~{a.store_deadline:.0f}s")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env.client_env(),
                              start_new_session=True, preexec_fn=child_setup(signal.SIGKILL))
    except subprocess.TimeoutExpired:
        return {"error": f"store_latency.py timed out after {timeout:.0f}s (killed)"}
    if proc.returncode == 3:
        message = proc.stderr.strip() or "psycopg is not installed"
        log(f"{STORE_LATENCY} skipped: {message}")
        return {"skipped": message}
    if proc.returncode != 0:
        return {"error": f"store_latency.py exited with {proc.returncode}: "
                         f"{(proc.stderr.strip().splitlines() or ['no output'])[-1][:300]}"}
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        return {"error": f"store_latency.py printed no JSON ({err})"}


def store_episodes(env: Env) -> int | None:
    """How often causeway-redis's store came back after errors (its log line "session store is
    back"): each time it distrusts stored floors for the grace period and reads go to the primary."""
    service = env.services.get("causeway-redis")
    if service is None:
        return None
    try:
        return service.log_path.read_text(errors="replace").count("session store is back")
    except OSError:
        return None


def benchmark(env: Env, started: dt.datetime) -> None:
    setup(env)
    log(f"measuring: about {estimate_minutes(env.args):.1f} minutes")
    if env.args.scenario_list:
        warm_up(env)
    results = run_rounds(env)
    fresh = fresh_read_latency(env) if env.args.fresh_read else None
    if fresh and fresh.get("error"):
        log(f"{FRESH_READ} failed: {fresh['error']}")
    stores = store_latency(env) if env.args.store_latency else None
    if stores and stores.get("error"):
        log(f"{STORE_LATENCY} failed: {stores['error']}")
    summary = summarize(results, env.args)
    resources = resource_totals(env, results)
    meta = collect_meta(env, started)
    meta["store_episodes"] = store_episodes(env)
    report = markdown(meta, summary, resources, fresh, env.args, stores)
    data = {"meta": meta, "summary": summary, "resources": resources, "fresh_read_latency": fresh,
            "store_latency": stores, "runs": [asdict(r) for r in results]}
    out = write_results(env, started.strftime("%Y%m%d-%H%M%S"), report, data)
    print(report, end="", flush=True)
    log(f"results written to {out}/results.md and results.json")


def install_signal_handlers() -> None:
    def handler(signum, _frame):
        raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    env = None
    try:
        check_tools(args)
        if set(CAUSEWAYS) & set(args.active_targets) and not args.no_build:
            build_causeway(args)
        needs_replicas = args.replicas > 0 and any(t in args.active_targets for t in NEEDS_REPLICAS)
        user = None if args.pg_port and not needs_replicas else server_user()
        tmp = make_tmp(user)
        password = os.environ.get("PGPASSWORD") if args.pg_port else (
            BENCH_PASSWORD if args.auth == "scram-sha-256" else None)
        env = Env(args, tmp, user, args.pg_port or free_port(), password)
        log(f"temp dir {tmp}")
        benchmark(env, dt.datetime.now())
        return 0
    except BenchError as err:
        log(f"error: {err}")
        return 1
    except Interrupted as err:
        log(f"interrupted by {err}; cleaning up")
        return 128 + err.signum
    finally:
        ignore_signals()
        if env is not None:
            stop_all(env)
            if args.keep_tmp:
                log(f"kept {env.tmp}")
            else:
                shutil.rmtree(env.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
