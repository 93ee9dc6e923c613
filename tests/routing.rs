//! Read/write routing through the proxy on a real primary and streaming replica: reads go to the
//! replica and writes to the primary; with replay paused on the replica, a client still reads its
//! own writes (read-your-writes by LSN) while other clients keep reading the replica, and with
//! read-your-writes off the same client misses its write (so the test can fail). Consistency
//! keys carry the guarantee across connections; a read a replica refuses with 25006 is retried
//! on the primary; routing decisions are counted.

mod common;

use std::time::Duration;

use common::start_proxy;
use pgsluice::devcluster::{roles, ClusterSpec, DevCluster};
use pgsluice::metrics::{ErrorClass, RouteReason, RouteTarget};
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

fn start_cluster() -> DevCluster {
    block_in_place(|| {
        DevCluster::start(&ClusterSpec {
            replicas: 1,
            ..ClusterSpec::default()
        })
    })
    .expect("devcluster starts")
}

/// Routing decisions counted for `sluice` with this target and reason.
fn routes(proxy: &common::Proxy, target: RouteTarget, reason: RouteReason) -> u64 {
    proxy
        .app
        .metrics()
        .database("sluice")
        .routes(target, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_keys_carry_read_your_writes_across_connections() {
    let cluster = start_cluster();
    let proxy = start_proxy(&yaml(&cluster, "lsn")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let writer = proxy.app_client().await;
    let keyed = proxy.app_client().await;
    let unkeyed = proxy.app_client().await;
    let hinted = proxy.app_client().await;
    writer
        .batch_execute(
            "DROP TABLE IF EXISTS keyed; CREATE TABLE keyed(n int); INSERT INTO keyed VALUES (0)",
        )
        .await
        .unwrap();
    // Answered by the proxy (CommandComplete "SET"), never seen by Postgres.
    for client in [&writer, &keyed] {
        let done = client
            .simple_query("SET pgsluice.consistency_key = 'user:42'")
            .await
            .unwrap();
        assert!(matches!(
            done.first(),
            Some(SimpleQueryMessage::CommandComplete(0))
        ));
    }
    block_in_place(|| cluster.wait_replicas_caught_up()).unwrap();
    block_in_place(|| cluster.pause_replay(&cluster.replicas()[0])).unwrap();
    let (mut stale_unkeyed, mut stale_hinted) = (0, 0);
    for n in 1..=20 {
        writer
            .batch_execute(&format!("UPDATE keyed SET n = {n}"))
            .await
            .unwrap();
        let want = n.to_string();
        assert_eq!(
            value(&keyed, "SELECT n FROM keyed").await,
            want,
            "same key, other connection"
        );
        if value(&hinted, "/* pgsluice:key=user:42 */ SELECT n FROM keyed").await != want {
            stale_hinted += 1;
        }
        if value(&unkeyed, "SELECT n FROM keyed").await != want {
            stale_unkeyed += 1;
        }
    }
    assert_eq!(stale_hinted, 0, "a key comment carries the guarantee too");
    assert!(
        stale_unkeyed > 0,
        "without the key the paused replica's stale reads show"
    );
    block_in_place(|| cluster.resume_replay(&cluster.replicas()[0])).unwrap();
    // Once the replica replayed the key's last commit, keyed reads go back to it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while value(&keyed, "SELECT pg_is_in_recovery()").await != "t" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "keyed reads return to the replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // RESET forgets the key: reads no longer wait for the key's writes.
    keyed
        .batch_execute("RESET pgsluice.consistency_key")
        .await
        .unwrap();
    assert!(routes(&proxy, RouteTarget::Primary, RouteReason::ReadYourWrites) >= 20);
    assert!(routes(&proxy, RouteTarget::Replica, RouteReason::Read) >= 20);
    assert!(routes(&proxy, RouteTarget::Primary, RouteReason::Write) >= 21);
    drop((writer, keyed, unkeyed, hinted));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_a_replica_refuses_as_read_only_is_retried_on_the_primary() {
    let cluster = start_cluster();
    let proxy = start_proxy(&yaml(&cluster, "lsn")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let client = proxy.app_client().await;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS written; CREATE TABLE written(n int);
             CREATE OR REPLACE FUNCTION my_writer() RETURNS int LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO written VALUES (1); RETURN 1; END $$",
        )
        .await
        .unwrap();
    block_in_place(|| cluster.wait_replicas_caught_up()).unwrap();
    // Until the health check sees the replica caught up, the client's reads stay on the
    // primary (read-your-writes).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = proxy.app.metrics().database("sluice");
    let refused_before = metrics.errors(ErrorClass::TransactionState);
    // Classified as a read (my_writer is not a known writing function): the replica refuses it
    // with 25006 before anything reached the client, so the proxy runs it on the primary.
    for round in 1..=2 {
        assert_eq!(value(&client, "SELECT my_writer()").await, "1");
        assert_eq!(
            metrics.errors(ErrorClass::TransactionState),
            refused_before + round
        );
        assert_eq!(
            routes(&proxy, RouteTarget::Primary, RouteReason::Other),
            round
        );
        // The retried write is the client's own: its next reads wait for the replica to replay
        // it; let it, so the next round reads the replica again.
        block_in_place(|| cluster.wait_replicas_caught_up()).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(value(&client, "SELECT count(*) FROM written").await, "2");
    // In an explicit transaction the error is the client's to see.
    let error = client
        .batch_execute("BEGIN READ ONLY; SELECT my_writer(); COMMIT")
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&error).as_deref(), Some("25006"));
    // The rest of that query string was skipped, so the failed transaction is still open.
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(value(&client, "SELECT 7").await, "7");
    drop(client);
    proxy.stop().await;
}
