#!/usr/bin/env bash
# Causeway CPU cost per transaction under callgrind (a benchmark tool, not a test: it measures,
# it does not assert). Counts the instructions (callgrind's Ir) Causeway executes for a fixed
# number of pgbench select-only transactions, for two or more Causeway binaries (e.g. a
# baseline and a candidate build), so a change's CPU cost is measured independently of machine
# noise: the counts are nearly identical from run to run, unlike TPS or CPU seconds.
#
#   bench/callgrind.sh /work/causeway-baseline target/release/causeway
#                                                  # -t 20000, -M simple,extended: ~1 min per binary
#   bench/callgrind.sh -t 2000 OLD NEW             # smoke run, ~20 s per binary
#   bench/callgrind.sh -M simple OLD NEW OLD NEW   # a binary twice: run-to-run spread (~0.3-0.4%)
#   bench/callgrind.sh --help                      # every option
# (plus ~5 s to set up PostgreSQL; timings on 2 shared cores: a measured pgbench of 20000
# transactions took ~15-20 s under callgrind.)
#
# What it does: starts a throw-away PostgreSQL 15 primary and two streaming replicas
# (initdb + pg_basebackup -R; as the `postgres` OS user when run as root) on free loopback ports
# in a temp dir, pgbench -i -s 1, and runs `pgbench -n -S -c 4 -j 1 -t N/4 -M <mode>` directly
# (`-b tpcb-like` with `--builtin tpcb-like`: TPC-B's write transactions instead)
# against the primary (a check, and a native reference). Then, for each binary in turn, it
# writes the config bench.py writes for its `causeway-replicas` target (both replicas, pool_mode
# transaction, pool_size 16, trust auth, `workers` 0 = default, every other setting default),
# starts Causeway under `valgrind --tool=callgrind`, waits until it answers queries and its
# monitor has both replicas in the read pool (causeway_replica_in_pool = 1), and per mode:
#   - an unmeasured warm-up pgbench (opens the pooled server connections),
#   - `callgrind_control -z` (zero the counters), the measured pgbench, `callgrind_control -d`
#     (dump): only that dump is read, so start-up, warm-up and shut-down are not counted;
# plus, once per binary, an idle window (-z, sleep --idle seconds, -d) that gives the Ir per
# second Causeway spends with no clients (replica monitor polls, timers). The idle rate times
# the pgbench wall time is subtracted in the "net" column: under callgrind a run takes minutes
# and the monitor's polling during it would otherwise count as per-transaction cost.
# Causeway is stopped with SIGTERM at the end (callgrind writes a final, unused output file).
#
# Reported (Markdown, stdout, and results.md in the results dir with every dump, config and
# log): per binary and mode the measured Ir, transactions, Ir/transaction, net Ir/transaction,
# where the reads went (from /metrics, scraped outside the measured window), and the ratio of
# each binary to the first one. The dumps can be read with `callgrind_annotate <file>`.
#
# Requirements: valgrind (callgrind_control), python3, PostgreSQL 15 tools in --pg-bin
# (default /usr/lib/postgresql/15/bin). Uses bench/bench.py's functions (PostgreSQL set-up,
# Causeway config); the Python below is run by this script. Every wait has a timeout; on exit
# (also on SIGINT/SIGTERM/SIGHUP) every process it started is stopped and the temp dir removed.
# Loopback only. Run one measurement at a time on a shared machine (callgrind is single-CPU,
# but the timing-dependent parts, e.g. the monitor, still vary with load).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
for tool in python3 valgrind callgrind_control; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench/callgrind.sh: $tool is required but was not found on PATH" >&2
    exit 1
  fi
done
export CALLGRIND_BENCH_DIR="$here"
export PYTHONDONTWRITEBYTECODE=1
exec python3 - "$@" <<'PYTHON'
import argparse
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(os.environ["CALLGRIND_BENCH_DIR"])
sys.path.insert(0, str(HERE))
import bench as b  # noqa: E402  (bench/bench.py)
import causeway_metrics as cwm  # noqa: E402

MODES = ("simple", "extended", "prepared")


def log(message: str) -> None:
    print(f"[callgrind {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/callgrind.sh",
        description="Instructions (callgrind Ir) per pgbench select-only transaction through Causeway, "
                    "for one or more Causeway binaries (loopback, throw-away PostgreSQL + 2 replicas).")
    p.add_argument("binaries", nargs="+", help="Causeway binaries to measure, in order (a binary may be "
                   "given twice to see the run-to-run difference); ratios are to the first one")
    p.add_argument("-t", "--transactions", type=int, default=20000,
                   help="measured transactions per binary and mode, over all clients (default 20000)")
    p.add_argument("-M", "--mode", default="simple,extended",
                   help="comma-separated pgbench -M modes: simple, extended, prepared "
                        "(default simple,extended)")
    p.add_argument("-c", "--clients", type=int, default=4, help="pgbench clients (default 4)")
    p.add_argument("-j", "--threads", type=int, default=1, help="pgbench threads (default 1)")
    p.add_argument("--warmup", type=int, default=200,
                   help="unmeasured transactions before each measured run (default 200; 0 = none)")
    p.add_argument("--idle", type=float, default=10.0,
                   help="seconds of the idle measurement per binary (default 10; 0 = none, no net column)")
    p.add_argument("--scale", type=int, default=1, help="pgbench -i scale factor (default 1)")
    p.add_argument("--pool-size", type=int, default=16, help="Causeway pool_size (default 16)")
    p.add_argument("--pg-bin", default=b.DEFAULT_PG_BIN, help=f"PostgreSQL bin dir (default {b.DEFAULT_PG_BIN})")
    p.add_argument("--results-dir", default=str(b.WORKSPACE / "bench-results"),
                   help="results go to <dir>/callgrind-<timestamp>/ (default bench-results/)")
    p.add_argument("--pgbench-timeout", type=float, default=None,
                   help="seconds per measured pgbench under callgrind (default 120 + 0.06 per transaction)")
    p.add_argument("--top", type=int, default=15,
                   help="functions per binary and mode in results.md's self-cost lists (default 15)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (data dirs, logs)")
    p.add_argument("-b", "--builtin", choices=("select-only", "tpcb-like"), default="select-only",
                   help="pgbench built-in script (default select-only; tpcb-like: the 7-statement "
                        "write transaction, all on the primary, with its commit-position probe when "
                        "Causeway has replicas)")
    p.add_argument("--no-replicas", action="store_true",
                   help="configure Causeway with the primary only (the replicas still run): the "
                        "primary-only path, to compare with the routed one")
    a = p.parse_args(argv)
    a.modes = [m.strip() for m in a.mode.split(",") if m.strip()]
    bad = [m for m in a.modes if m not in MODES]
    if bad or not a.modes:
        p.error(f"-M: unknown mode(s) {bad}; choose from {','.join(MODES)}")
    if a.clients < 1 or a.threads < 1 or a.threads > a.clients:
        p.error("need 1 <= --threads <= --clients")
    if a.transactions < a.clients:
        p.error("-t must be at least --clients")
    if a.transactions % a.clients:
        a.transactions -= a.transactions % a.clients
        log(f"note: -t rounded down to {a.transactions} (a multiple of --clients)")
    for binary in a.binaries:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            p.error(f"not an executable file: {binary}")
    if a.pgbench_timeout is None:
        a.pgbench_timeout = 120 + 0.06 * a.transactions
    # The attributes bench.py's set-up and causeway_config read (bench.py defaults otherwise).
    a.pg_user = a.pg_db = "postgres"
    a.pg_port = None
    a.replicas = 2
    a.auth = "trust"
    a.causeway_workers = 0
    a.consistency = a.session_key = a.store_timeout = None
    a.active_targets = ["causeway-replicas"]
    return a


def pgbench(env, port, mode, transactions, timeout):
    a = env.args
    argv = [env.pg_tool("pgbench"), "-n", "-b", a.builtin, "-c", str(a.clients), "-j", str(a.threads),
            "-t", str(transactions // a.clients), "-M", mode,
            "-h", b.LOOPBACK, "-p", str(port), "-U", a.pg_user, a.pg_db]
    started = time.monotonic()
    proc = b.run(argv, timeout=timeout, env=env.client_env(), check=False)
    wall = time.monotonic() - started
    parsed = b.parse_pgbench(proc.stdout)
    if proc.returncode != 0 or not parsed["transactions"]:
        raise b.BenchError(f"`{' '.join(argv)}` failed ({proc.returncode}): {b.first_error(proc.stderr, proc.stdout)}")
    if parsed["failed_transactions"]:
        raise b.BenchError(f"pgbench reported {parsed['failed_transactions']} failed transactions: {' '.join(argv)}")
    parsed["wall_s"] = wall
    return parsed


def callgrind_control(flag, pid):
    proc = b.run(["callgrind_control", flag, str(pid)], timeout=60, check=False)
    if proc.returncode != 0 or "OK" not in proc.stdout:
        raise b.BenchError(f"callgrind_control {flag} {pid} failed ({proc.returncode}): "
                           f"{(proc.stdout + proc.stderr).strip()[-300:]}")


def dump_files(out):
    return sorted(out.parent.glob(out.name + ".*"), key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else -1)


def dump_ir(path):
    """The dump's totals: line (the sum of its cost lines; its summary: line, which
    callgrind_annotate prints as PROGRAM TOTALS, differs by a few thousand Ir)."""
    text = path.read_text(errors="replace")
    for key in ("totals", "summary"):
        m = re.search(rf"^{key}:\s+(\d+)", text, re.MULTILINE)
        if m:
            return int(m.group(1))
    raise b.BenchError(f"no totals:/summary: line in {path}")


def self_costs(path):
    """Self Ir per function in a dump (--compress-strings=no): every cost line counts for the
    current fn= except the one right after a calls= line (that is the call's inclusive cost).
    callgrind_annotate 3.19 misattributes these dumps' self cost (to clone), hence this."""
    costs, fn, after_call = {}, "?", False
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                fn = re.sub(r"^\(\d+\)\s*", "", line[3:].strip())
            elif line.startswith("calls="):
                after_call = True
            elif line[:1] in "0123456789+-*":
                if after_call:
                    after_call = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    costs[fn] = costs.get(fn, 0) + int(parts[1])
    return costs


def measured_window(service, out, dest, action):
    """-z, action(), -d; returns the Ir of the dump (moved to dest) and action's result."""
    before = set(dump_files(out))
    callgrind_control("-z", service.pid)
    result = action()
    callgrind_control("-d", service.pid)
    deadline = time.monotonic() + 60
    while True:
        new = [p for p in dump_files(out) if p not in before]
        if new and "totals:" in new[-1].read_text(errors="replace"):
            break
        if time.monotonic() > deadline:
            raise b.BenchError(f"callgrind wrote no dump for {dest.name} within 60 s")
        time.sleep(0.2)
    shutil.move(str(new[-1]), dest)
    return dump_ir(dest), result


def pool_ready(env, admin):
    try:
        state = b.replica_pool_state(admin)
    except (OSError, ValueError):
        return False
    if env.args.no_replicas:
        return True
    return bool(state) and all(state.get(name) for name in env.replicas)


def measure_binary(env, index, binary, out_dir, direct):
    a = env.args
    label = f"#{index} {binary}"
    name = f"causeway{index}"
    port, admin_port = b.free_port(), b.free_port()
    config = env.tmp / f"{name}.toml"
    config.write_text(b.causeway_config(env, port, admin_port, with_replicas=not a.no_replicas))
    shutil.copy(config, out_dir / f"{name}.toml")
    b.run([binary, "--check-config", str(config)], timeout=30)
    cg_out = env.tmp / f"{name}.callgrind.out"
    # --compress-strings=no: every dump names its functions itself (callgrind_annotate can read
    # a dump on its own; with compression, names defined in an earlier dump would be missing).
    argv = ["valgrind", "--tool=callgrind", "--trace-children=no", "--compress-strings=no",
            f"--callgrind-out-file={cg_out}", binary, "--config", str(config)]
    service = b.Service(name, argv, env.tmp / f"{name}.log",
                        env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1"))
    env.services[name] = service
    admin = f"{b.LOOPBACK}:{admin_port}"
    rows = []
    try:
        service.start()
        started = time.monotonic()
        b.wait_until(f"{name} (under callgrind) to serve queries", lambda: env.can_query(port), service, timeout=60)
        b.wait_until(f"{name} to serve /metrics", lambda: b.metrics_ok(admin), service, timeout=60)
        b.wait_until(f"{name}'s monitor to have both replicas in the read pool", lambda: pool_ready(env, admin),
                     service, timeout=60)
        log(f"{name} ready after {time.monotonic() - started:.1f} s (replicas in pool)")
        idle = None
        if a.idle > 0:
            ir, _ = measured_window(service, cg_out, out_dir / f"{name}-idle.callgrind",
                                    lambda: time.sleep(a.idle))
            idle = ir / a.idle
            log(f"{name} idle: {ir:,} Ir in {a.idle:.0f} s = {idle:,.0f} Ir/s")
        for mode in a.modes:
            b.wait_until(f"{name}'s monitor to have both replicas in the read pool",
                         lambda: pool_ready(env, admin), service, timeout=60)
            if a.warmup:
                pgbench(env, port, mode, max(a.warmup, a.clients), a.pgbench_timeout)
            before = b.try_scrape(admin)
            log(f"{name} -M {mode}: measuring {a.transactions} transactions under callgrind")
            dest = out_dir / f"{name}-{mode}.callgrind"
            k = 2
            while dest.exists():  # a mode given twice
                dest, k = out_dir / f"{name}-{mode}-{k}.callgrind", k + 1
            ir, res = measured_window(service, cg_out, dest,
                                      lambda: pgbench(env, port, mode, a.transactions, a.pgbench_timeout))
            after = b.try_scrape(admin)
            routing = cwm.routing(cwm.diff(before, after)) if before and after else None
            txns = res["transactions"]
            net = (ir - idle * res["wall_s"]) / txns if idle is not None else None
            row = {"binary": label, "index": index, "mode": mode, "ir": ir, "transactions": txns,
                   "top": sorted(self_costs(dest).items(), key=lambda kv: -kv[1])[:a.top],
                   "ir_per_txn": ir / txns, "net_per_txn": net, "wall_s": res["wall_s"], "tps": res["tps"],
                   "idle_ir_per_s": idle, "routing": routing}
            rows.append(row)
            log(f"{name} -M {mode}: {ir:,} Ir / {txns} = {ir / txns:,.0f} Ir/txn"
                + (f" (net {net:,.0f})" if net is not None else "")
                + f", {res['wall_s']:.1f} s, {describe_routing(routing)}")
    finally:
        if service.alive():
            service.stop(timeout=120)  # SIGTERM; callgrind writes its final output on exit
        shutil.copy(service.log_path, out_dir / f"{name}.log")
    return rows


def describe_routing(r):
    if not r:
        return "routing unknown"
    return f"{r['statements']} statements, {r['replica']} on replicas"


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


def markdown(a, rows, direct, meta):
    lines = [f"# Causeway under callgrind: Ir per pgbench {a.builtin} transaction", "",
             f"{meta['started']}, {meta['host']}; {meta['valgrind']}; pgbench -n -b {a.builtin} -c {a.clients} -j {a.threads} "
             f"-t {a.transactions // a.clients} (x{a.clients} clients = {a.transactions}); Causeway with "
             f"{'the primary only' if a.no_replicas else '2 replicas'}, "
             f"pool_size {a.pool_size}, default settings otherwise; warm-up {a.warmup} txns; idle window "
             f"{a.idle:.0f} s.", "",
             "Binaries:"]
    for i, binary in enumerate(a.binaries, 1):
        lines.append(f"- #{i} `{binary}` ({meta['binaries'][i - 1]})")
    lines += ["", "Direct to the primary (check): " + ", ".join(
        f"-M {m} {d['transactions']} txns, {d['tps']:.0f} tps" for m, d in direct.items()), ""]
    lines += ["| binary | mode | Ir | transactions | Ir/txn | net Ir/txn | ratio to #1 | net ratio | wall s | "
              "idle Ir/s | reads on replicas |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    first = {r["mode"]: r for r in rows if r["index"] == 1}
    for mode in a.modes:
        for r in (r for r in rows if r["mode"] == mode):
            f = first.get(mode)
            ratio = r["ir_per_txn"] / f["ir_per_txn"] if f else None
            net_ratio = (r["net_per_txn"] / f["net_per_txn"]
                         if f and r["net_per_txn"] is not None and f["net_per_txn"] else None)
            rt = r["routing"]
            rep = f"{rt['replica']}/{rt['statements']}" if rt else "–"
            lines.append(f"| {r['binary']} | {mode} | {r['ir']:,} | {r['transactions']} | {r['ir_per_txn']:,.0f} | "
                         f"{fmt(r['net_per_txn'], ',.0f')} | {fmt(ratio, '.4f')} | {fmt(net_ratio, '.4f')} | "
                         f"{r['wall_s']:.1f} | {fmt(r['idle_ir_per_s'], ',.0f')} | {rep} |")
    lines += ["", "Ir: instructions Causeway executed between `callgrind_control -z` and `-d` around the measured "
              "pgbench (all threads). net: minus the idle Ir/s (measured with no clients) times the pgbench "
              "wall time. Dumps: <results dir>/causeway<N>-<mode>.callgrind (kcachegrind, or "
              "`callgrind_annotate --inclusive=yes`).", ""]
    return "\n".join(lines)


def top_functions(rows):
    lines = []
    for r in rows:
        lines += [f"## Self Ir per transaction: {r['binary']}, -M {r['mode']}", "",
                  "| Ir/txn | share | function |", "|---:|---:|---|"]
        for fn, ir in r["top"]:
            lines.append(f"| {ir / r['transactions']:,.0f} | {100 * ir / r['ir']:.1f}% | `{fn[:150]}` |")
        lines.append("")
    return "\n".join(lines)


def binary_id(binary):
    st = os.stat(binary)
    return f"{st.st_size} bytes, mtime {dt.datetime.fromtimestamp(st.st_mtime):%Y-%m-%d %H:%M:%S}"


def main(argv):
    a = parse_args(argv)
    b.install_signal_handlers()
    env = None
    try:
        b.check_tools(a)
        user = b.server_user()
        tmp = b.make_tmp(user)
        env = b.Env(a, tmp, user, b.free_port(), None)
        log(f"temp dir {tmp}")
        started = dt.datetime.now()
        out_dir = Path(a.results_dir) / f"callgrind-{started:%Y%m%d-%H%M%S}"
        out_dir.mkdir(parents=True, exist_ok=True)
        b.start_postgres(env)
        b.ensure_pgbench_tables(env)
        b.ensure_monitor_database(env)
        b.start_replicas(env)
        direct = {}
        for mode in a.modes:
            direct[mode] = pgbench(env, env.pg_port, mode, a.transactions, timeout=600)
            log(f"direct -M {mode}: {direct[mode]['transactions']} txns, {direct[mode]['tps']:.0f} tps")
        rows = []
        for index, binary in enumerate(a.binaries, 1):
            rows += measure_binary(env, index, str(Path(binary).resolve()), out_dir, direct)
        meta = {"started": started.strftime("%Y-%m-%d %H:%M"), "host": f"{os.cpu_count()} CPUs",
                "valgrind": b.version_of(["valgrind", "--version"]),
                "binaries": [binary_id(x) for x in a.binaries]}
        report = markdown(a, rows, direct, meta)
        (out_dir / "results.md").write_text(report + "\n" + top_functions(rows))
        print(report, flush=True)
        log(f"results (with the top functions by self Ir), dumps, configs and logs in {out_dir}")
        return 0
    except b.BenchError as err:
        log(f"error: {err}")
        return 1
    except b.Interrupted as err:
        log(f"interrupted by {err}; cleaning up")
        return 128 + err.signum
    finally:
        b.ignore_signals()
        if env is not None:
            for name, service in list(env.services.items()):
                if name.startswith("causeway"):
                    try:
                        service.stop(timeout=120)
                    except Exception as err:  # keep stopping the others
                        log(f"error while stopping {name}: {err}")
                        b.kill_group(service.pid)
            b.stop_all(env)
            if a.keep_tmp:
                log(f"kept {env.tmp}")
            else:
                shutil.rmtree(env.tmp, ignore_errors=True)


sys.exit(main(sys.argv[1:]))
PYTHON
