//! Read/write routing through the proxy on a real primary and streaming replica: reads go to the
//! replica and writes to the primary; with replay paused on the replica, a client still reads its
//! own writes (read-your-writes by LSN) while other clients keep reading the replica, and with
//! read-your-writes off the same client misses its write (so the test can fail).

mod common;

use std::time::Duration;

use common::start_proxy;
use pgsluice::devcluster::{roles, ClusterSpec, DevCluster};
use tokio::task::block_in_place;
use tokio_postgres::SimpleQueryMessage;

fn yaml(cluster: &DevCluster, read_your_writes: &str) -> String {
    format!(
        r#"
pool: {{ mode: transaction, size: 4 }}
users:
  - {{ name: app, password: app-pass, server_user: {user}, server_password: {pass} }}
databases:
  - name: sluice
    server_database: {db}
    nodes:
      - {{ name: primary, host: 127.0.0.1, port: {primary} }}
      - {{ name: replica, host: 127.0.0.1, port: {replica} }}
health: {{ interval: 200ms, max_lag_bytes: 0, max_lag: 1h }}
routing: {{ read_your_writes: {read_your_writes} }}
"#,
        user = roles::SCRAM_USER,
        pass = roles::SCRAM_PASSWORD,
        db = roles::DATABASE,
        primary = cluster.primary().port,
        replica = cluster.replicas()[0].port,
    )
}

/// The first column of the first row of a simple query.
async fn value(client: &tokio_postgres::Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap();
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_and_clients_read_their_own_writes() {
    let cluster = block_in_place(|| {
        DevCluster::start(&ClusterSpec {
            replicas: 1,
            ..ClusterSpec::default()
        })
    })
    .expect("devcluster starts");
    for (mode, must_see) in [("lsn", true), ("off", false)] {
        let proxy = start_proxy(&yaml(&cluster, mode)).await;
        // Let the health checks discover the roles.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let writer = proxy.app_client().await;
        let reader = proxy.app_client().await;
        assert_eq!(value(&reader, "SELECT pg_is_in_recovery()").await, "t");
        writer
            .batch_execute(
                "DROP TABLE IF EXISTS ryw; CREATE TABLE ryw(n int); INSERT INTO ryw VALUES (0)",
            )
            .await
            .unwrap();
        assert_eq!(
            value(&writer, "SELECT pg_is_in_recovery() FROM ryw FOR UPDATE").await,
            "f",
            "a locking read goes to the primary"
        );
        // Let the replica catch up with the table, then stop its replay.
        tokio::time::sleep(Duration::from_millis(500)).await;
        block_in_place(|| cluster.pause_replay(&cluster.replicas()[0])).unwrap();
        let mut seen = 0;
        for n in 1..=20 {
            writer
                .batch_execute(&format!("UPDATE ryw SET n = {n}"))
                .await
                .unwrap();
            if value(&writer, "SELECT n FROM ryw").await == n.to_string() {
                seen += 1;
            }
            // Someone else's read still goes to the (paused) replica.
            assert_eq!(value(&reader, "SELECT pg_is_in_recovery()").await, "t");
        }
        block_in_place(|| cluster.resume_replay(&cluster.replicas()[0])).unwrap();
        if must_see {
            assert_eq!(seen, 20, "read-your-writes: every read saw its own write");
        } else {
            assert!(
                seen < 20,
                "without read-your-writes the replica's stale reads show"
            );
        }
        drop((writer, reader));
        proxy.stop().await;
    }
}
