//! Zero-downtime upgrade: a second pgsluice process binds the same port (SO_REUSEPORT), the old one
//! drains on SIGTERM, and a steady connect-and-query loop sees no refused or failed connection while
//! a client inside a transaction commits on the old process.

mod common;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{cluster, proxy_yaml};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// A port that was free a moment ago (both processes must use the same, fixed one).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// Starts the built binary with `config` and waits (bounded) until it logs "listening"; its stderr
/// keeps being read so the pipe never fills.
async fn spawn_proxy(config: &std::path::Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgsluice"))
        .args(["run", "-c"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn pgsluice");
    let stderr = child.stderr.take().expect("piped stderr");
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("listening") {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
            }
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("pgsluice[{}]: {line}", std::process::id());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), ready_rx)
        .await
        .expect("pgsluice listens within 20 s")
        .expect("pgsluice logged that it listens");
    child
}

async fn send_sigterm(child: &Child) {
    let pid = child.id().expect("child still running");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("run kill");
    assert!(status.success());
}

/// The status code of `GET path` on 127.0.0.1:`port`.
async fn http_status(port: u16, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        tcp.write_all(head.as_bytes()).await?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("HTTP answer within 10 s")
        .expect("HTTP exchange");
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"))
}

/// Connection settings as `app` (SCRAM) or, for the fast loop, `trustapp` (no password hashing).
fn pg_config(port: u16, user: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password("app-pass")
        .dbname("sluice")
        .connect_timeout(Duration::from_secs(10));
    config
}

/// One connector: connect → SELECT 1 → close, until `stop`; counts successes, keeps failures.
async fn connector(
    port: u16,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let result = async {
            let (client, connection) = pg_config(port, "trustapp")
                .connect(tokio_postgres::NoTls)
                .await?;
            let task = tokio::spawn(connection);
            client.simple_query("SELECT 1").await?;
            drop(client);
            let _ = task.await;
            Ok::<_, tokio_postgres::Error>(())
        }
        .await;
        match result {
            Ok(()) => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_process_takes_over_without_refusing_anyone() {
    let port = free_port();
    let http_port = free_port();
    let table = format!("upgrade_probe_{}", std::process::id());
    let extra = format!(
        "listeners: [{{ address: \"127.0.0.1:{port}\" }}]\n\
         listen: {{ reuse_port: true }}\n\
         http: {{ listen: \"127.0.0.1:{http_port}\" }}\n\
         limits: {{ shutdown_timeout: 15s, worker_threads: 1 }}\n"
    );
    let yaml = proxy_yaml("mode: transaction, size: 8", &extra);
    let dir = std::env::temp_dir().join(format!("pgsluice-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("pgsluice.yaml");
    std::fs::write(&config, yaml).unwrap();
    cluster();

    let mut old = spawn_proxy(&config).await;

    // The long-lived client opens its transaction on the old process.
    let (long, connection) = pg_config(port, "app")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("long-lived client connects");
    tokio::spawn(connection);
    long.batch_execute(&format!(
        "BEGIN; CREATE TABLE {table} (x int); INSERT INTO {table} VALUES (1)"
    ))
    .await
    .expect("transaction starts");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let connectors: Vec<_> = (0..6)
        .map(|_| tokio::spawn(connector(port, stop.clone(), ok.clone(), failures.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut new = spawn_proxy(&config).await;
    send_sigterm(&old).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The HTTP port is shared too: the draining process has left it, probes reach the new one.
    for _ in 0..20 {
        assert_eq!(http_status(http_port, "/ready").await, 200);
    }

    // Still inside its transaction on the draining old process: it commits there.
    assert!(
        old.try_wait().unwrap().is_none(),
        "old process waits for the open transaction"
    );
    long.batch_execute(&format!("INSERT INTO {table} VALUES (2); COMMIT"))
        .await
        .expect("in-flight transaction commits on the old process");
    let exited = tokio::time::timeout(Duration::from_secs(10), old.wait())
        .await
        .expect("old process exits once its clients are done")
        .unwrap();
    assert!(exited.success(), "old process exit: {exited:?}");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for connector in connectors {
        tokio::time::timeout(Duration::from_secs(20), connector)
            .await
            .expect("connector stops")
            .unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "failed connects/queries: {failures:#?}"
    );
    let served = ok.load(Ordering::Relaxed);
    eprintln!("{served} connect-and-query rounds");
    assert!(served > 100, "the loop kept going: {served} rounds");

    // The new process serves, and sees the committed rows.
    let (client, connection) = pg_config(port, "app")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("new process serves");
    tokio::spawn(connection);
    let rows = client
        .simple_query(&format!("SELECT count(*) FROM {table}"))
        .await
        .unwrap();
    let count = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(count.as_deref(), Some("2"));
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    drop(client);

    send_sigterm(&new).await;
    let exited = tokio::time::timeout(Duration::from_secs(20), new.wait())
        .await
        .expect("new process stops")
        .unwrap();
    assert!(exited.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Connections the kernel queued before the listener closed are served, not reset: clients connect
/// while nothing accepts, then the proxy starts already draining; each still runs its query.
#[tokio::test]
async fn connections_queued_at_close_are_served() {
    let yaml = proxy_yaml(
        "mode: transaction, size: 4",
        "listeners: [{ address: \"127.0.0.1:0\" }]\nlimits: { shutdown_timeout: 10s }",
    );
    let config = pgsluice::config::load_str(&yaml, &|_| None).expect("valid config");
    let listeners = pgsluice::app::App::bind(&config).await.expect("bind");
    let addr = listeners[0].local_addr().unwrap();
    // Handshakes complete in the kernel; the sockets wait in the backlog.
    let mut queued = Vec::new();
    for _ in 0..10 {
        queued.push(tokio::net::TcpStream::connect(addr).await.expect("queued"));
    }
    let app = Arc::new(pgsluice::app::App::new(config).expect("app"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    shutdown.cancel();
    let serving = tokio::spawn({
        let app = app.clone();
        async move { app.serve(listeners, shutdown).await }
    });
    for (i, stream) in queued.into_iter().enumerate() {
        let (client, connection) = pg_config(addr.port(), "trustapp")
            .connect_raw(stream, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("queued client {i} starts: {e:?}"));
        tokio::spawn(connection);
        client
            .simple_query("SELECT 1")
            .await
            .unwrap_or_else(|e| panic!("queued client {i} queries: {e:?}"));
    }
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("drain ends once the queued clients are done")
        .unwrap()
        .unwrap();
}
