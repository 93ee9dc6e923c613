#!/usr/bin/env bash
# THE test command: installs PostgreSQL, PgBouncer and the driver test dependencies (Python venv,
# node_modules) if missing, then runs the format check, clippy and every test target. Extra
# arguments go to `cargo test`.
# Usage: scripts/test.sh [cargo test args...]    (any cwd)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh
# shellcheck source=scripts/drivers.sh
source scripts/drivers.sh

ensure_build_tools
ensure_postgres
ensure_pgbouncer
ensure_drivers

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "==> cargo test"
cargo test --all-targets "$@"
