//! The Prometheus text exposition format (0.0.4): one HELP and TYPE line per family, then its
//! samples; histograms as cumulative `_bucket{le}` series plus `_sum` and `_count`.

use std::fmt::Write;
use std::sync::Arc;

use super::families::{ErrorClass, NodeRoleLabel, RouteReason, RouteTarget};
use super::{
    DatabaseMetrics, Histogram, Metrics, NodeMetrics, PoolMetrics, WorkerMetrics, BUCKETS,
};

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes `# HELP` and `# TYPE`.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample; `labels` and `extra` are already escaped `k="v"` lists (either may be empty).
fn sample(out: &mut String, name: &str, labels: &str, extra: &str, value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() || !extra.is_empty() {
        out.push('{');
        out.push_str(labels);
        if !labels.is_empty() && !extra.is_empty() {
            out.push(',');
        }
        out.push_str(extra);
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Writes the series of one histogram (the family header is written by the caller).
fn histogram(out: &mut String, name: &str, labels: &str, histogram: &Histogram) {
    let snapshot = histogram.snapshot();
    let bucket = format!("{name}_bucket");
    for ((_, le), count) in BUCKETS.iter().zip(snapshot.cumulative.iter()) {
        sample(out, &bucket, labels, &format!("le=\"{le}\""), count);
    }
    sample(out, &bucket, labels, "le=\"+Inf\"", snapshot.count);
    sample(
        out,
        &format!("{name}_sum"),
        labels,
        "",
        snapshot.sum_seconds,
    );
    sample(out, &format!("{name}_count"), labels, "", snapshot.count);
}

type PoolCounter = fn(&PoolMetrics) -> u64;
type PoolHistogram = fn(&PoolMetrics) -> &Histogram;

const POOL_COUNTERS: &[(&str, &str, PoolCounter)] = &[
    (
        "pgsluice_transactions_total",
        "Transactions completed by clients of the pool.",
        |p| p.transactions(),
    ),
    (
        "pgsluice_queries_total",
        "Queries (Query or Sync) answered for clients of the pool.",
        |p| p.queries(),
    ),
    (
        "pgsluice_checkout_timeouts_total",
        "Checkouts that gave up after checkout_timeout.",
        |p| p.checkout_timeouts.get(),
    ),
    (
        "pgsluice_server_connects_total",
        "Server connections opened.",
        |p| p.server_connects.get(),
    ),
    (
        "pgsluice_server_connect_errors_total",
        "Server connection attempts that failed.",
        |p| p.server_connect_errors.get(),
    ),
    (
        "pgsluice_bytes_received_total",
        "Bytes received from clients.",
        |p| p.bytes_received.get(),
    ),
    ("pgsluice_bytes_sent_total", "Bytes sent to clients.", |p| {
        p.bytes_sent.get()
    }),
    (
        "pgsluice_prepared_statements_cache_hits_total",
        "Prepared statements found already prepared on the server connection.",
        |p| p.prepared_cache_hits.get(),
    ),
    (
        "pgsluice_prepared_statements_cache_misses_total",
        "Prepared statements that had to be prepared on the server connection.",
        |p| p.prepared_cache_misses.get(),
    ),
    (
        "pgsluice_prepared_statements_cache_evictions_total",
        "Prepared statements evicted from a server connection's cache.",
        |p| p.prepared_cache_evictions.get(),
    ),
];

const POOL_HISTOGRAMS: &[(&str, &str, PoolHistogram)] = &[
    (
        "pgsluice_transaction_duration_seconds",
        "Duration of client transactions.",
        |p| &p.transaction_duration,
    ),
    (
        "pgsluice_query_duration_seconds",
        "Time from a query to its ReadyForQuery.",
        |p| &p.query_duration,
    ),
    (
        "pgsluice_checkout_wait_seconds",
        "Time waited for a pool slot.",
        |p| &p.checkout_wait,
    ),
];

fn render_pools(out: &mut String, pools: &[Arc<PoolMetrics>]) {
    for (name, help, get) in POOL_COUNTERS {
        family(out, name, "counter", help);
        for pool in pools {
            sample(out, name, &pool.labels, "", get(pool));
        }
    }
    for (name, help, get) in POOL_HISTOGRAMS {
        family(out, name, "histogram", help);
        for pool in pools {
            histogram(out, name, &pool.labels, get(pool));
        }
    }
    let name = "pgsluice_server_connections";
    family(out, name, "gauge", "Server connections by state.");
    for pool in pools {
        sample(
            out,
            name,
            &pool.labels,
            "state=\"idle\"",
            pool.server_idle.get(),
        );
        sample(
            out,
            name,
            &pool.labels,
            "state=\"active\"",
            pool.server_active.get(),
        );
    }
    let name = "pgsluice_pool_size";
    family(out, name, "gauge", "Configured pool size.");
    for pool in pools {
        sample(out, name, &pool.labels, "", pool.pool_size.get());
    }
    let name = "pgsluice_clients_waiting";
    family(out, name, "gauge", "Clients waiting for a pool slot.");
    for pool in pools {
        sample(out, name, &pool.labels, "", pool.clients_waiting.get());
    }
}

fn render_databases(out: &mut String, databases: &[Arc<DatabaseMetrics>]) {
    let name = "pgsluice_routing_decisions_total";
    family(
        out,
        name,
        "counter",
        "Routing decisions by target and reason.",
    );
    for db in databases.iter().filter(|db| db.labels != "database=\"\"") {
        for target in RouteTarget::ALL {
            for reason in RouteReason::ALL {
                let extra = format!(
                    "target=\"{}\",reason=\"{}\"",
                    target.as_str(),
                    reason.as_str()
                );
                sample(out, name, &db.labels, &extra, db.routes(target, reason));
            }
        }
    }
    let name = "pgsluice_errors_total";
    family(
        out,
        name,
        "counter",
        "Errors the proxy reported to clients, by SQLSTATE class.",
    );
    for db in databases {
        for class in ErrorClass::ALL {
            let extra = format!("class=\"{}\"", class.as_str());
            sample(out, name, &db.labels, &extra, db.errors(class));
        }
    }
}

fn render_nodes(out: &mut String, nodes: &[Arc<NodeMetrics>]) {
    let name = "pgsluice_node_up";
    family(
        out,
        name,
        "gauge",
        "1 when the node is usable, 0 when down.",
    );
    for node in nodes {
        sample(out, name, &node.labels, "", node.up.get());
    }
    let name = "pgsluice_node_role";
    family(out, name, "gauge", "1 for the node's current role.");
    for node in nodes {
        let role = node.role();
        for candidate in NodeRoleLabel::ALL {
            let extra = format!("role=\"{}\"", candidate.as_str());
            sample(out, name, &node.labels, &extra, u8::from(candidate == role));
        }
    }
    let lags: Vec<_> = nodes.iter().filter_map(|n| Some((n, n.lag()?))).collect();
    let name = "pgsluice_replica_lag_bytes";
    family(
        out,
        name,
        "gauge",
        "Replica replay position behind the primary, in bytes.",
    );
    for (node, (bytes, _)) in &lags {
        sample(out, name, &node.labels, "", bytes);
    }
    let name = "pgsluice_replica_lag_seconds";
    family(
        out,
        name,
        "gauge",
        "Time since the last replayed transaction committed on the primary.",
    );
    for (node, (_, seconds)) in &lags {
        sample(out, name, &node.labels, "", seconds);
    }
    let name = "pgsluice_health_check_duration_seconds";
    family(out, name, "histogram", "Duration of node health checks.");
    for node in nodes {
        histogram(out, name, &node.labels, &node.health_check_duration);
    }
}

fn render_global(out: &mut String, metrics: &Metrics, pools: &[Arc<PoolMetrics>]) {
    let global = metrics.global();
    let active: i64 = pools.iter().map(|p| p.server_active.get()).sum();
    let waiting: i64 = pools.iter().map(|p| p.clients_waiting.get()).sum();
    let connected = global.connected.get();
    let idle = (connected - active - waiting).max(0);
    let name = "pgsluice_clients";
    family(
        out,
        name,
        "gauge",
        "Client connections by state (active: holding a server connection).",
    );
    sample(out, name, "", "state=\"active\"", active);
    sample(out, name, "", "state=\"idle\"", idle);
    sample(out, name, "", "state=\"waiting\"", waiting);
    for (name, help, value) in [
        (
            "pgsluice_client_connections_total",
            "Client connections accepted (cancel requests included).",
            &global.client_connections,
        ),
        (
            "pgsluice_auth_failures_total",
            "Client logins refused (wrong password or unknown user).",
            &global.auth_failures,
        ),
        (
            "pgsluice_client_moves_total",
            "Clients moved between worker threads by the balancer, at idle points.",
            &global.client_moves,
        ),
        (
            "pgsluice_tls_handshakes_total",
            "Client TLS handshakes completed.",
            &global.tls_handshakes,
        ),
        (
            "pgsluice_client_limit_rejections_total",
            "Clients refused by max_client_conn.",
            &global.client_limit_rejections,
        ),
    ] {
        family(out, name, "counter", help);
        sample(out, name, "", "", value.get());
    }
    let name = "pgsluice_build_info";
    family(out, name, "gauge", "Always 1; the version is a label.");
    let extra = format!("version=\"{}\"", escape_label(metrics.version()));
    sample(out, name, "", &extra, 1);
    let name = "pgsluice_up";
    family(out, name, "gauge", "Always 1 while the proxy serves.");
    sample(out, name, "", "", 1);
    let name = "pgsluice_uptime_seconds";
    family(out, name, "gauge", "Seconds since the proxy started.");
    sample(out, name, "", "", metrics.uptime().as_secs_f64());
}

/// The whole exposition.
pub(super) fn render(
    metrics: &Metrics,
    pools: &[Arc<PoolMetrics>],
    databases: &[Arc<DatabaseMetrics>],
    nodes: &[Arc<NodeMetrics>],
    workers: &[Arc<WorkerMetrics>],
) -> String {
    let mut out = String::with_capacity(16 << 10);
    render_global(&mut out, metrics, pools);
    render_pools(&mut out, pools);
    render_databases(&mut out, databases);
    render_nodes(&mut out, nodes);
    render_workers(&mut out, workers);
    out
}

fn render_workers(out: &mut String, workers: &[Arc<WorkerMetrics>]) {
    if workers.is_empty() {
        return;
    }
    let name = "pgsluice_worker_clients";
    family(out, name, "gauge", "Clients served by each worker thread.");
    for worker in workers {
        sample(out, name, &worker.labels, "", worker.clients.get());
    }
    let name = "pgsluice_worker_cpu_ratio";
    family(
        out,
        name,
        "gauge",
        "Share of one core each worker thread used over the balancer's last interval.",
    );
    for worker in workers {
        let cpu = worker.cpu.get();
        if cpu >= 0.0 {
            sample(out, name, &worker.labels, "", cpu);
        }
    }
}
