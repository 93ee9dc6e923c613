//! Real application drivers through pgsluice: asyncpg and psycopg 3 (tests/drivers/python) and
//! node-postgres (tests/drivers/node), each run as its own program against an in-process proxy.
//! Their dependencies are installed by scripts/drivers.sh (called from scripts/test.sh).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use common::{proxy_yaml, start_proxy};

/// How long one driver program may run before the test fails.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv scripts/drivers.sh creates (same default and override).
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("PGSLUICE_DRIVERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/drivers-venv"));
    venv.join("bin/python")
}

/// Whether `needed` exists; if not, fails under CI (CI=true) and otherwise skips loudly.
fn installed(needed: &Path, driver: &str) -> bool {
    if needed.exists() {
        return true;
    }
    let message = format!(
        "{driver} driver test needs {} — run scripts/test.sh (or bash scripts/drivers.sh) first",
        needed.display()
    );
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "{message}");
    eprintln!("SKIPPED: {message}");
    false
}

/// Runs a driver program to completion without blocking the runtime the in-process proxy shares;
/// panics with its output unless it exits 0 within [`DRIVER_TIMEOUT`].
async fn run_driver(mut cmd: Command, driver: &str) {
    cmd.kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(DRIVER_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{driver} driver did not finish within {DRIVER_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{driver} driver could not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{driver} driver failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    eprintln!(
        "{driver}: {} [{:.1}s]",
        stdout.trim(),
        started.elapsed().as_secs_f64()
    );
}

/// Pool sizes equal to the most client connections each program holds open at once (asyncpg's pool
/// of 20, node's of 10): in session mode a client keeps its server connection until it leaves, so
/// the programs reconnect (a second pool, psycopg connection after connection) and the proxy must
/// hand them server connections earlier clients used, prepared statements and SETs and all.
/// Transaction pooling will run the same programs with fewer server connections than clients.
const PYTHON_POOL: &str = "size: 20";
const NODE_POOL: &str = "size: 10";

async fn run_python(pool: &str) {
    let python = venv_python();
    if !installed(&python, "python") {
        return;
    }
    let proxy = start_proxy(&proxy_yaml(pool, "")).await;
    let mut cmd = Command::new(&python);
    cmd.arg(repo().join("tests/drivers/python/drivers_test.py"))
        .arg(proxy.url("app", "app-pass", "sluice"));
    run_driver(cmd, "python").await;
    proxy.stop().await;
}

async fn run_node(pool: &str) {
    let dir = repo().join("tests/drivers/node");
    if !installed(&dir.join("node_modules/pg"), "node") {
        return;
    }
    let proxy = start_proxy(&proxy_yaml(pool, "")).await;
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg("drivers_test.js")
        .arg(proxy.url("app", "app-pass", "sluice"));
    run_driver(cmd, "node").await;
    proxy.stop().await;
}

#[tokio::test]
async fn python_asyncpg_and_psycopg() {
    run_python(PYTHON_POOL).await;
}

#[tokio::test]
async fn node_postgres_named_statements() {
    run_node(NODE_POOL).await;
}

/// Transaction pooling: these drivers use named prepared statements (and SET), so today every
/// client is pinned to its server connection; the programs must still see exactly their own state.
#[tokio::test]
async fn python_drivers_in_transaction_mode() {
    run_python(&format!("mode: transaction, {PYTHON_POOL}")).await;
}

#[tokio::test]
async fn node_postgres_in_transaction_mode() {
    run_node(&format!("mode: transaction, {NODE_POOL}")).await;
}
