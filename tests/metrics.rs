//! The HTTP endpoints against a real proxy: `/metrics` counts a known workload, `/live`, `/ready`,
//! `/status`, 404/405; `/ready` is 503 before the proxy listens; the Grafana dashboard is valid
//! JSON and only uses metric names the proxy exports.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{proxy_yaml, sqlstate, start_proxy};
use pgsluice::app::App;
use pgsluice::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends one request and returns the status code and body.
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect to HTTP");
        let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.expect("send request");
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.expect("read response");
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("HTTP answer within 10s");
    let text = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    assert!(head.contains("Connection: close"), "{head}");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path).await
}

/// The value of the sample whose series (name and labels, as rendered) is exactly `series`.
fn value(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{exposition}"))
        .parse()
        .expect("numeric sample")
}

/// Scrapes until `series` has `expected` (releases and disconnects finish just after the client
/// sees their effect), then returns the last exposition.
async fn scrape_until(http: SocketAddr, series: &str, expected: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, metrics) = get(http, "/metrics").await;
        assert_eq!(status, 200);
        if value(&metrics, series) == expected || tokio::time::Instant::now() >= deadline {
            return metrics;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the HTTP endpoints of `app` on a port 0 listener.
async fn serve_http(app: &std::sync::Arc<App>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind HTTP");
    let addr = listener.local_addr().expect("HTTP addr");
    let app = app.clone();
    tokio::spawn(async move { app.serve_http(Some(listener)).await });
    addr
}

#[tokio::test]
async fn endpoints_report_a_known_workload() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 2", "")).await;
    let http = serve_http(&proxy.app).await;

    let mut clients = Vec::new();
    for _ in 0..3 {
        let client = proxy.app_client().await;
        for _ in 0..2 {
            client.simple_query("SELECT 1").await.expect("query");
        }
        clients.push(client);
    }
    let refused = proxy
        .connect("app", "wrong", "sluice")
        .await
        .expect_err("wrong password is refused");
    assert_eq!(sqlstate(&refused).as_deref(), Some("28P01"));

    let pool = "database=\"sluice\",user=\"app\",node=\"primary\"";
    let active = format!("pgsluice_server_connections{{{pool},state=\"active\"}}");
    scrape_until(http, &active, 0.0).await;
    let metrics = scrape_until(http, "pgsluice_clients{state=\"idle\"}", 3.0).await;
    assert!(value(&metrics, "pgsluice_client_connections_total") >= 4.0);
    assert_eq!(value(&metrics, "pgsluice_auth_failures_total"), 1.0);
    assert_eq!(
        value(
            &metrics,
            "pgsluice_errors_total{database=\"sluice\",class=\"28\"}"
        ),
        1.0
    );
    // A checkout at login and one per query (transaction pooling).
    let checkouts = value(
        &metrics,
        &format!("pgsluice_checkout_wait_seconds_count{{{pool}}}"),
    );
    assert!(checkouts >= 9.0, "checkouts: {checkouts}");
    let connects = value(
        &metrics,
        &format!("pgsluice_server_connects_total{{{pool}}}"),
    );
    assert!((1.0..=2.0).contains(&connects), "connects: {connects}");
    assert_eq!(
        value(&metrics, &format!("pgsluice_pool_size{{{pool}}}")),
        2.0
    );
    assert_eq!(value(&metrics, &active), 0.0);
    assert_eq!(
        value(
            &metrics,
            "pgsluice_node_up{database=\"sluice\",node=\"primary\"}"
        ),
        1.0
    );
    assert_eq!(value(&metrics, "pgsluice_clients{state=\"idle\"}"), 3.0);

    let (status, body) = get(http, "/live").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get(http, "/ready").await.0, 200);

    let (status, body) = get(http, "/status").await;
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    let nodes = status["databases"]["sluice"]["nodes"]
        .as_array()
        .expect("nodes");
    let names: Vec<&str> = nodes.iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["primary", "replica1"]);
    assert_eq!(nodes[0]["role"], "primary");
    let pools = status["pools"].as_array().expect("pools");
    let app_pool = pools
        .iter()
        .find(|p| p["user"] == "app" && p["node"] == "primary")
        .expect("pool of app on the primary");
    assert_eq!(app_pool["size"], 2);
    assert!(app_pool["open"].as_u64().expect("open") >= 1);
    assert_eq!(status["draining"], false);

    assert_eq!(get(http, "/nope").await.0, 404);
    assert_eq!(request(http, "POST", "/metrics").await.0, 405);
    drop(clients);
    proxy.stop().await;
}

#[tokio::test]
async fn relay_counts_queries_transactions_bytes_errors_and_prepared_hits() {
    let proxy = start_proxy(&proxy_yaml("mode: transaction, size: 2", "")).await;
    let http = serve_http(&proxy.app).await;
    let client = proxy.app_client().await;
    for _ in 0..5 {
        client.simple_query("SELECT 1").await.expect("query");
    }
    for sql in ["BEGIN", "SELECT 1", "COMMIT"] {
        client.simple_query(sql).await.expect("transaction");
    }
    let statement = client.prepare("SELECT $1::int4").await.expect("prepare");
    for i in 0..3 {
        client.query_one(&statement, &[&i]).await.expect("execute");
    }
    let error = client
        .simple_query("SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(sqlstate(&error).as_deref(), Some("22012"));

    // 5 autocommit + 3 in BEGIN..COMMIT + prepare + 3 executions + the error; each autocommit
    // request is its own transaction.
    let pool = "database=\"sluice\",user=\"app\",node=\"primary\"";
    let queries = format!("pgsluice_queries_total{{{pool}}}");
    let metrics = scrape_until(http, &queries, 13.0).await;
    assert_eq!(value(&metrics, &queries), 13.0);
    let transactions = format!("pgsluice_transactions_total{{{pool}}}");
    assert_eq!(value(&metrics, &transactions), 11.0);
    let latency = format!("pgsluice_query_duration_seconds_count{{{pool}}}");
    assert_eq!(value(&metrics, &latency), 13.0);
    let latency = format!("pgsluice_transaction_duration_seconds_count{{{pool}}}");
    assert_eq!(value(&metrics, &latency), 11.0);
    for bytes in ["pgsluice_bytes_received_total", "pgsluice_bytes_sent_total"] {
        let sent = value(&metrics, &format!("{bytes}{{{pool}}}"));
        assert!(sent > 100.0, "{bytes}: {sent}");
    }
    let errors = "pgsluice_errors_total{database=\"sluice\",class=\"other\"}";
    assert_eq!(value(&metrics, errors), 1.0);
    // The Parse, its Describe and three Binds: each finds the statement on its server connection
    // or prepares it there.
    let hits = value(
        &metrics,
        &format!("pgsluice_prepared_statements_cache_hits_total{{{pool}}}"),
    );
    let misses = value(
        &metrics,
        &format!("pgsluice_prepared_statements_cache_misses_total{{{pool}}}"),
    );
    assert_eq!(hits + misses, 5.0, "hits {hits}, misses {misses}");
    assert!((1.0..=2.0).contains(&misses), "misses: {misses}");
    drop(client);
    proxy.stop().await;
}

#[tokio::test]
async fn not_ready_before_listening() {
    // No node is contacted: nothing is served and pools open lazily.
    let yaml = r#"
users: [{ name: u, auth_method: trust }]
databases: [{ name: d, nodes: [{ host: 127.0.0.1, port: 1, role: primary }] }]
"#;
    let config = pgsluice::config::load_str(yaml, &|_| None).expect("config");
    let app = std::sync::Arc::new(App::new(config).expect("app"));
    let http = serve_http(&app).await;
    let (status, body) = get(http, "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("not listening"), "{body}");
    assert_eq!(get(http, "/live").await.0, 200);
}

#[test]
fn dashboard_is_valid_json_using_exported_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboards/grafana-pgsluice.json"
    );
    let text = std::fs::read_to_string(path).expect("dashboard file");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);

    let metrics = Metrics::new();
    metrics.pool("d", "u", "n");
    metrics.database("d");
    metrics.worker(0).cpu.set(0.5);
    metrics.node("d", "n").set_state(
        true,
        pgsluice::metrics::NodeRoleLabel::Replica,
        Some((1, 0.1)),
    );
    let exported: BTreeSet<String> = metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let mut used = BTreeSet::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("pgsluice_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                used.insert(name);
            }
        }
    }
    assert!(!used.is_empty());
    for name in used {
        let family = name.strip_suffix("_bucket").unwrap_or(&name);
        assert!(
            exported.contains(family),
            "dashboard uses unknown metric {name}"
        );
    }
}

#[tokio::test]
async fn health_checks_record_their_duration_per_node() {
    let proxy = start_proxy(&proxy_yaml("size: 2", "health: { interval: 200ms }")).await;
    let series =
        "pgsluice_health_check_duration_seconds_count{database=\"sluice\",node=\"primary\"}";
    let recorded = common::eventually(Duration::from_secs(10), || {
        proxy.app.metrics().render().lines().any(|line| {
            line.strip_prefix(series)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|n| n >= 2.0)
        })
    })
    .await;
    assert!(recorded, "{}", proxy.app.metrics().render());
    proxy.stop().await;
}
