#!/usr/bin/env bash
# THE test command: installs PostgreSQL and PgBouncer if missing, then runs the format check,
# clippy and every test target. Extra arguments go to `cargo test`.
# Usage: scripts/test.sh [cargo test args...]    (any cwd)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh

ensure_postgres
ensure_pgbouncer

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "==> cargo test"
cargo test --all-targets "$@"
