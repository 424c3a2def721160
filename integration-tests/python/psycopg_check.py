"""psycopg 3 through Causeway with server-side prepared statements (prepare_threshold=0).

Usage: psycopg_check.py DSN [TABLE] [readback]. TABLE (default py_t) is dropped and
recreated. With `readback`, nothing is written: a run's rows are read back through prepared
statements (on replicas, when routing sends them there) and checked.
Exits non-zero on the first failure.
"""
import sys
import threading

import psycopg
from psycopg import errors

DSN = sys.argv[1]
TABLE = sys.argv[2] if len(sys.argv) > 2 else "py_t"
assert TABLE.isidentifier(), TABLE
READBACK = len(sys.argv) > 3 and sys.argv[3] == "readback"
WORKERS = 8
ROUNDS = 60
failures = []


def worker(n):
    try:
        with psycopg.connect(DSN, prepare_threshold=0, autocommit=True) as conn:
            for i in range(ROUNDS):
                row = conn.execute("SELECT %s::int * 2, %s::text", (i, f"w{n}")).fetchone()
                assert row == (i * 2, f"w{n}"), row
                conn.execute(f"INSERT INTO {TABLE} (worker, i) VALUES (%s, %s)", (n, i))
                if i % 15 == 0:
                    with conn.transaction():
                        conn.execute(f"UPDATE {TABLE} SET i = i WHERE worker = %s", (n,))
                        count = conn.execute(
                            f"SELECT count(*) FROM {TABLE} WHERE worker = %s", (n,)
                        ).fetchone()[0]
                        assert count == i + 1, (count, i)
            # An error inside a transaction, then the connection keeps working.
            try:
                with conn.transaction():
                    conn.execute("SELECT 1/0")
            except errors.DivisionByZero:
                pass
            else:
                raise AssertionError("expected division by zero")
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {TABLE} (worker, i) VALUES (%s, %s)", [(n, -k) for k in range(1, 6)])
            with conn.cursor().copy(f"COPY (SELECT worker, i FROM {TABLE} WHERE worker = %s ORDER BY i) TO STDOUT", (n,)) as copy:
                rows = list(copy.rows())
            assert len(rows) == ROUNDS + 5, len(rows)
            with conn.pipeline():
                cursors = [conn.execute("SELECT %s::int", (k,)) for k in range(10)]
            assert [c.fetchone()[0] for c in cursors] == list(range(10))
    except Exception as exc:  # noqa: BLE001 - report every failure
        failures.append(f"worker {n}: {exc!r}")


def readback():
    with psycopg.connect(DSN, prepare_threshold=0, autocommit=True) as conn:
        for _ in range(5):
            for n in range(WORKERS):
                rows = conn.execute(f"SELECT i FROM {TABLE} WHERE worker = %s ORDER BY i", (n,)).fetchall()
                assert len(rows) == ROUNDS + 5, (n, len(rows))
            total = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
            assert total == WORKERS * (ROUNDS + 5) + 1, total
    print(f"psycopg readback ok: {WORKERS} workers' rows")


if READBACK:
    readback()
    sys.exit(0)

with psycopg.connect(DSN, autocommit=True) as setup:
    setup.execute(f"DROP TABLE IF EXISTS {TABLE}")
    setup.execute(f"CREATE TABLE {TABLE} (worker int, i int)")

threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()

with psycopg.connect(DSN, autocommit=True) as check:
    with check.cursor().copy(f"COPY {TABLE} FROM STDIN") as copy:
        copy.write_row((99, 1))
    total = check.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]

if failures:
    print("\n".join(failures))
    sys.exit(1)
assert total == WORKERS * (ROUNDS + 5) + 1, total
print(f"psycopg ok: {WORKERS} workers x {ROUNDS} rounds, {total} rows")
