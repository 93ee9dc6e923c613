#!/usr/bin/env python3
"""Opens N client connections to a Postgres-protocol endpoint, logs each in (trust auth), then
holds them idle so the caller can measure the server's memory; closes them all when stdin closes.

Usage: idle_clients.py PORT USER DATABASE COUNT [SQL]
With SQL, each client runs it once as a simple query after logging in (an idle client that has
worked, not one that only logged in). Prints "ready COUNT" on stdout once every connection got
ReadyForQuery; exits non-zero if a login or the query fails. Connects at most 200 at a time so the listener's backlog never overflows."""

import asyncio
import struct
import sys


async def until_ready(reader, what: str):
    """Reads messages up to ReadyForQuery; raises on an ErrorResponse or a password request."""
    while True:
        header = await reader.readexactly(5)
        tag, length = header[0:1], struct.unpack("!i", header[1:])[0]
        body = await reader.readexactly(length - 4)
        if tag == b"E":
            raise RuntimeError(f"{what} failed: {body!r}")
        if tag == b"R" and body[:4] != b"\0\0\0\0":
            raise RuntimeError("only trust authentication is supported")
        if tag == b"Z":
            return


async def login(port: int, user: str, database: str, sql: str | None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    params = b"".join(
        k.encode() + b"\0" + v.encode() + b"\0"
        for k, v in (("user", user), ("database", database))
    ) + b"\0"
    writer.write(struct.pack("!ii", 8 + len(params), 196608) + params)
    await writer.drain()
    await until_ready(reader, "login")
    if sql is not None:
        query = sql.encode() + b"\0"
        writer.write(b"Q" + struct.pack("!i", 4 + len(query)) + query)
        await writer.drain()
        await until_ready(reader, "query")
    return reader, writer


async def main() -> int:
    port, user, database, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    sql = sys.argv[5] if len(sys.argv) > 5 else None
    limit = asyncio.Semaphore(200)

    async def one():
        async with limit:
            return await asyncio.wait_for(login(port, user, database, sql), 60)

    connections = await asyncio.gather(*(one() for _ in range(count)))
    print(f"ready {len(connections)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for _, writer in connections:
        writer.write(b"X\0\0\0\4")
        writer.close()
    await asyncio.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
