//! Graceful shutdown: under pgbench load, transaction-pooled clients finish the transaction they are
//! in, are refused the next one with 57P01, and the drain ends well before `shutdown_timeout`;
//! session-pooled clients are closed at their next idle point.

mod common;

use std::time::{Duration, Instant};

use common::{proxy_yaml, start_proxy_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_pgbench_cuts_no_transaction() {
    let yaml = proxy_yaml("mode: transaction, size: 4", "");
    let mut config = pgsluice::config::load_str(&yaml, &|_| None).expect("valid config");
    let timeout = Duration::from_secs(8);
    config.limits.shutdown_timeout = timeout;
    let proxy = start_proxy_with(config).await;
    let port = proxy.addr.port();
    common::pgbench_init(port).await;

    let bench = common::pgbench(port, &["-c", "8", "-j", "2", "-T", "30", "sluice"])
        .kill_on_drop(true)
        .output();
    let bench = tokio::spawn(bench);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    proxy.stop().await;
    let drained = started.elapsed();
    let out = tokio::time::timeout(Duration::from_secs(30), bench)
        .await
        .expect("pgbench ends once the proxy is gone")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        drained < timeout,
        "drain took {drained:?}, shutdown_timeout is {timeout:?}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0"),
        "{stdout}\n{stderr}"
    );
    let processed: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|rest| rest.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(processed > 0, "{stdout}");
    // Every client that lost its connection lost it between transactions: at BEGIN (command 4 of
    // the built-in tpcb-like script, after four \set), after being told 57P01 "shutting down".
    let aborts: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("aborted in command"))
        .collect();
    assert!(!aborts.is_empty(), "pgbench saw the shutdown: {stderr}");
    for abort in &aborts {
        assert!(
            abort.contains("aborted in command 4 "),
            "a transaction was cut: {abort}\n{stderr}"
        );
    }
    assert!(
        stderr.contains("FATAL:  pgsluice is shutting down"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_clients_close_between_transactions_while_draining() {
    let yaml = proxy_yaml("mode: session, size: 4", "");
    let mut config = pgsluice::config::load_str(&yaml, &|_| None).expect("valid config");
    let timeout = Duration::from_secs(20);
    config.limits.shutdown_timeout = timeout;
    let proxy = start_proxy_with(config).await;
    let idle = proxy.app_client().await;
    let busy = proxy.app_client().await;
    idle.simple_query("SELECT 1").await.unwrap();
    busy.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let started = Instant::now();
    let stopping = tokio::spawn(proxy.stop());
    // Between transactions: closed at once.
    assert!(
        common::eventually(Duration::from_secs(5), || idle.is_closed()).await,
        "an idle session-pooled client is closed when the drain begins"
    );
    // Inside a transaction: it finishes it, then is closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!busy.is_closed(), "a transaction in progress is not cut");
    busy.batch_execute("SELECT 2; COMMIT").await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(5), || busy.is_closed()).await,
        "closed after its transaction"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the drain ends once both clients are gone")
        .unwrap();
    assert!(started.elapsed() < timeout);
}
