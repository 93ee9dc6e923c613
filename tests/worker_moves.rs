//! Clients moving between worker threads at their idle points (`session::placement`,
//! `app::balance`): a transaction-pooled client keeps its named statements and settings, a
//! session-pooled one its server connection (and so its temporary tables), and the balancer
//! packs a light load onto one worker.

mod common;

use std::time::Duration;

use common::{eventually, proxy_yaml, start_proxy};
use pgsluice::net::WorkerId;

/// Two workers; `balance` is `limits.balance_interval` (0: round robin, no moves unless asked).
fn yaml(pool: &str, balance: &str) -> String {
    proxy_yaml(
        pool,
        &format!("limits: {{ worker_threads: 2, balance_interval: {balance} }}"),
    )
}

/// Asks the proxy's only client to move to the other worker, runs one query so it reaches an
/// idle point, and waits until it has moved. Returns `(from, to)`.
async fn move_only_client(
    proxy: &common::Proxy,
    client: &tokio_postgres::Client,
) -> (usize, usize) {
    let placement = &proxy.app.shared().placement;
    let counts: Vec<usize> = (0..2).map(|w| placement.clients(WorkerId(w))).collect();
    assert_eq!(counts.iter().sum::<usize>(), 1, "{counts:?}");
    let from = counts.iter().position(|&c| c == 1).unwrap();
    let to = 1 - from;
    placement.request_moves(WorkerId(from), WorkerId(to), 1);
    // The move is taken at the idle point after the next transaction.
    client.batch_execute("SELECT 1").await.unwrap();
    let moved = eventually(Duration::from_secs(5), || {
        placement.clients(WorkerId(to)) == 1
    })
    .await;
    assert!(moved, "the client moved to worker {to}");
    (from, to)
}

#[tokio::test]
async fn a_transaction_pooled_client_moves_with_its_statements_and_settings() {
    let proxy = start_proxy(&yaml("mode: transaction, size: 2", "0")).await;
    let client = proxy.app_client().await;
    client
        .batch_execute("SET application_name = 'mover'")
        .await
        .unwrap();
    let statement = client.prepare("SELECT $1::int + 1").await.unwrap();
    assert_eq!(
        client
            .query_one(&statement, &[&1])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    let (from, to) = move_only_client(&proxy, &client).await;
    let placement = &proxy.app.shared().placement;
    for i in 0..20 {
        let row = client.query_one(&statement, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    let name: String = client
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "mover");
    assert_eq!(placement.clients(WorkerId(from)), 0);
    drop(client);
    let gone = eventually(Duration::from_secs(5), || {
        placement.clients(WorkerId(to)) == 0
    })
    .await;
    assert!(gone, "a client that leaves is no longer counted");
    proxy.stop().await;
}

#[tokio::test]
async fn a_session_pooled_client_moves_with_its_server_connection() {
    let proxy = start_proxy(&yaml("mode: session, size: 2", "0")).await;
    let client = proxy.app_client().await;
    client
        .batch_execute("CREATE TEMP TABLE moved (x int); INSERT INTO moved VALUES (7)")
        .await
        .unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let (from, to) = move_only_client(&proxy, &client).await;
    let placement = &proxy.app.shared().placement;
    for _ in 0..10 {
        let x: i32 = client
            .query_one("SELECT x FROM moved", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(x, 7, "the temporary table came along");
    }
    let same: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(same, pid, "the same server connection");
    // A transaction open across the move request finishes where it began.
    client.batch_execute("BEGIN").await.unwrap();
    placement.request_moves(WorkerId(to), WorkerId(from), 1);
    client
        .batch_execute("INSERT INTO moved VALUES (8)")
        .await
        .unwrap();
    assert_eq!(placement.clients(WorkerId(to)), 1, "not in a transaction");
    client.batch_execute("COMMIT").await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();
    let back = eventually(Duration::from_secs(5), || {
        placement.clients(WorkerId(from)) == 1
    })
    .await;
    assert!(back, "moved back after the transaction");
    let count: i64 = client
        .query_one("SELECT count(*) FROM moved", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2);
    proxy.stop().await;
}

/// The proxy's metrics once `ready` holds for them (published once per balancer interval).
async fn eventually_metrics(proxy: &common::Proxy, ready: impl Fn(&str) -> bool) -> String {
    let metrics = proxy.app.shared().generation.load().metrics.clone();
    for _ in 0..100 {
        let text = metrics.render();
        if ready(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    metrics.render()
}

#[tokio::test]
async fn a_light_load_is_packed_onto_one_worker() {
    let text = yaml("mode: transaction, size: 4", "0");
    let proxy = start_proxy(&text).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(proxy.app_client().await);
    }
    let placement = &proxy.app.shared().placement;
    // Balancing off: round robin, two on each.
    assert_eq!(placement.clients(WorkerId(0)), 2);
    assert_eq!(placement.clients(WorkerId(1)), 2);
    let dir = std::env::temp_dir().join(format!("pgsluice-moves-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pgsluice.yaml");
    std::fs::write(&file, yaml("mode: transaction, size: 4", "200ms")).unwrap();
    proxy.app.set_config_path(&file);
    proxy.app.reload_file().expect("reload applies");
    // Clients move at idle points: keep them busy until they all sit on one worker.
    let mut packed = false;
    for _ in 0..100 {
        for client in &clients {
            client.batch_execute("SELECT 1").await.unwrap();
        }
        let counts = (
            placement.clients(WorkerId(0)),
            placement.clients(WorkerId(1)),
        );
        if counts == (4, 0) || counts == (0, 4) {
            packed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(packed, "a light load runs on one worker");
    // What operators see: both workers measured, the clients per worker and the moves taken.
    let measured = eventually(Duration::from_secs(5), || {
        (0..2).all(|w| placement.load(WorkerId(w)).is_some())
    })
    .await;
    assert!(measured, "each worker's CPU use is measured");
    let exposition = eventually_metrics(&proxy, |text| {
        text.contains("pgsluice_worker_clients{worker=\"1\"}")
            && !text.contains("pgsluice_client_moves_total 0\n")
    })
    .await;
    let count = |worker: usize| -> f64 {
        let series = format!("pgsluice_worker_clients{{worker=\"{worker}\"}} ");
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(count(0) + count(1), 4.0, "{exposition}");
    assert!(exposition.contains("pgsluice_worker_cpu_ratio{worker=\"0\"} "));
    let _ = std::fs::remove_dir_all(&dir);
    proxy.stop().await;
}

/// Every client asked to move to the other worker every 20 ms while pgbench runs, in both pool
/// modes: no failed transaction, and clients did move (hundreds of times).
#[tokio::test]
async fn clients_moved_back_and_forth_under_pgbench_see_no_error() {
    for (mode, protocol) in [("transaction", "prepared"), ("session", "extended")] {
        let proxy = start_proxy(&yaml(&format!("mode: {mode}, size: 10"), "0")).await;
        let port = proxy.addr.port();
        common::pgbench_init(port).await;
        let shared = proxy.app.shared().clone();
        let mover = tokio::spawn(async move {
            // Everyone to the other worker, every 20 ms, for 3.5 s.
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_millis(3500) {
                for (from, to) in [(0, 1), (1, 0)] {
                    shared
                        .placement
                        .request_moves(WorkerId(from), WorkerId(to), 20);
                    shared
                        .placement
                        .request_moves(WorkerId(to), WorkerId(to), 0);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            shared.placement.moves()
        });
        let args = ["-c", "20", "-j", "2", "-T", "4", "-M", protocol, "sluice"];
        common::pgbench_without_failures(port, &args, mode).await;
        let moves = mover.await.unwrap();
        eprintln!("{mode}: {moves} moves");
        assert!(moves >= 100, "{mode}: only {moves} moves");
        proxy.stop().await;
    }
}
