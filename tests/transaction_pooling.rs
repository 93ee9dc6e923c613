//! Transaction pooling with real clients on a small pool: many clients share a few server
//! connections, a transaction keeps its connection to the end, pipelines stay on one connection,
//! settings follow the client, LISTEN pins it, and a client gone mid-transaction leaves nothing behind.

mod common;

use std::time::Duration;

use common::{proxy_yaml, start_proxy, Proxy};
use tokio_postgres::types::Type;

/// Server connections open in every pool of the proxy.
fn open_server_connections(proxy: &Proxy) -> usize {
    let generation = proxy.app.shared().generation.load();
    generation
        .pools
        .iter()
        .map(|(_, pool)| pool.stats().open)
        .sum()
}

#[tokio::test]
async fn many_clients_share_a_few_server_connections() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 2", "")).await;
    let setup = proxy.app_client().await;
    setup
        .batch_execute("DROP TABLE IF EXISTS tx_share; CREATE TABLE tx_share(client int, n int)")
        .await
        .unwrap();
    drop(setup);
    let mut tasks = Vec::new();
    for client_id in 0..12i32 {
        let config = proxy.pg_config("app", "app-pass", "sluice");
        tasks.push(tokio::spawn(async move {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            for n in 0..15i32 {
                client
                    .batch_execute(&format!(
                        "BEGIN; INSERT INTO tx_share VALUES ({client_id}, {n}); COMMIT"
                    ))
                    .await
                    .unwrap();
                // Extended protocol with an unnamed statement.
                let rows = client
                    .query_typed(
                        "SELECT count(*) FROM tx_share WHERE client = $1",
                        &[(&client_id, Type::INT4)],
                    )
                    .await
                    .unwrap();
                assert_eq!(rows[0].get::<_, i64>(0), i64::from(n) + 1);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        open_server_connections(&proxy) <= 2,
        "pool size is respected"
    );
    let check = proxy.app_client().await;
    let row = check
        .query_one("SELECT count(*) FROM tx_share", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 12 * 15);
    check.batch_execute("DROP TABLE tx_share").await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn an_open_transaction_keeps_its_server_connection() {
    let proxy = start_proxy(&proxy_yaml(
        "mode: transaction, size: 1, checkout_timeout: 10s",
        "",
    ))
    .await;
    let a = proxy.app_client().await;
    let b = proxy.app_client().await;
    a.batch_execute("BEGIN").await.unwrap();
    let pid_a: i32 = a.query_typed("SELECT pg_backend_pid()", &[]).await.unwrap()[0].get(0);
    // b needs the only server connection: it waits until a's transaction ends.
    let waiting = tokio::spawn(async move {
        let rows = b.query_typed("SELECT pg_backend_pid()", &[]).await.unwrap();
        rows[0].get::<_, i32>(0)
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !waiting.is_finished(),
        "b waits while a's transaction is open"
    );
    let again: i32 = a.query_typed("SELECT pg_backend_pid()", &[]).await.unwrap()[0].get(0);
    assert_eq!(
        again, pid_a,
        "the whole transaction runs on one server connection"
    );
    a.batch_execute("COMMIT").await.unwrap();
    let pid_b = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("b is served after the commit")
        .unwrap();
    assert_eq!(
        pid_b, pid_a,
        "the pool of one hands the same connection over"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn pipelined_queries_stay_on_one_connection_until_every_sync_is_answered() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 2", "")).await;
    let client = proxy.app_client().await;
    let queries = (0..20).map(|i: i32| {
        let client = &client;
        async move {
            let rows = client
                .query_typed(
                    "SELECT $1::int + 1, pg_sleep(0.01)::text",
                    &[(&i, Type::INT4)],
                )
                .await
                .unwrap();
            rows[0].get::<_, i32>(0)
        }
    });
    let results = futures_util::future::join_all(queries).await;
    assert_eq!(results, (1..=20).collect::<Vec<_>>());
    proxy.stop().await;
}

#[tokio::test]
async fn settings_follow_the_client_and_never_leak() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 1", "")).await;
    let a = proxy.app_client().await;
    let b = proxy.app_client().await;
    a.batch_execute("SET application_name = 'client-a'; SET search_path = a_schema, public")
        .await
        .unwrap();
    b.batch_execute("SET application_name = 'client-b'")
        .await
        .unwrap();
    let show = "SELECT current_setting('application_name'), current_setting('search_path')";
    for _ in 0..3 {
        // One server connection serves both clients in turn; each sees only its own settings.
        let row = &a.query_typed(show, &[]).await.unwrap()[0];
        assert_eq!(row.get::<_, String>(0), "client-a");
        assert_eq!(row.get::<_, String>(1), "a_schema, public");
        let row = &b.query_typed(show, &[]).await.unwrap()[0];
        assert_eq!(row.get::<_, String>(0), "client-b");
        assert_eq!(row.get::<_, String>(1), "\"$user\", public");
    }
    // A SET rolled back, and a SET LOCAL, do not stick; RESET goes back to the default.
    a.batch_execute("BEGIN; SET application_name = 'rolled-back'; ROLLBACK")
        .await
        .unwrap();
    a.batch_execute("BEGIN; SET LOCAL application_name = 'local'; COMMIT")
        .await
        .unwrap();
    let row = &a.query_typed(show, &[]).await.unwrap()[0];
    assert_eq!(row.get::<_, String>(0), "client-a");
    a.batch_execute("RESET search_path").await.unwrap();
    b.batch_execute("SELECT 1").await.unwrap();
    let row = &a.query_typed(show, &[]).await.unwrap()[0];
    assert_eq!(row.get::<_, String>(1), "\"$user\", public");
    // A new client gets a clean server connection.
    drop((a, b));
    let c = proxy.app_client().await;
    let row = &c.query_typed(show, &[]).await.unwrap()[0];
    assert_eq!(row.get::<_, String>(0), "");
    proxy.stop().await;
}

#[tokio::test]
async fn listen_pins_the_client_and_others_never_share_its_connection() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 2", "")).await;
    let listener = proxy.app_client().await;
    listener.batch_execute("LISTEN pinned_chan").await.unwrap();
    let pid: i32 = listener
        .query_typed("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()[0]
        .get(0);
    for _ in 0..5 {
        let row = listener
            .query_typed("SELECT pg_backend_pid()", &[])
            .await
            .unwrap();
        assert_eq!(
            row[0].get::<_, i32>(0),
            pid,
            "a pinned client keeps its connection"
        );
    }
    for _ in 0..5 {
        let other = proxy.app_client().await;
        let row = other
            .query_typed("SELECT pg_backend_pid()", &[])
            .await
            .unwrap();
        assert_ne!(row[0].get::<_, i32>(0), pid);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn client_gone_mid_transaction_is_rolled_back_before_reuse() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 1", "")).await;
    let setup = proxy.app_client().await;
    setup
        .batch_execute("DROP TABLE IF EXISTS tx_gone; CREATE TABLE tx_gone(x int)")
        .await
        .unwrap();
    let doomed = proxy.app_client().await;
    doomed
        .batch_execute("BEGIN; INSERT INTO tx_gone VALUES (1)")
        .await
        .unwrap();
    drop(doomed);
    let row = tokio::time::timeout(
        Duration::from_secs(10),
        setup.query_typed("SELECT count(*) FROM tx_gone", &[]),
    )
    .await
    .expect("the connection comes back")
    .unwrap();
    assert_eq!(
        row[0].get::<_, i64>(0),
        0,
        "the abandoned insert was rolled back"
    );
    setup.batch_execute("DROP TABLE tx_gone").await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn pgbench_through_a_small_transaction_pool() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 4", "")).await;
    let port = proxy.addr.port();
    common::pgbench_init(port).await;
    for mode in ["simple", "extended"] {
        let args = ["-c", "20", "-j", "2", "-T", "3", "-M", mode, "sluice"];
        common::pgbench_without_failures(port, &args, mode).await;
    }
    assert!(open_server_connections(&proxy) <= 4);
    proxy.stop().await;
}
