"""asyncpg through Causeway: it prepares every statement, so this exercises named
statements under transaction pooling.

Usage: asyncpg_check.py DSN [TABLE] [readback]. TABLE (default apg_t) is dropped and
recreated. With `readback`, nothing is written: a run's rows are read back through prepared
statements (on replicas, when routing sends them there) and checked.
Exits non-zero on the first failure.
"""
import asyncio
import sys

import asyncpg

DSN = sys.argv[1]
TABLE = sys.argv[2] if len(sys.argv) > 2 else "apg_t"
READBACK = len(sys.argv) > 3 and sys.argv[3] == "readback"
assert TABLE.isidentifier(), TABLE
WORKERS = 8
ROUNDS = 60


async def worker(n):
    conn = await asyncpg.connect(DSN)
    try:
        for i in range(ROUNDS):
            assert await conn.fetchval("SELECT $1::int * 3", i) == i * 3
            await conn.execute(f"INSERT INTO {TABLE} (worker, i) VALUES ($1, $2)", n, i)
            if i % 20 == 0:
                async with conn.transaction():
                    count = await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE worker = $1", n)
                    assert count == i + 1, (count, i)
        stmt = await conn.prepare(f"SELECT i FROM {TABLE} WHERE worker = $1 ORDER BY i")
        assert len(await stmt.fetch(n)) == ROUNDS
        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {TABLE} (worker, i) VALUES ($1, $2)", n, 1000)
                await conn.fetchval("SELECT 1/0")
        except asyncpg.DivisionByZeroError:
            pass
        else:
            raise AssertionError("expected division by zero")
        await conn.executemany(f"INSERT INTO {TABLE} (worker, i) VALUES ($1, $2)", [(n, -k) for k in range(1, 6)])
        await conn.copy_records_to_table(TABLE, records=[(n, 5000 + k) for k in range(10)], columns=["worker", "i"])
        assert await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE worker = $1", n) == ROUNDS + 15
    finally:
        await conn.close()


async def readback():
    conn = await asyncpg.connect(DSN)
    try:
        per_worker = await conn.prepare(f"SELECT i FROM {TABLE} WHERE worker = $1 ORDER BY i")
        total = await conn.prepare(f"SELECT count(*) FROM {TABLE}")
        for _ in range(5):
            for n in range(WORKERS):
                rows = await per_worker.fetch(n)
                assert len(rows) == ROUNDS + 15, (n, len(rows))
            assert await total.fetchval() == WORKERS * (ROUNDS + 15)
    finally:
        await conn.close()
    print(f"asyncpg readback ok: {WORKERS} workers' rows")


async def main():
    setup = await asyncpg.connect(DSN)
    await setup.execute(f"DROP TABLE IF EXISTS {TABLE}")
    await setup.execute(f"CREATE TABLE {TABLE} (worker int, i int)")
    results = await asyncio.gather(*(worker(n) for n in range(WORKERS)), return_exceptions=True)
    failures = [f"worker {n}: {r!r}" for n, r in enumerate(results) if isinstance(r, BaseException)]
    total = await setup.fetchval(f"SELECT count(*) FROM {TABLE}")
    await setup.close()
    if failures:
        print("\n".join(failures))
        sys.exit(1)
    assert total == WORKERS * (ROUNDS + 15), total
    print(f"asyncpg ok: {WORKERS} workers x {ROUNDS} rounds, {total} rows")


asyncio.run(readback() if READBACK else main())
