#!/usr/bin/env python3
"""psycopg-compat: psycopg's own test suite, directly against PostgreSQL and through Causeway.

A compatibility report, not CI. The whole suite takes ~20 minutes per run on 2 shared cores
(tests/pool is slow); README's selection (--ignore 'tests/pool tests/crdb tests/*_async.py')
4-5 minutes per run, ~13 minutes for the three. Entry point: `bench/run.sh psycopg-compat
...` or `python3 bench/psycopg_compat.py ...`.

It runs a pinned release of psycopg's test suite (pytest, `--test-dsn`) three times:
  direct       against the primary;
  session      through Causeway, pool_mode = "session";
  transaction  through Causeway, pool_mode = "transaction";
and prints a Markdown table (passed / failed / errors / skipped per run) and the tests that
fail only through Causeway (failed or errored there, passed or skipped directly), each with a
reason class assigned from the failure message and the first line of the error.

Setup (once; nothing of psycopg is kept in this repository):

  # a checkout of psycopg's own repository at tag 3.3.2 (its tests/ are not in the sdist), in /work/psycopg-src
  python3 -m venv /work/psycopg-venv
  /work/psycopg-venv/bin/pip install /work/psycopg-src/psycopg /work/psycopg-src/psycopg_pool \\
      'anyio>=4.0' 'pproxy>=2.7' 'pytest>=6.2.5' pytest-timeout
  # the pure-Python psycopg loads libpq from Debian's libpq5 (apt-get install libpq5)

mypy (a test extra) is not installed: tests using the `mypy` fixture are deselected (-m "not
mypy"); pytest-randomly is disabled (-p no:randomly) so the three runs execute the same order.

Environment (bench.py's functions, as bench/offload.py): a throw-away PostgreSQL 15 primary
and two streaming replicas (pg_basebackup -R) on loopback, trust auth; a fresh database per
run (psycopg_test_<run>, created on the primary, streamed to the replicas); per Causeway run a
fresh Causeway with its default settings plus the two replicas, the pool mode and trust auth.

Bounded: pytest-timeout per test (--test-timeout, default 60 s, signal method, the run goes
on), a total deadline per run (--run-timeout: SIGINT, so pytest still writes its JUnit XML,
then SIGKILL); every child is stopped and the temp dir removed on exit (also on SIGINT/SIGTERM).
Outputs under bench-results/psycopg-compat-<stamp>/: results.md, results.json, per run the
JUnit XML and pytest's output, and the server logs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import bench as b

CAUSEWAY = "causeway-replicas"  # the service name bench.stop_all knows
RUNS = ("direct", "session", "transaction")
DEFAULT_SRC = os.environ.get("PSYCOPG_SRC", "/work/psycopg-src")
DEFAULT_PYTHON = os.environ.get("PSYCOPG_PYTHON", "/work/psycopg-venv/bin/python")


def log(message: str) -> None:
    b.log(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.sh psycopg-compat", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--causeway-bin", default=str(b.WORKSPACE / "target/release/causeway"),
                   help="Causeway binary (default target/release/causeway; never built here)")
    p.add_argument("--pg-bin", default=b.DEFAULT_PG_BIN, help=f"default {b.DEFAULT_PG_BIN}")
    p.add_argument("--psycopg-src", default=DEFAULT_SRC,
                   help=f"psycopg source tree at the pinned tag (default $PSYCOPG_SRC or {DEFAULT_SRC})")
    p.add_argument("--python", default=DEFAULT_PYTHON,
                   help=f"python of the virtualenv with psycopg + test deps (default $PSYCOPG_PYTHON or "
                        f"{DEFAULT_PYTHON})")
    p.add_argument("--select", default="tests",
                   help="space-separated pytest paths/node ids, relative to --psycopg-src, globs allowed "
                        "(default: tests, the whole suite). Subset example: 'tests/pq tests/test_prepared*.py "
                        "tests/test_pipeline*.py tests/test_cursor.py tests/test_connection.py'")
    p.add_argument("--ignore", default="",
                   help="space-separated globs, relative to --psycopg-src, left out (pytest --ignore-glob), "
                        "e.g. 'tests/pool tests/*_async.py'")
    p.add_argument("--markers", default="not mypy", help='pytest -m expression (default "not mypy")')
    p.add_argument("--runs", default=",".join(RUNS), help="direct,session,transaction (default all three)")
    p.add_argument("--test-timeout", type=int, default=60, help="pytest-timeout per test, seconds (default 60)")
    p.add_argument("--run-timeout", type=int, default=1800, help="deadline per run, seconds (default 1800)")
    p.add_argument("--results-dir", default=str(b.WORKSPACE / "bench-results"))
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (data dirs, configs, logs)")
    p.add_argument("--report", metavar="DIR",
                   help="run nothing: rebuild DIR/results.md and results.json from DIR's JUnit XML files")
    a = p.parse_args(argv)
    a.run_list = [r.strip() for r in a.runs.split(",") if r.strip()]
    if not a.run_list or set(a.run_list) - set(RUNS):
        p.error("--runs: a comma-separated subset of direct,session,transaction")
    # What bench.Env and bench's PostgreSQL helpers read.
    a.pg_user, a.pg_db, a.auth, a.replicas, a.active_targets = "postgres", "postgres", "trust", 2, [CAUSEWAY]
    return a


# --------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------


def causeway_config(env: b.Env, port: int, admin_port: int, mode: str) -> str:
    """Causeway's defaults, plus the nodes, the user (trust; the replica monitor needs a
    password entry, which trust never asks for) and the pool mode."""
    replicas = "".join(f'[[replicas]]\nname = "{name}"\nhost = "{b.LOOPBACK}"\nport = {rport}\n'
                       for name, rport in sorted(env.replicas.items()))
    return (
        "# Written by bench/psycopg_compat.py\n"
        "[proxy]\n"
        f'listen = "{b.LOOPBACK}:{port}"\nadmin_listen = "{b.LOOPBACK}:{admin_port}"\n'
        f'pool_mode = "{mode}"\n'
        "[auth]\nmethod = \"trust\"\n"
        f'[primary]\nhost = "{b.LOOPBACK}"\nport = {env.pg_port}\n'
        f"{replicas}"
        f'[[users]]\nname = "{env.args.pg_user}"\npassword = "{b.BENCH_PASSWORD}"\n'
    )


def start_causeway(env: b.Env, mode: str) -> int:
    stop_causeway(env)
    return b.start_causeway_with(env, env.args.causeway_bin, CAUSEWAY, mode,
                                 lambda port, admin: causeway_config(env, port, admin, mode))


def stop_causeway(env: b.Env) -> None:
    service = env.services.pop(CAUSEWAY, None)
    if service is not None:
        service.stop(timeout=15)


# --------------------------------------------------------------------------------------
# Running pytest
# --------------------------------------------------------------------------------------


def select_paths(a: argparse.Namespace) -> list[str]:
    src = Path(a.psycopg_src)
    out = []
    for item in a.select.split():
        path_part = item.split("::", 1)[0]
        if any(c in path_part for c in "*?["):
            matches = sorted(str(p.relative_to(src)) for p in src.glob(path_part))
            if not matches:
                raise b.BenchError(f"--select {item!r} matches nothing under {src}")
            out += matches
        else:
            out.append(item)
    return out


def run_pytest(env: b.Env, run: str, port: int, out: Path) -> dict:
    a = env.args
    db = f"psycopg_test_{run}"
    env.psql(env.pg_port, f'DROP DATABASE IF EXISTS "{db}"', f'CREATE DATABASE "{db}"')
    b.wait_replicas_caught_up(env, timeout=60)
    dsn = f"host={b.LOOPBACK} port={port} user={a.pg_user} dbname={db} connect_timeout=10"
    junit = out / f"{run}.xml"
    argv = [a.python, "-m", "pytest", "--test-dsn", dsn, "-p", "no:randomly", "-o", f"cache_dir={env.tmp / 'pytest-cache'}",
            "-q", "--timeout", str(a.test_timeout), "--timeout-method", "signal",
            "--junitxml", str(junit), "-o", "junit_family=xunit1"]
    if a.markers:
        argv += ["-m", a.markers]
    for pattern in a.ignore.split():
        argv += ["--ignore-glob", pattern]
    argv += select_paths(a)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "PSYCOPG_TEST_DSN"}
    child_env["PYTHONDONTWRITEBYTECODE"] = "1"
    log(f"run {run}: {' '.join(argv)}")
    started = time.monotonic()
    with open(out / f"{run}.log", "wb") as output:
        proc = subprocess.Popen(argv, cwd=a.psycopg_src, stdin=subprocess.DEVNULL, stdout=output,
                                stderr=subprocess.STDOUT, env=child_env, start_new_session=True,
                                preexec_fn=b.child_setup(signal.SIGKILL))
        timed_out = False
        try:
            proc.wait(timeout=a.run_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            log(f"run {run}: deadline of {a.run_timeout}s reached; interrupting pytest")
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                b.kill_group(proc.pid)
                proc.wait(timeout=10)
        except BaseException:
            b.kill_group(proc.pid)
            proc.wait(timeout=10)
            raise
        finally:
            b.kill_group(proc.pid)  # stray children (pproxy, subprocess tests)
    seconds = time.monotonic() - started
    tests = parse_junit(junit) if junit.exists() else {}
    log(f"run {run}: exit {proc.returncode} after {seconds:.0f}s, {len(tests)} test results")
    return {"run": run, "exit": proc.returncode, "seconds": round(seconds, 1), "timed_out": timed_out,
            "dsn": dsn, "tests": tests}


def parse_junit(path: Path) -> dict[str, dict]:
    """test id -> {"outcome": passed|failed|error|skipped, "message": first line, "text": ...}."""
    tests: dict[str, dict] = {}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        log(f"warning: cannot parse {path}: {err}")
        return tests
    for case in root.iter("testcase"):
        cls, name = case.get("classname", ""), case.get("name", "")
        file = case.get("file")
        if not file:
            parts = cls.split(".")
            # tests.test_cursor.TestX -> tests/test_cursor.py::TestX
            i = next((k for k, p in enumerate(parts) if p.startswith("test_") or p.startswith("_test")),
                     len(parts) - 1)
            file = "/".join(parts[:i + 1]) + ".py"
            rest = parts[i + 1:]
        else:
            rest = []
        test_id = "::".join([file, *rest, name])
        outcome, message, text = "passed", "", ""
        for tag in ("error", "failure", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (el.get("message") or "").strip()
                text = (el.text or "")[-4000:]
                break
        prev = tests.get(test_id)
        if prev and prev["outcome"] in ("failed", "error"):
            continue
        tests[test_id] = {"outcome": outcome, "message": message, "text": text}
    return tests


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

# Reason classes, assigned from the failure message, pytest's traceback and the test's own
# source (psycopg's tree), first match wins. They were checked by hand against psycopg 3.3.2.
REASONS = [
    ("timeout", "msg", r"Timeout \(?>|Failed: Timeout|timeout expired"),
    # A hot standby answers differently: unlogged/temp tables, transaction_read_only = on.
    ("read routed to a replica (standby semantics)", "msg",
     r"during recovery|read-only transaction|cannot execute .* in a read-only"),
    ("read routed to a replica (standby semantics)", "msg+src", r"'on' == 'off'.*\n(.|\n)*read_only"),
    # A second connection (psycopg's svcconn) checks another connection's commit: reads are
    # only read-your-writes per connection, so it may read a replica that has not replayed it.
    ("replica lag (another connection's commit)", "tb", r"^>.*svcconn"),
    # psycopg (libpq < 17) evicts protocol-level statements with SQL DEALLOCATE <name>, a name
    # Causeway renamed to _cw_... on the server under transaction pooling.
    ("prepared statement rename (SQL DEALLOCATE of a protocol statement)", "msg",
     r"prepared statement \"_pg3_\d+\" does not exist"),
    ("transaction pooling limit", "msg", r"prepared statement .* does not exist|cursor .* does not exist|"
                                         r"portal .* does not exist"),
    # Each client sees a Causeway-generated BackendKeyData: pg_terminate_backend(backend_pid),
    # Notify.pid == backend_pid and the like cannot hold.
    ("backend pid differs (cannot hide)", "src+tb", r"backend_pid|pg_backend_pid|pg_terminate_backend"),
    # Causeway relays the client's startup client_encoding as sent (euc-jp, utf8) in
    # ParameterStatus, where PostgreSQL reports its canonical name (EUC_JP, UTF8).
    ("ParameterStatus defect (client_encoding not canonical)", "src", r"PGCLIENTENCODING"),
    # Marked slow/timing by psycopg and counting wake-ups or elapsed time.
    ("timing-sensitive", "msg+src", r"assert \d+(\.\d+)? < \d+(.|\n)*(mark\.slow|mark\.timing)"),
    ("cancel", "src+tb+msg", r"cancel|QueryCanceled|57014"),
    ("protocol defect", "msg+tb", r"protocol|unexpected message|lost synchroni[sz]ation|08P01|"
                                  r"server closed the connection|consuming input failed|unexpected response|"
                                  r"bad message|message type"),
]

_SOURCES: dict[str, str] = {}


def test_source(src_root: str | None, test_id: str) -> str:
    """The test function's source (psycopg's tree), or ""."""
    if not src_root:
        return ""
    parts = test_id.split("::")
    file, name = parts[0], re.sub(r"\[.*$", "", parts[-1])
    if file not in _SOURCES:
        try:
            _SOURCES[file] = (Path(src_root) / file).read_text()
        except OSError:
            _SOURCES[file] = ""
    text = _SOURCES[file]
    m = re.search(rf"^(\s*)(async\s+)?def {re.escape(name)}\(.*?(?=^\1(@|def |async def |class )|\Z)",
                  text, re.MULTILINE | re.DOTALL)
    if not m:
        return ""
    # The decorators above it (marks such as slow/timing, parametrize lists).
    lines = text[:m.start()].splitlines()
    i = len(lines)
    while i > 0 and lines[i - 1].strip() and not re.match(r"\s*(def|async def|class) ", lines[i - 1]) \
            and (lines[i - 1].lstrip()[:1] in "@)]" or lines[i - 1][:1].isspace()):
        i -= 1
    return "\n".join(lines[i:]) + "\n" + m.group(0)


def classify(run_outcomes: dict[str, dict], test_id: str, src_root: str | None = None) -> str:
    msg = "\n".join(r["message"] for r in run_outcomes.values())
    tb = "\n".join(r["text"] for r in run_outcomes.values())
    src = test_id + "\n" + test_source(src_root, test_id)
    parts = {"msg": msg, "tb": tb, "src": src}
    for reason, where, pattern in REASONS:
        blob = "\n".join(parts[w] for w in where.split("+"))
        if re.search(pattern, blob, re.IGNORECASE | re.MULTILINE):
            if reason == "transaction pooling limit" and "session" in run_outcomes:
                continue  # fails in session mode too: not about transaction pooling
            return reason
    return "other"


def first_line(result: dict) -> str:
    text = result["message"] or result["text"]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line.replace("|", "\\|")[:160]


def summarize(results: dict[str, dict], src_root: str | None = None) -> tuple[list[str], list[dict]]:
    rows = []
    for run, res in results.items():
        counts = {k: 0 for k in ("passed", "failed", "error", "skipped")}
        for t in res["tests"].values():
            counts[t["outcome"]] += 1
        rows.append(f"| {run} | {counts['passed']} | {counts['failed']} | {counts['error']} | {counts['skipped']} "
                    f"| {res['seconds'] / 60:.1f} min{' (deadline hit)' if res['timed_out'] else ''} |")
    direct = results.get("direct", {}).get("tests", {})
    bad = ("failed", "error")
    only: list[dict] = []
    ids = sorted({t for run in ("session", "transaction") if run in results for t in results[run]["tests"]})
    for test_id in ids:
        if direct.get(test_id, {}).get("outcome") in bad:
            continue
        failing = {run: results[run]["tests"][test_id] for run in ("session", "transaction")
                   if run in results and results[run]["tests"].get(test_id, {}).get("outcome") in bad}
        if not failing:
            continue
        first = next(iter(failing.values()))
        only.append({"test": test_id, "runs": list(failing), "reason": classify(failing, test_id, src_root),
                     "direct": direct.get(test_id, {}).get("outcome", "not run"), "error": first_line(first)})
    return rows, only


def report(meta: dict, results: dict[str, dict], src_root: str | None = None) -> str:
    rows, only = summarize(results, src_root)
    lines = [f"# psycopg {meta['psycopg']} test suite through Causeway", "",
             f"Started {meta['started']}; Causeway {meta['binary']}; {meta['postgres']} primary + 2 streaming "
             f"replicas; selection `{meta['select']}`"
             + (f" minus `{meta['ignore']}`" if meta.get("ignore") else "") + f" (-m \"{meta['markers']}\", -p no:randomly, "
             f"--timeout {meta['test_timeout']}).", "",
             "| Run | Passed | Failed | Errors | Skipped | Time |", "|---|---|---|---|---|---|", *rows, ""]
    lines += [f"Failing only through Causeway: {len(only)}", ""]
    if only:
        by_reason: dict[str, int] = {}
        for o in only:
            by_reason[o["reason"]] = by_reason.get(o["reason"], 0) + 1
        lines += ["By reason: " + ", ".join(f"{r} {n}" for r, n in sorted(by_reason.items(), key=lambda x: -x[1])), ""]
        lines += ["| Test | Fails in | Reason class | First line of the error |", "|---|---|---|---|"]
        for o in only:
            lines.append(f"| `{o['test']}` | {', '.join(o['runs'])} | {o['reason']} | {o['error']} |")
        lines.append("")
    return "\n".join(lines)


def binary_description(path: str) -> str:
    try:
        st = Path(path).stat()
        stamp = dt.datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M")
        return f"{path} (built {stamp})"
    except OSError:
        return path


def psycopg_version(a: argparse.Namespace) -> str:
    try:
        out = b.run([a.python, "-c", "import psycopg; print(psycopg.__version__)"], timeout=30,
                    cwd="/").stdout.strip()
        return out or "unknown"
    except b.BenchError:
        return "unknown"


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def write_report(out: Path, meta: dict, results: dict[str, dict], src_root: str | None) -> str:
    text = report(meta, results, src_root)
    (out / "results.md").write_text(text)
    _, only = summarize(results, src_root)
    slim = {run: {k: v for k, v in r.items() if k != "tests"} |
            {"outcomes": {t: x["outcome"] for t, x in r["tests"].items()}} for run, r in results.items()}
    (out / "results.json").write_text(json.dumps({"meta": meta, "runs": slim, "causeway_only": only},
                                                 indent=2, default=str) + "\n")
    return text


def rebuild(a: argparse.Namespace) -> int:
    out = Path(a.report)
    saved = json.loads((out / "results.json").read_text())
    results = {}
    for run, r in saved["runs"].items():
        junit = out / f"{run}.xml"
        results[run] = {k: v for k, v in r.items() if k != "outcomes"} | {
            "tests": parse_junit(junit) if junit.exists() else {}}
    print(write_report(out, saved["meta"], results, a.psycopg_src), end="", flush=True)
    return 0


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    if a.report:
        return rebuild(a)
    for tool in ("initdb", "postgres", "psql", "pg_isready", "pg_basebackup"):
        if not os.access(Path(a.pg_bin) / tool, os.X_OK):
            print(f"{tool} not found in {a.pg_bin} (--pg-bin)", file=sys.stderr)
            return 1
    if not (Path(a.psycopg_src) / "tests" / "conftest.py").is_file():
        print(f"no psycopg source tree at {a.psycopg_src} (--psycopg-src; see --help for the setup)", file=sys.stderr)
        return 1
    if b.run([a.python, "-c", "import psycopg, pytest, pytest_timeout"], timeout=60, check=False,
             cwd="/").returncode != 0:
        print(f"{a.python} cannot import psycopg, pytest and pytest_timeout (--python; see --help)", file=sys.stderr)
        return 1
    if set(a.run_list) - {"direct"} and not Path(a.causeway_bin).is_file():
        print(f"Causeway binary not found at {a.causeway_bin} (--causeway-bin)", file=sys.stderr)
        return 1
    b.install_signal_handlers()
    started = dt.datetime.now()
    out = Path(a.results_dir) / f"psycopg-compat-{started.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    env = None
    results: dict[str, dict] = {}
    try:
        user = b.server_user()
        tmp = b.make_tmp(user)
        env = b.Env(a, tmp, user, b.free_port(), None)
        log(f"temp dir {tmp}; results in {out}")
        b.start_postgres(env)
        b.ensure_monitor_database(env)
        b.start_replicas(env)
        for run in a.run_list:
            port = env.pg_port if run == "direct" else start_causeway(env, run)
            results[run] = run_pytest(env, run, port, out)
            if run != "direct":
                stop_causeway(env)
        meta = {"started": started.strftime("%Y-%m-%d %H:%M"), "psycopg": psycopg_version(a),
                "binary": binary_description(a.causeway_bin), "git": b.git_description(),
                "postgres": "PostgreSQL " + env.psql(env.pg_port, "SHOW server_version"),
                "select": a.select, "ignore": a.ignore, "markers": a.markers, "test_timeout": a.test_timeout,
                "settings": {k: v for k, v in vars(a).items()}}
        text = write_report(out, meta, results, a.psycopg_src)
        print(text, end="", flush=True)
        log(f"results written to {out}/results.md and results.json")
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
            b.stop_all(env)
            (out / "logs").mkdir(exist_ok=True)
            for src in env.tmp.glob("*"):
                if src.suffix in (".log", ".toml") and src.is_file():
                    shutil.copy(src, out / "logs" / src.name)
            if a.keep_tmp:
                log(f"kept {env.tmp}")
            else:
                shutil.rmtree(env.tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
