#!/usr/bin/env python3
"""Causeway benchmark driver: pgbench through Causeway vs PgBouncer vs PostgreSQL directly.

This is a benchmark, not a test: it measures, it does not assert. Entry point: bench/run.sh.

For each round, each scenario and each target (the target order rotates every round, so no
target always runs first), it resets the pgbench tables as pgbench itself would (VACUUM the
small tables, TRUNCATE history — done directly on the primary, so the proxies never see it)
and runs one bounded pgbench (`-c 16 -j 2 -T <seconds>`, under a hard timeout) over loopback
TCP. Targets:

  direct     the PostgreSQL primary
  causeway   Causeway, pool_mode = "transaction", pool_size = --pool-size
  pgbouncer  PgBouncer, pool_mode = transaction, default_pool_size = --pool-size

Client authentication is the same everywhere: trust on loopback (default) or, with
--auth scram-sha-256, SCRAM for clients of all three targets (and for the proxies' logins).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

WORKSPACE = Path(__file__).resolve().parent.parent
DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
DEFAULT_PGBOUNCER = "/usr/sbin/pgbouncer"
LOOPBACK = "127.0.0.1"
BENCH_PASSWORD = "bench-secret"  # only for the throw-away cluster with --auth scram-sha-256
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1
ALL_TARGETS = ("direct", "causeway", "pgbouncer")
PROXIES = ("causeway", "pgbouncer")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    pgbench_args: tuple[str, ...]


SCENARIOS = (
    Scenario("select-simple", "select-only, simple protocol", ("-S", "-M", "simple")),
    Scenario("select-prepared", "select-only, prepared statements", ("-S", "-M", "prepared")),
    Scenario("tpcb", "TPC-B-like (default script), simple", ("-M", "simple")),
    Scenario("select-connect", "select-only, new connection per txn (-C)", ("-S", "-C", "-M", "simple")),
)


class BenchError(Exception):
    """A failure that stops the benchmark, with a message for the user."""


class Interrupted(BaseException):
    """Raised from a signal handler so `finally` blocks clean up."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
    p.add_argument("--targets", default=",".join(ALL_TARGETS),
                   help="comma-separated subset of direct,causeway,pgbouncer (default: all)")
    p.add_argument("--scenarios", default=",".join(s.key for s in SCENARIOS),
                   help="comma-separated subset of " + ",".join(s.key for s in SCENARIOS))
    p.add_argument("-T", "--duration", type=int, default=None, help="seconds per pgbench run (default 10)")
    p.add_argument("--rounds", type=int, default=None, help="rounds over all targets (default 3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="seconds of unrecorded select-only load per target before round 1 (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: -T 3, 1 round, 1 s warm-up")
    p.add_argument("-c", "--clients", type=int, default=16, help="pgbench clients (default 16)")
    p.add_argument("-j", "--threads", type=int, default=2, help="pgbench threads (default 2)")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i scale factor (default 10)")
    p.add_argument("--pool-size", type=int, default=16,
                   help="Causeway pool_size and PgBouncer default_pool_size (default 16)")
    p.add_argument("--causeway-workers", type=int, default=0,
                   help="Causeway [proxy] workers; 0 = one per CPU (default 0)")
    p.add_argument("--auth", choices=("trust", "scram-sha-256"), default="trust",
                   help="client auth for all targets (default trust, loopback only)")
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
    quick = {"duration": 3, "rounds": 1, "warmup": 1}
    full = {"duration": 10, "rounds": 3, "warmup": 2}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.scenario_list = [s for s in SCENARIOS if s.key in wanted]
    args.unknown_scenarios = [w for w in wanted if w not in {s.key for s in SCENARIOS}]


def validate_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    bad = [t for t in args.targets if t not in ALL_TARGETS]
    if bad or not args.targets:
        p.error(f"--targets: unknown target(s) {bad}; choose from {','.join(ALL_TARGETS)}")
    if len(set(args.targets)) != len(args.targets):
        p.error("--targets: a target is listed twice")
    if args.unknown_scenarios or not args.scenario_list:
        p.error(f"--scenarios: unknown scenario(s) {args.unknown_scenarios}; "
                f"choose from {','.join(s.key for s in SCENARIOS)}")
    for name in ("duration", "rounds", "clients", "threads", "scale", "pool_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
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

    def pg_tool(self, name: str) -> str:
        return str(Path(self.args.pg_bin) / name)

    def client_env(self) -> dict:
        env = dict(os.environ, PGCONNECT_TIMEOUT="10")
        env.pop("PGSERVICE", None)
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


def start_postgres(env: Env) -> None:
    """initdb + postgres in env.tmp, loopback only, fsync off, trust or SCRAM for TCP."""
    data = env.tmp / "pgdata"
    run([env.pg_tool("initdb"), "-D", str(data), "-U", env.args.pg_user, "--auth=trust",
         "--no-sync", "-E", "UTF8", "--locale=C"], timeout=120, user=env.user, cwd=str(env.tmp))
    host_method = "scram-sha-256" if env.args.auth == "scram-sha-256" else "trust"
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        f"host all all 127.0.0.1/32 {host_method}\n"
    )
    settings = {
        "port": env.pg_port, "listen_addresses": LOOPBACK, "unix_socket_directories": str(env.tmp),
        "max_connections": 200, "fsync": "off", "full_page_writes": "off",
        "shared_buffers": "128MB", "logging_collector": "off",
    }
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
        "[pgbouncer]\n"
        f"listen_addr = {LOOPBACK}\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = {auth_type}\nauth_file = {userlist}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {env.args.pool_size}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
        "max_client_conn = 1000\n"
        "log_connections = 0\nlog_disconnections = 0\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    service = Service("pgbouncer", [env.args.pgbouncer_bin, str(ini)], env.tmp / "pgbouncer.log",
                      user=env.user, cwd=str(env.tmp), stop_signal=signal.SIGINT)
    env.services["pgbouncer"] = service
    env.ports["pgbouncer"] = port
    service.start()
    wait_until("PgBouncer to serve queries", lambda: env.can_query(port), service, timeout=30)


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


def causeway_config(env: Env, port: int, admin_port: int) -> str:
    a = env.args
    user = f'[[users]]\nname = "{a.pg_user}"\n'
    if env.password:
        user += f'password = "{env.password}"\n'
    return (
        "# Written by bench/bench.py\n"
        "[proxy]\n"
        f'listen = "{LOOPBACK}:{port}"\nadmin_listen = "{LOOPBACK}:{admin_port}"\n'
        f'pool_mode = "transaction"\npool_size = {a.pool_size}\nworkers = {a.causeway_workers}\n'
        "[auth]\n"
        f'method = "{a.auth}"\n'
        "[primary]\n"
        f'host = "{LOOPBACK}"\nport = {env.pg_port}\n'
        f"{user}"
    )


def start_causeway(env: Env) -> None:
    binary = Path(env.args.causeway_bin)
    if not binary.is_file():
        raise BenchError(f"Causeway binary not found at {binary}; build it or pass --causeway-bin")
    port, admin_port = free_port(), free_port()
    config = env.tmp / "causeway.toml"
    config.write_text(causeway_config(env, port, admin_port))
    run([str(binary), "--check-config", str(config)], timeout=30)
    service = Service("causeway", [str(binary), "--config", str(config)], env.tmp / "causeway.log",
                      env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1"))
    env.services["causeway"] = service
    env.ports["causeway"] = port
    service.start()
    wait_until("Causeway to serve queries", lambda: env.can_query(port), service, timeout=30)


def stop_all(env: Env) -> None:
    # Proxies first, so they do not see the primary disappear under them.
    for name in ("causeway", "pgbouncer", "postgres"):
        service = env.services.get(name)
        if service is None:
            continue
        try:
            service.stop(timeout=30 if name == "postgres" else 15)
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


def target_port(env: Env, target: str) -> int:
    return env.pg_port if target == "direct" else env.ports[target]


def pgbench_argv(env: Env, target: str, scenario_args: tuple[str, ...], seconds: int) -> list[str]:
    a = env.args
    return [env.pg_tool("pgbench"), "-n", "-c", str(a.clients), "-j", str(a.threads), "-T", str(seconds),
            *scenario_args, "-h", LOOPBACK, "-p", str(target_port(env, target)), "-U", a.pg_user, a.pg_db]


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
    argv = pgbench_argv(env, target, scenario.pgbench_args, seconds)
    result = RunResult(rnd, scenario.key, target, ok=False, command=" ".join(argv))
    service = env.services.get(target)
    if service is not None and not service.alive():
        result.error = f"{target} {service.exit_description()}"
        return result
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


def describe(result: RunResult) -> str:
    if not result.ok:
        return f"FAILED: {result.error}"
    cpu = ""
    if result.proxy_cpu_s is not None:
        cpu = f", proxy CPU {1e6 * result.proxy_cpu_s / result.transactions:.1f} us/txn"
    return f"{result.tps:,.0f} tps, {result.latency_ms:.3f} ms{cpu}"


def check_primary(env: Env) -> None:
    service = env.services.get("postgres")
    if service is not None and not service.alive():
        raise BenchError(f"PostgreSQL {service.exit_description()}; log {service.log_path}:\n{service.log_tail()}")


def warm_up(env: Env) -> None:
    if env.args.warmup <= 0:
        return
    for target in env.args.targets:
        log(f"warm-up {target}: {env.args.warmup}s select-only")
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
            for target in rotated(a.targets, rnd - 1):
                check_primary(env)
                reset_tables(env)
                log(f"round {rnd}/{a.rounds} {scenario.key:<16} {target:<9} ...")
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
        for target in args.targets:
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
    if tps("causeway") and tps("pgbouncer"):
        rows["causeway"]["vs_pgbouncer"] = tps("causeway") / tps("pgbouncer")


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


def markdown(meta: dict, summary: dict, resources: dict, args: argparse.Namespace) -> str:
    lines = [
        f"## Causeway benchmark — {meta['started']}",
        "",
        f"- host: {meta['cpus']} CPUs ({meta['machine']}), {meta['postgres']}, {meta['pgbouncer']}, "
        f"causeway {meta['git']}",
        f"- pgbench: `-c {args.clients} -j {args.threads} -T {args.duration} -n`, scale {args.scale}, "
        f"{args.rounds} round(s), target order rotated each round; TPS is the median over rounds, "
        f"latency the mean of pgbench's average",
        f"- pools: transaction mode, size {args.pool_size} (Causeway pool_size, PgBouncer default_pool_size); "
        f"Causeway workers = {args.causeway_workers} (0 = one per CPU); client auth: {args.auth} on loopback "
        f"for every target",
        "- proxy CPU/txn = utime+stime delta of the proxy process over the measured runs ÷ transactions",
        "",
        "| Scenario | Target | TPS (median) | TPS min–max | Latency avg (ms) | vs direct "
        "| Causeway / PgBouncer | Proxy CPU µs/txn | Runs OK |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for scenario in args.scenario_list:
        for target in args.targets:
            row = summary[scenario.key][target]
            if "tps_median" in row:
                cells = [fmt(row["tps_median"], ",.0f"), f"{row['tps_min']:,.0f}–{row['tps_max']:,.0f}",
                         fmt(row["latency_ms_mean"], ".3f"), fmt(row.get("vs_direct"), ".2f"),
                         fmt(row.get("vs_pgbouncer"), ".2f") if target == "causeway" else "",
                         fmt(row.get("proxy_cpu_us_per_txn"), ".1f") if target in PROXIES else ""]
            else:
                cells = ["FAILED", "", "", "", "", ""]
            lines.append(f"| {scenario.key} | {target} | " + " | ".join(cells)
                         + f" | {row['rounds_ok']}/{row['rounds']} |")
            for error in row["errors"]:
                notes.append(f"- {scenario.key} / {target}: {error}")
    if resources:
        lines += ["", "| Proxy | RSS at end (MiB) | Peak RSS (MiB) | CPU s (measured runs) | Transactions "
                      "| CPU µs/txn (all scenarios) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, r in resources.items():
            rss = fmt(r.get("vmrss_kib") and r["vmrss_kib"] / 1024, ".1f", "exited")
            hwm = fmt(r.get("vmhwm_kib") and r["vmhwm_kib"] / 1024, ".1f", "exited")
            lines.append(f"| {name} | {rss} | {hwm} | {r['measured_cpu_s']:.2f} | {r['transactions']:,} "
                         f"| {fmt(r['cpu_us_per_txn'], '.1f')} |")
    if notes:
        lines += ["", "Failed runs:", *notes]
    return "\n".join(lines) + "\n"


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
        "git": git_description() if "causeway" in a.targets else "(not run)",
        "settings": {k: v for k, v in vars(a).items() if k not in ("scenario_list", "unknown_scenarios")},
    }


def write_results(env: Env, stamp: str, report: str, data: dict) -> Path:
    out = Path(env.args.results_dir) / stamp
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(report)
    (out / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    copy_logs(env, out)
    return out


def copy_logs(env: Env, out: Path) -> None:
    for name in ("postgres.log", "pgbouncer.log", "causeway.log", "causeway.toml", "pgbouncer.ini"):
        src = env.tmp / name
        if src.exists():
            (out / "logs").mkdir(exist_ok=True)
            shutil.copy(src, out / "logs" / name)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def check_tools(args: argparse.Namespace) -> None:
    for tool in ("pgbench", "psql", "pg_isready") + (() if args.pg_port else ("initdb", "postgres")):
        if not os.access(Path(args.pg_bin) / tool, os.X_OK):
            raise BenchError(f"{tool} not found in {args.pg_bin} (pass --pg-bin)")
    if "pgbouncer" in args.targets and not os.access(args.pgbouncer_bin, os.X_OK):
        raise BenchError(f"pgbouncer not found at {args.pgbouncer_bin} (pass --pgbouncer-bin or drop it "
                         "from --targets)")


def estimate_minutes(args: argparse.Namespace) -> float:
    runs = args.rounds * len(args.scenario_list) * len(args.targets)
    return (runs * (args.duration + 1) + len(args.targets) * (args.warmup + 1)) / 60


def setup(env: Env) -> None:
    if env.args.pg_port is None:
        start_postgres(env)
    elif not env.can_query(env.pg_port):
        raise BenchError(f"cannot query the primary on {LOOPBACK}:{env.pg_port} as {env.args.pg_user}")
    ensure_pgbench_tables(env)
    if "pgbouncer" in env.args.targets:
        start_pgbouncer(env)
    if "causeway" in env.args.targets:
        start_causeway(env)


def benchmark(env: Env, started: dt.datetime) -> None:
    setup(env)
    log(f"measuring: about {estimate_minutes(env.args):.1f} minutes")
    warm_up(env)
    results = run_rounds(env)
    summary = summarize(results, env.args)
    resources = resource_totals(env, results)
    meta = collect_meta(env, started)
    report = markdown(meta, summary, resources, env.args)
    data = {"meta": meta, "summary": summary, "resources": resources, "runs": [asdict(r) for r in results]}
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
        if "causeway" in args.targets and not args.no_build:
            build_causeway(args)
        user = None if args.pg_port else server_user()
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
