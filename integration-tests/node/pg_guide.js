// The node-postgres guide of docs/integration.md, run against Causeway with lagging replicas.
//
// Usage: node pg_guide.js CONNECTION_STRING PRIMARY_PORT. Expects table guide_notes (id
// serial, user_id int, body text) on every node, and replicas that apply WAL about a second
// late. The code between `guide:` markers is shown in docs/integration.md verbatim (a test
// compares them). Exits non-zero on failure.
'use strict';

const assert = require('node:assert');

const [, , dsn, primaryPortText] = process.argv;
const primaryPort = Number(primaryPortText);

// guide:begin node-pool
const { Pool } = require('pg');

const pool = new Pool({ connectionString: dsn, max: 4 });

// Name the end user's session at every checkout. node-postgres sends a query with
// parameters through the extended protocol, where Causeway takes the key as $1.
async function withEndUser(userId, work) {
  const client = await pool.connect();
  try {
    if (userId == null) await client.query('RESET causeway.session');
    else await client.query('SET causeway.session = $1', [`user-${userId}`]);
    return await work(client);
  } finally {
    client.release();
  }
}
// guide:end node-pool

async function node(client) {
  const res = await client.query('SELECT inet_server_port() AS port');
  return res.rows[0].port === primaryPort ? 'primary' : 'replica';
}

async function main() {
  // Request 1 (POST) for user 42.
  const firstPid = await withEndUser(42, async (client) => {
    await client.query('INSERT INTO guide_notes (user_id, body) VALUES ($1, $2)', [42, 'hi']);
    return client.processID;
  });
  // Hold that connection so request 2 gets another one.
  const holder = await pool.connect();
  assert.strictEqual(holder.processID, firstPid);
  // guide:begin node-request
  // GET after POST: any pooled connection, the same session.
  const notes = await withEndUser(42, (c) =>
    c.query('SELECT body FROM guide_notes WHERE user_id = $1', [42]));
  // guide:end node-request
  assert.deepStrictEqual(notes.rows, [{ body: 'hi' }], 'read-your-writes across connections');
  const secondPid = await withEndUser(42, async (c) => c.processID);
  assert.notStrictEqual(secondPid, firstPid, 'request 2 reused request 1 connection');
  // An unnamed read on that other connection: a replica, which misses the write.
  await withEndUser(null, async (c) => {
    assert.strictEqual(await node(c), 'replica');
    const res = await c.query('SELECT body FROM guide_notes WHERE user_id = $1', [42]);
    assert.deepStrictEqual(res.rows, [], 'expected the lagging replica to miss the write');
  });
  holder.release();
  // User 7 wrote nothing: replicas; a hinted read: the primary.
  await withEndUser(7, async (c) => {
    for (let i = 0; i < 5; i += 1) assert.strictEqual(await node(c), 'replica');
    // guide:begin node-hint
    const res = await c.query('/* causeway: route=primary */ SELECT inet_server_port() AS port');
    // guide:end node-hint
    assert.strictEqual(res.rows[0].port, primaryPort, 'the route=primary hint read a replica');
    const key = await c.query('SHOW causeway.session');
    assert.strictEqual(key.rows[0]['causeway.session'], 'user-7');
  });
  await pool.end();
  console.log('node-postgres: all checks passed');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
