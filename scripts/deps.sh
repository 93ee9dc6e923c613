#!/usr/bin/env bash
# Sourced helpers (not run directly) that install what the tests, the demo and the benchmarks
# need from Debian's packages: a C toolchain, the PostgreSQL server binaries and PgBouncer.
# The Debian package's own cluster is never used: we ask postgresql-common not to create it.

# Prefix for commands that need root: empty as root, else sudo.
if [ "$(id -u)" -eq 0 ]; then
    PGSLUICE_SUDO=()
else
    PGSLUICE_SUDO=(sudo)
fi

pgsluice_apt_updated=0

# apt-get install the given packages (running apt-get update once first).
pgsluice_apt_install() {
    if [ "$pgsluice_apt_updated" -eq 0 ]; then
        "${PGSLUICE_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
        pgsluice_apt_updated=1
    fi
    "${PGSLUICE_SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

# Installs the PostgreSQL server and client if no /usr/lib/postgresql/*/bin/initdb exists.
ensure_postgres() {
    if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        return 0
    fi
    echo "==> installing PostgreSQL server packages" >&2
    # We start our own throwaway clusters; the package's default cluster is not needed.
    local snippet=/etc/postgresql-common/createcluster.d/pgsluice.conf
    if [ ! -e "$snippet" ]; then
        "${PGSLUICE_SUDO[@]}" mkdir -p "$(dirname "$snippet")"
        echo "create_main_cluster = false" | "${PGSLUICE_SUDO[@]}" tee "$snippet" >/dev/null
    fi
    pgsluice_apt_install postgresql postgresql-client
}

# Installs a C compiler and make if missing (jemalloc, our allocator, is built from C sources).
ensure_build_tools() {
    if command -v cc >/dev/null && command -v make >/dev/null; then
        return 0
    fi
    echo "==> installing C build tools" >&2
    pgsluice_apt_install gcc make libc6-dev
}

# Installs PgBouncer (used by benches/pgbench_compare.sh) if it is missing.
ensure_pgbouncer() {
    if command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ]; then
        return 0
    fi
    echo "==> installing pgbouncer" >&2
    pgsluice_apt_install pgbouncer
}
