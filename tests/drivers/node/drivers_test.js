#!/usr/bin/env node
// node-postgres through pgsluice, used the way applications use it: a Pool of 10 running named
// prepared queries ({ name, text, values }) concurrently, a transaction that fails and rolls back,
// SET then reading it back, and a large result.
//
// Usage: node drivers_test.js DSN   (or PGSLUICE_DSN in the environment)
// Exits 0 with a one-line summary, or non-zero naming the check that failed.
'use strict';

const { Pool } = require('pg');

const TABLE = `drivers_node_${process.pid}`;

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// node-postgres parses each name once per connection and then only binds it: every connection of
// the pool ends up holding q_add and q_concat as named statements.
const Q_ADD = { name: 'q_add', text: 'SELECT $1::int + $2::int AS sum' };
const Q_CONCAT = {
  name: 'q_concat',
  text: "SELECT $1::text || ':' || $2::text AS s, pg_backend_pid() AS pid",
};

async function worker(pool, id, rounds) {
  let queries = 0;
  for (let i = 0; i < rounds; i++) {
    const a = await pool.query({ ...Q_ADD, values: [id, i] });
    check(a.rows[0].sum === id + i, `worker ${id}: q_add gave ${JSON.stringify(a.rows)}`);
    const c = await pool.query({ ...Q_CONCAT, values: [`w${id}`, String(i)] });
    check(c.rows[0].s === `w${id}:${i}`, `worker ${id}: q_concat gave ${JSON.stringify(c.rows)}`);
    queries += 2;
  }
  return queries;
}

async function setAndReadBack(pool, id) {
  const client = await pool.connect();
  try {
    const name = `pgsluice-node-${id}`;
    await client.query(`SET application_name = '${name}'`);
    const r = await client.query({ name: 'q_appname', text: "SELECT current_setting('application_name') AS v" });
    check(r.rows[0].v === name, `application_name read back ${r.rows[0].v}, want ${name}`);
    await client.query('RESET application_name');
  } finally {
    client.release();
  }
}

async function transactionWithError(pool) {
  const client = await pool.connect();
  try {
    await client.query(`CREATE TABLE ${TABLE} (id int PRIMARY KEY, v text)`);
    await client.query('BEGIN');
    await client.query({ name: 'q_insert', text: `INSERT INTO ${TABLE} VALUES ($1, $2)`, values: [1, 'one'] });
    let failed = false;
    try {
      await client.query({ name: 'q_div', text: 'SELECT 1 / $1::int AS x', values: [0] });
    } catch (e) {
      check(e.code === '22012', `expected division_by_zero (22012), got ${e.code}: ${e.message}`);
      failed = true;
    }
    check(failed, 'division by zero did not fail');
    // Inside the failed transaction every statement is refused until ROLLBACK.
    try {
      await client.query({ ...Q_ADD, values: [1, 1] });
      check(false, 'query in aborted transaction succeeded');
    } catch (e) {
      check(e.code === '25P02', `expected in_failed_sql_transaction (25P02), got ${e.code}`);
    }
    await client.query('ROLLBACK');
    const n = await client.query(`SELECT count(*)::int AS n FROM ${TABLE}`);
    check(n.rows[0].n === 0, `rolled-back insert is visible: ${n.rows[0].n}`);
    // The named statements prepared before the error still work on this connection.
    const a = await client.query({ ...Q_ADD, values: [20, 22] });
    check(a.rows[0].sum === 42, 'named statement after rollback');
    const d = await client.query({ name: 'q_div', text: 'SELECT 1 / $1::int AS x', values: [1] });
    check(d.rows[0].x === 1, 'failed named statement reused after rollback');
  } finally {
    await client.query(`DROP TABLE IF EXISTS ${TABLE}`).catch(() => {});
    client.release();
  }
}

async function largeResult(pool) {
  const r = await pool.query({
    name: 'q_large',
    text: "SELECT g, repeat('z', 1024) AS pad FROM generate_series(1, $1::int) g",
    values: [5 * 1024],
  });
  const bytes = r.rows.reduce((acc, row) => acc + row.pad.length, 0);
  check(r.rows.length === 5 * 1024 && bytes === 5 * 1024 * 1024, `5 MB result: ${r.rows.length} rows, ${bytes} bytes`);
}

function newPool(dsn) {
  const pool = new Pool({ connectionString: dsn, max: 10, connectionTimeoutMillis: 10000 });
  pool.on('error', (e) => {
    pool.idleError = e;
  });
  return pool;
}

// The second pool's connections land on server connections the first left behind and prepare the
// same names (q_add, q_concat): leftovers on a reused server would fail with 42P05.
async function secondPool(dsn) {
  const pool = newPool(dsn);
  try {
    const counts = await Promise.all(Array.from({ length: 20 }, (_, id) => worker(pool, id, 20)));
    check(!pool.idleError, `idle client error: ${pool.idleError}`);
    return counts.reduce((a, b) => a + b, 0);
  } finally {
    await pool.end();
  }
}

async function main() {
  const dsn = process.argv[2] || process.env.PGSLUICE_DSN;
  if (!dsn) {
    console.error('usage: node drivers_test.js DSN (or set PGSLUICE_DSN)');
    return 2;
  }
  const started = Date.now();
  const pool = newPool(dsn);
  let stage = 'concurrent named queries';
  try {
    const counts = await Promise.all(Array.from({ length: 40 }, (_, id) => worker(pool, id, 50)));
    let queries = counts.reduce((a, b) => a + b, 0);
    stage = 'SET and read back';
    await Promise.all(Array.from({ length: 10 }, (_, id) => setAndReadBack(pool, id)));
    stage = 'transaction with error';
    await transactionWithError(pool);
    stage = 'large result';
    await largeResult(pool);
    stage = 'concurrent named queries after errors';
    await Promise.all(Array.from({ length: 20 }, (_, id) => worker(pool, id, 10)));
    check(!pool.idleError, `idle client error: ${pool.idleError}`);
    await pool.end();
    stage = 'second pool on reused server connections';
    queries += await secondPool(dsn);
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    console.log(
      `node drivers OK: pg ${require('pg/package.json').version} ${queries} named prepared queries ` +
        `from 40 workers over two Pools of 10, transaction rollback, 5 MB result, ${secs}s`,
    );
    return 0;
  } catch (e) {
    console.error(`FAIL [${stage}] ${e && e.stack ? e.stack : e}`);
    return 1;
  } finally {
    if (!pool.ended) await pool.end().catch(() => {});
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`FAIL ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  },
);
