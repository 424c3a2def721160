#!/usr/bin/env python3
"""Memory per idle client: VmRSS growth of Causeway (and PgBouncer) per logged-in idle client.

This is a benchmark, not a test: it measures, it does not assert (issue 11).

It starts a throw-away PostgreSQL primary (bench.py's setup; or --pg-port for a running one),
then, one proxy at a time: Causeway (primary only, trust auth, transaction pooling), with
--replicas 2 also Causeway with two streaming replicas in [[replicas]], and with
--pgbouncer-bin PgBouncer (transaction pooling, trust). For each proxy it opens a first
client and runs `SELECT 1` (pools, caches and runtime warmed up), reads the proxy's VmRSS as
the baseline, then opens clients in steps (default 1,000 / 5,000 / 10,000 in total) over
loopback: raw protocol on non-blocking sockets in this one process (StartupMessage, read
until ReadyForQuery, then `SELECT 1` on each unless --no-select, read until ReadyForQuery),
and leaves them idle. At each step, once every client is idle and the RSS has settled, it
reports (VmRSS - baseline) / clients in KiB. Then it closes all the clients and stops the
proxy before the next one.

Bounded: each step has a deadline (--step-timeout), at most --max-clients in total; loopback
only; every child process is stopped (also on SIGINT/SIGTERM/SIGHUP) and the temp dir removed.

  python3 bench/idle_clients.py                          # Causeway only, own PostgreSQL
  python3 bench/idle_clients.py --pgbouncer-bin /work/pgbouncer-1.25/bin/pgbouncer
  python3 bench/idle_clients.py --steps 1000,5000 --replicas 2 --no-select
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import selectors
import shutil
import signal
import socket
import struct
import sys
import time
from pathlib import Path

import bench as b

DEFAULT_CAUSEWAY = str(b.WORKSPACE / "target/release/causeway")
IN_FLIGHT = 200  # connections being set up at once (below the listeners' backlogs)
SELECT_1 = b"Q" + struct.pack("!I", 4 + 9) + b"SELECT 1\x00"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/idle_clients.py",
                                description="VmRSS per idle logged-in client: Causeway vs PgBouncer.")
    p.add_argument("--causeway-bin", default=DEFAULT_CAUSEWAY, help=f"default {DEFAULT_CAUSEWAY}")
    p.add_argument("--pgbouncer-bin", default=None, help="also measure PgBouncer (path to its binary)")
    p.add_argument("--no-causeway", action="store_true", help="measure PgBouncer only")
    p.add_argument("--steps", default="1000,5000,10000", help="total clients at each step")
    p.add_argument("--max-clients", type=int, default=20000, help="refuse larger steps (default 20000)")
    p.add_argument("--no-select", action="store_true", help="do not run SELECT 1 on each client")
    p.add_argument("--replicas", type=int, default=0,
                   help="also measure Causeway with this many streaming replicas (default 0: not)")
    p.add_argument("--causeway-workers", type=int, default=0, help="[proxy] workers (default 0: per CPU)")
    p.add_argument("--pool-size", type=int, default=4, help="server connections per pool (default 4)")
    p.add_argument("--step-timeout", type=float, default=120, help="seconds per step (default 120)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds to let the RSS settle (default 1)")
    p.add_argument("--pg-port", type=int, default=None, help="use a running primary on 127.0.0.1:PORT")
    p.add_argument("--pg-user", default="postgres")
    p.add_argument("--pg-db", default="postgres")
    p.add_argument("--pg-bin", default=b.DEFAULT_PG_BIN)
    p.add_argument("--keep-tmp", action="store_true")
    args = p.parse_args(argv)
    args.step_list = sorted(int(s) for s in args.steps.split(",") if s.strip())
    if not args.step_list or args.step_list[0] < 1 or args.step_list[-1] > args.max_clients:
        p.error(f"--steps must be between 1 and --max-clients ({args.max_clients})")
    # What bench.py's helpers read from their arguments.
    args.auth, args.consistency, args.session_key, args.store_timeout = "trust", None, None, None
    return args


def raise_fd_limit(clients: int) -> None:
    """This process holds every client socket; the proxies (children) inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = clients + 1024
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            raise b.BenchError(f"need {want} file descriptors, hard limit is {hard} (raise ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# --------------------------------------------------------------------------------------
# Clients: a state machine per socket, all driven by one selector
# --------------------------------------------------------------------------------------


class Client:
    def __init__(self, port: int, user: str, db: str, select: bool):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        err = self.sock.connect_ex((b.LOOPBACK, port))
        if err not in (0, errno.EINPROGRESS):
            self.sock.close()
            raise b.BenchError(f"connect: {os.strerror(err)}")
        params = b"user\x00" + user.encode() + b"\x00database\x00" + db.encode() + b"\x00\x00"
        self.out = struct.pack("!II", 8 + len(params), 196608) + params
        self.inbuf = b""
        self.readies = 0  # ReadyForQuery messages seen
        self.wanted = 2 if select else 1
        self.error: str | None = None

    @property
    def done(self) -> bool:
        return self.readies >= self.wanted or self.error is not None

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as err:
            self.error = str(err)
            return
        if not data:
            self.error = "connection closed by the proxy"
            return
        self.inbuf += data
        while len(self.inbuf) >= 5:
            tag, length = self.inbuf[0:1], struct.unpack("!I", self.inbuf[1:5])[0]
            if len(self.inbuf) < 1 + length:
                break
            body, self.inbuf = self.inbuf[5:1 + length], self.inbuf[1 + length:]
            if tag == b"E":
                self.error = body.replace(b"\x00", b" ").decode(errors="replace")
            elif tag == b"Z":
                self.readies += 1
                if self.readies == 1 and self.wanted == 2:
                    self.out += SELECT_1

    def on_writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError as err:
            self.error = str(err)
            return
        self.out = self.out[sent:]


def open_clients(port: int, count: int, args: argparse.Namespace, deadline: float) -> list[Client]:
    """Open `count` clients, at most IN_FLIGHT at a time, each logged in (and SELECT 1 run)."""
    sel = selectors.DefaultSelector()
    ready: list[Client] = []
    pending: set[Client] = set()
    try:
        while len(ready) < count:
            if time.monotonic() > deadline:
                raise b.BenchError(f"timed out with {len(ready)} of {count} clients ready")
            while len(pending) < IN_FLIGHT and len(ready) + len(pending) < count:
                c = Client(port, args.pg_user, args.pg_db, not args.no_select)
                sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
                pending.add(c)
            for key, events in sel.select(timeout=1.0):
                c = key.data
                if events & selectors.EVENT_WRITE and c.out:
                    c.on_writable()
                if events & selectors.EVENT_READ:
                    c.on_readable()
                if c.done:
                    if c.error:
                        raise b.BenchError(f"client {len(ready) + 1}: {c.error}")
                    sel.unregister(c.sock)
                    pending.discard(c)
                    ready.append(c)
                elif not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
                else:
                    sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    except BaseException:
        close_clients(ready + list(pending))
        raise
    finally:
        sel.close()
    return ready


def close_clients(clients: list[Client]) -> None:
    for c in clients:
        try:
            c.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------
# Proxies
# --------------------------------------------------------------------------------------


def start_causeway(env: b.Env, name: str, with_replicas: bool) -> int:
    binary = Path(env.args.causeway_bin)
    if not binary.is_file():
        raise b.BenchError(f"Causeway binary not found at {binary}; pass --causeway-bin")
    port, admin_port = b.free_port(), b.free_port()
    config = b.causeway_config(env, port, admin_port, with_replicas)
    limit = env.args.step_list[-1] + 100
    config = config.replace("[proxy]\n", f"[proxy]\nmax_client_connections = {limit}\n", 1)
    path = env.tmp / f"{name}.toml"
    path.write_text(config)
    service = b.Service(name, [str(binary), "--config", str(path)], env.tmp / f"{name}.log",
                        env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"), NO_COLOR="1"))
    env.services[name] = service
    env.ports[name] = port
    service.start()
    b.wait_until(f"{name} to serve queries", lambda: env.can_query(port), service, timeout=30)
    return service.pid


def start_pgbouncer(env: b.Env) -> int:
    port = b.free_port()
    userlist = env.tmp / "pgbouncer-userlist.txt"
    userlist.write_text(f'"{env.args.pg_user}" ""\n')
    ini = env.tmp / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"{env.args.pg_db} = host={b.LOOPBACK} port={env.pg_port} dbname={env.args.pg_db}\n"
        "[pgbouncer]\n"
        f"listen_addr = {b.LOOPBACK}\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {userlist}\npool_mode = transaction\n"
        f"default_pool_size = {env.args.pool_size}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
        f"max_client_conn = {env.args.step_list[-1] + 100}\nlisten_backlog = 1024\n"
        "log_connections = 0\nlog_disconnections = 0\n"
    )
    service = b.Service("pgbouncer", [env.args.pgbouncer_bin, str(ini)], env.tmp / "pgbouncer.log",
                        user=env.user, cwd=str(env.tmp), stop_signal=signal.SIGINT)
    env.services["pgbouncer"] = service
    env.ports["pgbouncer"] = port
    service.start()
    b.wait_until("PgBouncer to serve queries", lambda: env.can_query(port), service, timeout=30)
    return service.pid


def settled_rss(pid: int, settle: float) -> int:
    """VmRSS in KiB once two readings `settle` seconds apart agree within 1 %."""
    last = b.proc_memory_kib(pid)["VmRSS"]
    for _ in range(10):
        time.sleep(settle)
        now = b.proc_memory_kib(pid)["VmRSS"]
        if abs(now - last) <= last / 100:
            return now
        last = now
    return last


def measure(env: b.Env, name: str, pid: int) -> list[dict]:
    """Baseline after one warmed-up client, then each step's growth per client."""
    args, port = env.args, env.ports[name]
    clients: list[Client] = []
    rows = []
    try:
        clients += open_clients(port, 1, args, time.monotonic() + args.step_timeout)
        base = settled_rss(pid, args.settle)
        b.log(f"{name}: baseline VmRSS {base} KiB with 1 client")
        for step in args.step_list:
            deadline = time.monotonic() + args.step_timeout
            clients += open_clients(port, step - len(clients), args, deadline)
            rss = settled_rss(pid, args.settle)
            added = len(clients) - 1
            per = (rss - base) / added if added else 0.0
            b.log(f"{name}: {len(clients)} idle clients, VmRSS {rss} KiB, {per:.2f} KiB per client")
            rows.append({"proxy": name, "clients": len(clients), "rss_kib": rss, "base_kib": base,
                         "kib_per_client": per})
    finally:
        close_clients(clients)
    return rows


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    proxies = list(dict.fromkeys(r["proxy"] for r in rows))
    head = "| idle clients | " + " | ".join(f"{p} KiB/client" for p in proxies) + " |"
    lines = [f"VmRSS growth per idle client (SELECT 1 first: {not args.no_select})", "", head,
             "|---:|" + "---:|" * len(proxies)]
    for step in args.step_list:
        cells = []
        for p in proxies:
            r = next((r for r in rows if r["proxy"] == p and r["clients"] == step), None)
            cells.append(f"{r['kib_per_client']:.2f}" if r else "–")
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_all(env: b.Env) -> list[dict]:
    args = env.args
    targets = []
    if not args.no_causeway:
        targets.append(("causeway", lambda: start_causeway(env, "causeway", False)))
        if args.replicas:
            targets.append(("causeway-replicas", lambda: start_causeway(env, "causeway-replicas", True)))
    if args.pgbouncer_bin:
        targets.append(("pgbouncer", lambda: start_pgbouncer(env)))
    rows = []
    for name, start in targets:
        pid = start()
        try:
            rows += measure(env, name, pid)
        finally:
            env.services[name].stop()
    return rows


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    b.install_signal_handlers()
    env = None
    try:
        raise_fd_limit(args.step_list[-1])
        user = None if args.pg_port and not args.replicas else b.server_user()
        env = b.Env(args, b.make_tmp(user), user, args.pg_port or b.free_port(), None)
        if args.pg_port is None:
            b.start_postgres(env)
        if args.replicas:
            b.ensure_monitor_database(env)
            b.start_replicas(env)
        print(markdown(run_all(env), args))
        return 0
    except b.BenchError as err:
        b.log(f"error: {err}")
        return 1
    except b.Interrupted as err:
        b.log(f"interrupted by {err}; cleaning up")
        return 128 + err.signum
    finally:
        b.ignore_signals()
        if env is not None:
            b.stop_all(env)
            if args.keep_tmp:
                b.log(f"kept {env.tmp}")
            else:
                shutil.rmtree(env.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
