//! Timeouts and limits against real Postgres: query_timeout, idle_transaction_timeout,
//! client_idle_timeout, checkout_notice_after, the pool reserve, per-database and per-user
//! max_client_conn, server_connect_timeout, and cancel under transaction pooling.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{proxy_yaml, sqlstate, start_proxy, Proxy};
use tokio::task::JoinHandle;
use tokio_postgres::error::DbError;
use tokio_postgres::AsyncMessage;

/// A client whose connection task reports the error that ended it and collects notices.
struct Watched {
    client: tokio_postgres::Client,
    /// The error the proxy ended the connection with (None: closed cleanly).
    ended: JoinHandle<Option<tokio_postgres::Error>>,
    notices: Arc<Mutex<Vec<DbError>>>,
}

async fn watched(proxy: &Proxy, user: &str, password: &str) -> Watched {
    let (client, mut connection) = proxy
        .pg_config(user, password, "sluice")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    let notices = Arc::new(Mutex::new(Vec::new()));
    let seen = notices.clone();
    let ended = tokio::spawn(async move {
        loop {
            match futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notice(notice))) => seen.lock().unwrap().push(notice),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    });
    Watched {
        client,
        ended,
        notices,
    }
}

async fn app(proxy: &Proxy) -> Watched {
    watched(proxy, "app", "app-pass").await
}

/// The SQLSTATE the connection was ended with, waiting at most `within`.
async fn ended_with(conn: Watched, within: Duration) -> Option<String> {
    let ended = tokio::time::timeout(within, conn.ended)
        .await
        .expect("the proxy ends the connection in time")
        .unwrap();
    ended.as_ref().and_then(sqlstate)
}

/// The server's (or proxy's) message text of an error.
fn message(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_else(|| err.to_string())
}

#[tokio::test]
async fn query_timeout_cancels_the_query_in_both_modes() {
    for mode in ["session", "transaction"] {
        let pool = format!("mode: {mode}, size: 1, query_timeout: 1s");
        let proxy = start_proxy(&proxy_yaml(&pool, "")).await;
        let conn = app(&proxy).await;
        let started = Instant::now();
        let err = conn
            .client
            .batch_execute("SELECT pg_sleep(20)")
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{mode}: {err}");
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_secs(4),
            "{mode}: cancelled after {took:?}"
        );
        // The extended protocol too.
        let err = conn
            .client
            .query("SELECT pg_sleep(20)", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{mode}: {err}");
        // The session and its (only) server connection are fine afterwards.
        let row = conn.client.query_one("SELECT 1", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 1);
        // A short query is not touched.
        conn.client
            .batch_execute("SELECT pg_sleep(0.2)")
            .await
            .unwrap();
        proxy.stop().await;
    }
}

#[tokio::test]
async fn idle_in_transaction_client_is_disconnected_and_rolled_back() {
    for mode in ["session", "transaction"] {
        let pool = format!("mode: {mode}, size: 1, idle_transaction_timeout: 1s");
        let proxy = start_proxy(&proxy_yaml(&pool, "")).await;
        let table = format!("idle_tx_{mode}");
        let conn = app(&proxy).await;
        conn.client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table}(x int)"
            ))
            .await
            .unwrap();
        conn.client
            .batch_execute(&format!("BEGIN; INSERT INTO {table} VALUES (1)"))
            .await
            .unwrap();
        let code = ended_with(conn, Duration::from_secs(5)).await;
        assert_eq!(code.as_deref(), Some("25P03"), "{mode}");
        // The one server connection went back rolled back.
        let next = app(&proxy).await;
        let row = next
            .client
            .query_one(
                &format!("SELECT count(*), txid_current_if_assigned() IS NULL FROM {table}"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, i64>(0),
            0,
            "{mode}: the insert was rolled back"
        );
        assert!(row.get::<_, bool>(1));
        // Busy clients are not idle: a transaction with steady queries survives.
        next.client.batch_execute("BEGIN").await.unwrap();
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            next.client.batch_execute("SELECT 1").await.unwrap();
        }
        next.client.batch_execute("COMMIT").await.unwrap();
        proxy.stop().await;
    }
}

#[tokio::test]
async fn idle_client_is_disconnected_in_both_modes() {
    for mode in ["session", "transaction"] {
        let pool = format!("mode: {mode}, size: 2, client_idle_timeout: 1s");
        let proxy = start_proxy(&proxy_yaml(&pool, "")).await;
        let conn = app(&proxy).await;
        // Activity keeps it alive.
        let t = Instant::now();
        for i in 0..4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let done = conn.client.batch_execute("SELECT 1").await;
            done.unwrap_or_else(|e| panic!("{mode}: query {i} at {:?}: {e}", t.elapsed()));
        }
        let started = Instant::now();
        let code = ended_with(conn, Duration::from_secs(5)).await;
        assert_eq!(code.as_deref(), Some("57P05"), "{mode}");
        assert!(started.elapsed() >= Duration::from_millis(900), "{mode}");
        proxy.stop().await;
    }
}

#[tokio::test]
async fn waiting_client_gets_one_notice_and_keeps_waiting() {
    let pool = "mode: transaction, size: 1, checkout_notice_after: 300ms, checkout_timeout: 5s";
    let proxy = start_proxy(&proxy_yaml(pool, "")).await;
    let holder = app(&proxy).await;
    let waiter = app(&proxy).await;
    holder.client.batch_execute("BEGIN").await.unwrap();
    let query = tokio::spawn(async move {
        let result = waiter.client.query_one("SELECT 2", &[]).await;
        (result, waiter)
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    holder.client.batch_execute("COMMIT").await.unwrap();
    let (result, waiter) = tokio::time::timeout(Duration::from_secs(5), query)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.unwrap().get::<_, i32>(0), 2);
    let notices = waiter.notices.lock().unwrap().clone();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].severity(), "NOTICE");
    assert_eq!(notices[0].code().code(), "01000");
    assert!(notices[0].message().contains("sluice"), "{notices:?}");
    assert!(notices[0].message().contains("waiting"), "{notices:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn reserve_connection_serves_a_waiting_client_then_closes() {
    let pool = "mode: transaction, size: 1, reserve_size: 1, reserve_timeout: 300ms, \
                checkout_timeout: 6s";
    let proxy = start_proxy(&proxy_yaml(pool, "")).await;
    let holder = app(&proxy).await;
    holder.client.batch_execute("BEGIN").await.unwrap();
    // Logging in needs a server connection too: this one comes from the reserve.
    let started = Instant::now();
    let waiter = app(&proxy).await;
    let row = waiter.client.query_one("SELECT 3", &[]).await.unwrap();
    let took = started.elapsed();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "served after {took:?}"
    );
    holder.client.batch_execute("COMMIT").await.unwrap();
    // Back to size once both are idle.
    let closed = common::eventually(Duration::from_secs(5), || {
        let generation = proxy.app.shared().generation.load();
        let open: usize = generation
            .pools
            .iter()
            .map(|(_, pool)| pool.stats().open)
            .sum();
        open <= 1
    })
    .await;
    assert!(closed, "the reserve connection is closed once idle");
    proxy.stop().await;
}

#[tokio::test]
async fn max_client_conn_per_database_and_per_user() {
    let yaml = proxy_yaml("size: 4", "")
        .replace(
            "name: trustapp, auth_method: trust",
            "name: trustapp, auth_method: trust, max_client_conn: 1",
        )
        .replace(
            "    server_database:",
            "    max_client_conn: 3\n    server_database:",
        );
    let proxy = start_proxy(&yaml).await;
    // Per user.
    let first = watched(&proxy, "trustapp", "").await;
    let err = proxy.connect("trustapp", "", "sluice").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"), "{err}");
    assert!(message(&err).contains("user \"trustapp\""), "{err}");
    drop(first.client);
    let _ = first.ended.await;
    // Uncounted on disconnect (eventually: the proxy sees the close asynchronously).
    let mut again = None;
    for _ in 0..50 {
        if let Ok(client) = proxy.connect("trustapp", "", "sluice").await {
            again = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "a slot frees when the client leaves");
    // Per database: trustapp holds one, two more fit, the fourth is refused.
    let _a = proxy.app_client().await;
    let _b = proxy.app_client().await;
    let err = proxy
        .connect("app", "app-pass", "sluice")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"), "{err}");
    assert!(message(&err).contains("database \"sluice\""), "{err}");
    proxy.stop().await;
}

#[tokio::test]
async fn server_connect_timeout_bounds_a_silent_node() {
    // A node that accepts TCP but never answers the startup packet.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let yaml = format!(
        r#"
auth: {{ method: trust }}
pool: {{ size: 1, server_connect_timeout: 300ms, checkout_timeout: 5s }}
users:
  - {{ name: trustapp, auth_method: trust }}
databases:
  - name: sluice
    nodes:
      - {{ name: silent, host: 127.0.0.1, port: {port}, role: primary }}
"#
    );
    let proxy = start_proxy(&yaml).await;
    let started = Instant::now();
    let err = proxy.connect("trustapp", "", "sluice").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(sqlstate(&err).as_deref(), Some("08006"), "{err}");
    assert!(
        message(&err).contains("did not answer within 300ms"),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(3), "gave up after {took:?}");
    proxy.stop().await;
    hold.abort();
}

#[tokio::test]
async fn cancel_in_transaction_mode_hits_only_a_running_query() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 1", "")).await;
    // A cancel while the client's query runs cancels it.
    let conn = app(&proxy).await;
    let token = conn.client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let result = conn.client.batch_execute("SELECT pg_sleep(20)").await;
        (result, conn)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (result, conn) = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()).as_deref(), Some("57014"));

    // A cancel from a client between transactions reaches nobody, not even another client's
    // query on the same (only) server connection.
    let other = app(&proxy).await;
    let bystander =
        tokio::spawn(async move { other.client.batch_execute("SELECT pg_sleep(1)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), bystander)
        .await
        .unwrap()
        .unwrap()
        .expect("the other client's query is not cancelled");
    let row = conn.client.query_one("SELECT 4", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 4);
    proxy.stop().await;
}
