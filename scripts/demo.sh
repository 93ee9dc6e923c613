#!/usr/bin/env bash
# Starts the demo: a throwaway primary + replica with pgsluice in front of them.
# Usage: scripts/demo.sh [pgsluice demo args...]    (any cwd)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh

ensure_build_tools
ensure_postgres
exec cargo run --release -- demo "$@"
