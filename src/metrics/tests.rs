//! Unit tests: histogram bucket math, label escaping, the exposition format parsed back line by
//! line, and the HTTP request parsing and routing.

use std::collections::HashMap;
use std::time::Duration;

use super::http::{parse_request, respond, Readiness, Request, StatusSource};
use super::render::escape_label;
use super::*;

#[test]
fn buckets_are_inclusive_upper_bounds() {
    assert_eq!(bucket_index(0), 0);
    assert_eq!(bucket_index(50_000), 0);
    assert_eq!(bucket_index(50_001), 1);
    assert_eq!(bucket_index(1_000_000), 4);
    assert_eq!(bucket_index(30_000_000_000), BUCKETS.len() - 1);
    assert_eq!(bucket_index(30_000_000_001), BUCKETS.len());
    assert_eq!(bucket_index(u64::MAX), BUCKETS.len());
    // The scan agrees with a binary search over the labelled table, at and around every bound.
    let probes = BUCKETS
        .iter()
        .flat_map(|&(bound, _)| [bound - 1, bound, bound + 1])
        .chain((0..64).map(|shift| 1u64 << shift));
    for nanos in probes {
        let searched = BUCKETS.partition_point(|&(bound, _)| bound < nanos);
        assert_eq!(bucket_index(nanos), searched, "{nanos} ns");
    }
    for pair in BUCKETS.windows(2) {
        assert!(pair[0].0 < pair[1].0, "bounds increase");
        let parsed: f64 = pair[0].1.parse().unwrap();
        assert_eq!(
            (parsed * 1e9).round() as u64,
            pair[0].0,
            "label matches bound"
        );
    }
}

#[test]
fn histogram_snapshot_is_cumulative() {
    let h = Histogram::default();
    h.observe(Duration::from_micros(10)); // bucket 0
    h.observe_zero(); // bucket 0
    h.observe(Duration::from_millis(1)); // le 0.001
    h.observe(Duration::from_secs(60)); // +Inf
    let s = h.snapshot();
    assert_eq!(s.count, 4);
    assert_eq!(s.cumulative[0], 2);
    assert_eq!(s.cumulative[3], 2);
    assert_eq!(s.cumulative[4], 3);
    assert_eq!(s.cumulative[BUCKETS.len() - 1], 3);
    assert_eq!(s.cumulative[BUCKETS.len()], 4);
    assert!((s.sum_seconds - 60.00101).abs() < 1e-9);
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label("plain"), "plain");
    assert_eq!(escape_label("a\"b"), "a\\\"b");
    assert_eq!(escape_label("a\\b"), "a\\\\b");
    assert_eq!(escape_label("a\nb"), "a\\nb");
}

#[test]
fn error_classes_come_from_the_first_two_characters() {
    assert_eq!(ErrorClass::of("08006"), ErrorClass::Connection);
    assert_eq!(ErrorClass::of("28P01"), ErrorClass::Authorization);
    assert_eq!(ErrorClass::of("3D000"), ErrorClass::Catalog);
    assert_eq!(ErrorClass::of("57P01"), ErrorClass::OperatorIntervention);
    assert_eq!(ErrorClass::of("42601"), ErrorClass::Other);
    assert_eq!(ErrorClass::of(""), ErrorClass::Other);
    assert_eq!(ErrorClass::of("0"), ErrorClass::Other);
}

/// One parsed sample line: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A strict little parser for the exposition format: every line is a HELP/TYPE comment or a
/// sample of the family announced last.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut family: Option<(String, String)> = None;
    let mut seen_families = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(
                seen_families.insert(name.clone()),
                "family {name} announced twice"
            );
            family = Some((name, String::new()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let current = family.as_mut().expect("TYPE after HELP");
            assert_eq!(current.0, name);
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{kind}");
            current.1 = kind.to_string();
            continue;
        }
        let (family_name, kind) = family.clone().expect("sample after a family header");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Vec::new()),
            Some((name, rest)) => (
                name.to_string(),
                parse_labels(rest.strip_suffix('}').unwrap()),
            ),
        };
        match kind.as_str() {
            "histogram" => assert!(
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name == format!("{family_name}{s}")),
                "{name} in {family_name}"
            ),
            "counter" => {
                assert_eq!(name, family_name);
                assert!(name.ends_with("_total"), "{name}");
            }
            _ => assert_eq!(name, family_name),
        }
        samples.push((name, labels, value));
    }
    samples
}

/// Parses `k="v",k2="v2"` with escapes.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'));
        let mut value = String::new();
        loop {
            match chars.next().expect("closing quote") {
                '"' => break,
                '\\' => match chars.next().unwrap() {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.push((key, value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .collect()
}

#[test]
fn rendering_parses_back_with_the_recorded_values() {
    let metrics = Metrics::new();
    let pool = metrics.pool("db\"1", "u\\ser", "node\n1");
    for _ in 0..3 {
        pool.query_duration.observe(Duration::from_micros(300));
    }
    pool.checkout_wait.observe(Duration::from_millis(2));
    pool.checkout_wait.observe_zero();
    pool.server_active.inc();
    pool.pool_size.set(20);
    let db = metrics.database("db\"1");
    db.route(RouteTarget::Replica, RouteReason::Read);
    db.error("53300");
    metrics.unknown_database().error("3D000");
    let node = metrics.node("db\"1", "replica1");
    node.set_state(true, NodeRoleLabel::Replica, Some((1024, 0.5)));
    metrics
        .node("db\"1", "primary")
        .set_state(true, NodeRoleLabel::Primary, None);
    metrics.global().connected.add(3);
    metrics.global().auth_failures.inc();

    let text = metrics.render();
    let samples = parse_exposition(&text);
    let pool_labels = [
        ("database", "db\"1"),
        ("user", "u\\ser"),
        ("node", "node\n1"),
    ];
    assert_eq!(
        find(&samples, "pgsluice_queries_total", &pool_labels)[0].2,
        3.0
    );
    let wait = find(
        &samples,
        "pgsluice_checkout_wait_seconds_bucket",
        &pool_labels,
    );
    assert_eq!(wait.len(), BUCKETS.len() + 1);
    let by_le: HashMap<&str, f64> = wait
        .iter()
        .map(|(_, l, v)| (l.iter().find(|(k, _)| k == "le").unwrap().1.as_str(), *v))
        .collect();
    assert_eq!(by_le["0.00005"], 1.0);
    assert_eq!(by_le["0.001"], 1.0);
    assert_eq!(by_le["0.0025"], 2.0);
    assert_eq!(by_le["+Inf"], 2.0);
    assert_eq!(
        find(
            &samples,
            "pgsluice_checkout_wait_seconds_count",
            &pool_labels
        )[0]
        .2,
        2.0
    );
    let sum = find(&samples, "pgsluice_checkout_wait_seconds_sum", &pool_labels)[0].2;
    assert!((sum - 0.002).abs() < 1e-9);
    let active = [("state", "active")];
    assert_eq!(
        find(&samples, "pgsluice_server_connections", &active)[0].2,
        1.0
    );
    assert_eq!(find(&samples, "pgsluice_clients", &active)[0].2, 1.0);
    assert_eq!(
        find(&samples, "pgsluice_clients", &[("state", "idle")])[0].2,
        2.0
    );
    let routed = [("target", "replica"), ("reason", "read")];
    assert_eq!(
        find(&samples, "pgsluice_routing_decisions_total", &routed)[0].2,
        1.0
    );
    let class = [("database", "db\"1"), ("class", "53")];
    assert_eq!(find(&samples, "pgsluice_errors_total", &class)[0].2, 1.0);
    let unknown = [("database", ""), ("class", "3D")];
    assert_eq!(find(&samples, "pgsluice_errors_total", &unknown)[0].2, 1.0);
    assert_eq!(
        find(&samples, "pgsluice_replica_lag_bytes", &[])[0].2,
        1024.0
    );
    assert_eq!(find(&samples, "pgsluice_replica_lag_bytes", &[]).len(), 1);
    let primary = [("node", "primary"), ("role", "primary")];
    assert_eq!(find(&samples, "pgsluice_node_role", &primary)[0].2, 1.0);
    assert_eq!(
        find(&samples, "pgsluice_auth_failures_total", &[])[0].2,
        1.0
    );
    assert_eq!(find(&samples, "pgsluice_build_info", &[])[0].2, 1.0);
    assert!(text.contains("# TYPE pgsluice_query_duration_seconds histogram\n"));
}

#[test]
fn handles_for_the_same_labels_are_shared() {
    let metrics = Metrics::new();
    let a = metrics.pool("d", "u", "n");
    let b = metrics.pool("d", "u", "n");
    a.transaction_duration.observe(Duration::from_millis(1));
    assert_eq!(b.transactions(), 1);
    assert!(Arc::ptr_eq(&metrics.database("d"), &metrics.database("d")));
}

#[test]
fn request_lines_parse_strictly() {
    let ok = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(
        ok,
        Request {
            method: "GET",
            path: "/metrics"
        }
    );
    assert!(parse_request(b"GET /metrics\r\n\r\n").is_err());
    assert!(parse_request(b"GET metrics HTTP/1.1\r\n\r\n").is_err());
    assert!(parse_request(b"GET / HTTP/2 extra\r\n\r\n").is_err());
    assert!(parse_request(b"\xff\xfe\r\n\r\n").is_err());
}

struct Fixed(Readiness);

impl StatusSource for Fixed {
    fn readiness(&self) -> Readiness {
        self.0.clone()
    }
    fn status_json(&self) -> serde_json::Value {
        serde_json::json!({"ok": true})
    }
    fn refresh(&self, metrics: &Metrics) {
        metrics.global().tls_handshakes.inc();
    }
}

#[test]
fn routes_answer_with_the_right_status() {
    let metrics = Metrics::new();
    let ready = Fixed(Readiness::Ready);
    let get = |path| Request {
        method: "GET",
        path,
    };
    assert_eq!(respond(&get("/live"), &metrics, &ready).status, 200);
    assert_eq!(respond(&get("/ready"), &metrics, &ready).status, 200);
    assert_eq!(respond(&get("/nope"), &metrics, &ready).status, 404);
    let post = Request {
        method: "POST",
        path: "/metrics",
    };
    assert_eq!(respond(&post, &metrics, &ready).status, 405);
    let scraped = respond(&get("/metrics"), &metrics, &ready);
    assert!(
        scraped.body.contains("pgsluice_tls_handshakes_total 1\n"),
        "refresh ran first"
    );
    let status = respond(&get("/status"), &metrics, &ready);
    assert_eq!(status.content_type, "application/json");
    let draining = Fixed(Readiness::NotReady("draining".into()));
    let not_ready = respond(&get("/ready"), &metrics, &draining);
    assert_eq!(not_ready.status, 503);
    assert!(not_ready.body.contains("draining"));
}

#[test]
fn workers_render_their_clients_and_measured_cpu_only() {
    let metrics = Metrics::new();
    assert!(!metrics.render().contains("pgsluice_worker_"));
    metrics.worker(0).clients.set(3);
    metrics.worker(1).clients.set(0);
    metrics.worker(0).cpu.set(0.25);
    metrics.global().client_moves.add(2);
    let samples = parse_exposition(&metrics.render());
    assert_eq!(
        find(&samples, "pgsluice_worker_clients", &[("worker", "0")])[0].2,
        3.0
    );
    assert_eq!(
        find(&samples, "pgsluice_worker_cpu_ratio", &[("worker", "0")])[0].2,
        0.25
    );
    assert!(find(&samples, "pgsluice_worker_cpu_ratio", &[("worker", "1")]).is_empty());
    assert_eq!(find(&samples, "pgsluice_client_moves_total", &[])[0].2, 2.0);
}
