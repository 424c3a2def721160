// node-postgres through Causeway: parameterized queries (unnamed statements), named
// prepared statements, transactions, an error inside a transaction and a pool with fewer
// connections than workers.
//
// Usage: node pg_check.js CONNECTION_STRING TABLE [readback]
// TABLE is dropped and recreated. With `readback`, nothing is written: a run's rows are
// read back through named prepared statements and checked. Exits non-zero on failure.
'use strict';

const assert = require('node:assert');
const { Client } = require('pg');

const [, , dsn, table, mode] = process.argv;
assert.match(table, /^[a-z_][a-z0-9_]*$/);
const WORKERS = 8;
const ROUNDS = 60;

async function count(client, worker) {
  const res = await client.query({
    name: `count_${table}`,
    text: `SELECT count(*)::int AS n FROM ${table} WHERE worker = $1`,
    values: [worker],
  });
  return res.rows[0].n;
}

async function worker(n) {
  const client = new Client({ connectionString: dsn });
  await client.connect();
  try {
    for (let i = 0; i < ROUNDS; i++) {
      const res = await client.query('SELECT $1::int * 5 AS v', [i]);
      assert.strictEqual(res.rows[0].v, i * 5);
      await client.query({
        name: `insert_${table}`,
        text: `INSERT INTO ${table} (worker, i) VALUES ($1, $2)`,
        values: [n, i],
      });
      if (i % 10 === 0) {
        assert.strictEqual(await count(client, n), i + 1, 'read-your-writes');
      }
    }
    await client.query('BEGIN');
    for (let k = 1; k <= 5; k++) {
      await client.query(`INSERT INTO ${table} (worker, i) VALUES ($1, $2)`, [n, -k]);
    }
    assert.strictEqual(await count(client, n), ROUNDS + 5);
    await client.query('COMMIT');
    await client.query('BEGIN');
    await client.query(`INSERT INTO ${table} (worker, i) VALUES ($1, 1000)`, [n]);
    await assert.rejects(client.query('SELECT 1/0'), (e) => e.code === '22012');
    await client.query('ROLLBACK');
    assert.strictEqual(await count(client, n), ROUNDS + 5, 'the failed transaction left nothing');
  } finally {
    await client.end();
  }
}

async function readback() {
  const client = new Client({ connectionString: dsn });
  await client.connect();
  try {
    for (let round = 0; round < 5; round++) {
      for (let n = 0; n < WORKERS; n++) {
        assert.strictEqual(await count(client, n), ROUNDS + 5, `readback worker ${n}`);
      }
    }
  } finally {
    await client.end();
  }
  console.log(`node-postgres readback ok: ${WORKERS} workers' rows`);
}

async function main() {
  if (mode === 'readback') {
    return readback();
  }
  const setup = new Client({ connectionString: dsn });
  await setup.connect();
  await setup.query(`DROP TABLE IF EXISTS ${table}`);
  await setup.query(`CREATE TABLE ${table} (worker int, i int)`);
  await setup.end();
  const results = await Promise.allSettled([...Array(WORKERS).keys()].map(worker));
  const failures = results
    .map((r, n) => (r.status === 'rejected' ? `worker ${n}: ${r.reason}` : null))
    .filter(Boolean);
  if (failures.length) {
    console.log(failures.join('\n'));
    process.exit(1);
  }
  console.log(`node-postgres ok: ${WORKERS} workers x ${ROUNDS} rounds`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
