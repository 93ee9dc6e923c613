#!/usr/bin/env bash
# Installs what tests/drivers.rs needs, idempotently: a Python virtualenv with asyncpg and psycopg 3
# (target/drivers-venv, or $PGSLUICE_DRIVERS_VENV) and node-postgres (tests/drivers/node/node_modules).
# Installs python3-venv / nodejs / npm from Debian's packages when they are missing.
# Either sourced (scripts/test.sh calls ensure_drivers) or run: bash scripts/drivers.sh
pgsluice_drivers_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/deps.sh
source "$pgsluice_drivers_root/scripts/deps.sh"

# Creates (or refreshes) the virtualenv when requirements.txt changed since the last install.
ensure_python_drivers() {
    local venv="${PGSLUICE_DRIVERS_VENV:-$pgsluice_drivers_root/target/drivers-venv}"
    local req="$pgsluice_drivers_root/tests/drivers/python/requirements.txt"
    local stamp="$venv/.requirements.installed"
    if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then
        return 0
    fi
    if ! command -v python3 >/dev/null; then
        echo "==> installing python3" >&2
        pgsluice_apt_install python3 python3-venv
    fi
    echo "==> python driver virtualenv in $venv" >&2
    mkdir -p "$(dirname "$venv")"
    if [ ! -x "$venv/bin/pip" ]; then
        rm -rf "$venv"
        # Debian's python3 has no ensurepip without python3-venv: venv creation fails, so add it.
        if ! python3 -m venv "$venv" 2>/dev/null; then
            rm -rf "$venv"
            echo "==> installing python3-venv" >&2
            pgsluice_apt_install python3-venv
            python3 -m venv "$venv"
        fi
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
}

# Runs npm ci in tests/drivers/node when node_modules is missing or older than package-lock.json.
ensure_node_drivers() {
    local dir="$pgsluice_drivers_root/tests/drivers/node"
    if [ -d "$dir/node_modules/pg" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
        return 0
    fi
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "==> installing nodejs and npm" >&2
        pgsluice_apt_install nodejs npm
    fi
    echo "==> node driver packages in $dir/node_modules" >&2
    if [ -f "$dir/package-lock.json" ]; then
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    else
        (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
    fi
}

ensure_drivers() {
    ensure_python_drivers
    ensure_node_drivers
}

# Run directly (not sourced): install now.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    ensure_drivers
fi
