//! Session pooling end to end with tokio-postgres as the client: simple and extended queries,
//! multi-statement strings, COPY, errors in transactions, cancel, resets, pool limits and lifetimes.

mod common;

use std::time::{Duration, Instant};

use common::{cluster, eventually, proxy_yaml, server_connections, sqlstate, start_proxy};
use futures_util::{SinkExt, StreamExt};
use pgsluice::devcluster::roles;

#[tokio::test]
async fn simple_and_extended_queries_reach_the_primary() {
    let proxy = start_proxy(&proxy_yaml("size: 4", "")).await;
    let client = proxy.app_client().await;
    let rows = client.simple_query("SELECT 41 + 1").await.unwrap();
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("42"));
    let row = client
        .query_one(
            "SELECT $1::int + 1, pg_is_in_recovery(), inet_server_port()",
            &[&41i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert!(!row.get::<_, bool>(1), "sessions go to the primary");
    assert_eq!(row.get::<_, i32>(2), i32::from(cluster().primary().port));
    // A prepared statement used several times in one session.
    let stmt = client.prepare("SELECT $1::text || 'x'").await.unwrap();
    for i in 0..5 {
        let row = client.query_one(&stmt, &[&i.to_string()]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("{i}x"));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn multi_statement_query_string() {
    let proxy = start_proxy(&proxy_yaml("size: 4", "")).await;
    let client = proxy.app_client().await;
    let messages = client
        .simple_query(
            "CREATE TEMP TABLE multi(x int); INSERT INTO multi VALUES (1),(2),(3); SELECT sum(x) FROM multi",
        )
        .await
        .unwrap();
    let sum = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(sum.as_deref(), Some("6"));
    proxy.stop().await;
}

#[tokio::test]
async fn copy_in_and_out_keep_every_byte() {
    let proxy = start_proxy(&proxy_yaml("size: 4", "")).await;
    let client = proxy.app_client().await;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS copy_check; CREATE TABLE copy_check(id int, payload text)",
        )
        .await
        .unwrap();
    let mut data = String::new();
    for i in 0..20_000 {
        data.push_str(&format!("{i}\tpayload-{i}-{}\n", "x".repeat(i % 300)));
    }
    let sink = client.copy_in("COPY copy_check FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in data.as_bytes().chunks(64 * 1024) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, 20_000);
    let stream = client
        .copy_out("COPY (SELECT * FROM copy_check ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(out.len(), data.len());
    assert!(out == data.as_bytes(), "COPY round trip changed the data");
    let row = client
        .query_one(
            "SELECT md5(string_agg(payload, ',' ORDER BY id)) FROM copy_check",
            &[],
        )
        .await
        .unwrap();
    let expected: String = cluster()
        .psql_in(
            cluster().primary(),
            roles::DATABASE,
            "SELECT md5(string_agg(payload, ',' ORDER BY id)) FROM copy_check",
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), expected.trim());
    client.batch_execute("DROP TABLE copy_check").await.unwrap();
    proxy.stop().await;
}

/// One worker serves a client streaming a large COPY out, which it reads only after a pause (the
/// proxy's writes to it fill the socket and must wait for room), and another client's queries:
/// the stream arrives whole, and the relay that always has bytes to move gives way to the other
/// client's queries on the same thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_copy_out_shares_its_worker() {
    let limits = "limits: { worker_threads: 1, balance_interval: 0s }";
    let proxy = start_proxy(&proxy_yaml("size: 4", limits)).await;
    let streaming = proxy.app_client().await;
    let querying = proxy.app_client().await;
    const ROWS: usize = 100_000;
    let stream = streaming
        .copy_out(&format!(
            "COPY (SELECT i, repeat('y', 200) FROM generate_series(1, {ROWS}) i) TO STDOUT"
        ))
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        // Not read yet: the proxy's socket buffer towards this client fills up.
        tokio::time::sleep(Duration::from_millis(300)).await;
        futures_util::pin_mut!(stream);
        let (mut rows, mut bytes) = (0usize, 0usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            rows += chunk.iter().filter(|b| **b == b'\n').count();
            bytes += chunk.len();
        }
        (rows, bytes)
    });
    let queries = tokio::time::timeout(Duration::from_secs(30), async {
        for i in 0..50i32 {
            let row = querying.query_one("SELECT $1::int", &[&i]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), i);
        }
    });
    queries
        .await
        .expect("queries on the streaming client's worker stalled");
    let (rows, bytes) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the COPY stream stalled")
        .unwrap();
    assert_eq!(rows, ROWS);
    let expected: usize = (1..=ROWS).map(|i| i.to_string().len() + 1 + 200 + 1).sum();
    assert_eq!(bytes, expected, "COPY out lost or added bytes");
    drop(streaming);
    proxy.stop().await;
}

#[tokio::test]
async fn error_in_transaction_then_rollback_then_work() {
    let proxy = start_proxy(&proxy_yaml("size: 4", "")).await;
    let client = proxy.app_client().await;
    client.batch_execute("BEGIN").await.unwrap();
    let err = client.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"));
    let err = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("25P02"),
        "transaction is aborted"
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    let row = client.query_one("SELECT 7", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    proxy.stop().await;
}

#[tokio::test]
async fn cancel_stops_a_long_query_quickly() {
    let proxy = start_proxy(&proxy_yaml("size: 4", "")).await;
    let client = proxy.app_client().await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move {
        let result = client.batch_execute("SELECT pg_sleep(30)").await;
        (result, client)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (result, client) = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .expect("cancelled query returns")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(sqlstate(&result.unwrap_err()).as_deref(), Some("57014"));
    // The session is still usable.
    assert_eq!(
        client
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    proxy.stop().await;
}

#[tokio::test]
async fn cancel_reaches_only_its_own_client() {
    let proxy = start_proxy(&proxy_yaml("size: 4", "")).await;
    let victim = proxy.app_client().await;
    let bystander = proxy.app_client().await;
    let bystander_task =
        tokio::spawn(async move { bystander.batch_execute("SELECT pg_sleep(1.5)").await });
    let token = victim.cancel_token();
    let victim_task =
        tokio::spawn(async move { victim.batch_execute("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let victim_result = victim_task.await.unwrap();
    assert_eq!(
        sqlstate(&victim_result.unwrap_err()).as_deref(),
        Some("57014")
    );
    bystander_task
        .await
        .unwrap()
        .expect("the other client's query is untouched");
    proxy.stop().await;
}

#[tokio::test]
async fn session_state_is_reset_between_clients() {
    let proxy = start_proxy(&proxy_yaml("size: 1", "")).await;
    let first = proxy.app_client().await;
    first
        .batch_execute("SET work_mem = '1234kB'; CREATE TEMP TABLE leftover(x int)")
        .await
        .unwrap();
    let pid: i32 = first
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(first);
    let second = proxy.app_client().await;
    let row = second
        .query_one(
            "SELECT current_setting('work_mem'), pg_backend_pid(), to_regclass('pg_temp.leftover') IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i32>(1),
        pid,
        "pool of one reuses the server connection"
    );
    assert_ne!(row.get::<_, String>(0), "1234kB", "SET did not leak");
    assert!(row.get::<_, bool>(2), "temp table did not leak");
    proxy.stop().await;
}

#[tokio::test]
async fn client_gone_mid_transaction_never_leaks_the_transaction() {
    let proxy = start_proxy(&proxy_yaml("size: 1", "")).await;
    let first = proxy.app_client().await;
    first
        .batch_execute("CREATE TABLE IF NOT EXISTS gone_mid_tx(x int)")
        .await
        .unwrap();
    first
        .batch_execute("BEGIN; INSERT INTO gone_mid_tx VALUES (1)")
        .await
        .unwrap();
    drop(first);
    let second = proxy.app_client().await;
    let row = second
        .query_one("SELECT count(*) FROM gone_mid_tx", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        0,
        "the abandoned insert was rolled back"
    );
    second
        .batch_execute("DROP TABLE gone_mid_tx")
        .await
        .unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn full_pool_waits_then_fails_with_a_clear_error() {
    let proxy = start_proxy(&proxy_yaml("size: 1, checkout_timeout: 700ms", "")).await;
    let holder = proxy.app_client().await;
    // Greeted at once (from the pool's server parameters); the wait is at the first query.
    let waiter = proxy
        .connect("app", "app-pass", "sluice")
        .await
        .expect("login does not wait for a connection");
    let started = Instant::now();
    let err = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("pool of one is taken");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(600),
        "waited only {waited:?}"
    );
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"));
    let message = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("sluice/app@primary"),
        "message names the pool: {message}"
    );
    // A waiter gets the connection as soon as the holder leaves.
    let waiter = tokio::spawn({
        let config = proxy.pg_config("app", "app-pass", "sluice");
        async move {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await.map(|_| ())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(holder);
    waiter
        .await
        .unwrap()
        .expect("waiter is served after release");
    proxy.stop().await;
}

#[tokio::test]
async fn waiters_are_served_in_arrival_order() {
    let proxy = start_proxy(&proxy_yaml("size: 1, checkout_timeout: 20s", "")).await;
    let holder = proxy.app_client().await;
    let pool = proxy
        .app
        .shared()
        .generation
        .load()
        .pools
        .get("sluice", "app", pgsluice::topology::NodeId(0))
        .unwrap()
        .clone();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let config = proxy.pg_config("app", "app-pass", "sluice");
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            // Served (and finished) in the order the queries queued for the one connection.
            client.batch_execute("SELECT pg_sleep(0.05)").await.unwrap();
            order.lock().unwrap().push(i);
        }));
        // Queued before the next one starts (its login may take a while on a busy machine).
        let queued = eventually(Duration::from_secs(10), || {
            pool.metrics().clients_waiting.get() == i + 1
        })
        .await;
        assert!(queued, "client {i} is waiting for the connection");
    }
    drop(holder);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    proxy.stop().await;
}

#[tokio::test]
async fn broken_server_connection_is_replaced_not_handed_out() {
    let proxy = start_proxy(&proxy_yaml("size: 1", "")).await;
    let first = proxy.app_client().await;
    let pid: i32 = first
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster()
        .psql(
            cluster().primary(),
            &format!("SELECT pg_terminate_backend({pid})"),
        )
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = proxy.app_client().await;
    let new_pid: i32 = second
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(new_pid, pid);
    proxy.stop().await;
}

#[tokio::test]
async fn min_size_idle_timeout_and_lifetime() {
    // A dedicated role so the counts are this test's alone.
    let yaml = proxy_yaml("size: 3, server_idle_timeout: 1s", "").replace(
        "name: trustapp, auth_method: trust",
        "name: trustapp, auth_method: trust, pool: { min_size: 2 }",
    );
    let proxy = start_proxy(&yaml).await;
    assert!(
        eventually(Duration::from_secs(10), || server_connections(
            roles::TRUST_USER
        ) == 2)
        .await,
        "min_size connections opened"
    );
    // Above min_size, idle connections close after server_idle_timeout.
    let clients: Vec<_> =
        futures_util::future::join_all((0..3).map(|_| proxy.connect("trustapp", "", "sluice")))
            .await;
    assert_eq!(server_connections(roles::TRUST_USER), 3);
    drop(clients);
    assert!(
        eventually(Duration::from_secs(10), || server_connections(
            roles::TRUST_USER
        ) == 2)
        .await,
        "back to min_size after the idle timeout"
    );
    proxy.stop().await;

    // server_lifetime: a connection older than it is closed instead of reused.
    let proxy = start_proxy(&proxy_yaml("size: 1, server_lifetime: 1s", "")).await;
    let first = proxy.app_client().await;
    let pid: i32 = first
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = proxy.app_client().await;
    let new_pid: i32 = second
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(new_pid, pid, "an expired connection is not reused");
    proxy.stop().await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_startup_timeout() {
    let proxy = start_proxy(&proxy_yaml("size: 2", "limits: { startup_timeout: 500ms }")).await;
    let mut socket = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut socket, &mut buf),
    )
    .await
    .expect("proxy closes the silent connection")
    .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(400));
    proxy.stop().await;
}

#[tokio::test]
async fn too_many_clients_get_53300() {
    let proxy = start_proxy(&proxy_yaml("size: 4", "limits: { max_client_conn: 2 }")).await;
    let _a = proxy.app_client().await;
    let _b = proxy.app_client().await;
    let err = proxy
        .connect("app", "app-pass", "sluice")
        .await
        .expect_err("third client is over max_client_conn");
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"));
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.app_client().await;
    proxy.stop().await;
}

#[tokio::test]
async fn startup_parameters_reach_the_server_and_bad_ones_fail_the_login() {
    let proxy = start_proxy(&proxy_yaml("size: 1", "")).await;
    let mut config = proxy.pg_config("app", "app-pass", "sluice");
    config
        .application_name("sluice-test")
        .options("-c statement_timeout=4321");
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT current_setting('application_name'), current_setting('statement_timeout')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "sluice-test");
    assert_eq!(row.get::<_, String>(1), "4321ms");
    drop(client);

    let mut config = proxy.pg_config("app", "app-pass", "sluice");
    config.options("-c TimeZone=Not/AZone");
    let Err(err) = config.connect(tokio_postgres::NoTls).await else {
        panic!("an invalid time zone must fail the login");
    };
    assert_eq!(sqlstate(&err).as_deref(), Some("22023"));
    // The pool's only connection survived the failed login.
    proxy.app_client().await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_sessions_than_connections_log_in_and_take_turns() {
    let proxy = start_proxy(&proxy_yaml("size: 4, checkout_timeout: 60s", "")).await;
    // One session first, so the pool knows its server's parameters.
    proxy
        .app_client()
        .await
        .simple_query("SELECT 1")
        .await
        .unwrap();
    let script = std::env::temp_dir().join(format!("pgsluice-select1-{}.sql", std::process::id()));
    std::fs::write(&script, "SELECT 1;\n").unwrap();
    // pgbench logs all 16 clients in before running any: with logins waiting for one of the 4
    // connections this could never start.
    let run = common::pgbench(
        proxy.addr.port(),
        &[
            "-n",
            "-f",
            script.to_str().unwrap(),
            "-c",
            "16",
            "-j",
            "2",
            "-t",
            "20",
            "sluice",
        ],
    )
    .kill_on_drop(true)
    .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("pgbench finishes")
        .unwrap();
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("number of transactions actually processed: 320/320"),
        "{stdout}"
    );
    proxy.stop().await;
}
