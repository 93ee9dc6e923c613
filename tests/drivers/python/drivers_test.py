#!/usr/bin/env python3
"""Python drivers through pgsluice: asyncpg and psycopg 3, used the way applications use them.

Exercises what breaks poolers: named prepared statements on every query, many client connections
at once, a transaction that fails and is rolled back, SET then reading it back, large results,
COPY in both directions and a server-side cursor.

Usage: drivers_test.py DSN   (or PGSLUICE_DSN in the environment)
Exits 0 with a one-line summary, or non-zero naming the check that failed.
"""

import asyncio
import os
import sys
import threading
import time
import traceback

import asyncpg
import psycopg

TABLE = f"drivers_py_{os.getpid()}"
MB = 1024 * 1024


class CheckFailed(Exception):
    """A result that came back wrong (as opposed to a driver error)."""


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


# ---------------------------------------------------------------- asyncpg


async def asyncpg_worker(pool, task_id, rounds):
    """Several distinct parameterised queries, each prepared by asyncpg under its own name."""
    queries = 0
    for i in range(rounds):
        async with pool.acquire() as conn:
            v = await conn.fetchval("SELECT $1::int + 1", i)
            check(v == i + 1, f"task {task_id}: $1+1 gave {v!r}")
            s = await conn.fetchval("SELECT $1::text || '-' || $2::text", f"t{task_id}", str(i))
            check(s == f"t{task_id}-{i}", f"task {task_id}: concat gave {s!r}")
            row = await conn.fetchrow(
                "SELECT count(*) AS n, sum(g) AS total FROM generate_series(1, $1::int) g", i + 10
            )
            n = i + 10
            check(row["n"] == n and row["total"] == n * (n + 1) // 2, f"task {task_id}: series {row!r}")
            rows = await conn.fetch(
                "SELECT g, md5(g::text) FROM generate_series($1::int, $2::int) g", i, i + 4
            )
            check([r[0] for r in rows] == list(range(i, i + 5)), f"task {task_id}: rows {rows!r}")
            # SET then read it back on the same connection (RESET ALL on release undoes it).
            name = f"pgsluice-asyncpg-{task_id}-{i}"
            await conn.execute(f"SET application_name = '{name}'")
            got = await conn.fetchval("SELECT current_setting('application_name')")
            check(got == name, f"task {task_id}: application_name {got!r}, want {name!r}")
            queries += 6
    return queries


async def asyncpg_transaction(pool):
    """A transaction with a failing statement rolls back and leaves the connection usable."""
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE TABLE {TABLE}_a (id int PRIMARY KEY, v text)")
        try:
            try:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {TABLE}_a VALUES ($1, $2)", 1, "one")
                    await conn.execute("SET LOCAL statement_timeout = '5s'")
                    got = await conn.fetchval("SHOW statement_timeout")
                    check(got == "5s", f"SET LOCAL read back {got!r}")
                    await conn.fetchval("SELECT 1 / $1::int", 0)
                raise CheckFailed("division by zero did not raise")
            except asyncpg.exceptions.DivisionByZeroError:
                pass
            n = await conn.fetchval(f"SELECT count(*) FROM {TABLE}_a")
            check(n == 0, f"rolled-back insert is visible: count {n}")
            got = await conn.fetchval("SHOW statement_timeout")
            check(got == "0", f"SET LOCAL survived rollback: {got!r}")
            # A unique violation inside a transaction, then a savepoint-free retry that commits.
            try:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {TABLE}_a VALUES (2, 'a')")
                    await conn.execute(f"INSERT INTO {TABLE}_a VALUES (2, 'b')")
                raise CheckFailed("unique violation did not raise")
            except asyncpg.exceptions.UniqueViolationError:
                pass
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {TABLE}_a VALUES (3, 'c')")
            n = await conn.fetchval(f"SELECT count(*) FROM {TABLE}_a")
            check(n == 1, f"after retry count {n}, want 1")
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}_a")


async def asyncpg_large(pool):
    """5 MB as many rows, and 5 MB as one value."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT g, repeat('x', 1024) FROM generate_series(1, $1::int) g", 5 * 1024)
        total = sum(len(r[1]) for r in rows)
        check(len(rows) == 5 * 1024 and total == 5 * MB, f"5 MB of rows: {len(rows)} rows, {total} bytes")
        one = await conn.fetchval("SELECT repeat('y', $1::int)", 5 * MB)
        check(len(one) == 5 * MB and one[:1] == "y", f"5 MB value: {len(one)} bytes")
        # The connection still works after the big reads.
        check(await conn.fetchval("SELECT 42") == 42, "query after large results")


async def run_asyncpg(dsn):
    """Two pools one after the other: the second one's connections land on server connections the
    first left behind, and asyncpg names its statements per connection from the same counter, so
    leftover statements on a reused server would collide."""
    total = 0
    for phase in range(2):
        pool = await asyncpg.create_pool(dsn, min_size=20, max_size=20, command_timeout=60)
        try:
            counts = await asyncio.gather(*(asyncpg_worker(pool, t, 20) for t in range(30)))
            total += sum(counts)
            if phase == 0:
                await asyncpg_transaction(pool)
                await asyncpg_large(pool)
        finally:
            await pool.close()
    return total


# ---------------------------------------------------------------- psycopg 3


def pg3_connect(dsn, **kw):
    # prepare_threshold=0: every query (with or without parameters) becomes a named prepared
    # statement on first use.
    return psycopg.connect(dsn, prepare_threshold=0, connect_timeout=10, **kw)


def pg3_thread(dsn, thread_id, rounds, results, errors):
    """Several connections one after the other: psycopg names statements _pg3_0, _pg3_1, ... afresh
    on each connection, so a reused server connection must not keep the previous client's."""
    try:
        queries = 0
        for cycle in range(3):
            with pg3_connect(dsn, autocommit=True) as conn:
                # This query is itself the connection's first prepared statement (_pg3_0).
                names = conn.execute("SELECT array_agg(name) FROM pg_prepared_statements").fetchone()[0]
                # Transaction pooling renames statements proxy-wide (__sluice_N) on shared server
                # connections: no client's own names are ever there to collide.
                renamed = all(n.startswith("__sluice_") for n in names)
                check(len(names) == 1 or renamed, f"thread {thread_id}: new connection sees statements {names}")
                name = f"pgsluice-psycopg-{thread_id}-{cycle}"
                conn.execute(f"SET application_name = '{name}'")
                for i in range(rounds):
                    v = conn.execute("SELECT %s::int * 2", (i,)).fetchone()[0]
                    check(v == i * 2, f"thread {thread_id}: %s*2 gave {v!r}")
                    s = conn.execute("SELECT upper(%s::text), %s::int", (f"r{i}", thread_id)).fetchone()
                    check(s == (f"R{i}", thread_id), f"thread {thread_id}: {s!r}")
                    got = conn.execute("SHOW application_name").fetchone()[0]
                    check(got == name, f"thread {thread_id}: application_name {got!r}, want {name!r}")
                    queries += 3
                # The driver's prepared statements really are on the server.
                n = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
                check(renamed or n >= 3, f"thread {thread_id}: only {n} prepared statements on the server")
        results[thread_id] = queries
    except Exception as e:  # reported by the main thread
        errors.append((thread_id, e, traceback.format_exc()))


def run_psycopg_threads(dsn, threads=8, rounds=40):
    results, errors = {}, []
    workers = [
        threading.Thread(target=pg3_thread, args=(dsn, t, rounds, results, errors)) for t in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        tid, _, tb = errors[0]
        raise CheckFailed(f"psycopg thread {tid} failed ({len(errors)} threads failed):\n{tb}")
    return sum(results.values())


def run_psycopg_single(dsn):
    """executemany, COPY in and out, a server-side cursor, a failed transaction, a large result."""
    table = f"{TABLE}_p"
    with pg3_connect(dsn) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text, payload text)")
        conn.commit()
        try:
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {table} (id, name) VALUES (%s, %s)", [(i, f"n{i}") for i in range(500)]
                )
            conn.commit()
            check(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 500, "executemany rows")

            with conn.cursor() as cur:
                with cur.copy(f"COPY {table} (id, name, payload) FROM STDIN") as copy:
                    for i in range(500, 20500):
                        copy.write_row((i, f"c{i}", "p" * 100))
            conn.commit()
            check(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 20500, "COPY FROM rows")

            out, rows = 0, 0
            with conn.cursor() as cur:
                with cur.copy(f"COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT") as copy:
                    for block in copy:
                        out += len(block)
                        rows += bytes(block).count(b"\n")
            conn.commit()
            check(rows == 20500 and out > 2 * MB, f"COPY TO: {rows} rows, {out} bytes")

            # Server-side (named) cursor: DECLARE + FETCH in a transaction.
            fetched = 0
            with conn.cursor(name="pgsluice_big") as cur:
                cur.itersize = 1000
                cur.execute(f"SELECT id, name FROM {table} WHERE id >= %s ORDER BY id", (100,))
                last = 99
                for rid, _ in cur:
                    check(rid == last + 1, f"server cursor out of order at {rid}")
                    last = rid
                    fetched += 1
            conn.commit()
            check(fetched == 20400, f"server cursor fetched {fetched}")

            # A failing transaction rolls back, and the connection is usable again.
            conn.execute(f"INSERT INTO {table} (id, name) VALUES (%s, %s)", (-1, "doomed"))
            try:
                conn.execute("SELECT 1 / %s::int", (0,))
                raise CheckFailed("division by zero did not raise")
            except psycopg.errors.DivisionByZero:
                conn.rollback()
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE id = -1").fetchone()[0]
            check(n == 0, "rolled-back insert is visible")
            conn.rollback()

            # SET (session-level) then read it back, across transactions.
            conn.execute("SET TIME ZONE 'Asia/Tokyo'")
            conn.commit()
            tz = conn.execute("SHOW TimeZone").fetchone()[0]
            check(tz == "Asia/Tokyo", f"TimeZone read back {tz!r}")
            conn.rollback()

            big = conn.execute("SELECT string_agg(payload, '') FROM " + table).fetchone()[0]
            check(len(big) == 20000 * 100, f"large value {len(big)} bytes")
            conn.rollback()
        finally:
            conn.rollback()
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.commit()


def main():
    dsn = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PGSLUICE_DSN")
    if not dsn:
        print("usage: drivers_test.py DSN (or set PGSLUICE_DSN)", file=sys.stderr)
        return 2
    started = time.monotonic()
    stage = "asyncpg"
    try:
        a_queries = asyncio.run(run_asyncpg(dsn))
        t_a = time.monotonic() - started
        stage = "psycopg threads"
        p_queries = run_psycopg_threads(dsn)
        stage = "psycopg copy/cursor/transactions"
        run_psycopg_single(dsn)
    except Exception as e:
        print(f"FAIL [{stage}] {type(e).__name__}: {e}", file=sys.stderr)
        traceback.print_exc()
        return 1
    total = time.monotonic() - started
    print(
        f"python drivers OK: asyncpg {asyncpg.__version__} {a_queries} queries over 2 pools of 20 connections "
        f"({t_a:.1f}s), psycopg {psycopg.__version__} {p_queries} prepared queries in 8 threads x 3 connections + "
        f"executemany/COPY/server cursor, total {total:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
