#!/usr/bin/env bash
# Measures read/write routing under a 90/10 read/write pgbench mix (custom scripts via -f,
# weights 9:1, simple protocol) through pgsluice in transaction pooling, on a throwaway primary
# with two streaming replicas (the devcluster test harness; as the OS user postgres when run as
# root). Runs the mix twice, read_your_writes: lsn then off, and prints for each: pgbench TPS,
# routing decisions for reads and the share the replicas served (from the same counters as
# pgsluice_routes_total on /metrics), and writes.
#
# Usage: benches/routing_mix.sh [SECONDS] [CLIENTS]      (any cwd; defaults 10 s, 8 clients)
# Env PGSLUICE_PG_BIN=dir picks the Postgres binaries (default /usr/lib/postgresql/15/bin);
# PGSLUICE_MIX_SYNC_COMMIT=on runs the nodes with synchronous_commit = on (default off, the
# devcluster's: commits then reach the replicas only when the WAL writer flushes, up to 200 ms);
# PGSLUICE_MIX_LSN_INTERVAL sets health.lsn_interval (default 20ms; 0 = replay positions from
# the 200 ms health checks only).
# A 2-core machine shared with other work gives noisy TPS: compare runs on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PGSLUICE_MIX_SECONDS="${1:-${PGSLUICE_MIX_SECONDS:-10}}"
export PGSLUICE_MIX_CLIENTS="${2:-${PGSLUICE_MIX_CLIENTS:-8}}"
exec cargo test --release --test routing_mix -- --ignored --nocapture
