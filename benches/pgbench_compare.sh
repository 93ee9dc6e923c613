#!/usr/bin/env bash
# Compares the same pgbench workload run directly against Postgres, through PgBouncer and through
# pgsluice, interleaved round-robin so machine noise hits all three alike. Prints, per client count,
# the median TPS of each target, its ratio to direct, and each proxy's CPU seconds per 1000
# transactions (utime+stime of the proxy process from /proc/<pid>/stat around each run). With
# PgBouncer among the targets, it then pairs each other proxy with PgBouncer round by round and
# prints the median and range of those ratios, which a slow drift of the machine's speed (other
# guests' CPU steal) moves less than the medians above.
#
# Starts its own throwaway Postgres (initdb; as the OS user postgres when run as root), PgBouncer
# (unprivileged, generated ini) and pgsluice (release build, generated YAML) on free loopback ports,
# and removes everything it started on exit.
#
# Usage: benches/pgbench_compare.sh [options]        (any cwd)
#   -c LIST   client counts               (env CLIENTS, default "10 100")
#   -T SECS   duration of one run          (env DURATION, default 15)
#   -r N      rounds                       (env ROUNDS, default 3)
#   -p N      pool size of both proxies    (env POOL_SIZE, default 20)
#   -m MODE   pool mode: session|transaction (env POOL_MODE, default session)
#   -f FLAGS  pgbench workload flags       (env PGBENCH_FLAGS, default "-S")
#   -M PROTO  pgbench -M: simple|extended|prepared (env PROTOCOL, default simple)
#   -t LIST   targets to run               (env TARGETS, default "direct pgbouncer pgsluice")
#   -s N      pgbench scale                (env SCALE, default 10)
#   -j N      pgbench threads, capped at the client count (env THREADS, default nproc)
#   -I N      idle mode: instead of pgbench, log N idle clients into each proxy (benches/idle_clients.py)
#             and report the proxy's resident memory per idle client (env IDLE_CLIENTS)
#             Env IDLE_SQL: a query each idle client runs once after login (e.g. "SELECT 1")
# Env PGSLUICE_BIN=path uses that pgsluice binary instead of building target/release/pgsluice.
# Env PGSLUICE_EXTRA_YAML is appended to pgsluice's generated config (e.g. "health: { enabled: false }").
# Env PGSLUICE_WORKERS sets pgsluice's limits.worker_threads (default: one per CPU).
# Env PGSLUICE_B_BIN=path adds target "pgsluice-b": a second pgsluice binary with the same config,
# for A/B comparisons of two builds in one run (e.g. -t "pgbouncer pgsluice pgsluice-b").
# Env PGSLUICE_LIMITS / PGSLUICE_B_LIMITS add entries to the `limits` of pgsluice / pgsluice-b
# (e.g. PGSLUICE_B_LIMITS="balance_interval: 0s" compares two settings with one binary).
# Target "floor" (not in the default list) is benches/relay_floor.c, built with cc: a bare epoll
# relay with one server connection per client and no parsing. Its CPU per 1000 transactions is the
# least any user-space proxy spends here on socket reads, writes and waits; a proxy's CPU above it
# is its own work (e.g. -t "pgbouncer pgsluice floor").
# Target "floor-tokio" is the same relay on a single-threaded tokio runtime
# (examples/relay_floor_tokio.rs, built with cargo): its CPU above "floor" is tokio's per-wake-up
# cost, and pgsluice's CPU above it is pgsluice's own relay work.
# Env CALLGRIND=1 runs PgBouncer and pgsluice under valgrind's callgrind (package valgrind) and
# then prints each one's user-space instructions per transaction and their ratio: a count, not a
# time, so it does not move with other guests' load the way CPU time does (the TPS and CPU figures
# of such a run are valgrind's, not the proxies'). It leaves out kernel time, which is most of a
# proxy's CPU here and about the same for both.
# Env CALLGRIND_ARGS adds callgrind options, e.g. "--cache-sim=yes --LL=524288,8,64" to count
# data-cache misses against this machine's L2 (callgrind_annotate KEEP_WORK's callgrind/*.out).
# Env KEEP_WORK=1 keeps the work directory (logs, generated configs) for inspection.
# Prints the CPU steal time during the runs (other guests on a shared host): a noisy run shows.
# Note: PgBouncer before 1.21 cannot run "-M prepared" in transaction mode.
set -euo pipefail

CLIENTS=${CLIENTS:-"10 100"}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-3}
POOL_SIZE=${POOL_SIZE:-20}
POOL_MODE=${POOL_MODE:-session}
PGBENCH_FLAGS=${PGBENCH_FLAGS:-"-S"}
PROTOCOL=${PROTOCOL:-simple}
TARGETS=${TARGETS:-"direct pgbouncer pgsluice"}
SCALE=${SCALE:-10}
THREADS=${THREADS:-$(nproc)}
IDLE_CLIENTS=${IDLE_CLIENTS:-}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while getopts "c:T:r:p:m:f:M:t:s:j:I:h" opt; do
    case $opt in
    c) CLIENTS=$OPTARG ;;
    T) DURATION=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    p) POOL_SIZE=$OPTARG ;;
    m) POOL_MODE=$OPTARG ;;
    f) PGBENCH_FLAGS=$OPTARG ;;
    M) PROTOCOL=$OPTARG ;;
    t) TARGETS=$OPTARG ;;
    s) SCALE=$OPTARG ;;
    j) THREADS=$OPTARG ;;
    I) IDLE_CLIENTS=$OPTARG ;;
    h) usage 0 ;;
    *) usage 2 >&2 ;;
    esac
done
case $POOL_MODE in session | transaction) ;; *) echo "pool mode must be session or transaction" >&2; exit 2 ;; esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/deps.sh
source scripts/deps.sh

log() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- environment
wants() { [[ " $TARGETS " == *" $1 "* ]]; }

ensure_postgres
wants pgbouncer && ensure_pgbouncer
command -v pgbench >/dev/null || die "pgbench not found (package postgresql-client)"

pg_bin_dir() {
    if [ -n "${PGSLUICE_PG_BIN:-}" ]; then echo "$PGSLUICE_PG_BIN"; return; fi
    if command -v pg_config >/dev/null && [[ $(pg_config --version) == "PostgreSQL 15."* ]]; then
        pg_config --bindir; return
    fi
    find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin | sort -t/ -k5,5n | tail -n1
}
PG_BIN=$(pg_bin_dir)
[ -x "$PG_BIN/initdb" ] || die "no initdb in $PG_BIN"

# CALLGRIND=1: the proxies run under callgrind, which writes its counts to $WORK/callgrind.
VALGRIND=()
if [ -n "${CALLGRIND:-}" ]; then
    command -v valgrind >/dev/null || die "CALLGRIND=1 needs valgrind (package valgrind)"
    # shellcheck disable=SC2206 # CALLGRIND_ARGS holds several options
    VALGRIND=(valgrind -q --tool=callgrind ${CALLGRIND_ARGS:-})
fi
# callgrind_args TARGET: the valgrind prefix for TARGET's command (none without CALLGRIND).
callgrind_args() {
    [ "${#VALGRIND[@]}" -gt 0 ] && echo "${VALGRIND[*]} --callgrind-out-file=$WORK/callgrind/$1.out"
    return 0
}

# Run Postgres and PgBouncer unprivileged: as the OS user postgres when we are root.
if [ "$(id -u)" -eq 0 ]; then AS_PG=(runuser -u postgres --); else AS_PG=(); fi

SLUICE_BIN=${PGSLUICE_BIN:-"${CARGO_TARGET_DIR:-$REPO/target}/release/pgsluice"}
if wants pgsluice && [ -z "${PGSLUICE_BIN:-}" ]; then
    log "building pgsluice (release)"
    cargo build --release --bin pgsluice
fi

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgsluice-bench.XXXXXX")
chmod 0700 "$WORK"
[ "${#AS_PG[@]}" -gt 0 ] && chown postgres:postgres "$WORK"
mkdir -m 0777 "$WORK/callgrind"
SLUICE_PID=""
SLUICE_B_PID=""
BOUNCER_PID=""
FLOOR_PID=""
FLOOR_TOKIO_PID=""
PG_STARTED=0

cleanup() {
    set +e
    [ -n "$SLUICE_PID" ] && kill "$SLUICE_PID" 2>/dev/null && wait "$SLUICE_PID" 2>/dev/null
    [ -n "$SLUICE_B_PID" ] && kill "$SLUICE_B_PID" 2>/dev/null && wait "$SLUICE_B_PID" 2>/dev/null
    [ -n "$BOUNCER_PID" ] && kill "$BOUNCER_PID" 2>/dev/null
    [ -n "$FLOOR_PID" ] && kill "$FLOOR_PID" 2>/dev/null && wait "$FLOOR_PID" 2>/dev/null
    [ -n "$FLOOR_TOKIO_PID" ] && kill "$FLOOR_TOKIO_PID" 2>/dev/null && wait "$FLOOR_TOKIO_PID" 2>/dev/null
    [ "$PG_STARTED" -eq 1 ] && "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" stop -m immediate >/dev/null 2>&1
    sleep 0.5
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p low
    # Below the kernel's ephemeral range: a port above it can be taken by any outgoing
    # connection (1000 pgbench clients use many) between this check and the bind.
    low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    for _ in $(seq 1 200); do
        p=$((10000 + RANDOM % (low - 10000)))
        port_in_use "$p" || { echo "$p"; return; }
    done
    die "no free port"
}

# wait_ready PORT NAME PID-or-empty: until `SELECT 1` works through the port (30 s).
wait_ready() {
    local port=$1 name=$2 pid=${3:-}
    for _ in $(seq 1 300); do
        if "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d bench -c 'SELECT 1' >/dev/null 2>&1; then
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    tail -n 30 "$WORK/$name.log" >&2 2>/dev/null || true
    die "$name did not become ready on port $port (log above)"
}

# cpu_ticks PID: "utime stime" in clock ticks (fields 14 and 15, counted after the "(comm)" field).
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat") || die "process $1 is gone"
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo "${12} ${13}"
}

# median of the numbers on stdin ("-" if none).
median() {
    sort -g | awk 'NF { v[++n] = $1 } END {
        if (n == 0) { print "-"; exit }
        if (n % 2) print v[(n + 1) / 2]; else print (v[n / 2] + v[n / 2 + 1]) / 2 }'
}

# ---------------------------------------------------------------- Postgres
# shellcheck disable=SC2086 # word splitting of the lists is intended
MAX_CLIENTS=$(printf '%s\n' $CLIENTS | sort -n | tail -n1)
# Clients each proxy must accept (idle mode: all of them, plus the warm-up).
CLIENT_LIMIT=$((MAX_CLIENTS + 100))
if [ -n "$IDLE_CLIENTS" ]; then
    CLIENT_LIMIT=$((IDLE_CLIENTS + 400))
    # Per process: the client script and each proxy hold one socket per client.
    ulimit -n $((IDLE_CLIENTS + 4096)) || die "cannot raise the open-file limit for $IDLE_CLIENTS clients"
fi
# The floor relay opens a server connection per client (its clients run between the others').
FLOOR_CONNECTIONS=0
wants floor && FLOOR_CONNECTIONS=$MAX_CLIENTS
wants floor-tokio && FLOOR_CONNECTIONS=$((FLOOR_CONNECTIONS + MAX_CLIENTS))
PG_PORT=$(free_port)
log "starting Postgres on port $PG_PORT"
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$WORK/data" -U postgres -A trust --no-sync -E UTF8 --locale=C >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
cat >>"$WORK/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK'
max_connections = $((MAX_CLIENTS + 3 * POOL_SIZE + 20 + FLOOR_CONNECTIONS))
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -t 60 start >/dev/null ||
    { tail -n 30 "$WORK/postgres.log" >&2; die "Postgres did not start"; }
PG_STARTED=1
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'CREATE DATABASE bench'
log "pgbench -i -s $SCALE"
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >"$WORK/pgbench-init.log" 2>&1 ||
    { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }

# ---------------------------------------------------------------- PgBouncer
declare -A PORT=([direct]=$PG_PORT) PID=()
if wants pgbouncer; then
    PORT[pgbouncer]=$(free_port)
    echo '"postgres" ""' >"$WORK/userlist.txt"
    cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${PORT[pgbouncer]}
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = $POOL_MODE
default_pool_size = $POOL_SIZE
max_client_conn = $CLIENT_LIMIT
pidfile = $WORK/pgbouncer.pid
logfile = $WORK/pgbouncer.log
ignore_startup_parameters = extra_float_digits
EOF
    [ "${#AS_PG[@]}" -gt 0 ] && chown postgres:postgres "$WORK/userlist.txt" "$WORK/pgbouncer.ini"
    log "starting PgBouncer on port ${PORT[pgbouncer]} ($POOL_MODE, pool $POOL_SIZE)"
    # runuser starts with the default open-file limit: pass ours on.
    # shellcheck disable=SC2016 # expanded by the inner shell
    "${AS_PG[@]}" bash -c 'ulimit -n "$1" && exec $3 pgbouncer -q "$2"' _ "$(ulimit -n)" "$WORK/pgbouncer.ini" \
        "$(callgrind_args pgbouncer)" \
        >"$WORK/pgbouncer.stderr" 2>&1 &
    for _ in $(seq 1 100); do [ -s "$WORK/pgbouncer.pid" ] && break; sleep 0.1; done
    BOUNCER_PID=$(cat "$WORK/pgbouncer.pid" 2>/dev/null) ||
        { cat "$WORK/pgbouncer.stderr" "$WORK/pgbouncer.log" >&2 2>/dev/null; die "PgBouncer wrote no pidfile"; }
    PID[pgbouncer]=$BOUNCER_PID
    wait_ready "${PORT[pgbouncer]}" pgbouncer "$BOUNCER_PID"
fi

# ---------------------------------------------------------------- pgsluice
# start_sluice TARGET BINARY: writes TARGET's config, starts it; sets PORT/PID[TARGET] and LAST_PID.
start_sluice() {
    local target=$1 bin=$2 limits
    case $target in
    pgsluice-b) limits=${PGSLUICE_B_LIMITS:-} ;;
    *) limits=${PGSLUICE_LIMITS:-} ;;
    esac
    PORT[$target]=$(free_port)
    cat >"$WORK/$target.yaml" <<EOF
listeners: [{ address: "127.0.0.1:${PORT[$target]}" }]
auth: { method: trust }
pool: { mode: $POOL_MODE, size: $POOL_SIZE }
limits: { max_client_conn: $CLIENT_LIMIT${PGSLUICE_WORKERS:+, worker_threads: $PGSLUICE_WORKERS}${limits:+, $limits} }
users: [{ name: postgres }]
databases: [{ name: bench, nodes: [{ host: 127.0.0.1, port: $PG_PORT, role: primary }] }]
${PGSLUICE_EXTRA_YAML:-}
EOF
    log "starting $target ($bin) on port ${PORT[$target]} ($POOL_MODE, pool $POOL_SIZE)"
    # shellcheck disable=SC2046 # the valgrind prefix splits into words
    RUST_LOG=${RUST_LOG:-warn} $(callgrind_args "$target") "$bin" run -c "$WORK/$target.yaml" \
        >"$WORK/$target.log" 2>&1 &
    LAST_PID=$!
    PID[$target]=$LAST_PID
    wait_ready "${PORT[$target]}" "$target" "$LAST_PID"
}
if wants pgsluice; then
    start_sluice pgsluice "$SLUICE_BIN"
    SLUICE_PID=$LAST_PID
fi
if wants pgsluice-b; then
    [ -x "${PGSLUICE_B_BIN:-}" ] || die "target pgsluice-b needs PGSLUICE_B_BIN"
    start_sluice pgsluice-b "$PGSLUICE_B_BIN"
    SLUICE_B_PID=$LAST_PID
fi

if wants floor; then
    command -v cc >/dev/null || die "target floor needs a C compiler (package gcc)"
    cc -O2 -o "$WORK/relay_floor" "$REPO/benches/relay_floor.c" || die "cannot build benches/relay_floor.c"
    PORT[floor]=$(free_port)
    log "starting floor (bare relay) on port ${PORT[floor]}"
    "$WORK/relay_floor" "${PORT[floor]}" "$PG_PORT" >"$WORK/floor.log" 2>&1 &
    FLOOR_PID=$!
    PID[floor]=$FLOOR_PID
    wait_ready "${PORT[floor]}" floor "$FLOOR_PID"
fi
if wants floor-tokio; then
    log "building floor-tokio (release)"
    (cd "$REPO" && cargo build --release --example relay_floor_tokio) ||
        die "cannot build examples/relay_floor_tokio.rs"
    PORT[floor-tokio]=$(free_port)
    log "starting floor-tokio (bare tokio relay) on port ${PORT[floor-tokio]}"
    "${CARGO_TARGET_DIR:-$REPO/target}/release/examples/relay_floor_tokio" "${PORT[floor-tokio]}" \
        "$PG_PORT" >"$WORK/floor-tokio.log" 2>&1 &
    FLOOR_TOKIO_PID=$!
    PID[floor-tokio]=$FLOOR_TOKIO_PID
    wait_ready "${PORT[floor-tokio]}" floor-tokio "${PID[floor-tokio]}"
fi

# ---------------------------------------------------------------- idle mode
# rss_kib PID: resident set size in KiB.
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# measure_idle TARGET: RSS growth of the proxy while IDLE_CLIENTS clients sit logged in and idle,
# after a warm-up of 200 clients that connect and leave (runtime and allocator fixed costs).
measure_idle() {
    local target=$1 port=${PORT[$1]} pid=${PID[$1]} out="$WORK/idle-$1.out" hold before after left
    log "$target: warm-up, then $IDLE_CLIENTS idle clients"
    python3 "$REPO/benches/idle_clients.py" "$port" postgres bench 200 </dev/null >/dev/null ||
        die "$target: warm-up logins failed"
    sleep 1
    before=$(rss_kib "$pid")
    exec {hold}> >(exec python3 "$REPO/benches/idle_clients.py" "$port" postgres bench "$IDLE_CLIENTS" ${IDLE_SQL:+"$IDLE_SQL"} >"$out" 2>&1)
    for _ in $(seq 1 600); do
        grep -q '^ready' "$out" 2>/dev/null && break
        grep -q 'Error' "$out" 2>/dev/null && { cat "$out" >&2; die "$target: idle logins failed"; }
        sleep 0.5
    done
    grep -q '^ready' "$out" || die "$target: $IDLE_CLIENTS logins did not finish in 300 s"
    sleep 2
    after=$(rss_kib "$pid")
    exec {hold}>&-
    sleep 3
    left=$(rss_kib "$pid")
    printf '%-10s %10s %10s %14s %14s\n' "$target" "$before" "$after" \
        "$(awk -v a="$after" -v b="$before" -v n="$IDLE_CLIENTS" 'BEGIN { printf "%.2f", (a - b) / n }')" "$left"
}

if [ -n "$IDLE_CLIENTS" ]; then
    echo
    echo "$IDLE_CLIENTS idle clients, pool $POOL_MODE/$POOL_SIZE (RSS in KiB)"
    printf '%-10s %10s %10s %14s %14s\n' target before "with idle" "KiB per client" "after close"
    for target in $TARGETS; do
        [ "$target" = direct ] && continue
        measure_idle "$target"
    done
    exit 0
fi

# ---------------------------------------------------------------- runs
# cpu_times: the aggregate "cpu" line of /proc/stat (all CPU time, then steal, in ticks).
cpu_times() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $9; exit }' /proc/stat; }
# ROUND_TPS and ROUND_CPU (per target, client count and round) are read through `pairs`.
# TICKS and USER_TICKS: all rounds' CPU and user-space CPU ticks per target and client count.
declare -A TPS=() CPU=() ROUND_TPS=() ROUND_CPU=() TXS=() TICKS=() USER_TICKS=() TICK_TXS=()
RUN=0
read -r TOTAL0 STEAL0 < <(cpu_times)
for clients in $CLIENTS; do
    threads=$((THREADS < clients ? THREADS : clients))
    for round in $(seq 1 "$ROUNDS"); do
        for target in $TARGETS; do
            [ -n "${PORT[$target]:-}" ] || die "unknown target $target"
            RUN=$((RUN + 1))
            out="$WORK/run-$RUN-$target-$clients.log"
            log "round $round/$ROUNDS: $target, $clients clients"
            user0=0 sys0=0
            [ -n "${PID[$target]:-}" ] && read -r user0 sys0 < <(cpu_ticks "${PID[$target]}")
            # shellcheck disable=SC2086
            if ! timeout $((DURATION + 60)) pgbench -n -h 127.0.0.1 -p "${PORT[$target]}" -U postgres \
                -c "$clients" -j "$threads" -T "$DURATION" -M "$PROTOCOL" $PGBENCH_FLAGS bench >"$out" 2>&1; then
                echo "pgbench against $target failed:" >&2
                tail -n 5 "$out" >&2
                continue
            fi
            txs=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
            tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | tail -n1)
            if [ -z "$txs" ] || [ -z "$tps" ]; then
                echo "unparsable pgbench output for $target (see $out)" >&2
                continue
            fi
            TXS[$target]=$((${TXS[$target]:-0} + txs))
            TPS[$target,$clients]+="$tps "
            # shellcheck disable=SC2034 # read through a nameref in `pairs`
            ROUND_TPS[$target,$clients,$round]=$tps
            if [ -n "${PID[$target]:-}" ] && [ "$txs" -gt 0 ]; then
                read -r user1 sys1 < <(cpu_ticks "${PID[$target]}")
                ticks=$((user1 + sys1 - user0 - sys0))
                cpu=$(awk -v t=$ticks -v hz="$(getconf CLK_TCK)" -v n="$txs" \
                    'BEGIN { printf "%.6f", t / hz / n * 1000 }')
                CPU[$target,$clients]+="$cpu "
                # shellcheck disable=SC2034 # read through a nameref in `pairs`
                ROUND_CPU[$target,$clients,$round]=$cpu
                TICKS[$target,$clients]=$((${TICKS[$target,$clients]:-0} + ticks))
                USER_TICKS[$target,$clients]=$((${USER_TICKS[$target,$clients]:-0} + user1 - user0))
                TICK_TXS[$target,$clients]=$((${TICK_TXS[$target,$clients]:-0} + txs))
            fi
        done
    done
done

# ---------------------------------------------------------------- report
# fmt NUMBER DECIMALS: fixed-point, or "-" passed through.
fmt() { awk -v v="$1" -v d="$2" 'BEGIN { if (v == "-") print "-"; else printf "%.*f\n", d, v }'; }
read -r TOTAL1 STEAL1 < <(cpu_times)
echo
echo "pgbench $PGBENCH_FLAGS -M $PROTOCOL, ${DURATION}s x $ROUNDS rounds, pool $POOL_MODE/$POOL_SIZE, scale $SCALE"
# Time the hypervisor gave to other guests: the higher, the noisier every figure below.
awk -v t=$((TOTAL1 - TOTAL0)) -v s=$((STEAL1 - STEAL0)) \
    'BEGIN { if (t > 0) printf "CPU steal during the runs: %.1f%% (other guests on the host)\n", 100 * s / t }'
printf '%-8s %-10s %12s %9s %18s\n' clients target "TPS(median)" "vs direct" "CPU s/1000 tx"
# shellcheck disable=SC2086 # word splitting of the sample lists is intended
for clients in $CLIENTS; do
    direct=$(printf '%s\n' ${TPS[direct,$clients]:-} | median)
    for target in $TARGETS; do
        tps=$(printf '%s\n' ${TPS[$target,$clients]:-} | median)
        ratio=$(awk -v a="$tps" -v b="$direct" 'BEGIN {
            if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.3f", a / b }')
        cpu=$(printf '%s\n' ${CPU[$target,$clients]:-} | median)
        printf '%-8s %-10s %12s %9s %18s\n' "$clients" "$target" "$(fmt "$tps" 0)" "$ratio" "$(fmt "$cpu" 4)"
    done
done

# Paired with PgBouncer: each proxy's ratio to PgBouncer's figure of the same round (run next to
# it, so a slow drift of the machine's speed cancels out), as the median and range over rounds.
# pairs TARGET CLIENTS TABLE: "median (min-max)" of TARGET's per-round ratios to pgbouncer.
pairs() {
    local target=$1 clients=$2 round a b ratios=""
    local -n table=$3
    for round in $(seq 1 "$ROUNDS"); do
        a=${table[$target,$clients,$round]:-}
        b=${table[pgbouncer,$clients,$round]:-}
        [ -n "$a" ] && [ -n "$b" ] && ratios+="$(awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%.3f", a / b }') "
    done
    # shellcheck disable=SC2086 # word splitting of the sample list is intended
    printf '%s\n' $ratios | sort -g | awk 'NF { v[++n] = $1 } END {
        if (n == 0) { print "-"; exit }
        m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        printf "%.3f (%.3f-%.3f)\n", m, v[1], v[n] }'
}
# pooled TARGET CLIENTS TICKS BOUNCER_TICKS: TARGET's ticks per transaction over all rounds,
# against PgBouncer's.
pooled() {
    awk -v a="$3" -v b="$4" -v n="${TICK_TXS[$1,$2]:-0}" -v m="${TICK_TXS[pgbouncer,$2]:-0}" \
        'BEGIN { if (n > 0 && m > 0 && b > 0) printf "%.3f", (a / n) / (b / m); else print "-" }'
}
if wants pgbouncer; then
    echo
    echo "paired with pgbouncer, round by round: median (min-max) of the per-round ratios"
    echo "(pooled: all rounds' CPU over all their transactions, against PgBouncer's; outlier rounds count)"
    echo "(user, system: the pooled ratio of user-space and of kernel CPU alone)"
    printf '%-8s %-10s %24s %24s %8s %6s %6s\n' clients target "CPU per tx vs pgbouncer" "TPS vs pgbouncer" \
        pooled user system
    for clients in $CLIENTS; do
        for target in $TARGETS; do
            case $target in direct | pgbouncer) continue ;; esac
            all=${TICKS[$target,$clients]:-0} user=${USER_TICKS[$target,$clients]:-0}
            bouncer_all=${TICKS[pgbouncer,$clients]:-0} bouncer_user=${USER_TICKS[pgbouncer,$clients]:-0}
            printf '%-8s %-10s %24s %24s %8s %6s %6s\n' "$clients" "$target" \
                "$(pairs "$target" "$clients" ROUND_CPU)" "$(pairs "$target" "$clients" ROUND_TPS)" \
                "$(pooled "$target" "$clients" "$all" "$bouncer_all")" \
                "$(pooled "$target" "$clients" "$user" "$bouncer_user")" \
                "$(pooled "$target" "$clients" $((all - user)) $((bouncer_all - bouncer_user)))"
        done
    done
fi

# CALLGRIND=1: callgrind writes its counts when the proxy exits: stop them, then divide each
# one's instructions (all of its threads, start-up included) by the transactions it served.
if [ "${#VALGRIND[@]}" -gt 0 ]; then
    for pid in $SLUICE_PID $SLUICE_B_PID $BOUNCER_PID; do kill "$pid" 2>/dev/null; done
    for pid in $SLUICE_PID $SLUICE_B_PID $BOUNCER_PID; do
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    SLUICE_PID="" SLUICE_B_PID="" BOUNCER_PID=""
    echo
    echo "user-space instructions per transaction (callgrind, all rounds and client counts)"
    printf '%-10s %14s %14s\n' target "instr/tx" "vs pgbouncer"
    declare -A IR_TX=()
    for target in pgbouncer pgsluice pgsluice-b; do
        out="$WORK/callgrind/$target.out"
        if [ ! -s "$out" ] || [ "${TXS[$target]:-0}" -eq 0 ]; then continue; fi
        total=$(awk '/^totals:/ { print $2 }' "$out")
        IR_TX[$target]=$((total / TXS[$target]))
    done
    for target in pgbouncer pgsluice pgsluice-b; do
        [ -n "${IR_TX[$target]:-}" ] || continue
        printf '%-10s %14s %14s\n' "$target" "${IR_TX[$target]}" "$(awk -v a="${IR_TX[$target]}" \
            -v b="${IR_TX[pgbouncer]:-}" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }')"
    done
fi
