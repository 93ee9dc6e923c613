//! The admin console end to end: SHOW views, access control, KILL, PAUSE/RESUME, RELOAD and
//! SHUTDOWN, through tokio-postgres simple queries and psql against an in-process proxy.

mod common;

use std::time::Duration;

use tokio::process::Command;
use tokio_postgres::{Client, SimpleQueryMessage};

use common::{pg_bin, proxy_yaml, sqlstate, start_proxy, Proxy};

const ADMIN_USERS: &str = "admin: { users: [trustapp, md5app] }";

/// A console session as `trustapp`.
async fn console(proxy: &Proxy) -> Client {
    proxy
        .connect("trustapp", "", "pgsluice")
        .await
        .expect("admin connects")
}

/// Column names and rows (NULL as "") of the single result of `sql`.
async fn table(client: &Client, sql: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let messages = tokio::time::timeout(Duration::from_secs(20), client.simple_query(sql))
        .await
        .expect("answer in time")
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(row) => rows.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => {}
        }
    }
    (columns, rows)
}

/// The server's message of an error.
fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default()
}

/// The value of `column` in `row`.
fn cell<'r>(columns: &[String], row: &'r [String], column: &str) -> &'r str {
    let i = columns.iter().position(|c| c == column).expect(column);
    &row[i]
}

/// SHOW POOLS' row for sluice/app on the primary.
async fn app_pool(admin: &Client) -> (Vec<String>, Vec<String>) {
    let (columns, rows) = table(admin, "show pools").await;
    let row = rows
        .into_iter()
        .find(|r| r[0] == "sluice" && r[1] == "app" && r[2] == "primary")
        .expect("pool sluice/app@primary");
    (columns, row)
}

#[tokio::test]
async fn show_views_list_clients_pools_servers_and_nodes() {
    let proxy = start_proxy(&proxy_yaml("size: 2, mode: transaction", ADMIN_USERS)).await;
    let app = proxy.app_client().await;
    let admin = console(&proxy).await;
    app.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let (columns, pool) = app_pool(&admin).await;
    for c in [
        "cl_active",
        "cl_waiting",
        "sv_idle",
        "sv_used",
        "sv_tested",
        "sv_login",
    ] {
        assert!(columns.iter().any(|x| x == c), "{c} in {columns:?}");
    }
    assert!(columns.iter().any(|x| x == "maxwait_us"));
    assert_eq!(cell(&columns, &pool, "sv_active"), "1");
    assert_eq!(cell(&columns, &pool, "pool_mode"), "transaction");

    let (columns, clients) = table(&admin, "SHOW CLIENTS;").await;
    let app_row = clients.iter().find(|r| r[1] == "app").expect("app client");
    assert_eq!(cell(&columns, app_row, "database"), "sluice");
    assert_eq!(cell(&columns, app_row, "state"), "active");
    assert_eq!(cell(&columns, app_row, "addr"), "127.0.0.1");
    assert!(cell(&columns, app_row, "connect_time").ends_with("UTC"));
    assert!(clients
        .iter()
        .any(|r| r[1] == "trustapp" && r[2] == "pgsluice"));

    let (columns, servers) = table(&admin, "show servers").await;
    assert!(servers.iter().any(|r| r[1] == "app"
        && cell(&columns, r, "state") == "active"
        && cell(&columns, r, "node") == "primary"));

    app.batch_execute("COMMIT").await.unwrap();
    // The connection goes back to the pool just after the client has its answer.
    let mut released = None;
    for _ in 0..50 {
        let (columns, pool) = app_pool(&admin).await;
        if cell(&columns, &pool, "sv_active") == "0" {
            released = Some((columns, pool));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (columns, pool) = released.expect("the server connection is released after COMMIT");
    assert_eq!(cell(&columns, &pool, "sv_idle"), "1");
    let (columns, servers) = table(&admin, "show servers").await;
    let idle = servers
        .iter()
        .find(|r| r[1] == "app" && cell(&columns, r, "state") == "idle")
        .expect("idle server");
    assert!(cell(&columns, idle, "remote_pid").parse::<i32>().unwrap() > 0);

    let (columns, nodes) = table(&admin, "show nodes").await;
    assert_eq!(columns[..3], ["database", "node", "host"]);
    assert!(nodes
        .iter()
        .any(|r| r[1] == "primary" && cell(&columns, r, "role") == "primary"));
    assert!(nodes.iter().any(|r| r[1] == "replica1"));

    let (columns, stats) = table(&admin, "show stats").await;
    assert!(columns.iter().any(|c| c == "total_xact_count"));
    assert_eq!(cell(&columns, &stats[0], "database"), "sluice");
    assert_eq!(cell(&columns, &stats[0], "clients"), "1");

    let (_, config) = table(&admin, "show config").await;
    assert!(config
        .iter()
        .any(|r| r[0] == "pool.mode" && r[1] == "transaction"));
    assert!(config
        .iter()
        .any(|r| r[0] == "admin.users" && r[1] == "trustapp,md5app"));
    assert!(!config.iter().flatten().any(|v| v.contains("app-pass")));

    let (_, version) = table(&admin, "show version").await;
    assert!(version[0][0].starts_with("pgsluice "));
    let (_, help) = table(&admin, "SHOW").await;
    assert!(help.iter().any(|r| r[0] == "KILL <client id>"));
    proxy.stop().await;
}

#[tokio::test]
async fn errors_keep_the_console_usable_and_non_admins_are_refused() {
    let proxy = start_proxy(&proxy_yaml("size: 2", ADMIN_USERS)).await;
    let refused = proxy.connect("app", "app-pass", "pgsluice").await;
    let Err(e) = refused else {
        panic!("non-admin refused")
    };
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
    assert_eq!(
        message(&e),
        "user \"app\" is not allowed to use the admin console"
    );
    let wrong = proxy.connect("md5app", "wrong", "pgsluice").await;
    assert_eq!(sqlstate(&wrong.err().unwrap()).as_deref(), Some("28P01"));

    let admin = proxy
        .connect("md5app", "md5-app-pass", "pgsluice")
        .await
        .unwrap();
    let e = admin.simple_query("show tables").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42601"));
    let e = admin.simple_query("select 1").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42601"));
    let e = admin.simple_query("kill 999999").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42704"));
    let e = admin.simple_query("pause nosuchdb").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42704"));
    // Extended protocol: refused, and the console goes on.
    let e = admin.query("show pools", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("0A000"));
    let (_, rows) = table(&admin, "show version").await;
    assert_eq!(rows.len(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn psql_shows_pools() {
    let proxy = start_proxy(&proxy_yaml("size: 2", ADMIN_USERS)).await;
    let out = Command::new(pg_bin("psql"))
        .args(["-X", "-A", "-d", &proxy.url("trustapp", "", "pgsluice")])
        .args(["-c", "SHOW POOLS;"])
        .output()
        .await
        .expect("psql runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("database|user|node|cl_active|cl_waiting|sv_active"),
        "{stdout}"
    );
    assert!(stdout.contains("sluice|app|primary|"), "{stdout}");
    proxy.stop().await;
}

#[tokio::test]
async fn kill_disconnects_the_target_client_only() {
    let proxy = start_proxy(&proxy_yaml("size: 4", ADMIN_USERS)).await;
    let first = proxy.app_client().await;
    let second = proxy.app_client().await;
    let admin = console(&proxy).await;
    let (columns, clients) = table(&admin, "show clients").await;
    let mut ids: Vec<u64> = clients
        .iter()
        .filter(|r| r[1] == "app")
        .map(|r| cell(&columns, r, "id").parse().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), 2);
    admin
        .simple_query(&format!("KILL {}", ids[0]))
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), first.simple_query("SELECT 1"))
        .await
        .expect("answer in time")
        .unwrap_err();
    assert!(
        first.is_closed() || sqlstate(&e).as_deref() == Some("57P01"),
        "{e}"
    );
    second
        .simple_query("SELECT 1")
        .await
        .expect("other client unaffected");
    let (_, clients) = table(&admin, "show clients").await;
    assert_eq!(clients.iter().filter(|r| r[1] == "app").count(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn pause_holds_new_transactions_until_resume() {
    let yaml = proxy_yaml(
        "size: 2, mode: transaction, checkout_timeout: 20s",
        ADMIN_USERS,
    );
    let proxy = start_proxy(&yaml).await;
    let app = proxy.app_client().await;
    let admin = console(&proxy).await;
    tokio::time::timeout(Duration::from_secs(10), admin.simple_query("pause sluice"))
        .await
        .expect("PAUSE returns when nothing is busy")
        .unwrap();
    let (columns, pool) = app_pool(&admin).await;
    assert_eq!(cell(&columns, &pool, "paused"), "yes");
    let query = tokio::spawn(async move { app.simple_query("SELECT 1").await.map(|_| app) });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!query.is_finished(), "transaction must wait while paused");
    let (columns, clients) = table(&admin, "show clients").await;
    let app_row = clients.iter().find(|r| r[1] == "app").unwrap();
    assert_eq!(cell(&columns, app_row, "state"), "waiting");
    let (columns, pool) = app_pool(&admin).await;
    assert_eq!(cell(&columns, &pool, "cl_waiting"), "1");
    admin.simple_query("RESUME").await.unwrap();
    let app = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("runs after RESUME")
        .unwrap()
        .unwrap();
    app.simple_query("SELECT 2").await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn reload_needs_a_config_file_and_applies_it() {
    let yaml = proxy_yaml("size: 2", ADMIN_USERS);
    let proxy = start_proxy(&yaml).await;
    let admin = console(&proxy).await;
    let e = admin.simple_query("reload").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("F0000"));
    assert!(message(&e).contains("no config file to reload"), "{e:?}");

    let dir = std::env::temp_dir().join(format!("pgsluice-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("reload.yaml");
    std::fs::write(&file, proxy_yaml("size: 7", ADMIN_USERS)).unwrap();
    proxy.app.set_config_path(&file);
    admin.simple_query("RELOAD;").await.unwrap();
    let (_, config) = table(&admin, "show config").await;
    assert!(config.iter().any(|r| r[0] == "pool.size" && r[1] == "7"));

    std::fs::write(&file, "pool: { size: nope }").unwrap();
    let e = admin.simple_query("reload").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("F0000"));
    let (_, config) = table(&admin, "show config").await;
    assert!(config.iter().any(|r| r[0] == "pool.size" && r[1] == "7"));
    let _ = std::fs::remove_dir_all(&dir);
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_clients() {
    let proxy = start_proxy(&proxy_yaml("size: 2", ADMIN_USERS)).await;
    let admin = console(&proxy).await;
    admin.simple_query("SHUTDOWN").await.unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if proxy.connect("trustapp", "", "pgsluice").await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the proxy stops listening after SHUTDOWN");
    proxy.stop().await;
}

#[tokio::test]
async fn show_workers_lists_each_worker_thread() {
    show_workers_with(2).await;
    show_workers_with(1).await;
}

/// SHOW WORKERS with `workers` worker threads, one application client and the console.
async fn show_workers_with(workers: usize) {
    let limits = format!("limits: {{ worker_threads: {workers}, balance_interval: 100ms }}");
    let proxy = start_proxy(&proxy_yaml("size: 2", &format!("{ADMIN_USERS}\n{limits}"))).await;
    let app = proxy.app_client().await;
    app.batch_execute("SELECT 1").await.unwrap();
    let admin = console(&proxy).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (columns, rows) = loop {
        let (columns, rows) = table(&admin, "show workers").await;
        let measured = rows
            .iter()
            .all(|r| !cell(&columns, r, "cpu_percent").is_empty());
        if measured || tokio::time::Instant::now() >= deadline {
            break (columns, rows);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        columns,
        [
            "worker",
            "clients",
            "cpu_percent",
            "new_clients",
            "moves_asked"
        ]
    );
    assert_eq!(rows.len(), workers, "{rows:?}");
    // The application client and this console.
    let clients: u32 = rows
        .iter()
        .map(|r| cell(&columns, r, "clients").parse::<u32>().unwrap())
        .sum();
    assert_eq!(clients, 2, "{rows:?}");
    for row in &rows {
        let cpu: f64 = cell(&columns, row, "cpu_percent")
            .parse()
            .expect("measured");
        assert!((0.0..=200.0).contains(&cpu), "{row:?}");
    }
    let preferred = rows
        .iter()
        .filter(|r| cell(&columns, r, "new_clients") == "yes");
    assert_eq!(preferred.count(), 1, "{rows:?}");
    drop(app);
    proxy.stop().await;
}
